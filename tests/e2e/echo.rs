//! The human echo: the pause is in place when the webhook is answered, whatever the lanes are
//! doing, and it ends after `human_idle` without a person writing.

use std::time::Duration;

use serde_json::json;

use crate::both_stores;
use crate::helpers::{Backend, PNID, Server, Spec, echo_body, messages_body, texts, wait_for};

both_stores!(
    an_answered_echo_has_already_paused_the_conversation,
    the_bot_resumes_after_human_idle,
    history_fills_transcripts_without_replying_or_opening_the_window
);

/// A small deterministic generator, so a failing sequence can be replayed from its seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

async fn an_answered_echo_has_already_paused_the_conversation(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    // A backlog in one lane: the pause must not wait behind it.
    let backlog: Vec<(String, String)> = (0..40)
        .map(|i| (format!("wamid.backlog{i}"), format!("question {i}")))
        .collect();
    let refs: Vec<(&str, &str, &str)> = backlog
        .iter()
        .map(|(id, text)| ("15550009000", id.as_str(), text.as_str()))
        .collect();
    assert_eq!(
        server.post_signed(&messages_body(&refs)).await.status(),
        200
    );
    assert_eq!(
        server
            .post_signed(&echo_body(
                "15550009000",
                "wamid.echo-backlog",
                "I'll take this one"
            ))
            .await
            .status(),
        200
    );
    let c = server
        .conversation("15550009000")
        .await
        .expect("the echo created the conversation");
    assert_eq!(
        c["mode"], "human",
        "paused as soon as the echo was answered"
    );
    assert_eq!(
        texts(&c, "human"),
        ["I'll take this one"],
        "and the echo is in the transcript"
    );

    // Random interleavings of customer messages and echoes over several conversations.
    for seed in 1..=6u64 {
        let mut rng = Lcg(seed);
        for step in 0..25 {
            let wa = format!("1555001{seed}{}", rng.next(3));
            let id = format!("wamid.s{seed}-{step}");
            if rng.next(3) == 0 {
                assert_eq!(
                    server
                        .post_signed(&echo_body(&wa, &id, "from the phone"))
                        .await
                        .status(),
                    200
                );
                let c = server.conversation(&wa).await.unwrap();
                assert_eq!(
                    c["mode"], "human",
                    "seed {seed} step {step}: not paused when the echo was answered"
                );
                assert_eq!(c["paused_by"], "echo");
                let ids: Vec<&str> = c["transcript"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|l| l["message_id"].as_str())
                    .collect();
                assert!(
                    ids.contains(&id.as_str()),
                    "seed {seed} step {step}: the echo is not in the transcript"
                );
            } else {
                assert_eq!(
                    server
                        .post_signed(&messages_body(&[(&wa, &id, "hello")]))
                        .await
                        .status(),
                    200
                );
            }
        }
    }
    assert!(server.metric("tandem_conversations_paused_total").await >= 7.0);
    // Edits and deletions made on the phone are human activity too.
    let edit = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"smb_message_echoes","value":{
        "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":PNID},
        "message_echoes":[{"from":"15550001111","to":"15550008000","id":"wamid.edit1","timestamp":"1768041600","type":"revoke","revoke":{"original_message_id":"wamid.gone"}}]}}]}]});
    assert_eq!(
        server
            .post_signed(&serde_json::to_vec(&edit).unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(
        server.conversation("15550008000").await.unwrap()["mode"],
        "human"
    );
    // The echo joins the transcript as a human line once its lane runs.
    let c = wait_for(
        "the backlog and the echo to be applied",
        Duration::from_secs(20),
        || async {
            server
                .conversation("15550009000")
                .await
                .filter(|c| c["events_applied"] == 41)
        },
    )
    .await;
    assert_eq!(texts(&c, "customer").len(), 40);
    assert_eq!(texts(&c, "human"), ["I'll take this one"]);
    assert_eq!(
        c["mode"], "human",
        "applying the backlog did not undo the pause"
    );
}

async fn the_bot_resumes_after_human_idle(backend: Backend) {
    let mut spec = Spec::new(backend);
    spec.human_idle = "1s";
    let server = Server::start(spec);
    assert_eq!(
        server
            .post_signed(&echo_body("15550007000", "wamid.idle1", "one moment"))
            .await
            .status(),
        200
    );
    assert_eq!(
        server.conversation("15550007000").await.unwrap()["mode"],
        "human"
    );
    let resumed = wait_for(
        "the bot to resume after human_idle",
        Duration::from_secs(15),
        || async {
            server
                .conversation("15550007000")
                .await
                .filter(|c| c["mode"] == "bot")
        },
    )
    .await;
    assert!(resumed["paused_by"].is_null());
    let system = texts(&resumed, "system");
    assert_eq!(
        system,
        [
            "a person took over from the WhatsApp Business App; the bot is paused",
            "bot resumed: no message from a person for 1s"
        ],
        "the human stretch is marked once at each end"
    );
    assert_eq!(
        server.metric("tandem_conversations_resumed_total").await,
        1.0
    );
}

fn history_body(business_at: u64) -> Vec<u8> {
    let body = json!({"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"history","value":{
    "messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":PNID},
    "history":[{"metadata":{"phase":0,"chunk_order":1,"progress":100},"threads":[
        {"id":"15550006000","messages":[
            {"from":"15550006000","id":"wamid.h1","timestamp":"1767950000","type":"text","text":{"body":"old question"}},
            {"from":"15550001111","to":"15550006000","id":"wamid.h2","timestamp":"1767950100","type":"text","text":{"body":"old answer"}}]},
        {"id":"15550006001","messages":[
            {"from":"15550006001","id":"wamid.h3","timestamp":"1767950000","type":"text","text":{"body":"question"}},
            {"from":"15550001111","to":"15550006001","id":"wamid.h4","timestamp":business_at.to_string(),"type":"text","text":{"body":"answered just now"}}]}
    ]}]}}]}]});
    serde_json::to_vec(&body).unwrap()
}

async fn history_fills_transcripts_without_replying_or_opening_the_window(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let report = server.post_signed(&history_body(now - 60)).await;
    assert_eq!(report.status(), 200);
    let report: serde_json::Value = report.json().await.unwrap();
    assert_eq!(report["paused"], 0, "history never pauses at ingress");
    let old = wait_for(
        "the old thread to be imported",
        Duration::from_secs(10),
        || async {
            server
                .conversation("15550006000")
                .await
                .filter(|c| c["events_applied"] == 1)
        },
    )
    .await;
    assert_eq!(old["mode"], "bot");
    assert!(
        old["customer_last_at"].is_null(),
        "history never opens the 24-hour window"
    );
    assert_eq!(
        old["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["historical"] == true)
            .count(),
        2
    );
    let recent = wait_for(
        "the recent thread to be imported",
        Duration::from_secs(10),
        || async {
            server
                .conversation("15550006001")
                .await
                .filter(|c| c["events_applied"] == 1)
        },
    )
    .await;
    assert_eq!(
        recent["mode"], "human",
        "a person answered within human_idle: people keep it"
    );
    assert_eq!(recent["paused_by"], "history");
    assert!(recent["customer_last_at"].is_null());
}
