//! The documentation as a new user reads it: every link and every repository path it names
//! resolves inside the repository.

use std::path::{Path, PathBuf};

/// The Markdown pages users read.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md"), root.join("flows/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages
}

#[test]
fn every_link_and_path_in_the_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let named = regex::Regex::new(
        r"`((?:docs|crates|tests|bench|examples|flows|prompts|src|fuzz|docker|\.ci)/[\w./-]+)`",
    )
    .unwrap();
    let mut broken = Vec::new();
    let pages = pages(root);
    assert!(pages.len() >= 8, "{pages:?}");
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap();
        let dir = page.parent().unwrap();
        for target in link.captures_iter(&text).map(|c| c[1].to_owned()) {
            if target.starts_with("http") || target.starts_with("mailto:") {
                continue;
            }
            let path = target.split('#').next().unwrap_or_default();
            if !path.is_empty() && !dir.join(path).exists() {
                broken.push(format!("{}: link {target}", page.display()));
            }
        }
        for path in named.captures_iter(&text).map(|c| c[1].to_owned()) {
            if !root.join(path.trim_end_matches('.')).exists() {
                broken.push(format!("{}: path {path}", page.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "broken references:\n{}",
        broken.join("\n")
    );
}
