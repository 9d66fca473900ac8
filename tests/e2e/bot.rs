//! The bot end to end: the real server runs the shipped flows, calls the stand-in shop
//! backend and sends through the stand-in Graph API.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    Backend, PNID, Server, Spec, customer, echo, fixture, now_secs, text, wait_for,
};
use crate::standin::{Graph, Shop};

const DEADLINE: Duration = Duration::from_secs(15);

async fn post(server: &Server, body: Vec<u8>) {
    assert_eq!(server.post_signed(&body).await.status(), 200);
}

/// Posts a delivery and returns how many of its events were retries already stored.
async fn post_counting_duplicates(server: &Server, body: &[u8]) -> u64 {
    let response = server.post_signed(body).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    report["duplicates"].as_u64().unwrap()
}

/// Waits until the Graph stand-in got a message whose text contains `needle`.
async fn wait_for_text(graph: &Graph, needle: &str) -> Vec<String> {
    wait_for(
        &format!("a Graph send containing {needle:?}"),
        DEADLINE,
        || async {
            let texts = graph.texts();
            texts.iter().any(|t| t.contains(needle)).then_some(texts)
        },
    )
    .await
}

async fn started(backend: Backend, shop_delay: Duration) -> (Server, Graph, Shop) {
    let graph = Graph::start().await;
    let shop = Shop::start(shop_delay).await;
    let server = Server::start(Spec::with_bot(backend, &graph.url, &shop.url));
    (server, graph, shop)
}

async fn an_order_question_is_answered_from_the_shop_backend(backend: Backend) {
    let (server, graph, shop) = started(backend, Duration::ZERO).await;
    let wa = "351910000001";
    post(&server, text(wa, "wamid.in.1", "where is my order?")).await;
    wait_for_text(&graph, "What's your order number?").await;
    // The customer's message was marked read with the typing indicator, first.
    let first = &graph.requests()[0];
    assert_eq!(first.phone_number_id, PNID);
    assert_eq!(
        first.authorization.as_deref(),
        Some("Bearer test-access-token")
    );
    assert_eq!(
        first.body,
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in.1", "typing_indicator": {"type": "text"}})
    );
    post(&server, text(wa, "wamid.in.2", "12")).await;
    wait_for_text(&graph, "That doesn't look like an order number").await;
    post(&server, text(wa, "wamid.in.3", "#10442")).await;
    let texts = wait_for_text(&graph, "on its way").await;
    assert!(
        texts.contains(&format!(
            "Order #10442 is on its way with CTT 🚚 Expected {}.",
            crate::standin::shop::day_from_today(3)
        )),
        "{texts:?}"
    );
    assert_eq!(shop.calls.lock().unwrap()[0].0, "GET /orders/10442");
    // The reply has the exact shape of WhatsApp's text send.
    let reply = graph
        .messages()
        .into_iter()
        .find(|m| {
            m["text"]["body"]
                .as_str()
                .is_some_and(|b| b.contains("on its way"))
        })
        .unwrap();
    let shape = fixture("send_text_request.json");
    let shape: Value = serde_json::from_slice(&shape).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&reply), keys(&shape));
    assert_eq!(reply["to"], wa);
    // The transcript holds the bot's lines with the wamids WhatsApp gave them.
    let conversation = wait_for("the reply recorded", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        let recorded = c["transcript"].as_array()?.iter().any(|l| {
            l["role"] == "bot" && l["text"].as_str().is_some_and(|t| t.contains("on its way"))
        });
        recorded.then_some(c)
    })
    .await;
    let bot_lines: Vec<&Value> = conversation["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "bot")
        .collect();
    assert!(
        bot_lines
            .iter()
            .all(|l| l["message_id"].as_str().unwrap().starts_with("wamid.OUT"))
    );
    // Each customer text keeps what the classifier made of it, through either store.
    let understood: Vec<(&str, &Value)> = conversation["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == "customer")
        .map(|l| (l["text"].as_str().unwrap(), &l["understood"]["stage"]))
        .collect();
    assert_eq!(
        understood,
        [
            ("where is my order?", &json!("rules")),
            ("12", &json!("none")),
            ("#10442", &json!("answer")),
        ],
        "{conversation}"
    );
    assert_eq!(conversation["mode"], "bot");
    assert!(
        conversation.get("outbox").is_none(),
        "nothing left to send: {conversation}"
    );
    // A status for our reply is recorded on its line.
    let wamid = bot_lines.last().unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
        "statuses": [{"id": wamid, "status": "delivered", "timestamp": now_secs().to_string(), "recipient_id": wa}]}}]}]});
    post(&server, serde_json::to_vec(&status).unwrap()).await;
    wait_for("the delivered status", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        c["transcript"]
            .as_array()?
            .iter()
            .any(|l| l["message_id"] == wamid.as_str() && l["status"] == "delivered")
            .then_some(())
    })
    .await;
    // WhatsApp reports a reply failed because the window had closed (131047): the window
    // template goes instead, once.
    let failed = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
        "statuses": [{"id": wamid, "status": "failed", "timestamp": now_secs().to_string(), "recipient_id": wa,
            "errors": [{"code": 131047, "title": "Re-engagement message"}]}]}}]}]});
    let failed = serde_json::to_vec(&failed).unwrap();
    assert_eq!(post_counting_duplicates(&server, &failed).await, 0);
    assert_eq!(
        post_counting_duplicates(&server, &failed).await,
        1,
        "the retry is dropped"
    );
    // Once the failure is recorded and nothing waits to be sent, every send it caused is out.
    wait_for(
        "the failure handled and the template sent",
        DEADLINE,
        || async {
            let c = server.conversation(wa).await?;
            let noted = c["transcript"]
                .to_string()
                .contains("the window template is queued");
            (noted && c.get("outbox").is_none()).then_some(())
        },
    )
    .await;
    let templates = graph
        .messages()
        .iter()
        .filter(|m| m["to"] == wa && m["type"] == "template")
        .count();
    assert_eq!(templates, 1);
}

