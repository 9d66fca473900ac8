//! The LLM stage against a loopback stand-in that speaks OpenAI's chat/completions wire
//! format: good answers, unknown intents, malformed JSON, 429 and 500, slow answers.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tandem_classify::llm::{IntentInfo, Line, LlmClassifier, LlmConfig, LlmError};

#[derive(Clone, Default)]
struct StandIn {
    /// Scripted answers: status, body, delay. When empty: a good answer.
    script: Arc<Mutex<VecDeque<(u16, Value, Duration)>>>,
    requests: Arc<Mutex<Vec<Value>>>,
}

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_764_000_000, "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
    })
}

const GOOD: &str = r#"{"intent": "returns", "confidence": 0.91, "language": "PT", "urgency": "normal", "sentiment": "negative", "needs_human": false}"#;

async fn chat(State(s): State<StandIn>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    s.requests.lock().unwrap().push(body);
    let next = s.script.lock().unwrap().pop_front();
    let (status, answer, delay) = next.unwrap_or((200, completion(GOOD), Duration::ZERO));
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), Json(answer))
}

async fn start() -> (StandIn, String) {
    let state = StandIn::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, url)
}

fn intents() -> Vec<IntentInfo> {
    vec![
        IntentInfo {
            id: "order_status".into(),
            description: Some("Where an order is".into()),
            examples: vec!["where is my order".into()],
        },
        IntentInfo {
            id: "returns".into(),
            description: Some("Return an item".into()),
            examples: vec!["i want a refund".into()],
        },
    ]
}

fn classifier(url: &str, tweak: impl FnOnce(&mut LlmConfig)) -> LlmClassifier {
    let mut config = LlmConfig::new(url, "test-model");
    config.api_key = secrecy::SecretString::from("sk-test");
    config.timeout = Duration::from_millis(500);
    tweak(&mut config);
    let prompt = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../prompts/classify.j2"
    ))
    .unwrap();
    LlmClassifier::new(config, prompt).unwrap()
}

fn error(code: u16, message: &str) -> Value {
    json!({"error": {"message": message, "type": "server_error", "param": null, "code": code.to_string()}})
}

#[tokio::test]
async fn a_good_answer_is_a_validated_triage_record_and_the_request_is_well_formed() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |_| {});
    let transcript = vec![Line {
        role: "bot".into(),
        text: "How can I help?".into(),
    }];
    let triage = llm
        .triage(&intents(), &transcript, "o vaso chegou partido")
        .await
        .unwrap();
    assert_eq!(triage.intent, "returns");
    assert_eq!(triage.language, "pt");
    assert_eq!(triage.sentiment, tandem_domain::Sentiment::Negative);
    let request = standin.requests.lock().unwrap()[0].clone();
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["max_tokens"], 256, "answers are bounded");
    assert_eq!(request["response_format"]["type"], "json_schema");
    assert_eq!(request["response_format"]["json_schema"]["name"], "triage");
    let system = request["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("- returns: Return an item; e.g. i want a refund"),
        "{system}"
    );
    assert!(system.contains("bot: How can I help?"), "{system}");
    assert_eq!(request["messages"][1]["content"], "o vaso chegou partido");
    // The same message, normalised, in the same context comes from the cache.
    llm.triage(&intents(), &transcript, "  O vaso chegou   PARTIDO ")
        .await
        .unwrap();
    assert_eq!(standin.requests.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_cached_answer_is_never_reused_in_another_context() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |_| {});
    let line = |text: &str| Line {
        role: "bot".into(),
        text: text.into(),
    };
    let asked_refund = vec![line("Do you want a refund?")];
    let asked_tracking = vec![line("Shall I track your order?")];
    llm.triage(&intents(), &asked_refund, "yes").await.unwrap();
    llm.triage(&intents(), &asked_refund, "Yes ").await.unwrap();
    assert_eq!(
        standin.requests.lock().unwrap().len(),
        1,
        "same context: cached"
    );
    // The same "yes" after another question is another question for the LLM.
    llm.triage(&intents(), &asked_tracking, "yes")
        .await
        .unwrap();
    assert_eq!(standin.requests.lock().unwrap().len(), 2);
    // After a flow reload that changed the intents, old answers are not reused.
    let mut reloaded = intents();
    reloaded.push(IntentInfo {
        id: "gift_cards".into(),
        description: None,
        examples: vec![],
    });
    llm.triage(&reloaded, &asked_refund, "yes").await.unwrap();
    assert_eq!(standin.requests.lock().unwrap().len(), 3);
    // A reload empties the cache even when the intents stayed the same.
    llm.clear_cache();
    llm.triage(&intents(), &asked_refund, "yes").await.unwrap();
    assert_eq!(standin.requests.lock().unwrap().len(), 4);
    // The cache is bounded: with room for one answer, the older one is evicted.
    let small = classifier(&url, |c| c.cache_size = 1);
    small.triage(&intents(), &[], "a").await.unwrap();
    small.triage(&intents(), &[], "b").await.unwrap();
    small.triage(&intents(), &[], "a").await.unwrap();
    assert_eq!(standin.requests.lock().unwrap().len(), 7);
}

