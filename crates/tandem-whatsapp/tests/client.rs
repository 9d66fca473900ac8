//! The Graph API client against a local stand-in that speaks the Cloud API's wire protocol:
//! the recorded success and error bodies, a proxy error page, garbage, and a slow answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tandem_domain::{MessageId, Phone, PhoneNumberId};
use tandem_whatsapp::{
    GraphClient, OutboundContent, OutboundMessage, Recipient, Remedy, SendError,
};

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../tests/fixtures/whatsapp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Answers by phone number id, the way the real API would in each situation.
async fn messages(
    State(seen): State<Seen>,
    Path((_, pnid)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    seen.lock().unwrap().push((
        pnid.clone(),
        auth,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    ));
    let json = |status: StatusCode, body: String| {
        (status, [("content-type", "application/json")], body).into_response()
    };
    match pnid.as_str() {
        "1001" => json(StatusCode::OK, fixture("send_response_ok.json")),
        "1002" => json(StatusCode::BAD_REQUEST, fixture("send_error_131047.json")),
        "1003" => json(StatusCode::BAD_REQUEST, fixture("send_error_130429.json")),
        "1004" => (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response(),
        "1005" => json(StatusCode::OK, "{\"messaging_product\":".into()),
        "1006" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json(StatusCode::OK, fixture("send_response_ok.json"))
        }
        "1007" => json(StatusCode::OK, fixture("send_response_template_ok.json")),
        "1008" => json(StatusCode::OK, "{\"success\":true}".into()),
        _ => json(
            StatusCode::NOT_FOUND,
            "{\"error\":{\"message\":\"Unsupported post request\",\"code\":100}}".into(),
        ),
    }
}

async fn stand_in() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/{version}/{pnid}/messages", post(messages))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v23.0"), seen)
}

fn client(base: &str) -> GraphClient {
    GraphClient::new(
        base,
        "test-token".to_owned().into(),
        Duration::from_millis(500),
    )
    .unwrap()
}

fn text(body: &str) -> OutboundMessage {
    OutboundMessage {
        to: Recipient::Phone(Phone::parse("15550002222").unwrap()),
        content: OutboundContent::Text {
            body: body.into(),
            preview_url: false,
        },
        reply_to: None,
        callback_data: Some("engine=bot".into()),
    }
}

fn pnid(id: &str) -> PhoneNumberId {
    PhoneNumberId::parse(id).unwrap()
}

#[tokio::test]
async fn a_send_posts_the_wire_body_with_the_token_and_returns_the_wamid() {
    let (base, seen) = stand_in().await;
    let sent = client(&base)
        .send(&pnid("1001"), &text("hello"))
        .await
        .unwrap();
    assert_eq!(
        sent.message_id.as_str(),
        "wamid.HBgLMTU1NTAwMDIyMjIFQIAEhgU+KwrseNEHdyNcgAA=="
    );
    let (path_pnid, auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(path_pnid, "1001");
    assert_eq!(auth, "Bearer test-token");
    assert_eq!(body, text("hello").to_wire());
    let template = OutboundMessage {
        content: OutboundContent::Template {
            name: "order_follow_up".into(),
            language: "en_US".into(),
            body_parameters: vec![],
        },
        ..text("x")
    };
    let sent = client(&base).send(&pnid("1007"), &template).await.unwrap();
    assert_eq!(sent.status.as_deref(), Some("accepted"));
    let id = MessageId::parse("wamid.in").unwrap();
    client(&base)
        .mark_read(&pnid("1008"), &id, true)
        .await
        .unwrap();
}

#[tokio::test]
async fn every_failure_is_classified() {
    let (base, seen) = stand_in().await;
    let c = client(&base);

    let closed = c.send(&pnid("1002"), &text("late")).await.unwrap_err();
    assert!(closed.window_closed(), "{closed}");
    assert!(!closed.is_retryable() && !closed.may_have_sent());
    let SendError::Graph { status: 400, error } = &closed else {
        panic!("{closed:?}")
    };
    assert_eq!(error.code, 131_047);
    assert!(error.details.as_deref().unwrap().contains("24 hours"));

    let throttled = c.send(&pnid("1003"), &text("busy")).await.unwrap_err();
    assert!(
        matches!(&throttled, SendError::Graph { error, .. } if error.remedy() == Remedy::RetryLater)
    );
    assert!(throttled.is_retryable());

    let proxy = c.send(&pnid("1004"), &text("x")).await.unwrap_err();
    assert!(matches!(proxy, SendError::Http { status: 502 }));
    assert!(proxy.is_retryable());

    let garbage = c.send(&pnid("1005"), &text("x")).await.unwrap_err();
    assert!(matches!(garbage, SendError::BadResponse(_)));
    assert!(
        garbage.may_have_sent() && !garbage.is_retryable(),
        "retrying could send twice"
    );

    let slow = c.send(&pnid("1006"), &text("x")).await.unwrap_err();
    assert!(matches!(slow, SendError::Timeout), "{slow:?}");
    assert!(slow.may_have_sent() && !slow.is_retryable());

    let unknown = c.send(&pnid("9999"), &text("x")).await.unwrap_err();
    assert!(
        matches!(&unknown, SendError::Graph { status: 404, error } if error.remedy() == Remedy::Drop)
    );

    // An invalid message never reaches the wire.
    let before = seen.lock().unwrap().len();
    let invalid = c
        .send(&pnid("1001"), &text(&"x".repeat(4097)))
        .await
        .unwrap_err();
    assert!(matches!(invalid, SendError::Invalid(_)));
    assert_eq!(seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn an_unreachable_api_is_a_retryable_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = client(&format!("http://127.0.0.1:{port}/v23.0"))
        .send(&pnid("1001"), &text("x"))
        .await
        .unwrap_err();
    assert!(matches!(error, SendError::Network(_)), "{error:?}");
    assert!(error.is_retryable() && !error.may_have_sent());
}