async fn a_reply_in_flight_when_the_process_dies_is_sent_after_restart(backend: Backend) {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let mut spec = Spec::with_bot(backend, &graph.url, &shop.url);
    spec.env.push(("TANDEM_SEND_RECOVERY".into(), "1s".into()));
    spec.env.push(("TANDEM_LEASE".into(), "1s".into()));
    let mut server = Server::start(spec.clone());
    graph.stall(true);
    let wa = "351910000007";
    post(&server, text(wa, "wamid.k.1", "opening hours")).await;
    // A reply has reached the Graph API, which has not answered yet: kill -9 now.
    wait_for("a send in flight", DEADLINE, || async {
        (!graph.messages().is_empty()).then_some(())
    })
    .await;
    server.kill9();
    graph.stall(false);
    let restarted = Server::start(spec);
    // After the restart the queued replies go out again (at least once: the first attempt's
    // outcome was never known), and the transcript records them.
    let conversation = wait_for(
        "the reply recorded after restart",
        Duration::from_secs(30),
        || async {
            let c = restarted.conversation(wa).await?;
            let sent = c["transcript"].as_array()?.iter().any(|l| {
                l["role"] == "bot"
                    && l["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("Rua das Flores"))
            });
            (sent && c.get("outbox").is_none()).then_some(c)
        },
    )
    .await;
    assert_eq!(conversation["mode"], "bot");
    let attempts = graph
        .texts()
        .iter()
        .filter(|t| t.contains("Rua das Flores"))
        .count();
    assert!((1..=2).contains(&attempts), "{:?}", graph.texts());
}

async fn a_numbers_sends_never_exceed_its_rate(backend: Backend) {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let mut spec = Spec::with_bot(backend, &graph.url, &shop.url);
    spec.env.push(("TANDEM_SEND_RATE".into(), "3".into()));
    let server = Server::start(spec);
    for i in 0..4 {
        post(
            &server,
            text(&format!("35191000010{i}"), &format!("wamid.r.{i}"), "hi"),
        )
        .await;
    }
    // Each greeting is two or three messages: at least 8, at 3 a second.
    wait_for("every greeting sent", Duration::from_secs(20), || async {
        (graph
            .texts()
            .iter()
            .filter(|t| t.contains("How can I help"))
            .count()
            == 4)
            .then_some(())
    })
    .await;
    // The schedule itself (no one-second window holds more than the rate, across callers) is
    // checked exactly on the stores' slots (contract test
    // `send_slots_keep_each_numbers_rate_across_callers`). Arrival times at the stand-in also
    // carry each request's delay, which a busy machine stretches, so here only what delays
    // cannot fake is asserted: a message never arrives before its slot, so the last one
    // arrives at least (n - 3) / 3 seconds after the first one's slot. Without the limit
    // all of them would arrive within a few milliseconds.
    let times = graph.message_times();
    let n = times.len();
    assert!(n >= 8, "{n}");
    let span = times.last().unwrap().duration_since(times[0]);
    let schedule = Duration::from_millis(1000 * (n as u64 - 3) / 3);
    // The first message may itself have arrived late, by at most this much.
    let first_delay = Duration::from_millis(500);
    assert!(
        span + first_delay >= schedule,
        "{n} messages in {span:?}, at 3 a second they take at least {schedule:?}"
    );
}

async fn a_backend_call_longer_than_the_lease_is_made_once_and_answered_once(backend: Backend) {
    let graph = Graph::start().await;
    // The shipped order flow gives its call 3 s; the backend takes 2.5 s, the lane lease is 1 s.
    let shop = Shop::start(Duration::from_millis(2500)).await;
    let mut spec = Spec::with_bot(backend, &graph.url, &shop.url);
    spec.env.push(("TANDEM_LEASE".into(), "1s".into()));
    spec.env.push(("TANDEM_SEND_RECOVERY".into(), "1s".into()));
    let server = Server::start(spec);
    let wa = "351910000009";
    post(&server, text(wa, "wamid.once.1", "where is my order?")).await;
    wait_for_text(&graph, "What's your order number?").await;
    post(&server, text(wa, "wamid.once.2", "10442")).await;
    wait_for_text(&graph, "on its way").await;
    // Let any second run of the turn (another worker taking the lane) show itself.
    wait_for("the turn committed", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        (c["events_applied"].as_u64()? >= 2 && c.get("outbox").is_none()).then_some(())
    })
    .await;
    let calls = shop.calls.lock().unwrap().clone();
    assert_eq!(
        calls.len(),
        1,
        "the lane kept its lease through the call: {calls:?}"
    );
    let key = calls[0].2.clone().expect("an Idempotency-Key");
    assert!(key.starts_with("tandem-") && key.ends_with("-1"), "{key}");
    let answers = graph
        .texts()
        .iter()
        .filter(|t| t.contains("on its way"))
        .count();
    assert_eq!(answers, 1);
}