#[test]
fn the_api_key_never_shows_in_debug_output() {
    let mut config = LlmConfig::new("http://127.0.0.1:1/v1", "m");
    config.api_key = secrecy::SecretString::from("sk-very-secret");
    let shown = format!("{config:?}");
    assert!(!shown.contains("sk-very-secret"), "{shown}");
    let prompt = "{{ intents }}".to_owned();
    let llm = LlmClassifier::new(config, prompt).unwrap();
    assert!(!format!("{llm:?}").contains("sk-very-secret"));
}

#[tokio::test]
async fn a_refused_key_or_model_is_asked_once() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |c| c.retries = 3);
    for (status, kind) in [(401, "invalid_api_key"), (404, "model_not_found")] {
        let before = standin.requests.lock().unwrap().len();
        standin.script.lock().unwrap().push_back((
            status,
            json!({"error": {"message": "refused", "type": kind, "param": null, "code": kind}}),
            Duration::ZERO,
        ));
        let failed = llm
            .triage(&intents(), &[], &format!("message {status}"))
            .await
            .unwrap_err();
        assert!(matches!(failed, LlmError::Endpoint(_)), "{failed:?}");
        assert_eq!(
            standin.requests.lock().unwrap().len(),
            before + 1,
            "{status} is asked once"
        );
    }
    assert!(!llm.uses_json_mode());
}

/// Like llama.cpp's server: `response_format: json_schema` is answered 500, JSON mode works.
#[tokio::test]
async fn a_server_that_refuses_json_schema_is_asked_in_json_mode_from_then_on() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |c| c.retries = 0);
    let refusal = || {
        (
            500,
            json!({"error": {"code": 500, "message": "Unsupported response_format", "type": "server_error"}}),
            Duration::ZERO,
        )
    };
    standin.script.lock().unwrap().push_back(refusal());
    let triage = llm.triage(&intents(), &[], "refund please").await.unwrap();
    assert_eq!(triage.intent, "returns");
    assert!(llm.uses_json_mode());
    llm.triage(&intents(), &[], "where is my order")
        .await
        .unwrap();
    let formats: Vec<Value> = standin
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["response_format"]["type"].clone())
        .collect();
    assert_eq!(
        formats,
        [
            json!("json_schema"),
            json!("json_object"),
            json!("json_object")
        ]
    );

    // A refusal that names the format switches to JSON mode even when the retry fails: its
    // failure (here a slow answer) is what the caller hears.
    let (standin, url) = start().await;
    let llm = classifier(&url, |c| {
        c.retries = 0;
        c.timeout = Duration::from_millis(200);
    });
    standin
        .script
        .lock()
        .unwrap()
        .extend([refusal(), (200, completion(GOOD), Duration::from_secs(2))]);
    let failed = llm
        .triage(&intents(), &[], "refund please")
        .await
        .unwrap_err();
    assert_eq!(failed, LlmError::Timeout(Duration::from_millis(200)));
    assert!(llm.uses_json_mode());

    // When JSON mode fails too after a refusal that does not name the format, the first
    // error is the answer and the schema is kept.
    let (standin, url) = start().await;
    let llm = classifier(&url, |c| c.retries = 0);
    let vague = || (500, error(500, "The server had an error"), Duration::ZERO);
    standin.script.lock().unwrap().extend([vague(), vague()]);
    let failed = llm
        .triage(&intents(), &[], "refund please")
        .await
        .unwrap_err();
    assert!(
        matches!(failed, LlmError::Endpoint(ref m) if m.contains("server had an error")),
        "{failed:?}"
    );
    assert!(!llm.uses_json_mode());
    assert_eq!(standin.requests.lock().unwrap().len(), 2);
}

