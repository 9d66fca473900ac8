//! `tandem test`: conversation tests for flows, written in YAML, run against the sandbox
//! (the engine's step, the flows and real HTTP for `call` steps, without store or WhatsApp).
//! The file format is documented in docs/flows.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use tandem_domain::{MessageContent, OutboundContent, Timestamp};
use tandem_engine::{FlowsHandle, Responder, Sandbox};

/// Appends one formatted line to a report.
macro_rules! note {
    ($buf:expr, $($arg:tt)*) => {{
        $buf.push_str(&format!($($arg)*));
        $buf.push('\n');
    }};
}

/// One conversation test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationTest {
    name: Option<String>,
    /// The customer's name in the business's address book.
    contact: Option<String>,
    language: Option<String>,
    /// Local date and time in the bot's time zone, such as 2026-11-23T10:00.
    start: Option<String>,
    human_idle: Option<String>,
    /// Values for the flows' `config.*` variables.
    #[serde(default)]
    variables: BTreeMap<String, String>,
    backend: Option<BackendSpec>,
    turns: Vec<Spanned<TurnSpec>>,
}

/// A stand-in of the business's backend, served on loopback while the test runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendSpec {
    /// The `config.<variable>` the flows use as the backend's base URL.
    variable: String,
    routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    delay: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnSpec {
    customer: Option<String>,
    press: Option<String>,
    echo: Option<String>,
    wait: Option<String>,
    image: Option<String>,
    location: Option<[f64; 2]>,
    expect: Option<ExpectSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    replies: Option<Vec<ReplySpec>>,
    mode: Option<String>,
    slots: Option<BTreeMap<String, Value>>,
    vars: Option<BTreeMap<String, Value>>,
    handoff: Option<Value>,
    opted_out: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ReplySpec {
    Exact(String),
    Detailed {
        #[serde(default)]
        text: Option<String>,
        #[serde(default)]
        matches: Option<String>,
        #[serde(default)]
        options: Option<Vec<String>>,
    },
}

/// Runs every test file; prints a line per test and a diff per failure. Returns whether all
/// passed.
pub(crate) fn run(
    flows: &Path,
    tests: &Path,
    variables: &BTreeMap<String, String>,
) -> anyhow::Result<bool> {
    let files = test_files(tests)?;
    if files.is_empty() {
        anyhow::bail!("no conversation tests (*.yaml) in {}", tests.display());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut failed = 0;
    for file in &files {
        let report = runtime.block_on(run_file(flows, file, variables));
        match report {
            Ok((name, turns, None)) => {
                eprintln!("PASS {} — {name} ({turns} turns)", file.display())
            }
            Ok((name, _, Some(diff))) => {
                failed += 1;
                eprintln!("FAIL {} — {name}\n{diff}", file.display());
            }
            Err(error) => {
                failed += 1;
                eprintln!("FAIL {}\n  {error:#}", file.display());
            }
        }
    }
    eprintln!("{} passed, {failed} failed", files.len() - failed);
    Ok(failed == 0)
}

fn test_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

type FileReport = (String, usize, Option<String>);

async fn run_file(
    flows: &Path,
    file: &Path,
    variables: &BTreeMap<String, String>,
) -> anyhow::Result<FileReport> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let options = serde_saphyr::Options {
        with_snippet: false,
        ..serde_saphyr::Options::default()
    };
    let test: ConversationTest = serde_saphyr::from_str_with_options(&text, options)
        .map_err(|e| anyhow::anyhow!("{}:{e}", file.display()))?;
    let name = test
        .name
        .clone()
        .unwrap_or_else(|| file.display().to_string());
    let mut variables = variables.clone();
    variables.extend(test.variables.clone());
    if let Some(backend) = &test.backend {
        let url = serve_backend(backend.routes.clone()).await?;
        variables.insert(backend.variable.clone(), url);
    }
    let loaded = tandem_flows::load_dir(flows, &variables)
        .map_err(|e| anyhow::anyhow!("the flows are invalid:\n{e}"))?;
    let start = match &test.start {
        Some(local) => {
            let dt: jiff::civil::DateTime = local.parse().with_context(|| {
                format!("start: {local:?} is not a date and time such as 2026-11-23T10:00")
            })?;
            let zoned = dt.to_zoned(loaded.bot.settings.timezone.clone())?;
            Timestamp(
                u64::try_from(zoned.timestamp().as_millisecond())
                    .context("start is before 1970")?,
            )
        }
        None => Timestamp(u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)),
    };
    let human_idle = match &test.human_idle {
        Some(d) => humantime::parse_duration(d)
            .with_context(|| format!("human_idle: {d:?} is not a duration"))?,
        None => Duration::from_secs(30 * 60),
    };
    let responder = Responder::new(
        FlowsHandle::new(loaded.bot),
        tandem_engine::responder::call_client()?,
    );
    let mut sandbox = Sandbox::new(responder, "15550009999", start, human_idle)?;
    sandbox.set_contact_name(test.contact.clone());
    sandbox.set_language(test.language.clone());
    let mut last_options: Vec<(String, String, bool)> = Vec::new();
    for (index, turn) in test.turns.iter().enumerate() {
        let line = turn.referenced.line();
        let turn = &turn.value;
        let (label, outcome) = if let Some(text) = &turn.customer {
            (
                format!("customer: {text:?}"),
                sandbox
                    .customer(MessageContent::Text { body: text.clone() })
                    .await,
            )
        } else if let Some(id) = &turn.press {
            let Some((_, title, list)) = last_options.iter().find(|(o, _, _)| o == id).cloned()
            else {
                let known: Vec<&str> = last_options.iter().map(|(o, _, _)| o.as_str()).collect();
                return Ok((
                    name,
                    index,
                    Some(format!(
                        "  turn {} (line {line}): press {id:?}: the bot's last message has no such option; it offered {known:?}",
                        index + 1
                    )),
                ));
            };
            let content = if list {
                MessageContent::ListReply {
                    id: id.clone(),
                    title,
                    description: None,
                }
            } else {
                MessageContent::ButtonReply {
                    id: id.clone(),
                    title,
                }
            };
            (format!("press: {id}"), sandbox.customer(content).await)
        } else if let Some(text) = &turn.echo {
            (format!("echo: {text:?}"), sandbox.echo(text).await)
        } else if let Some(wait) = &turn.wait {
            let d = humantime::parse_duration(wait)
                .with_context(|| format!("line {line}: wait: {wait:?} is not a duration"))?;
            (format!("wait: {wait}"), sandbox.wait(d).await)
        } else if let Some(caption) = &turn.image {
            let content = MessageContent::Media {
                kind: "image".into(),
                media_id: Some("sandbox-media-1".into()),
                mime_type: Some("image/jpeg".into()),
                caption: Some(caption.clone()).filter(|c| !c.is_empty()),
                filename: None,
            };
            ("image".to_owned(), sandbox.customer(content).await)
        } else if let Some([latitude, longitude]) = turn.location {
            let content = MessageContent::Location {
                latitude,
                longitude,
                name: None,
                address: None,
            };
            ("location".to_owned(), sandbox.customer(content).await)
        } else {
            anyhow::bail!(
                "{}:{line}: a turn needs one of customer, press, echo, wait, image, location",
                file.display()
            );
        };
        for reply in &outcome.replies {
            match reply {
                OutboundContent::Buttons { buttons, .. } => {
                    last_options = buttons
                        .iter()
                        .map(|(i, t)| (i.clone(), t.clone(), false))
                        .collect()
                }
                OutboundContent::List { sections, .. } => {
                    last_options = sections
                        .iter()
                        .flat_map(|s| s.rows.iter())
                        .map(|r| (r.id.clone(), r.title.clone(), true))
                        .collect();
                }
                _ => {}
            }
        }
        if let Some(expect) = &turn.expect
            && let Some(diff) = check(expect, &outcome, &sandbox)
        {
            let mut report = format!("  turn {} (line {line}, {label}):\n{diff}", index + 1);
            note!(report, "  the bot sent:");
            for (i, reply) in outcome.replies.iter().enumerate() {
                note!(report, "    {}. {:?}", i + 1, reply.transcript_text());
            }
            for note in &outcome.not_sent {
                note!(report, "    (not sent: {note})");
            }
            note!(report, "  decisions: {}", outcome.decisions.join(" → "));
            return Ok((name, index + 1, Some(report)));
        }
    }
    Ok((name, test.turns.len(), None))
}

