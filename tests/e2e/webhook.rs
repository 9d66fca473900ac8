//! Webhook delivery: signatures, every recorded payload, retries, limits, the handshake.

use serde_json::Value;

use crate::both_stores;
use crate::helpers::{Backend, PNID, Server, Spec, fixture, fixture_names, texts, wait_for};

both_stores!(
    every_fixture_is_refused_unsigned_and_accepted_signed,
    retries_take_effect_once
);

async fn every_fixture_is_refused_unsigned_and_accepted_signed(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    let names = fixture_names();
    assert!(names.len() >= 24, "the fixtures are all there");

    // Bad signatures of every kind: 401, and nothing is stored.
    let wrong = tandem_whatsapp::sign(b"not-the-secret", b"x");
    for name in &names {
        let body = fixture(name);
        let tampered = tandem_whatsapp::sign(
            crate::helpers::SECRET.as_bytes(),
            &[&body[..], b" "].concat(),
        );
        for signature in [
            None,
            Some("sha256=zz"),
            Some(wrong.as_str()),
            Some(tampered.as_str()),
        ] {
            let response = server.post_with(&body, signature).await;
            assert_eq!(
                response.status(),
                401,
                "{name} with signature {signature:?}"
            );
        }
    }
    let (_, listed) = server.api("/v1/conversations").await;
    assert_eq!(
        listed["conversations"],
        Value::Array(vec![]),
        "a refused body stores nothing"
    );
    let (_, letters) = server.api("/v1/dead-letters").await;
    assert_eq!(letters["dead_letters"], Value::Array(vec![]));
    assert_eq!(
        server.metric("tandem_webhook_rejects_total").await,
        (names.len() * 4) as f64
    );

    // Correctly signed: every body gets 200, whatever it holds.
    for name in &names {
        let response = server.post_signed(&fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
    }
    // Graph API request and response bodies are not webhooks: kept raw as dead letters.
    let not_webhooks = names.iter().filter(|n| n.starts_with("send_")).count();
    let (_, letters) = server.api("/v1/dead-letters?limit=100").await;
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), not_webhooks);
    assert!(
        letters
            .iter()
            .all(|l| l["reason"] == "unparseable_body" && !l["body"].as_str().unwrap().is_empty())
    );

    // The typed events took effect once the lanes ran.
    let ana = wait_for(
        "Ana's conversation to hold every event",
        std::time::Duration::from_secs(10),
        || async {
            let c = server.conversation("15550002222").await?;
            (texts(&c, "customer")
                .iter()
                .any(|t| t == "Is my refund processed?")
                && texts(&c, "human").len() >= 3)
                .then_some(c)
        },
    )
    .await;
    assert_eq!(
        ana["mode"], "human",
        "the echo fixtures paused Ana's conversation"
    );
    assert_eq!(ana["paused_by"], "echo");
    assert_eq!(
        ana["contact_name"], "Ana Souza (VIP)",
        "contacts from the phone are used"
    );
    let customer = texts(&ana, "customer");
    for expected in [
        "Hi, what time do you open on Saturday?",
        "Opening hours",
        "Returns & refunds",
        "[image] The box arrived like this",
        "[location] Av. Paulista 1578",
        "Do you deliver to Campinas?",
    ] {
        assert!(
            customer.iter().any(|t| t == expected),
            "missing {expected:?} in {customer:?}"
        );
    }
    let human = texts(&ana, "human");
    assert!(human.iter().any(|t| t.starts_with("Hi Ana, Marta here")));
    assert!(
        human
            .iter()
            .any(|t| t == "[image] This is the replacement we are sending today")
    );
    let chloe = server
        .api("/v1/conversations/106540000000002:15550004444")
        .await
        .1;
    assert_eq!(texts(&chloe, "customer"), ["Stop promotions"]);
    let (_, account) = server.api("/v1/accounts/104810000000001").await;
    let events: Vec<&str> = account["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["ACCOUNT_OFFBOARDED", "PARTNER_REMOVED"]);
    let (_, number) = server.api(&format!("/v1/accounts/{PNID}")).await;
    assert_eq!(number["events"][0]["event"], "HISTORY_DECLINED");
    assert!(server.metric("tandem_webhook_events_total").await > 20.0);
}

