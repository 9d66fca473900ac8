//! Customers without a phone: business-scoped user ids (BSUIDs) and usernames, end to end on
//! both stores, with the sample payloads of `tests/fixtures/whatsapp/bsuid_*.json`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::both_stores;
use crate::helpers::{
    Backend, PNID, Server, Spec, fixture, now_secs, text, text_by, texts, wait_for,
};
use crate::standin::{Graph, Shop};

const DEADLINE: Duration = Duration::from_secs(15);
/// Ana: known by phone, and (from 2026 payloads) by this BSUID.
const ANA_PHONE: &str = "15550002222";
const ANA_BSUID: &str = "US.13491208600000000001";
/// Dario: a username, no phone.
const DARIO: &str = "US.13491208600000000004";
const DARIO_NEW: &str = "US.13491208600000000024";

both_stores!(
    every_bsuid_sample_is_taken_and_none_is_dead_lettered,
    a_phone_customer_who_later_writes_by_bsuid_only_stays_one_conversation,
    a_username_customer_is_answered_through_recipient_and_an_echo_by_bsuid_pauses,
    a_bsuid_change_keeps_one_conversation,
    a_reversed_echo_pauses_the_real_customer,
    conflicting_identifiers_are_never_merged,
    kill_9_and_retries_across_an_alias_link_lose_and_duplicate_nothing,
);

/// A sample payload with every `timestamp` set to now (a customer message older than 24 hours
/// may only be answered with a template).
fn sample(name: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture(name)).unwrap();
    fn walk(v: &mut Value, now: &str) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "timestamp" {
                        *v = now.into();
                    } else {
                        walk(v, now);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, now)),
            _ => {}
        }
    }
    walk(&mut body, &now_secs().to_string());
    serde_json::to_vec(&body).unwrap()
}

async fn post(server: &Server, body: &[u8]) -> Value {
    let response = server.post_signed(body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Waits until the conversation found by `who` has applied `n` events.
async fn applied(server: &Server, who: &str, n: u64) -> Value {
    wait_for(
        &format!("{n} events applied for {who}"),
        DEADLINE,
        || async {
            let c = server.conversation(who).await?;
            (c["events_applied"].as_u64()? >= n).then_some(c)
        },
    )
    .await
}

async fn bot(backend: Backend) -> (Server, Graph, Shop) {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let server = Server::start(Spec::with_bot(backend, &graph.url, &shop.url));
    (server, graph, shop)
}

/// Every message send the Graph stand-in received: never a BSUID in `to`.
fn sends(graph: &Graph) -> Vec<Value> {
    let messages = graph.messages();
    for m in &messages {
        let to = m["to"].as_str().unwrap_or_default();
        assert!(
            to.chars().all(|c| c.is_ascii_digit()),
            "a BSUID in `to` is silently dropped by WhatsApp: {m}"
        );
    }
    messages
}

async fn every_bsuid_sample_is_taken_and_none_is_dead_lettered(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    for name in [
        "bsuid_inbound_text_with_phone.json",
        "bsuid_inbound_text_username_only.json",
        "bsuid_echo_text.json",
        "bsuid_status_delivered.json",
        "system_user_changed_user_id.json",
    ] {
        let report = post(&server, &fixture(name)).await;
        assert_eq!(report["stored"], 1, "{name}: {report}");
        assert_eq!(report["kept"], 0, "{name} was dead-lettered: {report}");
    }
    let (_, letters) = server.api("/v1/dead-letters").await;
    assert_eq!(letters["dead_letters"], json!([]), "{letters}");
    // The username customer is one conversation, found by the BSUID: the message, the
    // person's reply from the phone (which paused the bot), the status and the BSUID change
    // all landed there.
    let dario = applied(&server, DARIO, 4).await;
    assert_eq!(dario["mode"], "human", "the change leaves the pause alone");
    assert_eq!(dario["paused_by"], "echo");
    assert_eq!(dario["customer"]["user_id"], DARIO_NEW);
    assert_eq!(dario["customer"]["username"], "dario.m_88");
    assert_eq!(dario["customer"]["name"], "Dario M.");
    assert_eq!(dario["customer"]["phone"], Value::Null);
    assert!(
        dario["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{PNID}:c_"))
    );
    assert_eq!(
        server.conversation(DARIO_NEW).await.unwrap()["id"],
        dario["id"],
        "the new BSUID finds the same conversation"
    );
    // The change is no chat line: the customer's message, the person's, and the pause note.
    let kinds: Vec<(&str, &str)> = dario["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["role"].as_str().unwrap(), l["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("customer", "text"),
            ("human", "text"),
            ("system", "system")
        ],
        "{dario}"
    );
    let ana = applied(&server, ANA_BSUID, 1).await;
    assert_eq!(ana["customer"]["phone"], ANA_PHONE);
    assert_eq!(ana["customer"]["user_id"], ANA_BSUID);
    assert_eq!(
        server.conversation(ANA_PHONE).await.unwrap()["id"],
        ana["id"]
    );
}

