//! Loopback stand-ins for the services Tandem talks to: the Graph API (recording every
//! request, answering like WhatsApp, including its errors) and a shop backend for `call`
//! steps (with a configurable delay).

#[path = "../support/shop.rs"]
pub mod shop;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

/// One request the Graph stand-in received.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub phone_number_id: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct GraphState {
    requests: Vec<GraphRequest>,
    /// When each message send (not mark-as-read) arrived.
    times: Vec<std::time::Instant>,
    /// While set, message sends are recorded but never answered.
    stalled: bool,
    /// Answers for the next message sends (not mark-as-read), used before the default.
    scripted: VecDeque<(u16, Value)>,
    sent: u64,
    /// Onboarding calls (method, path after the version, authorization, body), in order.
    calls: Vec<(String, String, Option<String>, Value)>,
    /// Syncs already requested, per number and sync type: Meta allows one.
    syncs: std::collections::HashSet<(String, String)>,
    /// Sync types Meta refuses for every number (a window that closed).
    refused_syncs: std::collections::HashSet<String>,
    /// Media files by id: MIME type and bytes, served from `{base}/media/{id}`.
    media: std::collections::HashMap<String, (String, Vec<u8>)>,
    /// `http://addr`, for the media URLs.
    base: String,
}

/// What Meta answers an OAuth error with (an expired code, a token without permission).
fn oauth_error(code: i64, message: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(
            json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf"}}),
        ),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `GET /oauth/access_token?client_id&client_secret&code`: the code `expired` is refused
/// as Meta refuses an old code; any other gives `business-token-from-{code}`.
async fn graph_oauth(
    State(state): State<Arc<Mutex<GraphState>>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let code = query.get("code").cloned().unwrap_or_default();
    state.lock().unwrap().calls.push((
        "GET".into(),
        "oauth/access_token".into(),
        None,
        json!(query),
    ));
    if query.get("client_secret").is_none_or(String::is_empty) {
        return oauth_error(101, "Error validating client secret.");
    }
    if code == "expired" {
        return oauth_error(100, "This authorization code has expired.");
    }
    (
        StatusCode::OK,
        Json(
            json!({"access_token": format!("business-token-from-{code}"), "token_type": "bearer"}),
        ),
    )
}

/// `GET /{phone_number_id}`: the number, unless the token lacks permission; `GET
/// /{media-id}` of a media file: its short-lived URL, as the Cloud API answers.
async fn graph_number(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    let auth = bearer(&headers);
    if id.starts_with("media-") {
        let state = state.lock().unwrap();
        return match state.media.get(&id) {
            Some((mime, bytes)) => (
                StatusCode::OK,
                Json(json!({
                    "messaging_product": "whatsapp",
                    "url": format!("{}/media/{id}", state.base),
                    "mime_type": mime,
                    "file_size": bytes.len(),
                    "id": id,
                })),
            ),
            None => oauth_error(
                100,
                "Unsupported get request. Object with ID does not exist",
            ),
        };
    }
    state
        .lock()
        .unwrap()
        .calls
        .push(("GET".into(), id.clone(), auth.clone(), Value::Null));
    if auth.as_deref() == Some("Bearer token-without-permission") {
        return oauth_error(200, "(#200) Permissions error");
    }
    (
        StatusCode::OK,
        Json(
            json!({"id": id, "display_phone_number": "+1 555-000-1111", "verified_name": "Tandem Plant Shop", "is_on_biz_app": true, "platform_type": "CLOUD_API"}),
        ),
    )
}

/// `POST /{waba}/subscribed_apps`.
async fn graph_subscribe(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path(waba): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    state.lock().unwrap().calls.push((
        "POST".into(),
        format!("{waba}/subscribed_apps"),
        bearer(&headers),
        Value::Null,
    ));
    (StatusCode::OK, Json(json!({"success": true})))
}

/// `POST /{phone_number_id}/smb_app_data`: one request per sync type and number.
async fn graph_sync(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut state = state.lock().unwrap();
    state.calls.push((
        "POST".into(),
        format!("{id}/smb_app_data"),
        bearer(&headers),
        body.clone(),
    ));
    let kind = body["sync_type"].as_str().unwrap_or_default().to_owned();
    if state.refused_syncs.contains(&kind) || !state.syncs.insert((id, kind.clone())) {
        return oauth_error(
            100,
            &format!("(#100) The {kind} sync was already requested for this phone number"),
        );
    }
    let n = state.syncs.len();
    (
        StatusCode::OK,
        Json(json!({"messaging_product": "whatsapp", "request_id": format!("req_{kind}_{n}")})),
    )
}

/// Meta's media host: the file, for the business's token only.
async fn media_file(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if bearer(&headers).as_deref() != Some("Bearer test-access-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match state.lock().unwrap().media.get(&id) {
        Some((mime, bytes)) => (
            StatusCode::OK,
            [("content-type", mime.clone())],
            bytes.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A Graph API stand-in on a loopback port.
#[derive(Clone)]
pub struct Graph {
    pub url: String,
    state: Arc<Mutex<GraphState>>,
}

impl Graph {
    pub async fn start() -> Graph {
        let state = Arc::new(Mutex::new(GraphState::default()));
        let app = axum::Router::new()
            .route("/v23.0/{pnid}/messages", post(graph_messages))
            .route("/v23.0/oauth/access_token", axum::routing::get(graph_oauth))
            .route("/v23.0/{id}", axum::routing::get(graph_number))
            .route("/v23.0/{id}/subscribed_apps", post(graph_subscribe))
            .route("/v23.0/{id}/smb_app_data", post(graph_sync))
            .route("/media/{id}", axum::routing::get(media_file))
            .with_state(Arc::clone(&state));
        let addr = serve(app).await;
        state.lock().unwrap().base = format!("http://{addr}");
        Graph {
            url: format!("http://{addr}/v23.0"),
            state,
        }
    }

    /// Makes the next message send answer `status` with `body` (a WhatsApp error fixture).
    pub fn script(&self, status: u16, body: Value) {
        self.state
            .lock()
            .unwrap()
            .scripted
            .push_back((status, body));
    }

    /// Serves a media file under `id` (which must start with `media-`).
    pub fn add_media(&self, id: &str, mime_type: &str, bytes: &[u8]) {
        self.state
            .lock()
            .unwrap()
            .media
            .insert(id.to_owned(), (mime_type.to_owned(), bytes.to_vec()));
    }

    /// Onboarding calls: method, path after the version, authorization, body.
    pub fn onboarding_calls(&self) -> Vec<(String, String, Option<String>, Value)> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Makes Meta refuse every request of this sync type (as after the 24-hour window).
    pub fn refuse_sync(&self, sync_type: &str) {
        self.state
            .lock()
            .unwrap()
            .refused_syncs
            .insert(sync_type.to_owned());
    }

    /// Makes message sends hang (recorded, never answered) until called with `false`.
    pub fn stall(&self, on: bool) {
        self.state.lock().unwrap().stalled = on;
    }

    /// When each message send arrived, in order.
    pub fn message_times(&self) -> Vec<std::time::Instant> {
        self.state.lock().unwrap().times.clone()
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The bodies of message sends (not mark-as-read), in order.
    pub fn messages(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .map(|r| r.body)
            .filter(|b| b.get("type").is_some())
            .collect()
    }

    /// The text of each message send: the text body, the interactive body or the template name.
    pub fn texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|b| match b["type"].as_str() {
                Some("text") => b["text"]["body"].as_str().unwrap_or_default().to_owned(),
                Some("interactive") => b["interactive"]["body"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                Some("template") => format!(
                    "template:{}",
                    b["template"]["name"].as_str().unwrap_or_default()
                ),
                _ => String::new(),
            })
            .collect()
    }
}

async fn graph_messages(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path(pnid): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let stalled = {
        let mut state = state.lock().unwrap();
        if body.get("type").is_some() {
            state.times.push(std::time::Instant::now());
        }
        state.stalled && body.get("type").is_some()
    };
    if stalled {
        state.lock().unwrap().requests.push(GraphRequest {
            phone_number_id: pnid,
            authorization: None,
            body,
        });
        // Never answers: the caller times out or dies waiting.
        return std::future::pending().await;
    }
    let mut state = state.lock().unwrap();
    state.requests.push(GraphRequest {
        phone_number_id: pnid,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
    });
    if body.get("status").and_then(Value::as_str) == Some("read") {
        return (StatusCode::OK, Json(json!({"success": true})));
    }
    if let Some((status, answer)) = state.scripted.pop_front() {
        return (StatusCode::from_u16(status).unwrap(), Json(answer));
    }
    state.sent += 1;
    let mut message = json!({"id": format!("wamid.OUT{:06}", state.sent)});
    if body["type"] == "template" {
        message["message_status"] = "accepted".into();
    }
    // Like WhatsApp: a phone send answers with the `wa_id`, a BSUID send (`recipient`) with
    // the `user_id`. A BSUID in `to` is accepted too, and then never delivered.
    let contact = match (body.get("to"), body.get("recipient")) {
        (_, Some(recipient)) => json!({"input": recipient, "user_id": recipient}),
        (Some(to), None) => json!({"input": to, "wa_id": to}),
        (None, None) => json!({}),
    };
    (
        StatusCode::OK,
        Json(
            json!({"messaging_product": "whatsapp", "contacts": [contact], "messages": [message]}),
        ),
    )
}

/// The shop backend the shipped flows call (`config.shop_api`), on a loopback port.
#[derive(Clone)]
pub struct Shop {
    pub url: String,
    pub calls: shop::Calls,
    held: shop::Held,
}

impl Shop {
    /// Starts the stand-in; every answer waits `delay` first.
    pub async fn start(delay: Duration) -> Shop {
        let calls = shop::Calls::default();
        let held = shop::Held::default();
        let addr = serve(shop::router(delay, Arc::clone(&calls), Arc::clone(&held))).await;
        Shop {
            url: format!("http://{addr}"),
            calls,
            held,
        }
    }

    /// Holds every answer until called with `false` (a backend that hangs).
    pub fn hold(&self, on: bool) {
        self.held.send_replace(on);
    }
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// An OpenAI-compatible chat/completions stand-in: a message containing "partido" is a
/// return in Portuguese; one containing "complaint" needs a person; one containing "fail"
/// gets a 500; anything else is out of scope. Asked for a handoff summary (the prompt of
/// `prompts/handoff_summary.j2`), it answers three lines of plain text; asked to read a slot
/// (`prompts/extract_slot.j2`), it finds 10442 in "ten four four two" and nothing elsewhere.
pub async fn llm() -> String {
    async fn chat(Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
        let system = body["messages"][0]["content"].as_str().unwrap_or_default();
        if system.contains("You read one value out of") {
            let answer = body["messages"][1]["content"].as_str().unwrap_or_default();
            let value = if answer.contains("ten four four two") {
                json!("10442")
            } else {
                Value::Null
            };
            let content = json!({"value": value}).to_string();
            return (
                StatusCode::OK,
                Json(
                    json!({"id": "c3", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}),
                ),
            );
        }
        if system.contains("taking over a WhatsApp conversation") {
            let wants = if system.contains("complaint") {
                "to file a complaint"
            } else {
                "help"
            };
            let content =
                format!("The customer wants {wants}.\nThe assistant handed over at once.\nUpset.");
            return (
                StatusCode::OK,
                Json(
                    json!({"id": "c2", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 200, "completion_tokens": 40, "total_tokens": 240}}),
                ),
            );
        }
        let text = body["messages"][1]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if text.contains("fail") {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(
                    json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}}),
                ),
            );
        }
        let (intent, language) = if text.contains("partido") {
            ("returns", "pt")
        } else {
            ("oos", "en")
        };
        let needs_human = text.contains("complaint");
        let content = json!({"intent": intent, "confidence": 0.9, "language": language, "urgency": "normal", "sentiment": "negative", "needs_human": needs_human}).to_string();
        (
            StatusCode::OK,
            Json(
                json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}}),
            ),
        )
    }
    let addr = serve(axum::Router::new().route("/v1/chat/completions", post(chat))).await;
    format!("http://{addr}/v1")
}

