//! Hostile clients and the customer's data: slow and idle connections, erasure, the audit
//! log, and what the logs may say.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{
    API_TOKEN, Backend, PNID, Server, Spec, customer, now_secs, text, texts, wait_for,
};
use crate::standin::HookReceiver;

/// How long a test waits for something that should take milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

/// A server whose connections must send a head within 1 s and be answered within 2 s.
fn impatient_server(dir: &std::path::Path) -> Server {
    let config = dir.join("tandem.toml");
    std::fs::write(
        &config,
        "[server]\nheader_timeout = \"1s\"\nrequest_timeout = \"2s\"\n",
    )
    .unwrap();
    let mut spec = Spec::new(Backend::embedded(dir));
    spec.config = Some(config);
    Server::start(spec)
}

/// Reads until the server closes the connection (or the deadline passes); returns what it
/// sent and how long the connection stayed open.
async fn read_until_closed(stream: &mut TcpStream, deadline: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "the server kept the connection open for {deadline:?}"
        );
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&seen).into(), start.elapsed()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open for {deadline:?}"),
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let server = impatient_server(dir.path());
    let addr = server.base.trim_start_matches("http://").to_owned();

    // Never sends anything.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    // Sends a request head one byte at a time, slower than it may.
    let mut slow_head = TcpStream::connect(&addr).await.unwrap();
    // Sends a head, then a body that never ends.
    let mut slow_body = TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST /webhook HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n{")
        .await
        .unwrap();
    let dripping = tokio::spawn(async move {
        for byte in b"GET /healthz HTTP/1.1\r\nhost: x\r\n"
            .iter()
            .cycle()
            .take(200)
        {
            if slow_head.write_all(&[*byte]).await.is_err() {
                return slow_head;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow_head
    });

    // Meanwhile the server answers everybody else.
    let (status, _) = server.api("/v1/conversations").await;
    assert_eq!(status, 200);

    let (said, _) = read_until_closed(&mut idle, Duration::from_secs(20)).await;
    assert_eq!(said, "", "an idle connection is closed without an answer");
    let (said, _) = read_until_closed(&mut slow_body, Duration::from_secs(20)).await;
    assert!(
        said.starts_with("HTTP/1.1 408"),
        "a body that never ends gets 408: {said:?}"
    );
    let mut slow_head = dripping.await.unwrap();
    let (_, open_for) = read_until_closed(&mut slow_head, Duration::from_secs(20)).await;
    assert!(
        open_for < Duration::from_secs(20),
        "the dripping client was cut off before it had sent its 200 bytes"
    );

    // A keep-alive connection that finished a request and then idles is closed too.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (said, _) = read_until_closed(&mut kept, Duration::from_secs(20)).await;
    assert!(said.starts_with("HTTP/1.1 200"), "{said:?}");
}

/// Sends an API request with the test token; returns status and JSON (or text as a string).
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(API_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The audit log as parsed JSON lines.
async fn audit_log(server: &Server) -> Vec<Value> {
    let (status, body) = call(server, reqwest::Method::GET, "/v1/audit", None).await;
    assert_eq!(status, 200, "{body}");
    body.as_str()
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until `server` shows `phone`'s conversation holding a customer line `text` (any
/// customer line when `None`); returns the conversation.
async fn conversation_with(server: &Server, phone: &str, text: Option<&str>) -> Value {
    wait_for(&format!("{phone}'s message {text:?}"), DEADLINE, || async {
        server.conversation(phone).await.filter(|c| {
            let said = texts(c, "customer");
            text.map_or(!said.is_empty(), |t| said.iter().any(|s| s == t))
        })
    })
    .await
}

async fn erasure_removes_the_customer_and_late_webhooks_do_not_bring_it_back(backend: Backend) {
    let hooks = HookReceiver::start().await;
    let mut spec = Spec::new(backend);
    spec.env.push(("TANDEM_HOOK_URL".into(), hooks.url.clone()));
    spec.env
        .push(("TANDEM_HOOK_SECRET".into(), "hook-secret".into()));
    let server = Server::start(spec);
    let ana = "15550004444";
    let bob = "15550005555";
    for body in [
        text(ana, "wamid.ana1", "my card ends in 4242"),
        text(bob, "wamid.bob1", "hello from bob"),
    ] {
        assert_eq!(server.post_signed(&body).await.status(), 200);
    }
    let before = conversation_with(&server, ana, None).await;
    let old_customer = before["customer"]["id"].as_str().unwrap().to_owned();
    // An agent takes over, so the audit log has an action naming her conversation.
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        &format!("/v1/conversations/{PNID}:{ana}/takeover"),
        None,
    )
    .await;
    assert_eq!(status, 202);

    let (status, answer) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/customers/{ana}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["customer"], old_customer.as_str());
    assert_eq!(answer["erased"]["conversations"], 1);
    assert!(answer["erased"]["transcript_lines"].as_u64().unwrap() >= 1);
    assert!(answer["erased"]["aliases"].as_u64().unwrap() >= 1);

    // Gone, by phone and by customer id; Bob is untouched.
    assert!(server.conversation(ana).await.is_none());
    let (status, _) = server.api(&format!("/v1/customers/{old_customer}")).await;
    assert_eq!(status, 404);
    let (status, _) = server.api(&format!("/v1/customers/{ana}")).await;
    assert_eq!(status, 404);
    assert!(server.conversation(bob).await.is_some());
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/customers/{ana}"),
        None,
    )
    .await;
    assert_eq!(status, 404, "a second erasure finds nobody");

    // The CRM is told, signed, with the identifiers to find its own copy.
    let erased = wait_for("the customer.erased hook", DEADLINE, || async {
        hooks
            .delivered()
            .into_iter()
            .find(|h| h.event == "customer.erased")
    })
    .await;
    assert_eq!(erased.body["customer"]["id"], old_customer.as_str());
    assert_eq!(erased.body["customer"]["phone"], ana);
    assert!(tandem_handoff::verify(
        "hook-secret",
        erased.timestamp,
        &erased.raw,
        &erased.signature
    ));

    // Late webhooks: Meta's retry of the old message, and a message from before the erasure
    // delivered late. Neither brings anything back.
    let retry = text(ana, "wamid.ana1", "my card ends in 4242");
    assert_eq!(server.post_signed(&retry).await.status(), 200);
    let late = customer(
        ana,
        "wamid.ana0",
        now_secs() - 120,
        json!({"type": "text", "text": {"body": "older words"}}),
    );
    assert_eq!(server.post_signed(&late).await.status(), 200);
    wait_for("the late message to be dropped", DEADLINE, || async {
        (server.metric("tandem_erased_events_dropped_total").await >= 1.0).then_some(())
    })
    .await;
    assert!(server.conversation(ana).await.is_none());

    // A new message starts a new, empty conversation under a new customer id.
    let new = customer(
        ana,
        "wamid.ana2",
        now_secs() + 1,
        json!({"type": "text", "text": {"body": "hi again"}}),
    );
    assert_eq!(server.post_signed(&new).await.status(), 200);
    let after = conversation_with(&server, ana, None).await;
    assert_ne!(after["customer"]["id"], old_customer.as_str());
    assert_eq!(texts(&after, "customer"), ["hi again"]);

    // The audit log has both actions, with who and from where, and no phone or text.
    let log = audit_log(&server).await;
    let actions: Vec<&str> = log.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        ["conversation.takeover", "customer.erase", "customer.erase"]
    );
    // The refused second erasure is there too, its target a digest of the phone asked for.
    assert_eq!(log[2]["status"], 404);
    assert!(log[2]["target"].as_str().unwrap().starts_with("sha256:"));
    let erase = &log[1];
    assert_eq!(erase["actor"], "TANDEM_API_TOKEN");
    assert_eq!(erase["target"], old_customer.as_str());
    assert_eq!(erase["status"], 200);
    assert_eq!(erase["from"], "127.0.0.1");
    assert!(erase["detail"]["conversations"] == 1);
    let text_of_log = serde_json::to_string(&log).unwrap();
    assert!(
        !text_of_log.contains(ana) && !text_of_log.contains("4242"),
        "{text_of_log}"
    );
    // Exporting is itself audited.
    let again = audit_log(&server).await;
    assert_eq!(again.last().unwrap()["action"], "audit.export");
}

