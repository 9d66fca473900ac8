//! Voice notes end to end: the real server downloads the audio from a Graph API stand-in
//! (two authenticated steps, as Meta serves media) and transcribes it through an
//! OpenAI-compatible `/v1/audio/transcriptions` stand-in that reads the multipart form, and
//! fails, stalls and answers garbage on demand.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, Server, Spec, customer, echo, now_secs, text, wait_for};
use crate::standin::{Graph, HookReceiver, Shop, Transcription, TranscriptionMode};

const DEADLINE: Duration = Duration::from_secs(20);

/// A webhook with one voice note (media `media_id`) sent now.
fn voice(wa_id: &str, id: &str, media_id: &str) -> Vec<u8> {
    customer(
        wa_id,
        id,
        now_secs(),
        json!({"type": "audio", "audio": {"id": media_id, "mime_type": "audio/ogg; codecs=opus", "sha256": "dGVzdA==", "voice": true}}),
    )
}

/// A webhook with one photo sent now.
fn photo(wa_id: &str, id: &str) -> Vec<u8> {
    customer(
        wa_id,
        id,
        now_secs(),
        json!({"type": "image", "image": {"id": "media-photo", "mime_type": "image/jpeg", "sha256": "dGVzdA=="}}),
    )
}

async fn post(server: &Server, body: Vec<u8>) {
    assert_eq!(server.post_signed(&body).await.status(), 200);
}

