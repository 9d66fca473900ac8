//! The transcription client against a loopback stand-in that reads OpenAI's
//! `/v1/audio/transcriptions` multipart form as a real server does: good answers (and the
//! language hint), 500 retried,
//! 400 not, garbage, an answer without words, an endless text, a slow endpoint, no endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use tandem_classify::transcribe::{MAX_CHARS, TranscribeConfig, TranscribeError, Transcriber};

/// One form the stand-in received: its text fields and the file's name and bytes.
#[derive(Debug, Clone, Default)]
struct Form {
    fields: Vec<(String, String)>,
    file_name: Option<String>,
    file: Vec<u8>,
    authorization: Option<String>,
}

impl Form {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct StandIn {
    /// Scripted answers: status, body, delay. When empty: the words of the audio.
    script: Arc<Mutex<VecDeque<(u16, String, Duration)>>>,
    forms: Arc<Mutex<Vec<Form>>>,
}

impl StandIn {
    fn then(&self, status: u16, body: &str, delay: Duration) {
        self.script
            .lock()
            .unwrap()
            .push_back((status, body.to_owned(), delay));
    }

    fn forms(&self) -> Vec<Form> {
        self.forms.lock().unwrap().clone()
    }
}

async fn transcriptions(
    State(s): State<StandIn>,
    headers: axum::http::HeaderMap,
    mut multipart: Multipart,
) -> (StatusCode, String) {
    let mut form = Form {
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Form::default()
    };
    while let Some(field) = multipart.next_field().await.unwrap() {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            form.file_name = field.file_name().map(str::to_owned);
            form.file = field.bytes().await.unwrap().to_vec();
        } else {
            form.fields.push((name, field.text().await.unwrap()));
        }
    }
    // A real server "hears" the audio: here its bytes are the words, as UTF-8.
    let heard = String::from_utf8_lossy(&form.file).into_owned();
    s.forms.lock().unwrap().push(form);
    let next = s.script.lock().unwrap().pop_front();
    let (status, body, delay) = next.unwrap_or_else(|| {
        (
            200,
            serde_json::json!({ "text": format!(" {heard} ") }).to_string(),
            Duration::ZERO,
        )
    });
    tokio::time::sleep(delay).await;
    (StatusCode::from_u16(status).unwrap(), body)
}

async fn start() -> (StandIn, String) {
    let state = StandIn::default();
    let app = axum::Router::new()
        .route(
            "/v1/audio/transcriptions",
            axum::routing::post(transcriptions),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (state, url)
}

fn transcriber(url: &str, tweak: impl FnOnce(&mut TranscribeConfig)) -> Transcriber {
    let mut config = TranscribeConfig::new(url, "whisper-test");
    config.timeout = Duration::from_millis(800);
    tweak(&mut config);
    Transcriber::new(config)
}

#[tokio::test]
async fn a_voice_note_comes_back_as_its_words_from_a_well_formed_request() {
    let (standin, url) = start().await;
    let t = transcriber(&url, |c| {
        c.language = Some("pt".into());
        c.api_key = "sk-test".to_owned().into();
    });
    let words = t
        .transcribe(
            b"onde esta o meu pedido".to_vec(),
            Some("audio/ogg; codecs=opus"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(words, "onde esta o meu pedido", "trimmed words");
    let forms = standin.forms();
    assert_eq!(forms.len(), 1);
    let form = &forms[0];
    assert_eq!(form.file_name.as_deref(), Some("audio.ogg"));
    assert_eq!(form.file, b"onde esta o meu pedido");
    assert_eq!(form.field("model"), Some("whisper-test"));
    assert_eq!(form.field("language"), Some("pt"));
    assert_eq!(form.field("response_format"), Some("json"));
    assert_eq!(form.authorization.as_deref(), Some("Bearer sk-test"));

    // The conversation's language wins over the configured one.
    let mp3 = t
        .transcribe(b"hello".to_vec(), Some("audio/mpeg"), Some("en"))
        .await
        .unwrap();
    assert_eq!(mp3, "hello");
    let form = &standin.forms()[1];
    assert_eq!(
        form.file_name.as_deref(),
        Some("audio.mp3"),
        "the extension names the format"
    );
    assert_eq!(form.field("language"), Some("en"));
}

#[tokio::test]
async fn a_500_is_retried_and_a_400_is_not() {
    let (standin, url) = start().await;
    let t = transcriber(&url, |c| c.retries = 1);
    standin.then(
        500,
        r#"{"error":{"message":"busy","type":"server_error"}}"#,
        Duration::ZERO,
    );
    assert_eq!(
        t.transcribe(b"hi there".to_vec(), None, None)
            .await
            .unwrap(),
        "hi there"
    );
    assert_eq!(standin.forms().len(), 2, "the 500 was tried again");

    standin.then(
        400,
        r#"{"error":{"message":"Invalid file format.","type":"invalid_request_error"}}"#,
        Duration::ZERO,
    );
    let error = t.transcribe(b"hi".to_vec(), None, None).await.unwrap_err();
    assert!(
        matches!(&error, TranscribeError::Endpoint(m) if m.contains("Invalid file format")),
        "{error}"
    );
    assert_eq!(error.label(), "endpoint");
    assert_eq!(standin.forms().len(), 3, "a 400 is not tried again");
}

#[tokio::test]
async fn garbage_and_answers_without_words_fail() {
    let (standin, url) = start().await;
    let t = transcriber(&url, |_| ());
    standin.then(200, "<html>not json", Duration::ZERO);
    let garbage = t.transcribe(b"x".to_vec(), None, None).await.unwrap_err();
    assert_eq!(garbage.label(), "malformed", "{garbage}");

    standin.then(200, r#"{"transcript": "hello"}"#, Duration::ZERO);
    let no_text = t.transcribe(b"x".to_vec(), None, None).await.unwrap_err();
    assert_eq!(no_text.label(), "malformed", "{no_text}");

    for silence in [r#"{"text": ""}"#, r#"{"text": "  ... "}"#] {
        standin.then(200, silence, Duration::ZERO);
        assert_eq!(
            t.transcribe(b"x".to_vec(), None, None).await.unwrap_err(),
            TranscribeError::Silent,
            "{silence}"
        );
    }
}

#[tokio::test]
async fn an_endless_text_is_cut_to_a_whatsapp_message() {
    let (_standin, url) = start().await;
    let t = transcriber(&url, |_| ());
    let words = t
        .transcribe("blá ".repeat(3000).into_bytes(), None, None)
        .await
        .unwrap();
    assert_eq!(words.chars().count(), MAX_CHARS);
}

#[tokio::test]
async fn a_slow_or_missing_endpoint_fails_within_its_timeout() {
    let (standin, url) = start().await;
    let t = transcriber(&url, |c| {
        c.timeout = Duration::from_millis(200);
        c.retries = 0;
    });
    standin.then(200, r#"{"text":"late"}"#, Duration::from_secs(5));
    let started = std::time::Instant::now();
    let error = t.transcribe(b"x".to_vec(), None, None).await.unwrap_err();
    assert_eq!(error, TranscribeError::Timeout(Duration::from_millis(200)));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the call gave up long before the answer"
    );

    // Nothing listens on this port: refused at once, tried again once, then given up.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let error = transcriber(&dead, |_| ())
        .transcribe(b"x".to_vec(), None, None)
        .await
        .unwrap_err();
    assert_eq!(error.label(), "endpoint", "{error}");
}