/// One hook delivery the receiver stand-in got.
#[derive(Debug, Clone)]
pub struct ReceivedHook {
    pub event: String,
    pub timestamp: u64,
    pub signature: String,
    pub idempotency_key: String,
    pub raw: Vec<u8>,
    pub body: Value,
    /// The status it answered.
    pub answered: u16,
}

#[derive(Default)]
struct HookState {
    received: Vec<ReceivedHook>,
    /// While set, every delivery is answered 500 (a receiver that is down).
    failing: bool,
    /// Bodies to answer deliveries of an event with (an action on the conversation).
    answers: std::collections::HashMap<String, Value>,
}

/// A CRM/helpdesk hook receiver on a loopback port: records every delivery with its
/// headers, answers 200 (or 500 while failing).
#[derive(Clone)]
pub struct HookReceiver {
    pub url: String,
    state: Arc<Mutex<HookState>>,
}

impl HookReceiver {
    pub async fn start() -> HookReceiver {
        async fn receive(
            State(state): State<Arc<Mutex<HookState>>>,
            headers: HeaderMap,
            raw: axum::body::Bytes,
        ) -> (StatusCode, Json<Value>) {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut state = state.lock().unwrap();
            let answered = if state.failing { 500 } else { 200 };
            let answer = state
                .answers
                .get(&header("x-tandem-event"))
                .cloned()
                .unwrap_or(Value::Null);
            state.received.push(ReceivedHook {
                event: header("x-tandem-event"),
                timestamp: header("x-tandem-timestamp").parse().unwrap_or(0),
                signature: header("x-tandem-signature"),
                idempotency_key: header("idempotency-key"),
                body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                raw: raw.to_vec(),
                answered,
            });
            (StatusCode::from_u16(answered).unwrap(), Json(answer))
        }
        let state = Arc::new(Mutex::new(HookState::default()));
        let app = axum::Router::new()
            .route("/hooks", post(receive))
            .with_state(Arc::clone(&state));
        let addr = serve(app).await;
        HookReceiver {
            url: format!("http://{addr}/hooks"),
            state,
        }
    }