async fn a_phone_customer_who_later_writes_by_bsuid_only_stays_one_conversation(backend: Backend) {
    let (server, graph, _shop) = bot(backend).await;
    // Before 2026: a phone and nothing else.
    post(&server, &text(ANA_PHONE, "wamid.ana.1", "hello")).await;
    let first = applied(&server, ANA_PHONE, 1).await;
    // Then a payload with both: the phone and the BSUID are linked.
    post(&server, &sample("bsuid_inbound_text_with_phone.json")).await;
    // Then the BSUID alone, as a username user's messages come.
    post(
        &server,
        &text_by(None, Some(ANA_BSUID), "wamid.ana.3", "still there?"),
    )
    .await;
    let c = applied(&server, ANA_BSUID, 3).await;
    assert_eq!(c["id"], first["id"], "one conversation");
    assert_eq!(
        texts(&c, "customer"),
        [
            "hello",
            "Hi again, is the blue jacket back in stock in size M?",
            "still there?"
        ]
    );
    assert_eq!(server.metric("tandem_customers_created_total").await, 1.0);
    assert_eq!(
        server
            .metric("tandem_customer_aliases_linked_total{kind=\"user_id\"")
            .await,
        1.0
    );
    let (_, numbers) = server.api("/v1/numbers").await;
    assert_eq!(
        numbers["sending"], "ok",
        "an access token is set: {numbers}"
    );
    // The API finds the customer by phone, BSUID and customer id.
    let customer_id = c["customer"]["id"].as_str().unwrap().to_owned();
    for key in [ANA_PHONE, ANA_BSUID, &customer_id] {
        let (status, found) = server.api(&format!("/v1/customers/{key}")).await;
        assert_eq!(status, 200, "{key}: {found}");
        assert_eq!(found["customer"]["id"], customer_id.as_str());
        assert_eq!(found["customer"]["phone"], ANA_PHONE);
        assert_eq!(found["customer"]["user_id"], ANA_BSUID);
        assert_eq!(found["conversations"].as_array().unwrap().len(), 1);
    }
    // The bot answers with `to`: the phone is known.
    wait_for("a reply", DEADLINE, || async {
        (!sends(&graph).is_empty()).then_some(())
    })
    .await;
    assert!(
        sends(&graph)
            .iter()
            .all(|m| m["to"] == ANA_PHONE && m.get("recipient").is_none())
    );
}