async fn retries_take_effect_once(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    let body = fixture("inbound_text.json");
    // Meta retries, sometimes while the first delivery is still in flight.
    let statuses = server.post_signed_concurrently(vec![body.clone(); 8]).await;
    assert_eq!(statuses, vec![200; 8]);
    let c = wait_for(
        "the message to take effect",
        std::time::Duration::from_secs(10),
        || async {
            server
                .conversation("15550002222")
                .await
                .filter(|c| c["events_applied"] == 1)
        },
    )
    .await;
    assert_eq!(
        texts(&c, "customer"),
        ["Hi, what time do you open on Saturday?"]
    );
    assert_eq!(server.metric("tandem_webhook_duplicates_total").await, 7.0);
    // A later retry, after the lane ran, changes nothing either.
    assert_eq!(server.post_signed(&body).await.status(), 200);
    let again = server.conversation("15550002222").await.unwrap();
    assert_eq!(again["events_applied"], 1);
}

#[tokio::test]
async fn the_subscription_handshake_needs_the_verify_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Spec::new(Backend::embedded(dir.path())));
    let get = |query: &str| {
        server
            .client
            .get(server.url(&format!("/webhook?{query}")))
            .send()
    };
    let ok = get("hub.mode=subscribe&hub.verify_token=test-verify-token&hub.challenge=1158201444")
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    for bad in [
        "hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1",
        "hub.mode=unsubscribe&hub.verify_token=test-verify-token&hub.challenge=1",
        "hub.mode=subscribe&hub.verify_token=test-verify-token",
    ] {
        assert_eq!(get(bad).await.unwrap().status(), 403, "{bad}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, "[server]\nmax_body_bytes = 2048\n").unwrap();
    let mut spec = Spec::new(Backend::embedded(dir.path()));
    spec.config = Some(config);
    let server = Server::start(spec);
    let big = vec![b' '; 4096];
    assert_eq!(server.post_signed(&big).await.status(), 413);
    assert_eq!(server.metric("tandem_webhook_rejects_total").await, 1.0);
    assert_eq!(
        server
            .post_signed(&fixture("inbound_text.json"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn unknown_fields_and_message_types_are_kept_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Spec::new(Backend::embedded(dir.path())));
    let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "104810000000001", "changes": [
        {"field": "message_template_status_update", "value": {"event": "APPROVED", "message_template_name": "order_update"}},
        {"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
            "messages": [
                {"from": "15550001234", "id": "wamid.holo", "timestamp": "1768041000", "type": "hologram", "hologram": {"frames": 3}},
                {"from": "15550001234", "timestamp": "1768041001", "type": "text", "text": {"body": "no id"}}
            ]}}
    ]}]});
    let response = server
        .post_signed(&serde_json::to_vec(&body).unwrap())
        .await;
    assert_eq!(response.status(), 200, "signed content is never refused");
    let report: Value = response.json().await.unwrap();
    assert_eq!(
        report["kept"], 2,
        "the unknown field and the item without an id"
    );

    let (_, letters) = server.api("/v1/dead-letters").await;
    let reasons: Vec<&str> = letters["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["unparseable_item", "unknown_field"]);
    assert!(
        letters["dead_letters"][1]["body"]
            .as_str()
            .unwrap()
            .contains("order_update"),
        "kept raw"
    );
    assert_eq!(
        server
            .metric("tandem_webhook_unknown_message_types_total")
            .await,
        1.0
    );
    assert_eq!(server.metric("tandem_webhook_kept_total").await, 2.0);
    let c = wait_for(
        "the unknown message to take effect",
        std::time::Duration::from_secs(10),
        || async {
            server
                .conversation("15550001234")
                .await
                .filter(|c| c["events_applied"] == 1)
        },
    )
    .await;
    assert_eq!(texts(&c, "customer"), ["[hologram]"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tandem_replay_posts_recorded_webhooks_signed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Spec::new(Backend::embedded(dir.path())));
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp");
    let replay = |secret: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args([
                "replay",
                "--url",
                &server.url("/webhook"),
                "--secret",
                secret,
            ])
            .arg(fixtures.join("inbound_text.json"))
            .arg(fixtures.join("smb_message_echo_text.json"))
            .env_remove("TANDEM_APP_SECRET")
            .output()
            .unwrap()
    };
    let wrong = replay("not-the-secret");
    assert!(
        !wrong.status.success(),
        "a refused delivery makes replay fail"
    );
    assert!(String::from_utf8_lossy(&wrong.stdout).contains(" 401 "));
    assert!(server.conversation("15550002222").await.is_none());

    let right = replay(crate::helpers::SECRET);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    let out = String::from_utf8_lossy(&right.stdout);
    assert_eq!(
        out.lines().filter(|l| l.contains(" 200 ")).count(),
        2,
        "{out}"
    );
    assert_eq!(
        server.conversation("15550002222").await.unwrap()["mode"],
        "human"
    );
}