    /// Makes the receiver answer deliveries of `event` with `body`.
    pub fn answer(&self, event: &str, body: Value) {
        self.state
            .lock()
            .unwrap()
            .answers
            .insert(event.to_owned(), body);
    }

    /// Makes the receiver answer 500 to everything (or 200 again).
    pub fn failing(&self, on: bool) {
        self.state.lock().unwrap().failing = on;
    }

    /// Every delivery so far, in arrival order.
    pub fn received(&self) -> Vec<ReceivedHook> {
        self.state.lock().unwrap().received.clone()
    }

    /// The deliveries answered 200, in arrival order.
    pub fn delivered(&self) -> Vec<ReceivedHook> {
        self.received()
            .into_iter()
            .filter(|h| h.answered == 200)
            .collect()
    }
}

/// How the embeddings stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingsMode {
    /// Vectors, as an embeddings server gives them.
    Normal,
    /// Waits two seconds before answering.
    Stall,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 500.
    Error,
}

/// An OpenAI-compatible `/v1/embeddings` stand-in whose vectors follow a few concepts (order,
/// return, hours, delivery, person, greeting) named by words, other words hashed into the
/// remaining dimensions: paraphrases with different words land together, as with a real
/// model.
pub struct Embeddings {
    pub url: String,
    mode: Arc<Mutex<EmbeddingsMode>>,
    seen: Arc<Mutex<usize>>,
}