#[tokio::test]
async fn erasure_removes_the_customer_and_late_webhooks_do_not_bring_it_back_embedded() {
    let dir = tempfile::tempdir().unwrap();
    erasure_removes_the_customer_and_late_webhooks_do_not_bring_it_back(Backend::embedded(
        dir.path(),
    ))
    .await;
}

#[tokio::test]
async fn erasure_removes_the_customer_and_late_webhooks_do_not_bring_it_back_redis() {
    erasure_removes_the_customer_and_late_webhooks_do_not_bring_it_back(Backend::redis()).await;
}

/// Two replicas on one Redis: one erases a customer while the other keeps receiving her
/// messages (and has her in its identity cache). No message lands in the erased customer's
/// conversation, and every message stored after the erasure is in one new conversation.
#[tokio::test]
async fn an_erasure_racing_messages_on_another_replica_leaves_nothing_behind() {
    let backend = Backend::redis();
    let first = Server::start(Spec::new(backend.clone()));
    let second = Server::start(Spec::new(backend));
    let ana = "15550006666";
    assert_eq!(
        second
            .post_signed(&text(ana, "wamid.r0", "before"))
            .await
            .status(),
        200
    );
    let before = conversation_with(&second, ana, None).await;
    let old_customer = before["customer"]["id"].as_str().unwrap().to_owned();

    let sending = tokio::spawn({
        let client = second.client.clone();
        let url = second.url("/webhook");
        async move {
            for i in 1..=30 {
                let body = text(ana, &format!("wamid.r{i}"), &format!("racing {i}"));
                let signature = tandem_whatsapp::sign(crate::helpers::SECRET.as_bytes(), &body);
                let status = client
                    .post(&url)
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200);
            }
        }
    });
    let (status, answer) = call(
        &first,
        reqwest::Method::DELETE,
        &format!("/v1/customers/{old_customer}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    sending.await.unwrap();
    // One message after everything: it must reach the customer's current conversation.
    assert_eq!(
        second
            .post_signed(&text(ana, "wamid.last", "last"))
            .await
            .status(),
        200
    );

    let current = conversation_with(&first, ana, Some("last")).await;
    assert_ne!(current["customer"]["id"], old_customer.as_str());
    let kept = texts(&current, "customer");
    assert!(!kept.contains(&"before".to_owned()), "{kept:?}");
    assert!(
        kept.iter().all(|t| t == "last" || t.starts_with("racing ")),
        "{kept:?}"
    );
    // The old customer's conversation does not come back, on either replica.
    for server in [&first, &second] {
        let (status, _) = server
            .api(&format!("/v1/conversations/{PNID}:{old_customer}"))
            .await;
        assert_eq!(status, 404);
    }
    // Racing messages are either erased with her (stored before) or in the new conversation.
    let lost: Vec<String> = (1..=30)
        .map(|i| format!("racing {i}"))
        .filter(|t| !kept.contains(t))
        .collect();
    let (_, list) = first.api("/v1/conversations?limit=100").await;
    let elsewhere: Vec<&Value> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["customer"]["phone"] == ana && c["customer"]["id"] != current["customer"]["id"]
        })
        .collect();
    assert!(
        elsewhere.is_empty(),
        "another conversation of hers: {elsewhere:?} (lost {lost:?})"
    );
}