/// Answers that fail validation are counted by reason, the first of each kept as an example.
#[tokio::test]
async fn rejected_answers_are_counted_by_reason_with_an_example() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |_| {});
    standin.script.lock().unwrap().extend([
        (
            200,
            completion("Sure! The intent is returns."),
            Duration::ZERO,
        ),
        (200, completion("{\"intent\": \"returns\"}"), Duration::ZERO),
        (200, completion("I cannot answer that."), Duration::ZERO),
        (200, completion(GOOD), Duration::ZERO),
    ]);
    assert!(llm.triage(&intents(), &[], "first").await.is_err());
    assert!(llm.triage(&intents(), &[], "second").await.is_ok());
    let rejections = llm.rejections();
    let summary: Vec<(&str, u64)> = rejections.iter().map(|r| (r.reason, r.count)).collect();
    assert_eq!(summary, [("missing_field", 1), ("not_json", 2)]);
    let not_json = rejections.iter().find(|r| r.reason == "not_json").unwrap();
    assert_eq!(not_json.example, "Sure! The intent is returns.");
    assert!(
        not_json.problem.starts_with("expected value"),
        "{}",
        not_json.problem
    );
    let missing = rejections
        .iter()
        .find(|r| r.reason == "missing_field")
        .unwrap();
    assert!(
        missing.problem.contains("confidence"),
        "{}",
        missing.problem
    );
}