/// The first text the bot sent to `wa_id`, once there is one.
async fn first_reply(graph: &Graph, wa_id: &str) -> String {
    wait_for(&format!("a reply to {wa_id}"), DEADLINE, || async {
        graph.messages().iter().find(|m| m["to"] == wa_id).map(|m| {
            m["text"]["body"]
                .as_str()
                .or(m["interactive"]["body"]["text"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
    })
    .await
}

/// The customer's line of message `id` in `wa_id`'s conversation.
async fn line(server: &Server, wa_id: &str, id: &str) -> Value {
    let conversation = server.conversation(wa_id).await.unwrap();
    conversation["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["message_id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no line {id} in {conversation}"))
}

fn spec_with(
    graph: &Graph,
    shop: &Shop,
    transcription: &Transcription,
    store: &std::path::Path,
) -> Spec {
    let mut spec = Spec::with_bot(Backend::embedded(store), &graph.url, &shop.url);
    spec.env
        .push(("TANDEM_TRANSCRIBER".into(), transcription.url.clone()));
    spec.env
        .push(("TANDEM_TRANSCRIBER_TIMEOUT".into(), "1s".into()));
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_gets_the_answer_its_words_would_and_people_read_the_words() {
    let store = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let transcription = Transcription::start().await;
    let hooks = HookReceiver::start().await;
    let mut spec = spec_with(&graph, &shop, &transcription, store.path());
    spec.env.push(("TANDEM_HOOK_URL".into(), hooks.url.clone()));
    spec.env
        .push(("TANDEM_HOOK_SECRET".into(), "dev-secret".into()));
    let server = Server::start(spec);

    let (typist, speaker) = ("15550001001", "15550001002");
    post(&server, text(typist, "wamid.TYPED1", "where is my order")).await;
    let typed = first_reply(&graph, typist).await;
    graph.add_media("media-1", "audio/ogg; codecs=opus", b"where is my order");
    post(&server, voice(speaker, "wamid.VOICE1", "media-1")).await;
    let spoken = first_reply(&graph, speaker).await;
    assert_eq!(spoken, typed, "the voice note got the answer to its words");

    let heard = line(&server, speaker, "wamid.VOICE1").await;
    assert_eq!(heard["kind"], "media");
    assert_eq!(heard["media_id"], "media-1", "the audio is kept");
    assert_eq!(heard["transcription"], "where is my order", "and its words");
    assert_eq!(heard["text"], "[audio] where is my order");
    let typed_line = line(&server, typist, "wamid.TYPED1").await;
    assert_eq!(
        heard["understood"]["intent"],
        typed_line["understood"]["intent"]
    );
    assert_eq!(transcription.files(), ["audio.ogg"]);
    assert_eq!(
        server
            .metric("tandem_transcriptions_total{outcome=\"ok\"")
            .await,
        1.0
    );

    // A person answers from the phone; the customer's next voice note reaches the helpdesk
    // with its words.
    // What each was sent: type and content (not the callback data naming the conversation).
    let sent_to = |wa_id: &str| -> Vec<(Value, Value, Value)> {
        graph
            .messages()
            .into_iter()
            .filter(|m| m["to"] == wa_id)
            .map(|m| {
                (
                    m["type"].clone(),
                    m["text"].clone(),
                    m["interactive"].clone(),
                )
            })
            .collect()
    };
    wait_for("the whole answer to both", DEADLINE, || async {
        (sent_to(speaker) == sent_to(typist)).then_some(())
    })
    .await;
    post(&server, echo(speaker, "wamid.ECHO1", "Hi, Rui here")).await;
    graph.add_media("media-2", "audio/ogg", b"thanks Rui, please call me");
    post(&server, voice(speaker, "wamid.VOICE2", "media-2")).await;
    let hook = wait_for("the message hook", DEADLINE, || async {
        hooks
            .delivered()
            .into_iter()
            .find(|h| h.event == "conversation.message")
    })
    .await;
    assert_eq!(
        hook.body["message"]["transcription"],
        "thanks Rui, please call me"
    );
    assert_eq!(hook.body["message"]["id"], "wamid.VOICE2");
    let lines = hook.body["transcript"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["transcription"] == "thanks Rui, please call me"
                && l["media_id"] == "media-2"),
        "the hook's transcript keeps the audio and the words: {lines:?}"
    );
    let later = line(&server, speaker, "wamid.VOICE2").await;
    assert_eq!(later["transcription"], "thanks Rui, please call me");
    let conversation = server.conversation(speaker).await.unwrap();
    assert_eq!(conversation["mode"], "human");
    assert!(conversation.get("outbox").is_none(), "{conversation}");
    assert_eq!(
        sent_to(speaker),
        sent_to(typist),
        "the bot stayed quiet while the person is in charge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_that_cannot_be_heard_gets_the_attachment_answer() {
    let store = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let transcription = Transcription::start().await;
    let server = Server::start(spec_with(&graph, &shop, &transcription, store.path()));

    post(&server, photo("15550002000", "wamid.PHOTO")).await;
    let attachment = first_reply(&graph, "15550002000").await;
    graph.add_media("media-words", "audio/ogg", b"where is my order");
    let cases = [
        (TranscriptionMode::Error, "media-words", "endpoint"),
        (TranscriptionMode::Garbage, "media-words", "malformed"),
        (TranscriptionMode::Stall, "media-words", "timeout"),
        // Meta no longer has the file (an expired id).
        (TranscriptionMode::Normal, "media-gone", "download_lookup"),
    ];
    for (n, (mode, media_id, outcome)) in cases.into_iter().enumerate() {
        transcription.set_mode(mode);
        let wa_id = format!("1555000201{n}");
        let id = format!("wamid.VOICE{n}");
        post(&server, voice(&wa_id, &id, media_id)).await;
        assert_eq!(
            first_reply(&graph, &wa_id).await,
            attachment,
            "{mode:?} {media_id}"
        );
        let kept = line(&server, &wa_id, &id).await;
        assert_eq!(kept["text"], "[audio]");
        assert!(kept.get("transcription").is_none(), "{kept}");
        assert_eq!(kept["media_id"], media_id, "the audio is still there");
        let counted = server
            .metric(&format!(
                "tandem_transcriptions_total{{outcome=\"{outcome}\""
            ))
            .await;
        assert_eq!(counted, 1.0, "{mode:?}: outcome {outcome}");
    }
}