/// With retention on, old transcript lines, dead letters and audit entries go; the
/// conversation's state and counters stay.
#[tokio::test]
async fn retention_removes_old_transcripts_dead_letters_and_audit_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Spec::new(Backend::embedded(dir.path()));
    for (k, v) in [
        ("TANDEM_RETENTION_TRANSCRIPTS", "2s"),
        ("TANDEM_RETENTION_AUDIT", "2s"),
        ("TANDEM_RETENTION_EVERY", "500ms"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let server = Server::start(spec);
    let ana = "15550007777";
    assert_eq!(
        server
            .post_signed(&text(ana, "wamid.t1", "keep me briefly"))
            .await
            .status(),
        200
    );
    assert_eq!(server.post_signed(b"{\"entry\": [1, 2").await.status(), 200);
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        &format!("/v1/conversations/{PNID}:{ana}/takeover"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let kept = conversation_with(&server, ana, None).await;

    let trimmed = wait_for(
        "the transcript to be trimmed",
        Duration::from_secs(30),
        || async {
            server
                .conversation(ana)
                .await
                .filter(|c| c["transcript"].as_array().unwrap().is_empty())
        },
    )
    .await;
    assert_eq!(trimmed["mode"], kept["mode"], "the state stays");
    assert_eq!(trimmed["customer"]["id"], kept["customer"]["id"]);
    wait_for("the dead letter to go", Duration::from_secs(30), || async {
        let (_, letters) = server.api("/v1/dead-letters").await;
        letters["dead_letters"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
    wait_for("the audit entry to go", Duration::from_secs(30), || async {
        let log = audit_log(&server).await;
        (!log.iter().any(|e| e["action"] == "conversation.takeover")).then_some(())
    })
    .await;
    assert!(server.metric("tandem_retention_removed_total").await >= 3.0);
}

/// A full run — customer messages with names, a username customer, an echo from the phone,
/// an agent's message, a bad signature, a dead letter, hooks, an erasure — logged at every
/// level as JSON lines. At the default levels (info and above) no line holds a customer's
/// phone, BSUID, name or words; at no level does any line hold a secret.
#[tokio::test]
async fn logs_hold_no_personal_data_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let graph = crate::standin::Graph::start().await;
    let shop = crate::standin::Shop::start(Duration::ZERO).await;
    let hooks = HookReceiver::start().await;
    let log = dir.path().join("tandem.log");
    let mut spec = Spec::with_bot(Backend::embedded(dir.path()), &graph.url, &shop.url);
    spec.env.push(("TANDEM_HOOK_URL".into(), hooks.url.clone()));
    spec.env
        .push(("TANDEM_HOOK_SECRET".into(), "hook-secret-5b1e".into()));
    spec.env.push(("TANDEM_LOG_FORMAT".into(), "json".into()));
    spec.env.push(("RUST_LOG".into(), "trace".into()));
    spec.log = Some(log.clone());
    let mut server = Server::start(spec);

    let phone = "15550008888";
    let bsuid = "US.99887766554433221100";
    let words = [
        "I would like a refund for the red bicycle",
        "someone wrote from the phone: your parcel left today",
        "an agent writes: the courier arrives at noon",
        "a username writes about the blue kettle",
    ];
    assert_eq!(
        server
            .post_signed(&text(phone, "wamid.log1", words[0]))
            .await
            .status(),
        200
    );
    wait_for("the bot's answer", DEADLINE, || async {
        (!graph.messages().is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        server
            .post_signed(&crate::helpers::echo(phone, "wamid.log2", words[1]))
            .await
            .status(),
        200
    );
    let (status, body) = call(
        &server,
        reqwest::Method::POST,
        &format!("/v1/conversations/{PNID}:{phone}/messages"),
        Some(json!({"text": words[2]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        server
            .post_signed(&crate::helpers::text_by(
                None,
                Some(bsuid),
                "wamid.log3",
                words[3]
            ))
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .post_with(&text(phone, "wamid.log4", "forged"), Some("sha256=00"))
            .await
            .status(),
        401
    );
    let broken = format!(
        r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"messages":[{{"from":"{phone}"#
    );
    assert_eq!(server.post_signed(broken.as_bytes()).await.status(), 200);
    wait_for("the username's conversation", DEADLINE, || async {
        let (status, _) = server.api(&format!("/v1/customers/{bsuid}")).await;
        (status == 200).then_some(())
    })
    .await;
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        &format!("/v1/customers/{bsuid}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    wait_for("the hooks", DEADLINE, || async {
        hooks
            .delivered()
            .iter()
            .any(|h| h.event == "customer.erased")
            .then_some(())
    })
    .await;
    assert!(server.terminate().success());

    let text_of_log = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text_of_log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    assert!(
        lines.len() > 50,
        "the run logged at trace level: {} lines",
        lines.len()
    );
    let secrets = [
        crate::helpers::SECRET,
        crate::helpers::VERIFY_TOKEN,
        API_TOKEN,
        "test-access-token",
        "hook-secret-5b1e",
    ];
    let personal: Vec<&str> = [phone, bsuid, "Ana Silva"]
        .into_iter()
        .chain(words)
        .collect();
    for (line, raw) in lines.iter().zip(text_of_log.lines()) {
        for secret in secrets {
            assert!(!raw.contains(secret), "a secret in the log: {raw}");
        }
        if matches!(line["level"].as_str(), Some("INFO" | "WARN" | "ERROR")) {
            for value in &personal {
                assert!(
                    !raw.contains(value),
                    "{value:?} in the log at the default level: {raw}"
                );
            }
        }
    }
}