impl Embeddings {
    pub async fn start() -> Embeddings {
        #[derive(Clone)]
        struct St {
            mode: Arc<Mutex<EmbeddingsMode>>,
            seen: Arc<Mutex<usize>>,
        }
        async fn embed(State(st): State<St>, Json(body): Json<Value>) -> axum::response::Response {
            use axum::response::IntoResponse;
            let mode = *st.mode.lock().unwrap();
            match mode {
                EmbeddingsMode::Stall => tokio::time::sleep(Duration::from_secs(2)).await,
                EmbeddingsMode::Garbage => return (StatusCode::OK, "not json {").into_response(),
                EmbeddingsMode::Error => {
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"error": {"message": "overloaded"}})),
                    )
                        .into_response();
                }
                EmbeddingsMode::Normal => {}
            }
            let inputs: Vec<String> = body["input"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            *st.seen.lock().unwrap() += inputs.len();
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": concept_vector(t)}))
                .collect();
            Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
        }
        let mode = Arc::new(Mutex::new(EmbeddingsMode::Normal));
        let seen = Arc::new(Mutex::new(0));
        let st = St {
            mode: Arc::clone(&mode),
            seen: Arc::clone(&seen),
        };
        let addr = serve(
            axum::Router::new()
                .route("/v1/embeddings", post(embed))
                .with_state(st),
        )
        .await;
        Embeddings {
            url: format!("http://{addr}/v1"),
            mode,
            seen,
        }
    }

    pub fn set_mode(&self, mode: EmbeddingsMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Texts embedded so far.
    pub fn texts_seen(&self) -> usize {
        *self.seen.lock().unwrap()
    }
}