fn body(content: &OutboundContent) -> String {
    match content {
        OutboundContent::Text { body, .. }
        | OutboundContent::Buttons { body, .. }
        | OutboundContent::List { body, .. } => body.clone(),
        OutboundContent::Template { name, .. } => format!("template:{name}"),
    }
}

fn option_titles(content: &OutboundContent) -> Vec<String> {
    match content {
        OutboundContent::Buttons { buttons, .. } => {
            buttons.iter().map(|(_, t)| t.clone()).collect()
        }
        OutboundContent::List { sections, .. } => sections
            .iter()
            .flat_map(|s| s.rows.iter().map(|r| r.title.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

/// Compares a turn's outcome with its expectations; returns the differences.
fn check(
    expect: &ExpectSpec,
    outcome: &tandem_engine::sandbox::Outcome,
    sandbox: &Sandbox,
) -> Option<String> {
    let mut diff = String::new();
    let c = sandbox.conversation();
    if let Some(replies) = &expect.replies {
        if replies.len() != outcome.replies.len() {
            note!(
                diff,
                "    expected {} replies, the bot sent {}",
                replies.len(),
                outcome.replies.len()
            );
        }
        for (i, (want, got)) in replies.iter().zip(&outcome.replies).enumerate() {
            let got_body = body(got);
            match want {
                ReplySpec::Exact(text) if *text != got_body => {
                    note!(
                        diff,
                        "    reply {}: expected {text:?}\n             got      {got_body:?}",
                        i + 1
                    );
                }
                ReplySpec::Detailed {
                    text,
                    matches,
                    options,
                } => {
                    if let Some(text) = text
                        && *text != got_body
                    {
                        note!(
                            diff,
                            "    reply {}: expected {text:?}\n             got      {got_body:?}",
                            i + 1
                        );
                    }
                    if let Some(pattern) = matches {
                        match regex::Regex::new(pattern) {
                            Ok(re) if !re.is_match(&got_body) => {
                                note!(
                                    diff,
                                    "    reply {}: expected to match /{pattern}/\n             got {got_body:?}",
                                    i + 1
                                );
                            }
                            Ok(_) => {}
                            Err(e) => {
                                note!(diff, "    reply {}: bad regex /{pattern}/: {e}", i + 1);
                            }
                        }
                    }
                    if let Some(options) = options {
                        let titles = option_titles(got);
                        if *options != titles {
                            note!(
                                diff,
                                "    reply {}: expected options {options:?}\n             got {titles:?}",
                                i + 1
                            );
                        }
                    }
                }
                ReplySpec::Exact(_) => {}
            }
        }
    }
    if let Some(mode) = &expect.mode
        && mode != c.mode().as_str()
    {
        note!(diff, "    mode: expected {mode}, is {}", c.mode().as_str());
    }
    for (what, want, have) in [
        ("slot", &expect.slots, &c.bot.slots),
        ("var", &expect.vars, &c.bot.vars),
    ] {
        for (key, value) in want.iter().flatten() {
            match have.get(key) {
                Some(v) if v == value => {}
                Some(v) => {
                    note!(diff, "    {what} {key}: expected {value}, is {v}");
                }
                None => {
                    note!(diff, "    {what} {key}: expected {value}, is not set");
                }
            }
        }
    }
    if let Some(opted_out) = expect.opted_out
        && opted_out != c.opted_out
    {
        note!(
            diff,
            "    opted_out: expected {opted_out}, is {}",
            c.opted_out
        );
    }
    match (&expect.handoff, &c.handoff()) {
        (None, _) => {}
        (Some(Value::Bool(false)), Some(h)) => {
            note!(
                diff,
                "    handoff: expected none, the bot handed off ({})",
                h.reason
            );
        }
        (Some(Value::Bool(false)), None) => {}
        (Some(_), None) => {
            note!(diff, "    handoff: expected one, there is none");
        }
        (Some(want), Some(h)) => {
            for (key, have) in [
                (
                    "team",
                    h.team.as_deref().map(|t| Value::String(t.to_owned())),
                ),
                ("reason", Some(Value::String(h.reason.to_string()))),
                (
                    "priority",
                    Some(Value::String(h.priority.as_str().to_owned())),
                ),
            ] {
                if let Some(w) = want.get(key)
                    && Some(w) != have.as_ref()
                {
                    note!(
                        diff,
                        "    handoff {key}: expected {w}, is {}",
                        have.unwrap_or(Value::Null)
                    );
                }
            }
        }
    }
    (!diff.is_empty()).then_some(diff)
}

/// Serves the stand-in routes on a loopback port; returns its base URL.
async fn serve_backend(routes: Vec<RouteSpec>) -> anyhow::Result<String> {
    use axum::http::{Method, StatusCode, Uri};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let routes = routes.clone();
        async move {
            let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str()).to_owned();
            let found = routes.iter().find(|r| {
                r.path == path && r.method.as_deref().unwrap_or("GET").eq_ignore_ascii_case(method.as_str())
            });
            let Some(route) = found else {
                return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": format!("no stand-in route for {method} {path}")})));
            };
            if let Some(delay) = route.delay.as_deref().and_then(|d| humantime::parse_duration(d).ok()) {
                tokio::time::sleep(delay).await;
            }
            let status = StatusCode::from_u16(route.status.unwrap_or(200)).unwrap_or(StatusCode::OK);
            (status, axum::Json(route.json.clone().unwrap_or(Value::Null)))
        }
    });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the stand-in backend stopped");
        }
    });
    Ok(format!("http://{addr}"))
}
