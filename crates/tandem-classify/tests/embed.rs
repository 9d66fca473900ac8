//! The embeddings client against a loopback stand-in that speaks OpenAI's `/v1/embeddings`
//! wire format: good answers (also shuffled, and without `usage` as some servers send them),
//! batches, 500 retried, 400 not, garbage, wrong counts and dimensions, a slow endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tandem_classify::embed::{EmbedConfig, EmbedError, Embedder, EndpointEmbedder};

#[derive(Clone, Default)]
struct StandIn {
    /// Scripted answers: status, body, delay. When empty: a good answer.
    script: Arc<Mutex<VecDeque<(u16, Value, Duration)>>>,
    requests: Arc<Mutex<Vec<Value>>>,
}

/// A good answer: text i gets the vector (i + 1, 0, 0) scaled by its length, listed in
/// reverse order with its `index`, and no `usage`.
fn good(body: &Value) -> Value {
    let inputs = body["input"].as_array().cloned().unwrap_or_default();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, text)| {
            let len = text.as_str().unwrap_or_default().len() as f64;
            json!({"object": "embedding", "index": i, "embedding": [(i + 1) as f64 * len, 0.0, len]})
        })
        .collect();
    json!({"object": "list", "model": "test-embed", "data": data})
}

async fn embeddings(
    State(s): State<StandIn>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    s.requests.lock().unwrap().push(body.clone());
    let next = s.script.lock().unwrap().pop_front();
    let (status, answer, delay) = next.unwrap_or_else(|| (200, good(&body), Duration::ZERO));
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), Json(answer))
}

async fn start() -> (StandIn, String) {
    let state = StandIn::default();
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embeddings))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, url)
}

fn embedder(url: &str, tweak: impl FnOnce(&mut EmbedConfig)) -> EndpointEmbedder {
    let mut config = EmbedConfig::new(url, "test-embed");
    config.timeout = Duration::from_millis(500);
    tweak(&mut config);
    EndpointEmbedder::new(config)
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text number {i}")).collect()
}

#[tokio::test]
async fn vectors_come_back_in_order_normalised_and_in_batches() {
    let (standin, url) = start().await;
    let e = embedder(&url, |c| c.batch = 2);
    let vectors = e.embed(&texts(5)).await.unwrap();
    assert_eq!(vectors.len(), 5);
    for (i, v) in vectors.iter().enumerate() {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-6, "vector {i} is a unit vector");
        // Text i was (k, 0, 1) up to scale, k its position in its batch plus one.
        let k = (i % 2 + 1) as f32;
        let expected = k / (k * k + 1.0).sqrt();
        assert!((v[0] - expected).abs() < 1e-6, "vector {i} is text {i}'s");
    }
    let requests = standin.requests.lock().unwrap().clone();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| r["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(requests[0]["model"], "test-embed");
    assert_eq!(requests[0]["encoding_format"], "float");
    assert_eq!(e.model(), "test-embed");
}

#[tokio::test]
async fn server_errors_are_retried_and_refusals_are_not() {
    let (standin, url) = start().await;
    let e = embedder(&url, |c| c.retries = 1);
    let error = |code: u16| json!({"error": {"message": "no", "type": "server_error", "param": null, "code": code.to_string()}});
    standin
        .script
        .lock()
        .unwrap()
        .push_back((500, error(500), Duration::ZERO));
    assert_eq!(e.embed(&texts(1)).await.unwrap().len(), 1);
    assert_eq!(standin.requests.lock().unwrap().len(), 2, "one retry");
    standin
        .script
        .lock()
        .unwrap()
        .push_back((400, error(400), Duration::ZERO));
    let failed = e.embed(&texts(1)).await.unwrap_err();
    assert!(matches!(failed, EmbedError::Endpoint(_)), "{failed:?}");
    assert_eq!(
        standin.requests.lock().unwrap().len(),
        3,
        "a 400 is asked once"
    );
}

#[tokio::test]
async fn garbage_wrong_counts_and_mixed_dimensions_are_refused() {
    let (standin, url) = start().await;
    let e = embedder(&url, |_| {});
    let cases = [
        json!({"unexpected": true}),
        json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 1, "embedding": [1.0]}]}),
        json!({"data": [{"index": 0, "embedding": [0.0, 0.0]}, {"index": 1, "embedding": [1.0, 0.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 0, "embedding": [1.0, 0.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1.0, 0.0]}, {"index": 7, "embedding": [1.0, 0.0]}]}),
        json!({"data": [{"index": 0, "embedding": ["a", "b"]}, {"index": 1, "embedding": [1.0, 0.0]}]}),
    ];
    for case in cases {
        standin
            .script
            .lock()
            .unwrap()
            .push_back((200, case.clone(), Duration::ZERO));
        let failed = e.embed(&texts(2)).await.unwrap_err();
        assert!(
            matches!(failed, EmbedError::Malformed(_)),
            "{case} gave {failed:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_endpoint_times_out_after_the_retries() {
    let (standin, url) = start().await;
    let e = embedder(&url, |c| {
        c.timeout = Duration::from_millis(100);
        c.retries = 1;
    });
    standin.script.lock().unwrap().extend([
        (200, json!({}), Duration::from_secs(2)),
        (200, json!({}), Duration::from_secs(2)),
    ]);
    let failed = e.embed(&texts(1)).await.unwrap_err();
    assert_eq!(failed, EmbedError::Timeout(Duration::from_millis(100)));
    assert_eq!(failed.label(), "timeout");
    assert_eq!(standin.requests.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_endpoint_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let e = embedder(&url, |c| c.retries = 0);
    let failed = e.embed(&texts(1)).await.unwrap_err();
    assert!(matches!(failed, EmbedError::Endpoint(_)), "{failed:?}");
}
