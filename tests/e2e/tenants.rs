//! Two businesses on one deployment (`tenants/acme`, `tenants/bolt`), one customer phone
//! writing to both: each tenant's flows answer the same question their own way, its sends
//! carry its own token (checked at the Graph stand-in), its hooks go to its own receiver, its
//! agents see only its queue, and its API token gets 404 for the other's conversations,
//! agents, numbers, hook deliveries and audit entries. A webhook of a number nobody owns is
//! kept as a dead letter. Tenant files are reloaded without a restart: a change takes effect,
//! a broken file is refused (the running tenant keeps answering), a new tenant is added.
//! Run on both stores.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{API_TOKEN, Backend, Server, Spec, now_secs, wait_for};
use crate::standin::{Graph, HookReceiver, Shop};

const DEADLINE: Duration = Duration::from_secs(20);
const ACME_NUMBER: &str = "106540000000001";
const BOLT_NUMBER: &str = "106540000000002";
const CORA_NUMBER: &str = "106540000000003";
const STRAY_NUMBER: &str = "106540000000009";
const NEW_NUMBER: &str = "106540000000005";
const PHONE: &str = "15550002222";
const ACME_API: &str = "acme-api-token";
const BOLT_API: &str = "bolt-api-token";

/// A customer text from `PHONE` to `number` of WABA `waba`, sent now.
fn text_to(number: &str, waba: &str, id: &str, body: &str) -> Vec<u8> {
    let value = json!({"messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": number},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": PHONE}],
        "messages": [{"from": PHONE, "id": id, "timestamp": now_secs().to_string(), "type": "text", "text": {"body": body}}]});
    serde_json::to_vec(&json!({"object": "whatsapp_business_account",
        "entry": [{"id": waba, "changes": [{"field": "messages", "value": value}]}]}))
    .unwrap()
}

/// One tenant as the test writes it.
struct TenantFiles<'a> {
    id: &'a str,
    number: &'a str,
    waba: &'a str,
    /// Replaces the shop's address in the shipped flows.
    address: &'a str,
    agent: &'a str,
    hook_url: &'a str,
    /// More of its tandem.toml (sections).
    extra: &'a str,
}

/// Writes tenant `t`: the shipped flows with its address, its agent in team support, a hook
/// receiver and an API token (secrets from `{ID}_…` variables).
fn write_tenant(root: &Path, t: &TenantFiles<'_>) {
    let TenantFiles {
        id,
        number,
        waba,
        address,
        agent,
        hook_url,
        extra,
    } = *t;
    let dir = root.join(id);
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replace("Rua das Flores 12", address);
            std::fs::write(flows.join(path.file_name().unwrap()), text).unwrap();
        }
    }
    let upper = id.to_uppercase();
    let config = format!(
        r#"numbers = ["{number}"]
wabas = ["{waba}"]

[meta]
access_token_env = "{upper}_ACCESS_TOKEN"

[[handoff.teams]]
id = "support"

[[handoff.agents]]
id = "{agent}"
teams = ["support"]

[[hooks]]
name = "crm"
url = "{hook_url}"
secret_env = "{upper}_HOOK_SECRET"

[[api.tokens]]
name = "{id}-desk"
token_env = "{upper}_API_TOKEN"
scopes = ["read", "agent", "admin"]
{extra}
"#
    );
    std::fs::write(dir.join("tandem.toml"), config).unwrap();
}

async fn call(server: &Server, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    call_with(server, method, path, token, "{}").await
}