async fn a_process_killed_during_a_backend_call_repeats_it_with_the_same_key(backend: Backend) {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let mut spec = Spec::with_bot(backend, &graph.url, &shop.url);
    spec.env.push(("TANDEM_LEASE".into(), "1s".into()));
    let mut server = Server::start(spec.clone());
    let wa = "351910000010";
    post(&server, text(wa, "wamid.kc.1", "where is my order?")).await;
    wait_for_text(&graph, "What's your order number?").await;
    // The backend hangs from now on, so the turn is surely waiting on it at the kill.
    shop.hold(true);
    post(&server, text(wa, "wamid.kc.2", "10442")).await;
    wait_for("the backend call to start", DEADLINE, || async {
        (!shop.calls.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    // The turn is waiting on the backend: kill -9 now; the event was answered 200, so the
    // restarted process runs the turn again.
    server.kill9();
    shop.hold(false);
    let restarted = Server::start(spec);
    wait_for_text(&graph, "on its way").await;
    wait_for("the turn committed", Duration::from_secs(30), || async {
        let c = restarted.conversation(wa).await?;
        (c["events_applied"].as_u64()? >= 2 && c.get("outbox").is_none()).then_some(())
    })
    .await;
    let calls = shop.calls.lock().unwrap().clone();
    assert!(
        (1..=2).contains(&calls.len()),
        "the call is made again at most once: {calls:?}"
    );
    let keys: Vec<_> = calls.iter().map(|c| c.2.clone()).collect();
    assert!(
        keys.iter().all(|k| k.is_some() && *k == keys[0]),
        "a repeated call carries the same Idempotency-Key: {keys:?}"
    );
    let answers = graph
        .texts()
        .iter()
        .filter(|t| t.contains("on its way"))
        .count();
    assert_eq!(
        answers,
        1,
        "the customer got one answer: {:?}",
        graph.texts()
    );
}

async fn an_echo_during_a_slow_call_means_the_reply_is_never_sent(backend: Backend) {
    let (server, graph, shop) = started(backend, Duration::from_millis(1500)).await;
    let wa = "351910000002";
    post(&server, text(wa, "wamid.in.1", "where is my order?")).await;
    wait_for_text(&graph, "What's your order number?").await;
    post(&server, text(wa, "wamid.in.2", "10442")).await;
    wait_for("the backend call to start", DEADLINE, || async {
        (!shop.calls.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    // A person answers from the phone while the backend is still thinking.
    post(
        &server,
        echo(
            wa,
            "wamid.echo.1",
            "Hi Ana, Rui here, let me check that for you",
        ),
    )
    .await;
    let conversation = server.conversation(wa).await.unwrap();
    assert_eq!(conversation["mode"], "human");
    // Once the lane has applied the answer and the echo (after the slow call), nothing was
    // sent and nothing waits to be.
    wait_for("the answer and the echo applied", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        (c["events_applied"].as_u64()? >= 3 && c.get("outbox").is_none()).then_some(())
    })
    .await;
    let texts = graph.texts();
    assert!(
        !texts.iter().any(|t| t.contains("on its way")),
        "the bot talked over a person: {texts:?}"
    );
    let conversation = server.conversation(wa).await.unwrap();
    assert_eq!(conversation["mode"], "human");
    let transcript = conversation["transcript"].to_string();
    assert!(!transcript.contains("on its way"), "{transcript}");
    assert!(transcript.contains("Rui here"), "{transcript}");
}

async fn throttling_is_retried_and_a_closed_window_gets_the_template(backend: Backend) {
    let (server, graph, _shop) = started(backend, Duration::ZERO).await;
    let throttled: Value = serde_json::from_slice(&fixture("send_error_130429.json")).unwrap();
    graph.script(400, throttled);
    let wa = "351910000003";
    post(&server, text(wa, "wamid.in.1", "delivery fees?")).await;
    // The first send (the after-hours notice at night, else the question) was refused with
    // 130429, then retried after the backoff; the messages after it waited their turn.
    let texts = wait_for_text(&graph, "What's your postcode?").await;
    assert_eq!(texts[0], texts[1], "{texts:?}");
    assert!(
        texts.last().unwrap().contains("What's your postcode?"),
        "{texts:?}"
    );
    // WhatsApp itself says the window is closed (131047): the template goes instead.
    let closed: Value = serde_json::from_slice(&fixture("send_error_131047.json")).unwrap();
    graph.script(400, closed);
    let wa_closed = "351910000005";
    post(&server, text(wa_closed, "wamid.c.1", "opening hours")).await;
    wait_for("a template to the closed window", DEADLINE, || async {
        graph
            .messages()
            .iter()
            .any(|m| m["to"] == wa_closed && m["type"] == "template")
            .then_some(())
    })
    .await;
    // The refused free-text message was sent once, refused, and replaced by the template.
    let to_closed: Vec<Value> = graph
        .messages()
        .into_iter()
        .filter(|m| m["to"] == wa_closed)
        .collect();
    assert_eq!(to_closed[0]["type"], "text", "{to_closed:?}");
    assert_eq!(to_closed[1]["type"], "template", "{to_closed:?}");
    // A message sent more than 24 hours ago: only the approved template may answer it.
    let wa_old = "351910000004";
    let old = now_secs() - 30 * 3600;
    post(
        &server,
        customer(
            wa_old,
            "wamid.old.1",
            old,
            json!({"type": "text", "text": {"body": "delivery fees?"}}),
        ),
    )
    .await;
    let template = wait_for("a template to the old conversation", DEADLINE, || async {
        graph
            .messages()
            .into_iter()
            .find(|m| m["to"] == wa_old && m["type"] == "template")
    })
    .await;
    assert_eq!(template["template"]["name"], "verde_follow_up");
    assert_eq!(template["template"]["language"]["code"], "en");
    assert!(
        graph
            .messages()
            .iter()
            .all(|m| m["to"] != wa_old || m["type"] == "template"),
        "no free text outside the window"
    );
}

async fn a_retried_webhook_is_answered_once(backend: Backend) {
    let (server, graph, _shop) = started(backend, Duration::ZERO).await;
    let wa = "351910000006";
    let body = text(wa, "wamid.dup.1", "opening hours");
    assert_eq!(post_counting_duplicates(&server, &body).await, 0);
    assert_eq!(post_counting_duplicates(&server, &body).await, 1);
    wait_for_text(&graph, "Rua das Flores").await;
    // A retry after the answer is dropped at ingress: it never reaches the bot.
    assert_eq!(post_counting_duplicates(&server, &body).await, 1);
    wait_for("the answer recorded", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        c.get("outbox").is_none().then_some(())
    })
    .await;
    let answers = graph
        .texts()
        .iter()
        .filter(|t| t.contains("Rua das Flores"))
        .count();
    assert_eq!(answers, 1, "{:?}", graph.texts());
}

crate::both_stores!(
    an_order_question_is_answered_from_the_shop_backend,
    an_echo_during_a_slow_call_means_the_reply_is_never_sent,
    a_backend_call_longer_than_the_lease_is_made_once_and_answered_once,
    a_process_killed_during_a_backend_call_repeats_it_with_the_same_key,
    throttling_is_retried_and_a_closed_window_gets_the_template,
    a_retried_webhook_is_answered_once,
    a_reply_in_flight_when_the_process_dies_is_sent_after_restart,
    a_numbers_sends_never_exceed_its_rate,
);

/// Copies the shipped flows into a directory the test may edit.
fn editable_flows() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_reload_on_sighup_and_on_change_and_invalid_ones_are_refused() {
    let store = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let flows = editable_flows();
    let mut spec = Spec::with_bot(Backend::embedded(store.path()), &graph.url, &shop.url);
    spec.flows = Some(flows.path().to_owned());
    let server = Server::start(spec);
    post(&server, text("351910000201", "wamid.h.1", "opening hours")).await;
    wait_for_text(&graph, "Rua das Flores").await;

    // A broken edit, then SIGHUP: refused, the running flows stay in force.
    let hours = flows.path().join("hours.yaml");
    let original = std::fs::read_to_string(&hours).unwrap();
    std::fs::write(&hours, original.replace("steps:", "stepz:")).unwrap();
    server.hangup();
    let refused = r#"tandem_flows_reloads_total{outcome="refused"}"#;
    wait_for("the reload refused", DEADLINE, || async {
        (server.metric(refused).await >= 1.0).then_some(())
    })
    .await;
    post(&server, text("351910000202", "wamid.h.2", "opening hours")).await;
    wait_for("the old flows to answer", DEADLINE, || async {
        (graph
            .texts()
            .iter()
            .filter(|t| t.contains("Rua das Flores"))
            .count()
            == 2)
            .then_some(())
    })
    .await;

    // A valid edit: picked up by the file watch without a signal.
    std::fs::write(&hours, original.replace("Rua das Flores 12", "Rua Nova 1")).unwrap();
    let reloaded = r#"tandem_flows_reloads_total{outcome="ok"}"#;
    wait_for("the file change reloaded", DEADLINE, || async {
        (server.metric(reloaded).await >= 1.0).then_some(())
    })
    .await;
    post(&server, text("351910000203", "wamid.h.3", "opening hours")).await;
    wait_for("the new flows to answer", DEADLINE, || async {
        graph
            .texts()
            .iter()
            .any(|t| t.contains("Rua Nova 1"))
            .then_some(())
    })
    .await;
}

#[test]
fn the_server_refuses_to_start_on_invalid_flows() {
    let flows = editable_flows();
    std::fs::write(
        flows.path().join("broken.yaml"),
        "id: broken\nsteps:\n  - goto: nowhere\n",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--flows"])
        .arg(flows.path())
        .env("TANDEM_STORE", store.path().join("t.redb"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("broken.yaml:3:11: error: `goto: nowhere` names no flow"),
        "{err}"
    );
}

/// The README's walkthroughs, followed in order on one store as a reader would: "Try it in
/// two minutes", then "Hand conversations to people" (a restart with the handoff demo's
/// configuration), then "Customers with a username and no phone number".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthroughs_work_in_order() {
    let store = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let mut server = Server::start(Spec::with_bot(
        Backend::embedded(store.path()),
        &graph.url,
        &shop.url,
    ));
    let replay = |server: &Server, args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("replay")
            .arg("--url")
            .arg(server.url("/webhook"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("TANDEM_APP_SECRET", crate::helpers::SECRET)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    };
    replay(&server, &["--text", "where is my order?"]);
    wait_for_text(&graph, "What's your order number?").await;
    replay(&server, &["--text", "10442"]);
    wait_for_text(&graph, "on its way with CTT").await;
    replay(
        &server,
        &[
            "--now",
            "tests/fixtures/whatsapp/smb_message_echo_text.json",
        ],
    );
    replay(&server, &["--text", "hello?"]);
    let conversation = wait_for("the customer's last line", DEADLINE, || async {
        let c = server.conversation("15550002222").await?;
        c["transcript"].to_string().contains("hello?").then_some(c)
    })
    .await;
    // The lane has applied it; had the bot answered, the reply would wait in the outbox.
    assert!(conversation.get("outbox").is_none(), "{conversation}");
    assert_eq!(conversation["mode"], "human");
    assert_eq!(conversation["paused_by"], "echo");
    let roles: Vec<&str> = conversation["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["role"].as_str().unwrap())
        .collect();
    assert!(roles.contains(&"human"), "{roles:?}");
    let last = graph.texts().last().cloned().unwrap_or_default();
    assert!(
        last.contains("on its way"),
        "the bot stayed silent after the person: {:?}",
        graph.texts()
    );

    // "Hand conversations to people": the same store, restarted with one agent and a hook
    // receiver; a new customer asks for a person.
    assert!(server.terminate().success());
    let hooks = crate::standin::HookReceiver::start().await;
    let config = store.path().join("handoff-demo.toml");
    std::fs::write(
        &config,
        "[handoff]\ndefault_team = \"support\"\n[[handoff.teams]]\nid = \"support\"\n[[handoff.agents]]\nid = \"marta\"\nteams = [\"support\"]\n",
    )
    .unwrap();
    let mut spec = Spec::with_bot(Backend::embedded(store.path()), &graph.url, &shop.url);
    spec.config = Some(config);
    spec.env.push(("TANDEM_HOOK_URL".into(), hooks.url.clone()));
    spec.env
        .push(("TANDEM_HOOK_SECRET".into(), "dev-secret".into()));
    let server = Server::start(spec);
    let ben = "15550003333";
    replay(
        &server,
        &["--from", ben, "--text", "I want to talk to a person"],
    );
    let delivered = |event: &'static str| {
        let hooks = hooks.clone();
        async move {
            wait_for(&format!("the {event} hook"), DEADLINE, || async {
                hooks
                    .delivered()
                    .into_iter()
                    .find(|h| h.event == event && h.body["customer"]["phone"] == ben)
            })
            .await
        }
    };
    delivered("conversation.handoff_requested").await;
    let assigned = delivered("conversation.assigned").await;
    assert_eq!(assigned.body["agent"], "marta");
    // Whatever the hour, Ben is told a person is on it (after hours, once marta has it).
    wait_for_text(&graph, "passing you to a person").await;
    for path in ["/v1/agents", "/v1/queue"] {
        assert_eq!(server.api(path).await.0, 200, "{path}");
    }
    let act = |path: String, body: Value| {
        let request = server
            .client
            .post(server.url(&path))
            .bearer_auth(crate::helpers::API_TOKEN)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let id = format!("/v1/conversations/{PNID}:{ben}");
    let (status, _) = act(format!("{id}/messages"), json!({"text": "Hi, Marta here!"})).await;
    assert_eq!(status, 202);
    wait_for_text(&graph, "Hi, Marta here!").await;
    delivered("conversation.human_takeover").await;
    let (status, released) = act(format!("{id}/release"), json!({})).await;
    assert_eq!((status, released["mode"].as_str()), (202, Some("bot")));
    delivered("conversation.resumed").await;

    // "Customers with a username and no phone number".
    replay(
        &server,
        &[
            "--now",
            "tests/fixtures/whatsapp/bsuid_inbound_text_username_only.json",
        ],
    );
    let reply = wait_for("a reply through `recipient`", DEADLINE, || async {
        graph
            .messages()
            .into_iter()
            .find(|m| m["recipient"] == "US.13491208600000000004")
    })
    .await;
    assert!(reply.get("to").is_none(), "{reply}");
    let (status, customer) = server.api("/v1/customers/US.13491208600000000004").await;
    assert_eq!(status, 200, "{customer}");
    assert_eq!(customer["customer"]["username"], "dario.m_88");
    replay(
        &server,
        &["--now", "tests/fixtures/whatsapp/bsuid_echo_text.json"],
    );
    let dario = server
        .conversation("US.13491208600000000004")
        .await
        .unwrap();
    assert_eq!(dario["mode"], "human", "paused by the echo: {dario}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_routes_what_rules_and_the_local_model_miss_and_its_failure_falls_back() {
    let store = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let llm = crate::standin::llm().await;
    let mut spec = Spec::with_bot(Backend::embedded(store.path()), &graph.url, &shop.url);
    spec.env.push(("TANDEM_LLM_BASE_URL".into(), llm));
    spec.env
        .push(("TANDEM_LLM_MODEL".into(), "test-model".into()));
    spec.env.push(("TANDEM_LLM_TIMEOUT".into(), "2s".into()));
    let server = Server::start(spec);
    post(
        &server,
        text("351910000301", "wamid.l.1", "o vaso chegou partido"),
    )
    .await;
    wait_for_text(&graph, "What's the order number (5 digits)?").await;
    let conversation = server.conversation("351910000301").await.unwrap();
    assert_eq!(
        conversation["language"], "pt",
        "the detected language is kept"
    );
    // The endpoint fails: the customer still gets an answer (a first message: the menu).
    post(&server, text("351910000302", "wamid.l.2", "zzyzx fail")).await;
    wait_for("an answer despite the failure", DEADLINE, || async {
        graph
            .messages()
            .iter()
            .any(|m| m["to"] == "351910000302" && m["type"] == "interactive")
            .then_some(())
    })
    .await;
    // The triage says the customer needs a person: handed off, whatever the intent.
    post(
        &server,
        text(
            "351910000303",
            "wamid.l.3",
            "this is unacceptable, I want to file a complaint",
        ),
    )
    .await;
    let conversation = wait_for("the triage handoff", DEADLINE, || async {
        let c = server.conversation("351910000303").await?;
        (c["mode"] == "handoff").then_some(c)
    })
    .await;
    assert_eq!(conversation["handoff"]["reason"], "needs_human");
    assert_eq!(conversation["handoff"]["team"], "support");
    assert!(server.metric("tandem_llm_calls_total").await >= 3.0);

    // An answer the validator refuses: the LLM reads the order number out of it.
    let wa = "351910000304";
    post(&server, text(wa, "wamid.l.4", "where is my order?")).await;
    wait_for("the order question", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        c["bot"].get("position").is_some().then_some(())
    })
    .await;
    post(&server, text(wa, "wamid.l.5", "it's ten four four two")).await;
    let c = wait_for("the order number read", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        c["bot"]["slots"].get("order_number").is_some().then_some(c)
    })
    .await;
    assert_eq!(c["bot"]["slots"]["order_number"]["text"], "10442", "{c}");
    wait_for_text(&graph, "Order #10442 is on its way").await;
    // Nothing to read: refused as usual (asked again).
    let wa = "351910000305";
    post(&server, text(wa, "wamid.l.6", "where is my order?")).await;
    wait_for("the order question", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        c["bot"].get("position").is_some().then_some(())
    })
    .await;
    post(&server, text(wa, "wamid.l.7", "no idea, sorry")).await;
    let c = wait_for("the refusal", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        (c["bot"]["position"]["tries"] == 1).then_some(c)
    })
    .await;
    assert!(c["bot"]["slots"].get("order_number").is_none(), "{c}");
    // Mid-flow, an upset message that is no answer is triaged: a person takes it.
    post(
        &server,
        text(
            wa,
            "wamid.l.8",
            "this is unacceptable, I want to file a complaint",
        ),
    )
    .await;
    let c = wait_for("the mid-flow handoff", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        (c["mode"] == "handoff").then_some(c)
    })
    .await;
    assert_eq!(c["handoff"]["reason"], "needs_human", "{c}");

    // Every customer text carries what the cascade made of it; the review lists the texts
    // only the LLM understood, or nobody did, to become examples.
    let c = server.conversation("351910000304").await.unwrap();
    let line = |c: &serde_json::Value, text: &str| {
        c["transcript"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["text"] == text)
            .cloned()
            .unwrap_or_else(|| panic!("{text:?} in {c}"))
    };
    let asked = line(&c, "where is my order?");
    assert_eq!(asked["understood"]["stage"], "rules", "{asked}");
    assert_eq!(asked["understood"]["intent"], "order_status", "{asked}");
    let (code, review) = server.api("/v1/classifier/review").await;
    assert_eq!(code, 200, "{review}");
    let listed = review["messages"].as_array().unwrap();
    let find = |text: &str| listed.iter().find(|m| m["text"] == text);
    let vaso = find("o vaso chegou partido").expect("the LLM's catch is listed");
    assert_eq!(vaso["stage"], "llm", "{vaso}");
    assert_eq!(vaso["intent"], "returns", "{vaso}");
    let vaso_conversation = server.conversation("351910000301").await.unwrap();
    assert_eq!(vaso["conversation"], vaso_conversation["id"]);
    let failed = find("zzyzx fail").expect("the message nobody understood is listed");
    assert_eq!(failed["stage"], "none", "{failed}");
    assert!(failed["intent"].is_null(), "{failed}");
    assert!(
        find("where is my order?").is_none(),
        "a rule understood it: {review}"
    );
    let (_, only_none) = server.api("/v1/classifier/review?stage=none").await;
    let stages: Vec<&str> = only_none["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["stage"].as_str().unwrap())
        .collect();
    assert!(
        !stages.is_empty() && stages.iter().all(|s| *s == "none"),
        "{stages:?}"
    );
    // Paging by conversations: one per page here, the cursor leads to the next.
    let (_, first) = server.api("/v1/classifier/review?limit=1").await;
    let next = first["next"]
        .as_str()
        .expect("more conversations")
        .to_owned();
    let (code, cursor) = server.api(&format!("/v1/conversations/{next}")).await;
    assert_eq!(code, 200, "the cursor names a conversation: {cursor}");
    let (_, second) = server
        .api(&format!("/v1/classifier/review?limit=1&after={next}"))
        .await;
    assert!(
        second["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["conversation"] != first["messages"][0]["conversation"]),
        "{second}"
    );
    let (code, refused) = server.api("/v1/classifier/review?stage=maybe").await;
    assert_eq!(code, 400);
    assert!(refused.to_string().contains("stage must be"), "{refused}");
}

/// With a burst window, three quick messages are one turn: read once, classified once,
/// answered once — by the intent of the latest line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_is_answered_once() {
    let store = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let mut spec = Spec::with_bot(Backend::embedded(store.path()), &graph.url, &shop.url);
    spec.env
        .push(("TANDEM_BURST_WINDOW".into(), "500ms".into()));
    let server = Server::start(spec);
    let wa = "351910000401";
    for (i, body) in ["hi", "quick question", "where is my order?"]
        .iter()
        .enumerate()
    {
        post(&server, text(wa, &format!("wamid.b.{i}"), body)).await;
    }
    wait_for_text(&graph, "What's your order number?").await;
    let c = wait_for("the burst answered and sent", DEADLINE, || async {
        let c = server.conversation(wa).await?;
        (c.get("outbox").is_none() && c["bot"].get("burst").is_none()).then_some(c)
    })
    .await;
    let to_customer: Vec<Value> = graph
        .requests()
        .into_iter()
        .map(|r| r.body)
        .filter(|b| b["to"] == wa || b.get("status").is_some())
        .collect();
    let reads: Vec<&Value> = to_customer
        .iter()
        .filter(|b| b["status"] == "read")
        .collect();
    assert_eq!(
        reads.len(),
        1,
        "one mark-as-read for the burst: {to_customer:?}"
    );
    assert_eq!(
        reads[0]["message_id"], "wamid.b.2",
        "the latest message is marked read"
    );
    let replies: Vec<String> = graph.texts();
    assert!(
        !replies
            .iter()
            .any(|t| t.contains("How can I help you today?")),
        "no menu for the greeting in the burst: {replies:?}"
    );
    assert_eq!(
        server.metric("tandem_bot_turns_total").await,
        1.0,
        "one turn"
    );
    assert_eq!(
        crate::helpers::texts(&c, "customer").len(),
        3,
        "every message is in the transcript"
    );
}
