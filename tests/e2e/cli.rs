//! The flow authoring commands of the real binary: check, schema, test and chat.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn tandem(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("TANDEM_FLOWS")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn check_accepts_the_shipped_flows_and_reports_each_problem_with_its_position() {
    let (code, _, err) = tandem(&["check", "flows"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("6 flows in flows are valid"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "greet.yaml",
        "id: greet\nsteps:\n  - say: \"Hi {{ contact.name }}\"\n  - ask: \"Order?\"\n    slot: order\n  - goto: nowhere\n  - say: never\n",
    );
    write(
        dir.path(),
        "broken.yaml",
        "id: broken\ntriggers: ['(unclosed']\nsteps:\n  - say: \"{{ slots.missing }}\"\n  - buttons: Pick\n    options:\n      - {id: a, title: \"A title far too long for a button\"}\n      - {id: a, title: B, next: nope}\n",
    );
    write(
        dir.path(),
        "typo.yaml",
        "id: typo\nsteps:\n  - sya: hello\n",
    );
    write(dir.path(), "dup.yaml", "id: greet\nsteps:\n  - end: true\n");
    write(
        dir.path(),
        "lonely.yaml",
        "id: lonely\nsteps:\n  - end: true\n  - say: never\n",
    );
    let (code, _, err) = tandem(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let f = |name: &str| dir.path().join(name).display().to_string();
    for expected in [
        format!("{}:2:12: error: bad regex `(unclosed`", f("broken.yaml")),
        format!(
            "{}:4:10: error: undefined slot `slots.missing`",
            f("broken.yaml")
        ),
        format!(
            "{}:7:14: error: title `A title far too long for a button` has 33 characters",
            f("broken.yaml")
        ),
        format!("{}:8:14: error: duplicate option id `a`", f("broken.yaml")),
        format!(
            "{}:8:33: error: no step `nope` in flow `broken`",
            f("broken.yaml")
        ),
        format!(
            "{}:5:11: error: slot `order` is not declared in flow `greet`",
            f("greet.yaml")
        ),
        format!(
            "{}:6:11: error: `goto: nowhere` names no flow",
            f("greet.yaml")
        ),
        format!(
            "{}:4:5: warning: step `2` of flow `lonely` is never reached",
            f("lonely.yaml")
        ),
        format!("{}:3:5: error: unknown field `sya`", f("typo.yaml")),
        format!("{}:1:5: error: duplicate flow id `greet`", f("greet.yaml")),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
    assert!(err.contains("hint: "), "{err}");
}

#[test]
fn schema_prints_a_json_schema_of_flow_files() {
    let (code, out, err) = tandem(&["schema"]);
    assert_eq!(code, 0, "{err}");
    let schema: serde_json::Value = serde_json::from_str(&out).unwrap();
    let flow = &schema["anyOf"][0];
    assert_eq!(flow["title"], "Tandem flow");
    assert_eq!(flow["required"], serde_json::json!(["id", "steps"]));
    assert!(out.contains("\"say\""));
}

#[test]
fn the_shipped_conversation_tests_pass_and_a_failing_one_shows_the_difference() {
    let (code, _, err) = tandem(&["test"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("6 passed, 0 failed"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "wrong.yaml",
        "name: wrong expectation\nstart: 2026-11-23T10:00\nturns:\n  - customer: opening hours\n    expect:\n      replies: [\"We are closed forever\"]\n      mode: human\n",
    );
    let (code, _, err) = tandem(&["test", "--tests", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("FAIL"), "{err}");
    assert!(
        err.contains("turn 1 (line 4, customer: \"opening hours\")"),
        "{err}"
    );
    assert!(err.contains("expected \"We are closed forever\""), "{err}");
    assert!(err.contains("got      \"We're open Mon–Fri"), "{err}");
    assert!(err.contains("mode: expected human, is bot"), "{err}");
    assert!(err.contains("0 passed, 1 failed"), "{err}");
}

/// Runs `tandem chat` on the shipped flows with `args`, typing `input`; returns what it
/// printed, after checking it exited well.
fn chat(args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["chat", "flows"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{out}");
    out
}

#[test]
fn chat_shows_replies_choices_decisions_and_mode() {
    let out = chat(
        &["--contact", "Ana Silva"],
        b"hi\n3\n1200-195\n/echo hello from the shop\nwhere is my order\n/quit\n",
    );
    assert!(out.contains("bot> Hi Ana! Welcome to Verde"), "{out}");
    assert!(out.contains("     3. Delivery fees"), "{out}");
    assert!(out.contains("bot> What's your postcode?"), "{out}");
    assert!(out.contains("by bike"), "{out}");
    assert!(out.contains("slots {\"postcode\":{"), "{out}");
    assert!(out.contains("\"area\":\"1\""), "{out}");
    assert!(out.contains("mode human"), "{out}");
    assert!(out.contains("mode human: the bot stays silent"), "{out}");
}

#[test]
fn chat_plays_the_agent_too_take_over_release_and_close() {
    let out = chat(
        &[],
        b"/takeover\nhello?\n/release\n/takeover\n/close\n/quit\n",
    );
    assert!(out.contains("an agent's takeover: mode human"), "{out}");
    assert!(out.contains("mode human: the bot stays silent"), "{out}");
    assert!(out.contains("an agent's release: mode bot"), "{out}");
    assert!(out.contains("hook conversation.resumed"), "{out}");
    assert!(out.contains("bot> I'm back"), "the bot_back text: {out}");
    assert!(out.contains("an agent's close: mode bot"), "{out}");
    assert!(out.contains("hook conversation.closed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_with_an_embedder_runs_the_semantic_stage_as_the_server_does() {
    let embeddings = crate::standin::Embeddings::start().await;
    let url = embeddings.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        chat(
            &["--embedder", &url, "--embedder-model", "concepts"],
            b"has my parcel been dispatched yet?\n/quit\n",
        )
    })
    .await
    .unwrap();
    assert!(out.contains("semantic stage on: concepts"), "{out}");
    assert!(
        out.contains("classified `order_status` by semantic"),
        "{out}"
    );
    assert!(embeddings.texts_seen() > 20, "the examples were embedded");

    // An embedder that fails at start is said plainly, and the chat does not start.
    embeddings.set_mode(crate::standin::EmbeddingsMode::Error);
    let output = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["chat", "flows", "--embedder", &embeddings.url])
        .args(["--embedder-model", "concepts"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(err.contains("embedding the examples failed"), "{err}");
}

#[test]
fn eval_reports_each_language_of_the_multilingual_set() {
    let data = "tests/fixtures/classify/shop_multilingual.jsonl";
    let (code, out, err) = tandem(&["eval", "--data", data, "--json"]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let languages = report["by_language"].as_object().unwrap();
    assert_eq!(
        languages.keys().map(String::as_str).collect::<Vec<_>>(),
        ["en", "es", "pt"]
    );
    for (language, scores) in languages {
        assert_eq!(scores["messages"], 24, "{language}");
        assert_eq!(scores["in_scope"], 20, "{language}");
    }
    // The shipped flows' examples are English: the lexical model reads English far better
    // than Portuguese or Spanish (what a multilingual semantic stage is for).
    let accuracy = |l: &str| languages[l]["in_scope_accuracy"].as_f64().unwrap();
    assert!(
        accuracy("en") > accuracy("pt") && accuracy("en") > accuracy("es"),
        "{report}"
    );
    let (code, text, err) = tandem(&["eval", "--data", data]);
    assert_eq!(code, 0, "{err}");
    for language in ["en", "es", "pt"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(language) && l.contains("24 messages")),
            "{text}"
        );
    }
}

#[test]
fn eval_reports_the_local_model_on_labelled_data_as_json() {
    let (code, out, err) = tandem(&[
        "eval",
        "--data",
        "tests/fixtures/classify/shop_messages.jsonl",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "in_scope_accuracy",
        "macro_f1",
        "oos_precision",
        "oos_recall",
        "local_precision",
        "local_coverage",
        "p50_us",
        "p99_us",
        "llm_calls",
    ] {
        assert!(report[key].is_number(), "{key} in {report}");
    }
    assert_eq!(report["messages"], 10);
    assert_eq!(report["in_scope"], 8);
    assert_eq!(
        report["intents"], 6,
        "trained on the shipped flows' examples"
    );
    let shares = report["stage_share"].as_object().unwrap();
    let total: f64 = shares.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-9, "{shares:?}");
    // Few examples per flow, yet most of these unseen phrasings land on the right flow.
    assert!(
        report["in_scope_accuracy"].as_f64().unwrap() >= 0.6,
        "{report}"
    );

    // Per label and per confusion, the same decisions: every wrong decision is one confusion.
    let labels = report["labels"].as_array().unwrap();
    let support: u64 = labels.iter().map(|l| l["support"].as_u64().unwrap()).sum();
    assert_eq!(support, 10, "{labels:?}");
    let f1s: Vec<f64> = labels.iter().map(|l| l["f1"].as_f64().unwrap()).collect();
    assert!(
        f1s.windows(2).all(|w| w[0] <= w[1]),
        "hardest first: {f1s:?}"
    );
    let mean = f1s.iter().sum::<f64>() / f1s.len() as f64;
    assert!((mean - report["macro_f1"].as_f64().unwrap()).abs() < 1e-9);
    let confusions = report["confusions"].as_array().unwrap();
    let wrong: u64 = confusions
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    let missed: f64 = labels
        .iter()
        .map(|l| l["support"].as_f64().unwrap() * (1.0 - l["recall"].as_f64().unwrap()))
        .sum();
    assert_eq!(wrong, missed.round() as u64, "{confusions:?}");
    assert!(
        wrong > 0,
        "the fixture has messages the model leaves: {report}"
    );
    for c in confusions {
        assert_ne!(c["expected"], c["decided"], "{c}");
        let example = c["example"].as_str().unwrap();
        assert!(
            std::fs::read_to_string("tests/fixtures/classify/shop_messages.jsonl")
                .unwrap()
                .contains(example),
            "{c}"
        );
    }

    // --sweep: the trade-off by threshold; at the default threshold it is the report.
    let (code, out, err) = tandem(&[
        "eval",
        "--data",
        "tests/fixtures/classify/shop_messages.jsonl",
        "--json",
        "--sweep",
    ]);
    assert_eq!(code, 0, "{err}");
    let swept: serde_json::Value = serde_json::from_str(&out).unwrap();
    let points = swept["sweep"].as_array().unwrap();
    assert_eq!(points.len(), 9);
    let coverage: Vec<f64> = points
        .iter()
        .map(|p| p["local_coverage"].as_f64().unwrap())
        .collect();
    assert!(
        coverage.windows(2).all(|w| w[0] >= w[1]),
        "a higher threshold never answers more: {coverage:?}"
    );
    let default = points.iter().find(|p| p["threshold"] == 0.8).unwrap();
    for key in ["local_coverage", "local_precision", "oos_recall"] {
        assert_eq!(default[key], swept[key], "{key}");
    }
    let (code, out, _) = tandem(&[
        "eval",
        "--data",
        "tests/fixtures/classify/shop_messages.jsonl",
        "--sweep",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("hardest labels"), "{out}");
    assert!(out.contains("local stage by threshold"), "{out}");

    let (code, _, err) = tandem(&["eval", "--data", "Cargo.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("line 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_with_the_llm_asks_it_about_what_the_local_model_leaves() {
    let llm = crate::standin::llm().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.jsonl");
    write(
        dir.path(),
        "data.jsonl",
        concat!(
            "{\"text\": \"o vaso chegou partido\", \"intent\": \"returns\"}\n",
            "{\"text\": \"qwxz blorp\", \"intent\": \"oos\"}\n",
            "{\"text\": \"what time do you open tomorrow\", \"intent\": \"hours\"}\n",
        ),
    );
    let data = data.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(["eval", "--data", &data, "--llm", "--json"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("TANDEM_FLOWS")
            .env("TANDEM_LLM_BASE_URL", llm)
            .env("TANDEM_LLM_MODEL", "test-model")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let calls = report["llm_calls"].as_u64().unwrap();
    assert!(
        calls >= 2,
        "the Portuguese return and the nonsense go to the LLM: {report}"
    );
    let shares = &report["stage_share"];
    let llm_share = shares["llm"].as_f64().unwrap();
    assert!((llm_share - calls as f64 / 3.0).abs() < 1e-9, "{report}");
    // The stand-in knows "partido" is a return and calls everything else out of scope, so
    // the opening-hours question, if the local model left it, is lost.
    let expected = if calls == 3 { 0.5 } else { 1.0 };
    assert_eq!(report["in_scope_accuracy"], expected, "{report}");
    assert_eq!(
        report["cascade_accuracy"], expected,
        "what the customers got: {report}"
    );
    // The LLM is right on the return and the nonsense, wrong on the hours when it gets them.
    let llm_right = if calls == 3 { 2.0 / 3.0 } else { 1.0 };
    let llm_precision = report["stage_precision"]["llm"].as_f64().unwrap();
    assert!((llm_precision - llm_right).abs() < 1e-9, "{report}");
    assert_eq!(report["oos_recall"], 1.0, "{report}");
    // What the LLM stage did: the format it used, failures and rejected answers (none here).
    assert_eq!(report["llm"]["json_mode"], false, "{report}");
    assert_eq!(
        report["llm"]["rejections"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["llm"]["failures"], serde_json::json!({}), "{report}");

    let (code, _, err) = tandem(&[
        "eval",
        "--data",
        "tests/fixtures/classify/shop_messages.jsonl",
        "--llm",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("TANDEM_LLM_BASE_URL"), "{err}");
}
