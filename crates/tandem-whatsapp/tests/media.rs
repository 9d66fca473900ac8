//! Media downloads against a loopback stand-in of the Graph API and of Meta's media host:
//! the two authenticated steps, an unknown id, a refused download, an error page, files
//! larger than allowed (announced or not), and ids that are not ids.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tandem_whatsapp::{GraphClient, MediaError, SendError};

const TOKEN: &str = "business-token";

/// One request the stand-in got: path, authorization, user agent.
type Seen = (String, Option<String>, Option<String>);

#[derive(Clone)]
struct Host {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn note(host: &Host, path: String, headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let auth = header("authorization");
    host.seen
        .lock()
        .unwrap()
        .push((path, auth.clone(), header("user-agent")));
    auth
}

/// `GET /v23.0/{media-id}`: the media's short-lived URL, as the Cloud API gives it.
async fn lookup(State(host): State<Host>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    note(&host, format!("lookup/{id}"), &headers);
    let (size, mime) = match id.as_str() {
        "1001" | "1003" | "1004" => (20, "audio/ogg; codecs=opus"),
        // Announces more than any caller takes.
        "1002" => (50_000_000, "audio/ogg"),
        // Announces nothing, sends a large file.
        "1005" => (0, "audio/mpeg"),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": "Unsupported get request. Object with ID does not exist", "type": "GraphMethodException", "code": 100, "fbtrace_id": "Ab"}})),
            )
                .into_response();
        }
    };
    let mut body = json!({
        "messaging_product": "whatsapp",
        "url": format!("{}/media/{id}", host.base),
        "mime_type": mime,
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "id": id,
    });
    if size > 0 {
        body["file_size"] = size.into();
    }
    axum::Json(body).into_response()
}

/// The media host: the file for the business's token, as Meta serves it.
async fn file(State(host): State<Host>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let auth = note(&host, format!("media/{id}"), &headers);
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    match id.as_str() {
        "1003" => (
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html>Unsupported browser</html>",
        )
            .into_response(),
        "1004" => (StatusCode::NOT_FOUND, "").into_response(),
        "1005" => (
            StatusCode::OK,
            [("content-type", "audio/mpeg")],
            vec![7u8; 300_000],
        )
            .into_response(),
        _ => (
            StatusCode::OK,
            [("content-type", "audio/ogg")],
            b"OggS voice note bytes".to_vec(),
        )
            .into_response(),
    }
}

async fn stand_in() -> Host {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = Host {
        base: format!("http://{}", listener.local_addr().unwrap()),
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/v23.0/{id}", get(lookup))
        .route("/media/{id}", get(file))
        .with_state(host.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    host
}

fn client(host: &Host, token: &str) -> GraphClient {
    GraphClient::new(
        &format!("{}/v23.0", host.base),
        token.to_owned().into(),
        Duration::from_secs(5),
    )
    .unwrap()
}

#[tokio::test]
async fn a_voice_note_is_fetched_in_two_authenticated_steps() {
    let host = stand_in().await;
    let media = client(&host, TOKEN)
        .download_media("1001", 1_000_000)
        .await
        .unwrap();
    assert_eq!(media.bytes, b"OggS voice note bytes");
    assert_eq!(media.mime_type.as_deref(), Some("audio/ogg; codecs=opus"));
    let seen = host.seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["lookup/1001", "media/1001"]
    );
    for (path, auth, agent) in &seen {
        assert_eq!(auth.as_deref(), Some("Bearer business-token"), "{path}");
        assert!(
            agent.as_deref().is_some_and(|a| a.starts_with("tandem/")),
            "{path}: Meta's media host refuses requests without a User-Agent"
        );
    }
}

#[tokio::test]
async fn failures_say_which_step_failed() {
    let host = stand_in().await;
    let graph = client(&host, TOKEN);
    let unknown = graph.download_media("9999", 1_000_000).await.unwrap_err();
    assert!(
        matches!(&unknown, MediaError::Lookup(SendError::Graph { error, .. }) if error.code == 100),
        "{unknown}"
    );
    assert_eq!(unknown.label(), "lookup");

    let page = graph.download_media("1003", 1_000_000).await.unwrap_err();
    assert!(
        matches!(&page, MediaError::Download(m) if m.contains("web page")),
        "{page}"
    );
    let gone = graph.download_media("1004", 1_000_000).await.unwrap_err();
    assert!(
        matches!(&gone, MediaError::Download(m) if m.contains("404")),
        "{gone}"
    );
    let refused = client(&host, "another-business")
        .download_media("1001", 1_000_000)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, MediaError::Download(m) if m.contains("401")),
        "{refused}"
    );
}

#[tokio::test]
async fn files_larger_than_allowed_are_refused_before_or_while_reading() {
    let host = stand_in().await;
    let graph = client(&host, TOKEN);
    let announced = graph.download_media("1002", 1_000_000).await.unwrap_err();
    assert!(matches!(announced, MediaError::TooLarge { max: 1_000_000 }));
    assert!(
        !host
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.0 == "media/1002"),
        "an announced size over the limit is not downloaded"
    );
    let unannounced = graph.download_media("1005", 100_000).await.unwrap_err();
    assert!(matches!(unannounced, MediaError::TooLarge { max: 100_000 }));
    assert_eq!(
        graph
            .download_media("1005", 1_000_000)
            .await
            .unwrap()
            .bytes
            .len(),
        300_000
    );
}

#[tokio::test]
async fn an_id_that_is_not_an_id_never_reaches_the_graph_api() {
    let host = stand_in().await;
    let graph = client(&host, TOKEN);
    for id in [
        "",
        "../me/accounts",
        "1001?fields=x",
        "a/b",
        &"9".repeat(200),
    ] {
        let error = graph.download_media(id, 1_000_000).await.unwrap_err();
        assert!(matches!(error, MediaError::BadId(_)), "{id:?}: {error}");
    }
    assert!(host.seen.lock().unwrap().is_empty());
}