#[tokio::test]
async fn an_unknown_intent_is_out_of_scope_and_json_mode_is_used_when_asked() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |c| c.structured_output = false);
    standin.script.lock().unwrap().push_back((
        200,
        completion(&GOOD.replace("returns", "weather")),
        Duration::ZERO,
    ));
    let triage = llm.triage(&intents(), &[], "will it rain").await.unwrap();
    assert_eq!(triage.intent, "oos");
    assert_eq!(
        standin.requests.lock().unwrap()[0]["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn malformed_json_gets_one_repair_attempt_then_fails() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |_| {});
    standin.script.lock().unwrap().push_back((
        200,
        completion("Sure! The intent is returns."),
        Duration::ZERO,
    ));
    let repaired = llm.triage(&intents(), &[], "refund please").await.unwrap();
    assert_eq!(repaired.intent, "returns");
    let requests = standin.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert!(
        requests[1]["messages"][2]["content"]
            .as_str()
            .unwrap()
            .contains("was not valid")
    );

    standin.script.lock().unwrap().extend([
        (200, completion("{\"intent\": \"returns\"}"), Duration::ZERO),
        (
            200,
            completion("```json\n{\"intent\": 3}\n```"),
            Duration::ZERO,
        ),
    ]);
    let failed = llm
        .triage(&intents(), &[], "another message")
        .await
        .unwrap_err();
    assert!(matches!(failed, LlmError::Malformed(_)), "{failed:?}");
    // A body that is not a chat completion at all.
    standin
        .script
        .lock()
        .unwrap()
        .push_back((200, json!({"unexpected": true}), Duration::ZERO));
    let garbage = llm
        .triage(&intents(), &[], "third message")
        .await
        .unwrap_err();
    assert!(matches!(garbage, LlmError::Malformed(_)), "{garbage:?}");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_a_bounded_number_of_times() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |c| c.retries = 1);
    standin.script.lock().unwrap().push_back((
        429,
        error(429, "Rate limit reached"),
        Duration::ZERO,
    ));
    assert_eq!(
        llm.triage(&intents(), &[], "refund").await.unwrap().intent,
        "returns"
    );
    assert_eq!(standin.requests.lock().unwrap().len(), 2);

    standin.script.lock().unwrap().extend([
        (500, error(500, "The server had an error"), Duration::ZERO),
        (500, error(500, "The server had an error"), Duration::ZERO),
        (500, error(500, "The server had an error"), Duration::ZERO),
        (500, error(500, "The server had an error"), Duration::ZERO),
    ]);
    let failed = llm
        .triage(&intents(), &[], "something else")
        .await
        .unwrap_err();
    assert!(matches!(failed, LlmError::Endpoint(_)), "{failed:?}");
    assert_eq!(
        standin.requests.lock().unwrap().len(),
        6,
        "one try and one retry, then the same in JSON mode (a server refusing the schema)"
    );
    assert!(!llm.uses_json_mode());
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_repeated_failures_open_the_breaker() {
    let (standin, url) = start().await;
    let llm = classifier(&url, |c| {
        c.retries = 0;
        c.timeout = Duration::from_millis(150);
        c.breaker_failures = 2;
        c.breaker_cooldown = Duration::from_secs(60);
    });
    // Far slower than the timeout, so a busy machine cannot blur the two.
    let slow = (200, completion(GOOD), Duration::from_secs(10));
    standin.script.lock().unwrap().extend([slow.clone(), slow]);
    let started = std::time::Instant::now();
    assert!(matches!(
        llm.triage(&intents(), &[], "a").await,
        Err(LlmError::Timeout(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout bounds the wait: {:?}",
        started.elapsed()
    );
    assert!(matches!(
        llm.triage(&intents(), &[], "b").await,
        Err(LlmError::Timeout(_))
    ));
    // Open: no call is made.
    let before = standin.requests.lock().unwrap().len();
    assert_eq!(
        llm.triage(&intents(), &[], "c").await,
        Err(LlmError::CircuitOpen)
    );
    assert_eq!(standin.requests.lock().unwrap().len(), before);
}

#[tokio::test]
async fn a_handoff_summary_is_plain_text_cut_to_three_lines_and_failures_are_errors() {
    let (standin, url) = start().await;
    let prompt = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../prompts/handoff_summary.j2"
    ))
    .unwrap();
    let without = classifier(&url, |_| {});
    let transcript = vec![
        Line {
            role: "customer".into(),
            text: "my order 10442 never came".into(),
        },
        Line {
            role: "bot".into(),
            text: "Passing you to a person".into(),
        },
    ];
    assert!(matches!(
        without.summarize("customer_request", &transcript).await,
        Err(LlmError::Prompt(_))
    ));
    let llm = classifier(&url, |_| {})
        .with_summary_prompt(prompt)
        .unwrap();
    standin.script.lock().unwrap().push_back((
        200,
        completion("Order 10442 has not arrived.\nThe bot handed over.\nUpset.\nA fourth line."),
        Duration::ZERO,
    ));
    let summary = llm
        .summarize("customer_request", &transcript)
        .await
        .unwrap();
    assert_eq!(
        summary,
        "Order 10442 has not arrived.\nThe bot handed over.\nUpset."
    );
    let request = standin.requests.lock().unwrap().last().cloned().unwrap();
    let system = request["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("customer: my order 10442 never came"),
        "{system}"
    );
    assert!(system.contains("customer_request"), "{system}");
    assert!(
        request.get("response_format").is_none(),
        "plain text is asked for"
    );
    // A failing endpoint (after its retry) is an error, never a made-up summary.
    for _ in 0..2 {
        standin
            .script
            .lock()
            .unwrap()
            .push_back((500, error(500, "boom"), Duration::ZERO));
    }
    assert!(
        llm.summarize("customer_request", &transcript)
            .await
            .is_err()
    );
    standin
        .script
        .lock()
        .unwrap()
        .push_back((200, completion("   "), Duration::ZERO));
    assert!(matches!(
        llm.summarize("customer_request", &transcript).await,
        Err(LlmError::Malformed(_))
    ));
}

#[tokio::test]
async fn slot_extraction_reads_a_value_or_says_there_is_none() {
    let (standin, url) = start().await;
    let prompt = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../prompts/extract_slot.j2"
    ))
    .unwrap();
    let llm = classifier(&url, |_| {})
        .with_extract_prompt(prompt)
        .unwrap();
    assert!(llm.extracts());
    let ask = |answer: &'static str| {
        let llm = &llm;
        async move {
            llm.extract(
                "What's your order number?",
                "text matching ^\\d{5}$",
                answer,
            )
            .await
        }
    };
    standin.script.lock().unwrap().push_back((
        200,
        completion(r#"{"value": "10442"}"#),
        Duration::ZERO,
    ));
    assert_eq!(
        ask("it's ten four four two").await.unwrap().as_deref(),
        Some("10442")
    );
    let request = standin.requests.lock().unwrap().last().cloned().unwrap();
    assert_eq!(request["messages"][1]["content"], "it's ten four four two");
    let system = request["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("What's your order number?"), "{system}");
    assert_eq!(request["response_format"]["type"], "json_schema");
    standin.script.lock().unwrap().push_back((
        200,
        completion(r#"{"value": null}"#),
        Duration::ZERO,
    ));
    assert_eq!(ask("no idea").await.unwrap(), None);
    standin
        .script
        .lock()
        .unwrap()
        .push_back((200, completion("sure! 10442"), Duration::ZERO));
    assert!(matches!(ask("x").await, Err(LlmError::Malformed(_))));
    let without = classifier(&url, |_| {});
    assert!(!without.extracts());
    assert!(matches!(
        without.extract("q", "a number", "x").await,
        Err(LlmError::Prompt(_))
    ));
}
