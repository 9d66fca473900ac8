//! Coexistence link health end to end: off-boarding holds the number's sends and fires the
//! hook, reconnection releases them; a quiet number turns at risk, the owner is reminded once,
//! and an echo clears it.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Backend, PNID, Server, Spec, echo, fixture, text, wait_for};
use crate::standin::{Graph, HookReceiver, ReceivedHook, Shop};

const DEADLINE: Duration = Duration::from_secs(15);
const WABA: &str = "104810000000001";

fn reconnected(at: u64) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": WABA, "time": at,
        "changes": [{"field": "account_update", "value": {"event": "ACCOUNT_RECONNECTED"}}]}]}),
    )
    .unwrap()
}

async fn post(server: &Server, body: Vec<u8>) {
    assert_eq!(server.post_signed(&body).await.status(), 200);
}

async fn started(
    backend: Backend,
    dir: &std::path::Path,
    health: &str,
) -> (Server, Graph, HookReceiver, Shop) {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let hooks = HookReceiver::start().await;
    let path = dir.join("tandem.toml");
    std::fs::write(
        &path,
        format!("[engine]\nhold_retry = \"200ms\"\nhook_backoff = \"100ms\"\n[health]\ntick = \"100ms\"\n{health}\n"),
    )
    .unwrap();
    let mut spec = Spec::with_bot(backend, &graph.url, &shop.url);
    spec.config = Some(path);
    spec.env.push(("TANDEM_HOOK_URL".into(), hooks.url.clone()));
    spec.env
        .push(("TANDEM_HOOK_SECRET".into(), "number-hook-secret".into()));
    let server = Server::start(spec);
    (server, graph, hooks, shop)
}

async fn number_hook(hooks: &HookReceiver, event: &str, n: usize) -> ReceivedHook {
    wait_for(&format!("hook {event} #{n}"), DEADLINE, || async {
        hooks
            .delivered()
            .into_iter()
            .filter(|h| h.event == event && h.body["number"]["phone_number_id"] == PNID)
            .nth(n - 1)
    })
    .await
}

async fn number(server: &Server) -> Value {
    let (status, body) = server.api(&format!("/v1/numbers/{PNID}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn an_offboarded_number_holds_its_sends_until_reconnected(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (server, graph, hooks, _shop) = started(backend, dir.path(), "").await;
    let wa = "351930000001";
    post(&server, text(wa, "wamid.n1", "opening hours")).await;
    wait_for("the first reply", DEADLINE, || async {
        (!graph.texts().is_empty()).then_some(())
    })
    .await;
    // The sender records the API activity once the Graph API answered, just after the
    // stand-in saw the message.
    let n = wait_for("the API activity recorded", DEADLINE, || async {
        let n = number(&server).await;
        (!n["last_api_activity_at"].is_null()).then_some(n)
    })
    .await;
    assert_eq!(n["state"], "linked");
    assert_eq!(n["waba_id"], WABA, "learnt from the webhook");
    assert_eq!(n["send_rate"], 20, "the throughput limit in force");

    post(&server, fixture("account_update_offboarded.json")).await;
    let hook = number_hook(&hooks, "number.disconnected", 1).await;
    assert_eq!(hook.body["reason"], "ACCOUNT_OFFBOARDED");
    assert_eq!(hook.body["number"]["state"], "offboarded");
    assert!(tandem_handoff::verify(
        "number-hook-secret",
        hook.timestamp,
        &hook.raw,
        &hook.signature
    ));

    // The customer writes again: the reply is kept, not sent and not failed.
    let sent = graph.texts().len();
    post(&server, text(wa, "wamid.n2", "opening hours")).await;
    let held = wait_for("a held send", DEADLINE, || async {
        let n = number(&server).await;
        (n["sends_held"].as_u64()? >= 2).then_some(n)
    })
    .await;
    assert_eq!(held["state"], "offboarded");
    assert_eq!(graph.texts().len(), sent, "nothing sent while off-boarded");
    let c = server.conversation(wa).await.unwrap();
    assert!(
        c.get("outbox").is_some(),
        "the reply waits in the outbox: {c}"
    );
    assert!(server.metric("tandem_sends_held_total").await >= 2.0);
    assert_eq!(
        server
            .metric(&format!(
                "tandem_number_state{{phone_number_id=\"{PNID}\",state=\"offboarded\""
            ))
            .await,
        1.0
    );

    // Reconnected: the hook fires and the held reply goes out.
    post(&server, reconnected(1_768_400_000)).await;
    let back = number_hook(&hooks, "number.reconnected", 1).await;
    assert_eq!(back.body["number"]["state"], "linked");
    wait_for("the held reply sent", DEADLINE, || async {
        (graph.texts().len() > sent).then_some(())
    })
    .await;
    assert_eq!(number(&server).await["state"], "linked");
    assert_eq!(
        hooks
            .delivered()
            .iter()
            .filter(|h| h.event == "number.disconnected")
            .count(),
        1
    );
    // Meta's later removal of the partner (with its reason) holds the sends again; an event
    // older than the last one applied (the fixture's own time) would be stale.
    let mut removed: Value =
        serde_json::from_slice(&fixture("account_update_partner_removed.json")).unwrap();
    removed["entry"][0]["time"] = 1_768_500_000.into();
    post(&server, serde_json::to_vec(&removed).unwrap()).await;
    wait_for("the removal applied", DEADLINE, || async {
        let n = number(&server).await;
        (n["state"] == "disconnected").then_some(())
    })
    .await;
    assert_eq!(
        number(&server).await["reason"],
        "PARTNER_REMOVED: PRIMARY_INACTIVITY"
    );
}

crate::both_stores!(an_offboarded_number_holds_its_sends_until_reconnected);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_number_turns_at_risk_reminds_the_owner_once_and_an_echo_clears_it() {
    let dir = tempfile::tempdir().unwrap();
    let health = "heartbeat = \"2s\"\nreminder_to = \"351900000001\"\nreminder_template = \"open_the_app\"\n";
    let (server, graph, hooks, _shop) =
        started(Backend::embedded(dir.path()), dir.path(), health).await;
    post(&server, text("351930000011", "wamid.q1", "opening hours")).await;
    let hook = number_hook(&hooks, "number.at_risk", 1).await;
    assert_eq!(hook.body["number"]["state"], "at_risk");
    let reminders = || {
        graph
            .messages()
            .into_iter()
            .filter(|m| m["to"] == "351900000001" && m["template"]["name"] == "open_the_app")
            .count()
    };
    wait_for("the reminder", DEADLINE, || async {
        (reminders() == 1).then_some(())
    })
    .await;
    let n = number(&server).await;
    assert_eq!(n["state"], "at_risk");
    assert!(!n["reminded_at"].is_null());
    // The phone is used again: linked, and no second reminder for that stretch.
    post(
        &server,
        echo("351930000011", "wamid.e1", "hi from the phone"),
    )
    .await;
    wait_for("the risk cleared", DEADLINE, || async {
        (number(&server).await["state"] == "linked").then_some(())
    })
    .await;
    assert_eq!(reminders(), 1);
    assert_eq!(
        hooks
            .delivered()
            .iter()
            .filter(|h| h.event == "number.at_risk")
            .count(),
        1
    );
    let (status, all) = server.api("/v1/numbers").await;
    assert_eq!(status, 200);
    assert_eq!(all["numbers"][0]["phone_number_id"], PNID);
    assert!(!all["numbers"][0]["last_phone_activity_at"].is_null());
}