/// The stand-in's vector of `text` (not normalised: the client normalises).
fn concept_vector(text: &str) -> Vec<f64> {
    const CONCEPTS: [&[&str]; 6] = [
        &[
            "order",
            "parcel",
            "package",
            "shipped",
            "dispatched",
            "arrive",
            "track",
        ],
        &[
            "return", "refund", "money", "back", "damaged", "cracked", "broken", "wrong",
        ],
        &[
            "open", "close", "hours", "time", "saturday", "shop", "address",
        ],
        &["delivery", "deliver", "shipping", "cost", "fees", "porto"],
        &["someone", "person", "human", "talk", "speak", "call"],
        &["hi", "hello", "menu", "help"],
    ];
    let mut v = vec![0.0; 64];
    v[63] = 0.1;
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        match CONCEPTS.iter().position(|words| words.contains(&word)) {
            Some(k) => v[k] += 1.0,
            None => {
                let h = word
                    .bytes()
                    .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
                v[8 + (h % 55) as usize] += 0.3;
            }
        }
    }
    v
}

/// How the transcription stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TranscriptionMode {
    /// The words: the audio's bytes read as UTF-8, as if spoken.
    Normal,
    /// Waits five seconds before answering.
    Stall,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 500.
    Error,
}

/// An OpenAI-compatible `/v1/audio/transcriptions` stand-in reading the multipart form as a
/// real server does; it "hears" the audio's bytes as UTF-8 words.
pub struct Transcription {
    pub url: String,
    mode: Arc<Mutex<TranscriptionMode>>,
    /// File names received, in order.
    files: Arc<Mutex<Vec<String>>>,
}

impl Transcription {
    pub async fn start() -> Transcription {
        #[derive(Clone)]
        struct St {
            mode: Arc<Mutex<TranscriptionMode>>,
            files: Arc<Mutex<Vec<String>>>,
        }
        async fn transcribe(
            State(st): State<St>,
            mut form: axum::extract::Multipart,
        ) -> axum::response::Response {
            use axum::response::IntoResponse;
            let mut heard = String::new();
            while let Ok(Some(field)) = form.next_field().await {
                if field.name() == Some("file") {
                    st.files
                        .lock()
                        .unwrap()
                        .push(field.file_name().unwrap_or_default().to_owned());
                    heard = String::from_utf8_lossy(&field.bytes().await.unwrap()).into_owned();
                }
            }
            let mode = *st.mode.lock().unwrap();
            match mode {
                TranscriptionMode::Normal => Json(json!({ "text": heard })).into_response(),
                TranscriptionMode::Stall => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Json(json!({ "text": heard })).into_response()
                }
                TranscriptionMode::Garbage => (StatusCode::OK, "<html>oops").into_response(),
                TranscriptionMode::Error => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": {"message": "model crashed"}})),
                )
                    .into_response(),
            }
        }
        let st = St {
            mode: Arc::new(Mutex::new(TranscriptionMode::Normal)),
            files: Arc::default(),
        };
        let addr = serve(
            axum::Router::new()
                .route("/v1/audio/transcriptions", post(transcribe))
                .with_state(st.clone()),
        )
        .await;
        Transcription {
            url: format!("http://{addr}/v1"),
            mode: st.mode,
            files: st.files,
        }
    }

    pub fn set_mode(&self, mode: TranscriptionMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The file names of the audio received, in order.
    pub fn files(&self) -> Vec<String> {
        self.files.lock().unwrap().clone()
    }
}