async fn a_username_customer_is_answered_through_recipient_and_an_echo_by_bsuid_pauses(
    backend: Backend,
) {
    let (server, graph, _shop) = bot(backend).await;
    post(&server, &sample("bsuid_inbound_text_username_only.json")).await;
    let reply = wait_for("a reply to the username customer", DEADLINE, || async {
        sends(&graph).into_iter().next()
    })
    .await;
    assert_eq!(reply["recipient"], DARIO, "{reply}");
    assert_eq!(reply["recipient_type"], "individual");
    assert!(reply.get("to").is_none(), "{reply}");
    // A delivered status that names only the BSUID finds the bot's line.
    let c = wait_for("the reply in the transcript", DEADLINE, || async {
        let c = server.conversation(DARIO).await?;
        let sent = c["transcript"]
            .as_array()?
            .iter()
            .find(|l| l["role"] == "bot")?
            .clone();
        Some((c, sent))
    })
    .await;
    let (c, sent) = c;
    let mut status: Value =
        serde_json::from_slice(&fixture("bsuid_status_delivered.json")).unwrap();
    status["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = sent["message_id"].clone();
    let report = post(&server, &serde_json::to_vec(&status).unwrap()).await;
    assert_eq!(report["kept"], 0);
    let before = c["events_applied"].as_u64().unwrap();
    // Waits for the status itself: a timer (an idle check) is an applied event too.
    let delivered = wait_for("the delivered status applied", DEADLINE, || async {
        let c = applied(&server, DARIO, before + 1).await;
        let line = c["transcript"]
            .as_array()?
            .iter()
            .find(|l| l["message_id"] == sent["message_id"])?
            .clone();
        (line["status"] == "delivered").then_some(c)
    })
    .await;

    // A person answers from the phone; the echo names only the BSUID. Paused at once.
    let report = post(&server, &sample("bsuid_echo_text.json")).await;
    assert_eq!(report["paused"], 1, "{report}");
    let paused = server.conversation(DARIO).await.unwrap();
    assert_eq!(paused["mode"], "human");
    let sent_before = sends(&graph).len();
    let events = delivered["events_applied"].as_u64().unwrap();
    // The customer writes again: no bot message after the person's.
    post(
        &server,
        &text_by(None, Some(DARIO), "wamid.dario.2", "great, thanks!"),
    )
    .await;
    let after = applied(&server, DARIO, events + 2).await;
    assert_eq!(after["mode"], "human");
    assert_eq!(sends(&graph).len(), sent_before, "the bot stayed silent");
    assert_eq!(server.metric("tandem_collisions_total").await, 0.0);
}

async fn a_bsuid_change_keeps_one_conversation(backend: Backend) {
    let (server, graph, _shop) = bot(backend).await;
    post(&server, &sample("bsuid_inbound_text_username_only.json")).await;
    let before = applied(&server, DARIO, 1).await;
    wait_for("the first reply", DEADLINE, || async {
        (!sends(&graph).is_empty()).then_some(())
    })
    .await;
    let change = sample("system_user_changed_user_id.json");
    post(&server, &change).await;
    // Meta's retry of the same change is a duplicate.
    assert_eq!(post(&server, &change).await["duplicates"], 1);
    post(
        &server,
        &text_by(
            None,
            Some(DARIO_NEW),
            "wamid.dario.new",
            "it's me, new account",
        ),
    )
    .await;
    let after = wait_for("the message from the new BSUID", DEADLINE, || async {
        let c = server.conversation(DARIO_NEW).await?;
        texts(&c, "customer")
            .iter()
            .any(|t| t.contains("new account"))
            .then_some(c)
    })
    .await;
    assert_eq!(after["id"], before["id"], "one conversation");
    assert_eq!(
        server.conversation(DARIO).await.unwrap()["id"],
        before["id"]
    );
    assert_eq!(server.metric("tandem_customers_created_total").await, 1.0);
    // The bot now writes to the new BSUID.
    let reply = wait_for("a reply to the new BSUID", DEADLINE, || async {
        sends(&graph)
            .into_iter()
            .find(|m| m["recipient"] == DARIO_NEW)
    })
    .await;
    assert!(reply.get("to").is_none());
}

async fn a_reversed_echo_pauses_the_real_customer(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    let mut echo: Value = serde_json::from_slice(&fixture("smb_message_echo_text.json")).unwrap();
    let item = &mut echo["entry"][0]["changes"][0]["value"]["message_echoes"][0];
    // Written the other way round, as some libraries' fixtures have it.
    item["from"] = ANA_PHONE.into();
    item["to"] = "15550001111".into();
    let report = post(&server, &serde_json::to_vec(&echo).unwrap()).await;
    assert_eq!(report["paused"], 1);
    let c = server.conversation(ANA_PHONE).await.unwrap();
    assert_eq!(c["mode"], "human");
    assert_eq!(c["customer"]["phone"], ANA_PHONE);
    assert!(
        server.conversation("15550001111").await.is_none(),
        "the business number is no customer"
    );
}

async fn conflicting_identifiers_are_never_merged(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    post(&server, &text(ANA_PHONE, "wamid.c.1", "I am Ana")).await;
    post(
        &server,
        &text_by(None, Some(DARIO), "wamid.c.2", "I am Dario"),
    )
    .await;
    let ana = applied(&server, ANA_PHONE, 1).await;
    let dario = applied(&server, DARIO, 1).await;
    assert_ne!(ana["id"], dario["id"]);
    // A payload pairs Ana's phone with Dario's BSUID: routed by the BSUID, not merged.
    post(
        &server,
        &text_by(Some(ANA_PHONE), Some(DARIO), "wamid.c.3", "who am I?"),
    )
    .await;
    let routed = applied(&server, DARIO, 2).await;
    assert_eq!(texts(&routed, "customer"), ["I am Dario", "who am I?"]);
    let ana_again = server.conversation(ANA_PHONE).await.unwrap();
    assert_eq!(ana_again["id"], ana["id"], "the phone stays Ana's");
    assert_eq!(texts(&ana_again, "customer"), ["I am Ana"]);
    assert_eq!(
        server
            .metric("tandem_customer_alias_conflicts_total{kind=\"phone\"")
            .await,
        1.0
    );
}

async fn kill_9_and_retries_across_an_alias_link_lose_and_duplicate_nothing(backend: Backend) {
    let mut spec = Spec::new(backend);
    // The dead process's lanes are taken over after the lease.
    spec.env.push(("TANDEM_LEASE".into(), "1s".into()));
    spec.env.push(("TANDEM_SEND_RECOVERY".into(), "1s".into()));
    let mut server = Server::start(spec.clone());
    post(&server, &text(ANA_PHONE, "wamid.k.1", "hello")).await;
    let linking = sample("bsuid_inbound_text_with_phone.json");
    // Answered 200, then the process dies at once.
    post(&server, &linking).await;
    server.kill9();
    let server = Server::start(spec);
    // Meta retries the delivery it may think was lost: a duplicate.
    assert_eq!(post(&server, &linking).await["duplicates"], 1);
    post(
        &server,
        &text_by(None, Some(ANA_BSUID), "wamid.k.3", "bsuid only"),
    )
    .await;
    assert_eq!(
        post(
            &server,
            &text_by(None, Some(ANA_BSUID), "wamid.k.3", "bsuid only")
        )
        .await["duplicates"],
        1
    );
    let c = applied(&server, ANA_BSUID, 3).await;
    assert_eq!(server.conversation(ANA_PHONE).await.unwrap()["id"], c["id"]);
    assert_eq!(
        texts(&c, "customer"),
        [
            "hello",
            "Hi again, is the blue jacket back in stock in size M?",
            "bsuid only"
        ],
        "each message exactly once, in one conversation"
    );
}