async fn call_with(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: &'static str,
) -> (u16, Value) {
    let response = server
        .client
        .request(method, server.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(server: &Server, path: &str, token: &str) -> (u16, Value) {
    call(server, reqwest::Method::GET, path, token).await
}

/// Waits until the Graph stand-in got a text to `number` containing `needle`; returns the
/// authorization it carried.
async fn sent_to(graph: &Graph, number: &str, needle: &str) -> Option<String> {
    wait_for(
        &format!("a send to {number} saying {needle:?}"),
        DEADLINE,
        || async {
            graph
                .requests()
                .into_iter()
                .find(|r| {
                    r.phone_number_id == number
                        && r.body["text"]["body"]
                            .as_str()
                            .is_some_and(|t| t.contains(needle))
                })
                .map(|r| r.authorization)
        },
    )
    .await
}

async fn two_businesses_on_one_deployment(backend: Backend) {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let acme_hooks = HookReceiver::start().await;
    let bolt_hooks = HookReceiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let tenants = root.path().join("tenants");
    // Acme has its own LLM stage and keeps transcripts 30 days; bolt has neither (and the
    // deployment has no LLM).
    let llm = crate::standin::llm().await;
    let acme_extra =
        format!("[llm]\nbase_url = \"{llm}\"\nmodel = \"m\"\n[retention]\ntranscripts = \"30d\"\n");
    write_tenant(
        &tenants,
        &TenantFiles {
            id: "acme",
            number: ACME_NUMBER,
            waba: "104810000000001",
            address: "Acme Street 1",
            agent: "ana",
            hook_url: &acme_hooks.url,
            extra: &acme_extra,
        },
    );
    write_tenant(
        &tenants,
        &TenantFiles {
            id: "bolt",
            number: BOLT_NUMBER,
            waba: "104810000000002",
            address: "Bolt Avenue 2",
            agent: "bruno",
            hook_url: &bolt_hooks.url,
            extra: "",
        },
    );
    let mut spec = Spec::new(backend);
    for (k, v) in [
        ("TANDEM_TENANTS", tenants.to_str().unwrap()),
        ("TANDEM_GRAPH_URL", graph.url.as_str()),
        ("TANDEM_FLOW_SHOP_API", shop.url.as_str()),
        ("ACME_ACCESS_TOKEN", "acme-graph-token"),
        ("BOLT_ACCESS_TOKEN", "bolt-graph-token"),
        ("CORA_ACCESS_TOKEN", "cora-graph-token"),
        ("ACME_HOOK_SECRET", "acme-hook-secret"),
        ("BOLT_HOOK_SECRET", "bolt-hook-secret"),
        ("CORA_HOOK_SECRET", "cora-hook-secret"),
        ("ACME_API_TOKEN", ACME_API),
        ("BOLT_API_TOKEN", BOLT_API),
        ("CORA_API_TOKEN", "cora-api-token"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    spec.env
        .push(("TANDEM_PROMPTS".into(), prompts.to_str().unwrap().into()));
    let server = Server::start(spec);

    // The same question to both businesses from the same phone: each answers its own way,
    // through its own token.
    for (number, waba, id) in [
        (ACME_NUMBER, "104810000000001", "wamid.acme1"),
        (BOLT_NUMBER, "104810000000002", "wamid.bolt1"),
    ] {
        let body = text_to(number, waba, id, "what are your opening hours?");
        assert_eq!(server.post_signed(&body).await.status(), 200);
    }
    assert_eq!(
        sent_to(&graph, ACME_NUMBER, "Acme Street 1")
            .await
            .as_deref(),
        Some("Bearer acme-graph-token")
    );
    assert_eq!(
        sent_to(&graph, BOLT_NUMBER, "Bolt Avenue 2")
            .await
            .as_deref(),
        Some("Bearer bolt-graph-token")
    );
    assert!(
        !graph.texts().iter().any(|t| t.contains("Rua das Flores")),
        "no tenant answered with the other's or the shipped flows"
    );

    // A message only an LLM reads: acme's own LLM stage routes it, bolt has none.
    for (number, waba, id) in [
        (ACME_NUMBER, "104810000000001", "wamid.acme-pt"),
        (BOLT_NUMBER, "104810000000002", "wamid.bolt-pt"),
    ] {
        let body = text_to(number, waba, id, "o meu vaso chegou partido");
        assert_eq!(server.post_signed(&body).await.status(), 200);
    }
    for (number, token, stage) in [
        (ACME_NUMBER, ACME_API, "llm"),
        (BOLT_NUMBER, BOLT_API, "none"),
    ] {
        let path = format!("/v1/conversations/{number}:{PHONE}");
        let understood = wait_for("the message understood", DEADLINE, || async {
            let (_, view) = get(&server, &path, token).await;
            view["transcript"].as_array().and_then(|lines| {
                lines
                    .iter()
                    .find(|l| {
                        l["message_id"] == "wamid.acme-pt" || l["message_id"] == "wamid.bolt-pt"
                    })
                    .map(|l| l["understood"].clone())
                    .filter(|u| !u.is_null())
            })
        })
        .await;
        assert_eq!(understood["stage"], stage, "{number}: {understood}");
    }

    // One phone, two customers: each tenant resolves it to its own customer id, and neither
    // token sees the other's conversation.
    let acme_conv = format!("/v1/conversations/{ACME_NUMBER}:{PHONE}");
    let bolt_conv = format!("/v1/conversations/{BOLT_NUMBER}:{PHONE}");
    let (status, acme_view) = get(&server, &acme_conv, ACME_API).await;
    assert_eq!(status, 200, "{acme_view}");
    assert_eq!(acme_view["tenant"], "acme");
    let (status, bolt_view) = get(&server, &bolt_conv, BOLT_API).await;
    assert_eq!(status, 200, "{bolt_view}");
    assert_ne!(acme_view["customer"]["id"], bolt_view["customer"]["id"]);
    assert_eq!(get(&server, &bolt_conv, ACME_API).await.0, 404);
    assert_eq!(get(&server, &acme_conv, BOLT_API).await.0, 404);
    let takeover = format!("{bolt_conv}/takeover");
    let (status, _) = call(&server, reqwest::Method::POST, &takeover, ACME_API).await;
    assert_eq!(status, 404, "acting on another tenant's conversation");
    let (_, listed) = get(&server, "/v1/conversations", ACME_API).await;
    let ids: Vec<&str> = listed["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        !ids.is_empty() && ids.iter().all(|id| id.starts_with(ACME_NUMBER)),
        "{listed}"
    );
    let (_, numbers) = get(&server, "/v1/numbers", BOLT_API).await;
    let shown: Vec<&str> = numbers["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["phone_number_id"].as_str())
        .collect();
    assert_eq!(shown, [BOLT_NUMBER], "{numbers}");
    assert_eq!(
        get(&server, &format!("/v1/numbers/{ACME_NUMBER}"), BOLT_API)
            .await
            .0,
        404
    );

    // Each tenant's agents, queue and hooks are its own.
    let (_, agents) = get(&server, "/v1/agents", ACME_API).await;
    assert_eq!(agents["agents"][0]["id"], "ana", "{agents}");
    assert_eq!(agents["agents"].as_array().unwrap().len(), 1);
    let availability = "/v1/agents/bruno/availability";
    let away = r#"{"status": "away"}"#;
    let (status, _) = call_with(&server, reqwest::Method::PUT, availability, ACME_API, away).await;
    assert_eq!(status, 404, "another tenant's agent");
    let (status, _) = call_with(&server, reqwest::Method::PUT, availability, BOLT_API, away).await;
    assert_eq!(status, 200, "its own agent");
    for (number, waba, id) in [
        (ACME_NUMBER, "104810000000001", "wamid.acme2"),
        (BOLT_NUMBER, "104810000000002", "wamid.bolt2"),
    ] {
        let body = text_to(number, waba, id, "agent");
        assert_eq!(server.post_signed(&body).await.status(), 200);
    }
    // Bruno is away: bolt's customer waits in bolt's queue, which acme's token never sees.
    let (_, acme_queue) = get(&server, "/v1/queue", ACME_API).await;
    let bolt_queue = wait_for("bolt's waiting customer", DEADLINE, || async {
        let (_, queue) = get(&server, "/v1/queue", BOLT_API).await;
        (queue["queue"].as_array().is_some_and(|q| q.len() == 1)).then_some(queue)
    })
    .await;
    assert!(
        bolt_queue["queue"][0]["conversation"]
            .as_str()
            .unwrap()
            .starts_with(BOLT_NUMBER),
        "{bolt_queue}"
    );
    assert!(
        acme_queue["queue"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["conversation"].as_str().unwrap().starts_with(ACME_NUMBER)),
        "{acme_queue}"
    );
    let online = r#"{"status": "online"}"#;
    let (status, _) = call_with(
        &server,
        reqwest::Method::PUT,
        availability,
        BOLT_API,
        online,
    )
    .await;
    assert_eq!(status, 200);
    for (receiver, number, agent) in [
        (&acme_hooks, ACME_NUMBER, "ana"),
        (&bolt_hooks, BOLT_NUMBER, "bruno"),
    ] {
        let assigned = wait_for("the tenant's assignment hook", DEADLINE, || async {
            receiver
                .delivered()
                .into_iter()
                .find(|h| h.event == "conversation.assigned")
        })
        .await;
        assert_eq!(assigned.body["agent"], agent, "{}", assigned.body);
        assert!(
            receiver
                .delivered()
                .iter()
                .all(|h| h.body["conversation"]["id"]
                    .as_str()
                    .is_none_or(|c| c.starts_with(number))),
            "a receiver got another tenant's hook"
        );
    }
    let (_, agents) = get(&server, "/v1/agents", BOLT_API).await;
    assert_eq!(agents["agents"][0]["id"], "bruno");
    assert_eq!(agents["agents"][0]["open_conversations"], 1, "{agents}");
    // A deployment token names the tenant it means.
    let (status, _) = get(&server, "/v1/agents", API_TOKEN).await;
    assert_eq!(status, 400);
    let (status, agents) = get(&server, "/v1/agents?tenant=acme", API_TOKEN).await;
    assert_eq!(
        (status, agents["agents"][0]["id"].clone()),
        (200, json!("ana"))
    );
    assert_eq!(
        get(&server, "/v1/agents?tenant=acme", BOLT_API).await.0,
        404
    );

    // Audit entries are the tenant's own.
    let (status, _) = call(
        &server,
        reqwest::Method::POST,
        &format!("{acme_conv}/release"),
        ACME_API,
    )
    .await;
    assert_eq!(status, 202);
    let release = format!("{bolt_conv}/release");
    let (status, _) = call(&server, reqwest::Method::POST, &release, BOLT_API).await;
    assert_eq!(status, 202);
    let (_, bolt_audit) = get(&server, "/v1/audit", BOLT_API).await;
    let (_, acme_audit) = get(&server, "/v1/audit", ACME_API).await;
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let (acme_audit, bolt_audit) = (text(&acme_audit), text(&bolt_audit));
    for (tenant, mine, log) in [
        ("acme", ACME_NUMBER, &acme_audit),
        ("bolt", BOLT_NUMBER, &bolt_audit),
    ] {
        assert!(
            log.contains("conversation.release") && log.contains(mine),
            "{log}"
        );
        for line in log.lines() {
            let entry: Value = serde_json::from_str(line).unwrap();
            assert_eq!(
                entry["tenant"], tenant,
                "another tenant's audit entry: {line}"
            );
            assert_eq!(entry["actor"], format!("{tenant}-desk"), "{line}");
        }
    }
    let (_, all) = get(&server, "/v1/audit", API_TOKEN).await;
    assert!(text(&all).contains(ACME_NUMBER) && text(&all).contains(BOLT_NUMBER));

    // A number nobody owns: answered 200, kept whole as a dead letter, counted; only a
    // deployment token reads the list.
    let stray = text_to(STRAY_NUMBER, "104810000000009", "wamid.stray1", "hello?");
    assert_eq!(server.post_signed(&stray).await.status(), 200);
    let (_, letters) = get(&server, "/v1/dead-letters", API_TOKEN).await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["reason"], "unknown_number", "{letters}");
    assert!(letter["detail"].as_str().unwrap().contains(STRAY_NUMBER));
    assert!(letter["body"].as_str().unwrap().contains("wamid.stray1"));
    assert_eq!(get(&server, "/v1/dead-letters", ACME_API).await.0, 404);
    assert!(
        server
            .metric("tandem_webhook_unknown_number_events_total")
            .await
            >= 1.0
    );
    assert!(
        server
            .metric(r#"tandem_webhook_events_total{field="messages",tenant="bolt""#)
            .await
            >= 2.0
    );

    // Reloads without a restart: bolt's new address is used; acme's broken file is refused
    // and acme keeps answering; a new tenant is added and its number answered. Tenants are
    // read in name order, so the reload that refuses acme's file has seen bolt's change.
    let reloads = r#"tandem_tenant_reloads_total{outcome="ok""#;
    let loaded = server.metric(reloads).await;
    let bolt_hours = tenants.join("bolt/flows/hours.yaml");
    let changed = std::fs::read_to_string(&bolt_hours)
        .unwrap()
        .replace("Bolt Avenue 2", "Bolt Square 3");
    std::fs::write(&bolt_hours, changed).unwrap();
    std::fs::write(
        tenants.join("acme/tandem.toml"),
        "numbers = [\"not a number\"]\n",
    )
    .unwrap();
    wait_for(
        "acme's broken file refused, bolt's change in force",
        DEADLINE,
        || async {
            let refused = server
                .metric(r#"tandem_tenant_reloads_total{outcome="refused""#)
                .await;
            let ok = server.metric(reloads).await;
            (refused >= 1.0 && ok > loaded).then_some(())
        },
    )
    .await;
    let body = text_to(
        BOLT_NUMBER,
        "104810000000002",
        "wamid.bolt3",
        "opening hours",
    );
    assert_eq!(server.post_signed(&body).await.status(), 200);
    sent_to(&graph, BOLT_NUMBER, "Bolt Square 3").await;
    write_tenant(
        &tenants,
        &TenantFiles {
            id: "cora",
            number: CORA_NUMBER,
            waba: "104810000000003",
            address: "Cora Lane 4",
            agent: "carla",
            hook_url: &acme_hooks.url,
            extra: "",
        },
    );
    wait_for("cora added", DEADLINE, || async {
        (server.metric("tandem_tenants").await >= 3.0).then_some(())
    })
    .await;
    let body = text_to(
        ACME_NUMBER,
        "104810000000001",
        "wamid.acme3",
        "opening hours",
    );
    assert_eq!(server.post_signed(&body).await.status(), 200);
    let acme_replies = || {
        graph
            .texts()
            .iter()
            .filter(|t| t.contains("Acme Street 1"))
            .count()
    };
    wait_for("acme still answering", DEADLINE, || async {
        (acme_replies() >= 2).then_some(())
    })
    .await;
    // Onboarding a number into a tenant: another tenant's number is refused; a new one is
    // acme's from then on (recorded with the number), answered with acme's flows and token.
    let onboard = |number: &str, waba: &str| json!({"phone_number_id": number, "waba_id": waba, "access_token": "acme-graph-token", "coexistence": false});
    let post = |body: Value| {
        let server = &server;
        async move {
            let response = server
                .client
                .post(server.url("/v1/numbers"))
                .bearer_auth(ACME_API)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, refused) = post(onboard(BOLT_NUMBER, "104810000000002")).await;
    assert_eq!(status, 409, "{refused}");
    let (status, onboarded) = post(onboard(NEW_NUMBER, "104810000000005")).await;
    assert_eq!(
        (status, onboarded["tenant"].clone()),
        (201, json!("acme")),
        "{onboarded}"
    );
    let body = text_to(NEW_NUMBER, "104810000000005", "wamid.new1", "opening hours");
    assert_eq!(server.post_signed(&body).await.status(), 200);
    assert_eq!(
        sent_to(&graph, NEW_NUMBER, "Acme Street 1")
            .await
            .as_deref(),
        Some("Bearer acme-graph-token")
    );
    assert_eq!(
        get(&server, &format!("/v1/numbers/{NEW_NUMBER}"), BOLT_API)
            .await
            .0,
        404
    );
    assert!(
        server
            .metric(r#"tandem_sends_total{action="message",outcome="sent",tenant="acme""#)
            .await
            >= 1.0
    );

    let body = text_to(
        CORA_NUMBER,
        "104810000000003",
        "wamid.cora1",
        "opening hours",
    );
    assert_eq!(server.post_signed(&body).await.status(), 200);
    assert_eq!(
        sent_to(&graph, CORA_NUMBER, "Cora Lane 4").await.as_deref(),
        Some("Bearer cora-graph-token")
    );
}

#[tokio::test]
async fn two_businesses_on_one_deployment_embedded() {
    let dir = tempfile::tempdir().unwrap();
    two_businesses_on_one_deployment(Backend::embedded(dir.path())).await;
}

#[tokio::test]
async fn two_businesses_on_one_deployment_redis() {
    two_businesses_on_one_deployment(Backend::redis()).await;
}

/// An `account_update` webhook: Embedded Signup shared WABA `waba` with the partner.
fn partner_added(waba: &str) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"object": "whatsapp_business_account", "entry": [{"id": waba,
        "time": now_secs(), "changes": [{"field": "account_update", "value": {
            "event": "PARTNER_ADDED",
            "waba_info": {"waba_id": waba, "owner_business_id": "880000000000001"}}}]}]}),
    )
    .unwrap()
}

/// Embedded Signup shares a new WABA: its tenant is created from the template, and its
/// numbers are answered with the template's bot and token. Then the tenant is removed with
/// its data: its customers are erased (with the hook), its directory set aside, and its
/// numbers' webhooks dead-lettered again.
async fn a_tenant_created_on_signup_and_removed_with_its_data(backend: Backend) {
    const WABA: &str = "104810000000007";
    const NUMBER: &str = "106540000000007";
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let hooks = HookReceiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let tenants = root.path().join("tenants");
    write_tenant(
        &tenants,
        &TenantFiles {
            id: "_template",
            number: "106540000000099",
            waba: "104810000000099",
            address: "Template Road 5",
            agent: "tina",
            hook_url: &hooks.url,
            extra: "",
        },
    );
    // The template owns nothing itself: the new tenant's WABA is added to it.
    let template = tenants.join("_template/tandem.toml");
    let text = std::fs::read_to_string(&template).unwrap();
    let text = text
        .replace("numbers = [\"106540000000099\"]\n", "")
        .replace("wabas = [\"104810000000099\"]\n", "");
    std::fs::write(&template, text).unwrap();
    let mut spec = Spec::new(backend);
    for (k, v) in [
        ("TANDEM_TENANTS", tenants.to_str().unwrap()),
        ("TANDEM_TENANTS_AUTO_CREATE", "true"),
        ("TANDEM_GRAPH_URL", graph.url.as_str()),
        ("TANDEM_FLOW_SHOP_API", shop.url.as_str()),
        ("_TEMPLATE_ACCESS_TOKEN", "partner-system-token"),
        ("_TEMPLATE_HOOK_SECRET", "partner-hook-secret"),
        ("_TEMPLATE_API_TOKEN", "partner-desk-token"),
    ] {
        spec.env.push((k.into(), v.into()));
    }
    let server = Server::start(spec);
    let (_, listed) = get(&server, "/v1/tenants", API_TOKEN).await;
    assert_eq!(listed["tenants"], json!([]), "the template is not a tenant");

    // Before the WABA is shared: nobody's.
    let first = text_to(NUMBER, WABA, "wamid.signup1", "opening hours");
    assert_eq!(server.post_signed(&first).await.status(), 200);
    let (_, letters) = get(&server, "/v1/dead-letters", API_TOKEN).await;
    assert_eq!(letters["dead_letters"][0]["reason"], "unknown_number");

    // Shared: the tenant appears (once, even when Meta retries the webhook).
    for _ in 0..2 {
        assert_eq!(server.post_signed(&partner_added(WABA)).await.status(), 200);
    }
    let id = format!("waba-{WABA}");
    wait_for("the tenant created", DEADLINE, || async {
        let (_, listed) = get(&server, "/v1/tenants", API_TOKEN).await;
        (listed["tenants"][0]["id"] == id.as_str()).then_some(())
    })
    .await;
    assert_eq!(server.metric("tandem_tenants_created_total").await, 1.0);
    let second = text_to(NUMBER, WABA, "wamid.signup2", "opening hours");
    assert_eq!(server.post_signed(&second).await.status(), 200);
    assert_eq!(
        sent_to(&graph, NUMBER, "Template Road 5").await.as_deref(),
        Some("Bearer partner-system-token")
    );
    let conversation = format!("/v1/conversations/{NUMBER}:{PHONE}");
    let (status, view) = get(&server, &conversation, API_TOKEN).await;
    assert_eq!((status, view["tenant"].clone()), (200, json!(id)));

    // Removing: a tenant's own token cannot; a deployment token erases it all.
    let path = format!("/v1/tenants/{id}");
    let (status, _) = call(
        &server,
        reqwest::Method::DELETE,
        &path,
        "partner-desk-token",
    )
    .await;
    assert_eq!(status, 404);
    let (status, removed) = call(&server, reqwest::Method::DELETE, &path, API_TOKEN).await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["removed"]["customers"], 1, "{removed}");
    assert_eq!(
        removed["removed"]["erased"]["conversations"], 1,
        "{removed}"
    );
    let erased = wait_for("the customer.erased hook", DEADLINE, || async {
        hooks
            .delivered()
            .into_iter()
            .find(|h| h.event == "customer.erased")
    })
    .await;
    assert_eq!(erased.body["customer"]["phone"], PHONE, "{}", erased.body);
    let (_, all) = get(&server, "/v1/conversations", API_TOKEN).await;
    assert_eq!(all["conversations"], json!([]), "{all}");
    assert!(!tenants.join(&id).exists());
    assert!(tenants.join(".removed").read_dir().unwrap().count() == 1);
    let (_, listed) = get(&server, "/v1/tenants", API_TOKEN).await;
    assert_eq!(listed["tenants"], json!([]));
    let third = text_to(NUMBER, WABA, "wamid.signup3", "hello again");
    assert_eq!(server.post_signed(&third).await.status(), 200);
    let (_, letters) = get(&server, "/v1/dead-letters", API_TOKEN).await;
    let newest = &letters["dead_letters"][0];
    assert_eq!(newest["reason"], "unknown_number");
    assert!(newest["body"].as_str().unwrap().contains("wamid.signup3"));
    assert_eq!(
        call(&server, reqwest::Method::DELETE, &path, API_TOKEN)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_tenant_created_on_signup_and_removed_with_its_data_embedded() {
    let dir = tempfile::tempdir().unwrap();
    a_tenant_created_on_signup_and_removed_with_its_data(Backend::embedded(dir.path())).await;
}

#[tokio::test]
async fn a_tenant_created_on_signup_and_removed_with_its_data_redis() {
    a_tenant_created_on_signup_and_removed_with_its_data(Backend::redis()).await;
}

/// Runs `tandem check` with `TANDEM_TENANTS=dir` from the repository (its ./flows checked
/// too); answers the exit code and stderr.
fn check(dir: &Path) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("check")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("TANDEM_TENANTS", dir)
        .env("HOOK_SECRET", "s")
        .env_remove("TANDEM_FLOWS")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn tandem_check_checks_every_tenant() {
    let root = tempfile::tempdir().unwrap();
    let tenants = root.path();
    let files = |id: &'static str, number: &'static str| TenantFiles {
        id,
        number,
        waba: "104810000000001",
        address: "Street 1",
        agent: "ana",
        hook_url: "http://127.0.0.1:9/hooks",
        extra: "",
    };
    write_tenant(tenants, &files("acme", ACME_NUMBER));
    // Tokens and secrets come from the environment; check names what is missing.
    let (code, err) = check(tenants);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("acme/tandem.toml") && err.contains("ACME_ACCESS_TOKEN is not set"),
        "{err}"
    );

    let ok = |id: &str| {
        let path = tenants.join(id).join("tandem.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace(&format!("{}_HOOK_SECRET", id.to_uppercase()), "HOOK_SECRET")
            .replace(
                &format!("token_env = \"{}_API_TOKEN\"", id.to_uppercase()),
                "token_env = \"HOOK_SECRET\"",
            )
            .replace(
                &format!("access_token_env = \"{}_ACCESS_TOKEN\"", id.to_uppercase()),
                "access_token_env = \"HOOK_SECRET\"",
            );
        std::fs::write(path, text).unwrap();
    };
    ok("acme");
    let (code, err) = check(tenants);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("tenant acme: 6 flows"), "{err}");
    assert!(
        err.contains("1 tenant(s)") && err.contains("all valid"),
        "{err}"
    );

    // A second tenant claiming the same WABA, and a broken flow in a third.
    write_tenant(tenants, &files("bolt", BOLT_NUMBER));
    ok("bolt");
    write_tenant(tenants, &files("cora", CORA_NUMBER));
    ok("cora");
    let cora = tenants.join("cora/tandem.toml");
    let text = std::fs::read_to_string(&cora).unwrap().replace(
        "wabas = [\"104810000000001\"]",
        "wabas = [\"104810000000003\"]",
    );
    std::fs::write(cora, text).unwrap();
    std::fs::write(
        tenants.join("cora/flows/broken.yaml"),
        "id: broken\nsteps:\n  - goto: nowhere\n",
    )
    .unwrap();
    let (code, err) = check(tenants);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("WABA 104810000000001 is claimed by both tenant acme and tenant bolt"),
        "{err}"
    );
    assert!(
        err.contains("broken.yaml:3:") && err.contains("nowhere"),
        "{err}"
    );
}
