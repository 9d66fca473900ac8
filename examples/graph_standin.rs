//! A stand-in of the WhatsApp Cloud API that prints every request the bot makes and answers
//! like WhatsApp, for trying Tandem without a Meta account:
//!
//!   cargo run --example graph_standin                         # listens on 127.0.0.1:9999
//!   TANDEM_GRAPH_URL=http://127.0.0.1:9999/v23.0 cargo run -- serve --dev
//!   cargo run -- replay tests/fixtures/whatsapp/inbound_text.json
//!
//! It also prints handoff hooks POSTed to `/hook` (set `TANDEM_HOOK_URL` to
//! `http://127.0.0.1:9999/hook`) with their signature headers, and answers 200.
#![allow(clippy::print_stdout, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::Path;
use serde_json::{Value, json};

static SENT: AtomicU64 = AtomicU64::new(0);

async fn messages(
    Path((version, pnid)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let pretty = serde_json::to_string_pretty(&body).unwrap_or_default();
    println!("POST /{version}/{pnid}/messages\n{pretty}\n");
    if body.get("status").and_then(Value::as_str) == Some("read") {
        return Json(json!({"success": true}));
    }
    let n = SENT.fetch_add(1, Ordering::Relaxed) + 1;
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": body["to"], "wa_id": body["to"]}],
        "messages": [{"id": format!("wamid.STANDIN{n:06}")}],
    }))
}

/// Prints a handoff hook with the headers a receiver checks.
async fn hook(headers: axum::http::HeaderMap, Json(body): Json<Value>) -> axum::http::StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    let pretty = serde_json::to_string_pretty(&body).unwrap_or_default();
    println!(
        "HOOK {} (timestamp {}, {}, idempotency key {})\n{pretty}\n",
        header("x-tandem-event"),
        header("x-tandem-timestamp"),
        header("x-tandem-signature"),
        header("idempotency-key"),
    );
    axum::http::StatusCode::OK
}

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("binding the address");
    println!("Graph API stand-in on http://{addr}/v23.0 — set TANDEM_GRAPH_URL to that\n");
    let app = axum::Router::new()
        .route("/{version}/{pnid}/messages", axum::routing::post(messages))
        .route("/hook", axum::routing::post(hook));
    axum::serve(listener, app).await.expect("serving");
}
