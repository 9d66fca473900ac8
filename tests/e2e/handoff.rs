//! Handoff end to end: the real server runs the shipped flows with teams, agents and a hook
//! receiver configured; the Graph API and the CRM are loopback stand-ins.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{API_TOKEN, Backend, PNID, Server, Spec, echo, now_secs, text, wait_for};
use crate::standin::{Graph, HookReceiver, ReceivedHook, Shop};

const DEADLINE: Duration = Duration::from_secs(15);
const HOOK_SECRET: &str = "test-hook-secret";

/// The test's configuration file: one team with the given agents, fast hook retries and
/// router rounds, and the extra TOML given.
fn config(dir: &std::path::Path, agents: &str, extra: &str, strategy: &str) -> PathBuf {
    let text = format!(
        r#"
[engine]
hook_attempts = 3
hook_backoff = "100ms"
hook_timeout = "2s"
router_tick = "100ms"

[handoff]
default_team = "support"

[[handoff.teams]]
id = "support"
strategy = "{strategy}"

{agents}

[[hooks]]
name = "crm"
url = "{{HOOK_URL}}"
secret_env = "TEST_HOOK_SECRET"

{extra}
"#
    );
    let path = dir.join("tandem.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Desk {
    server: Server,
    graph: Graph,
    hooks: HookReceiver,
    _shop: Shop,
}

async fn started(backend: Backend, dir: &std::path::Path, agents: &str, extra: &str) -> Desk {
    started_with(backend, dir, agents, extra, Vec::new(), "least_busy").await
}

async fn started_with(
    backend: Backend,
    dir: &std::path::Path,
    agents: &str,
    extra: &str,
    env: Vec<(String, String)>,
    strategy: &str,
) -> Desk {
    let path = config(dir, agents, extra, strategy);
    started_on(backend, path, env).await
}

/// Starts the desk with the configuration file at `path` (its `{HOOK_URL}` filled in).
async fn started_on(backend: Backend, path: PathBuf, env: Vec<(String, String)>) -> Desk {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let hooks = HookReceiver::start().await;
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("{HOOK_URL}", &hooks.url);
    std::fs::write(&path, text).unwrap();
    let mut spec = Spec::with_bot(backend, &graph.url, &shop.url);
    spec.config = Some(path);
    spec.env
        .push(("TEST_HOOK_SECRET".into(), HOOK_SECRET.into()));
    spec.env
        .push(("TEST_READ_TOKEN".into(), "read-only-token".into()));
    spec.env.extend(env);
    let server = Server::start(spec);
    Desk {
        server,
        graph,
        hooks,
        _shop: shop,
    }
}

const TWO_AGENTS: &str = r#"
[[handoff.agents]]
id = "ana"
teams = ["support"]
capacity = 1

[[handoff.agents]]
id = "rui"
teams = ["support"]
capacity = 1
"#;

const ONE_AGENT: &str = r#"
[[handoff.agents]]
id = "ana"
teams = ["support"]
capacity = 1
"#;

async fn post(server: &Server, body: Vec<u8>) {
    assert_eq!(server.post_signed(&body).await.status(), 200);
}

/// Sends a request to the API with `token`; returns status and JSON.
async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: &str,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn act(server: &Server, wa: &str, action: &str, body: Value) -> (u16, Value) {
    call(
        server,
        reqwest::Method::POST,
        &format!("/v1/conversations/{PNID}:{wa}/{action}"),
        Some(body),
        API_TOKEN,
    )
    .await
}

/// Waits until the receiver has delivered `event` for `wa` (the `n`-th one, from 1).
async fn hook(hooks: &HookReceiver, wa: &str, event: &str, n: usize) -> ReceivedHook {
    wait_for(&format!("hook {event} #{n} for {wa}"), DEADLINE, || async {
        hooks
            .delivered()
            .into_iter()
            .filter(|h| h.event == event && h.body["customer"]["wa_id"] == wa)
            .nth(n - 1)
    })
    .await
}

fn count(hooks: &HookReceiver, wa: &str, event: &str) -> usize {
    hooks
        .delivered()
        .iter()
        .filter(|h| h.event == event && h.body["customer"]["wa_id"] == wa)
        .count()
}

async fn wait_for_text(graph: &Graph, needle: &str) {
    wait_for(
        &format!("a send containing {needle:?}"),
        DEADLINE,
        || async {
            graph
                .texts()
                .iter()
                .any(|t| t.contains(needle))
                .then_some(())
        },
    )
    .await;
}

async fn a_customer_asking_for_a_person_reaches_an_agent_and_the_crm_follows(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = started(backend, dir.path(), TWO_AGENTS, "").await;
    let wa = "351920000001";
    post(
        &d.server,
        text(wa, "wamid.h1", "I want to talk to a person"),
    )
    .await;

    // The CRM hears of it, signed, with the routing and the transcript.
    let requested = hook(&d.hooks, wa, "conversation.handoff_requested", 1).await;
    assert!(
        tandem_handoff::verify(
            HOOK_SECRET,
            requested.timestamp,
            &requested.raw,
            &requested.signature
        ),
        "the signature is the HMAC of timestamp.body"
    );
    assert!(requested.timestamp.abs_diff(now_secs()) < 60);
    assert_eq!(requested.idempotency_key, requested.body["id"]);
    assert_eq!(requested.body["team"], "support");
    assert_eq!(requested.body["reason"], "customer_request");
    assert_eq!(requested.body["customer"]["name"], "Ana Silva");
    assert!(requested.body["window"]["seconds_left"].as_u64().unwrap() > 23 * 3600);
    let lines = requested.body["transcript"].to_string();
    assert!(lines.contains("I want to talk to a person"), "{lines}");

    // The router gives it to an agent; the record and the hook say who.
    let assigned = hook(&d.hooks, wa, "conversation.assigned", 1).await;
    let agent = assigned.body["agent"].as_str().unwrap().to_owned();
    assert_eq!(agent, "ana", "both free: the tie goes to the first in turn");
    let c = d.server.conversation(wa).await.unwrap();
    assert_eq!(c["mode"], "handoff");
    assert_eq!(c["assignment"]["agent"], agent.as_str());

    // While a person is awaited, the customer's messages go to the CRM, not the bot.
    let sent_before = d.graph.texts().len();
    post(&d.server, text(wa, "wamid.h2", "hello? anyone?")).await;
    let message = hook(&d.hooks, wa, "conversation.message", 1).await;
    assert_eq!(message.body["message"]["text"], "hello? anyone?");

    // The agent answers through the API: sent through the Cloud API as a person.
    let (status, answer) = act(
        &d.server,
        wa,
        "messages",
        json!({"text": "Hi, Ana here. How can I help?"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["mode"], "human", "paused before the answer");
    wait_for_text(&d.graph, "Ana here").await;
    let takeover = hook(&d.hooks, wa, "conversation.human_takeover", 1).await;
    assert_eq!(takeover.body["by"], "agent_api");
    let c = wait_for(
        "the agent's message in the transcript",
        DEADLINE,
        || async {
            let c = d.server.conversation(wa).await?;
            crate::helpers::texts(&c, "human")
                .iter()
                .any(|t| t.contains("Ana here"))
                .then_some(c)
        },
    )
    .await;
    assert_eq!(c["mode"], "human");
    assert_eq!(
        d.graph.texts().len(),
        sent_before + 1,
        "the bot did not answer the customer's message: {:?}",
        d.graph.texts()
    );

    // Release: the bot is back (the answer says so), and the CRM knows.
    let (status, released) = act(&d.server, wa, "release", json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(
        released["mode"], "bot",
        "the state after the action: {released}"
    );
    assert_eq!(released["pending"], false);
    let resumed = hook(&d.hooks, wa, "conversation.resumed", 1).await;
    assert_eq!(resumed.body["resumed_because"], "released");
    let c = d.server.conversation(wa).await.unwrap();
    assert_eq!(c["mode"], "bot");
    wait_for_text(&d.graph, "I'm back").await;
    // Every event was delivered once (idempotency keys unique, none dead).
    let keys: std::collections::BTreeSet<String> = d
        .hooks
        .delivered()
        .iter()
        .map(|h| h.idempotency_key.clone())
        .collect();
    assert_eq!(keys.len(), d.hooks.delivered().len());
    assert_eq!(d.server.metric("tandem_collisions_total").await, 0.0);
    assert_eq!(
        d.server
            .metric("tandem_handoffs_total{reason=\"customer_request\"")
            .await,
        1.0
    );
    assert_eq!(
        d.server
            .metric("tandem_first_human_reply_seconds_count")
            .await,
        1.0
    );
    assert_eq!(
        d.server.metric("tandem_queue_wait_seconds_count").await,
        1.0
    );
    assert_eq!(d.server.metric("tandem_bot_sessions_total").await, 1.0);
}

async fn a_full_team_queues_with_an_honest_message_and_assigns_when_someone_frees_up(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let d = started(backend, dir.path(), ONE_AGENT, "").await;
    let (first, second) = ("351920000011", "351920000012");
    post(&d.server, text(first, "wamid.q1", "agent please")).await;
    let assigned = hook(&d.hooks, first, "conversation.assigned", 1).await;
    assert_eq!(assigned.body["agent"], "ana");

    // Ana is at capacity: the second customer waits, and is told so once.
    post(&d.server, text(second, "wamid.q2", "agent please")).await;
    wait_for_text(&d.graph, "number 1 in line").await;
    let (status, queue) = d.server.api("/v1/queue").await;
    assert_eq!(status, 200);
    let entries = queue["queue"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{queue}");
    let waiting = d.server.conversation(second).await.unwrap();
    assert_eq!(entries[0]["conversation"], waiting["id"]);
    assert_eq!(entries[0]["position"], 1);
    assert!(entries[0]["window_seconds_left"].as_u64().unwrap() > 23 * 3600);
    let (_, agents) = d.server.api("/v1/agents").await;
    assert_eq!(agents["agents"][0]["open_conversations"], 1, "{agents}");

    // Ana closes the first conversation: the waiting one is hers now.
    let (status, closed) = act(&d.server, first, "close", json!({"agent": "ana"})).await;
    assert_eq!(
        closed["mode"], "bot",
        "the state after the action: {closed}"
    );
    assert_eq!(status, 202);
    hook(&d.hooks, first, "conversation.closed", 1).await;
    let assigned = hook(&d.hooks, second, "conversation.assigned", 1).await;
    assert_eq!(assigned.body["agent"], "ana");
    let (_, queue) = d.server.api("/v1/queue").await;
    assert!(queue["queue"].as_array().unwrap().is_empty(), "{queue}");
    let notices = d
        .graph
        .texts()
        .iter()
        .filter(|t| t.contains("in line"))
        .count();
    assert_eq!(notices, 1, "the queue notice is sent once");
}

async fn a_takeover_pauses_before_the_answer_and_the_phone_does_not_announce_twice(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let d = started(backend, dir.path(), TWO_AGENTS, "").await;
    let wa = "351920000021";
    post(&d.server, text(wa, "wamid.t1", "hi")).await;
    wait_for("the bot's greeting", DEADLINE, || async {
        (!d.graph.texts().is_empty()).then_some(())
    })
    .await;
    let (status, answer) = act(&d.server, wa, "takeover", json!({"agent": "rui"})).await;
    assert_eq!((status, answer["mode"].as_str()), (202, Some("human")));
    // Read straight after the answer: paused already, not behind the lane.
    let c = d.server.conversation(wa).await.unwrap();
    assert_eq!(c["mode"], "human");
    assert_eq!(c["paused_by"], "agent_api");

    let sent = d.graph.texts().len();
    post(&d.server, text(wa, "wamid.t2", "where is my order?")).await;
    post(&d.server, echo(wa, "wamid.e1", "Rui here, checking")).await;
    hook(&d.hooks, wa, "conversation.message", 1).await;
    let takeover = hook(&d.hooks, wa, "conversation.human_takeover", 1).await;
    assert_eq!(takeover.body["agent"], "rui");
    wait_for("the echo applied", DEADLINE, || async {
        let c = d.server.conversation(wa).await?;
        (c["events_applied"].as_u64()? >= 4).then_some(())
    })
    .await;
    assert_eq!(count(&d.hooks, wa, "conversation.human_takeover"), 1);
    assert_eq!(d.graph.texts().len(), sent, "the bot stayed silent");

    // A repeated request with the same Idempotency-Key is stored once.
    let again = |key: &'static str| {
        let server = &d.server;
        async move {
            let response = server
                .client
                .post(server.url(&format!("/v1/conversations/{PNID}:{wa}/close")))
                .bearer_auth(API_TOKEN)
                .header("idempotency-key", key)
                .send()
                .await
                .unwrap();
            let body: Value = response.json().await.unwrap();
            body["duplicate"].as_bool().unwrap()
        }
    };
    assert!(!again("close-1").await);
    assert!(again("close-1").await);
    hook(&d.hooks, wa, "conversation.closed", 1).await;
    let c = d.server.conversation(wa).await.unwrap();
    assert_eq!(c["mode"], "bot");
    assert_eq!(count(&d.hooks, wa, "conversation.closed"), 1);
}

async fn failing_hooks_are_retried_dead_lettered_and_redriven(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = started(backend, dir.path(), "", "").await;
    d.hooks.failing(true);
    let wa = "351920000031";
    post(&d.server, text(wa, "wamid.d1", "agent")).await;
    let dead = wait_for("the hook dead-lettered", DEADLINE, || async {
        let (status, body) = d.server.api("/v1/hooks/dead").await;
        assert_eq!(status, 200);
        let items = body["dead_hooks"].as_array()?.clone();
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert_eq!(dead[0]["event"], "conversation.handoff_requested");
    assert_eq!(dead[0]["attempts"], 3);
    // A dead receiver held up nothing: the customer was answered, and answers again.
    wait_for("the handoff reply", DEADLINE, || async {
        (!d.graph.texts().is_empty()).then_some(())
    })
    .await;
    post(&d.server, text(wa, "wamid.d2", "menu")).await;
    wait_for("the conversation to go on", DEADLINE, || async {
        let c = d.server.conversation(wa).await?;
        (c["events_applied"].as_u64()? >= 2).then_some(())
    })
    .await;
    assert_eq!(dead[0]["last_error"], "the receiver answered HTTP 500");
    let attempts: Vec<ReceivedHook> = d
        .hooks
        .received()
        .into_iter()
        .filter(|h| h.event == "conversation.handoff_requested")
        .collect();
    assert_eq!(attempts.len(), 3, "three attempts, then given up");
    assert!(
        attempts
            .iter()
            .all(|a| a.idempotency_key == attempts[0].idempotency_key)
    );
    assert_eq!(d.server.metric("tandem_hook_deliveries_total{event=\"conversation.handoff_requested\",outcome=\"dead\"").await, 1.0);

    // The receiver is back: re-drive it.
    d.hooks.failing(false);
    assert!(d.server.metric("tandem_hooks_dead").await >= 1.0);
    let id = dead[0]["id"].as_str().unwrap();
    let (status, _) = call(
        &d.server,
        reqwest::Method::POST,
        &format!("/v1/hooks/dead/{id}/redrive"),
        None,
        API_TOKEN,
    )
    .await;
    assert_eq!(status, 202);
    let delivered = hook(&d.hooks, wa, "conversation.handoff_requested", 1).await;
    assert_eq!(delivered.idempotency_key, attempts[0].idempotency_key);
    let (_, body) = d.server.api("/v1/hooks/dead").await;
    assert!(
        !body["dead_hooks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["id"] == id),
        "re-driven: no longer dead"
    );
    let (status, _) = call(
        &d.server,
        reqwest::Method::POST,
        &format!("/v1/hooks/dead/{id}/redrive"),
        None,
        API_TOKEN,
    )
    .await;
    assert_eq!(status, 404, "re-driven once");
}

async fn a_restart_in_the_middle_of_retries_loses_no_hook(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let hooks = HookReceiver::start().await;
    hooks.failing(true);
    let path = config(dir.path(), "", "", "least_busy");
    let text_config = std::fs::read_to_string(&path)
        .unwrap()
        .replace("{HOOK_URL}", &hooks.url)
        .replace("hook_attempts = 3", "hook_attempts = 50")
        .replace("hook_backoff = \"100ms\"", "hook_backoff = \"300ms\"");
    std::fs::write(&path, text_config).unwrap();
    let spec = || {
        let mut spec = Spec::with_bot(backend.clone(), &graph.url, &shop.url);
        spec.config = Some(path.clone());
        spec.env
            .push(("TEST_HOOK_SECRET".into(), HOOK_SECRET.into()));
        spec
    };
    let mut server = Server::start(spec());
    let wa = "351920000041";
    post(&server, text(wa, "wamid.r1", "agent")).await;
    wait_for("a failed attempt", DEADLINE, || async {
        (!hooks.received().is_empty()).then_some(())
    })
    .await;
    server.kill9();
    hooks.failing(false);
    let server = Server::start(spec());
    let delivered = hook(&hooks, wa, "conversation.handoff_requested", 1).await;
    assert_eq!(
        delivered.idempotency_key,
        hooks.received()[0].idempotency_key
    );
    drop(server);
}

async fn assigning_by_api_stops_the_bot_and_names_the_agent(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let d = started(backend, dir.path(), TWO_AGENTS, "").await;
    let wa = "351920000051";
    post(&d.server, text(wa, "wamid.s1", "hi")).await;
    wait_for("the conversation", DEADLINE, || d.server.conversation(wa)).await;
    let (status, _) = act(&d.server, wa, "assign", json!({"agent": "rui"})).await;
    assert_eq!(status, 202);
    hook(&d.hooks, wa, "conversation.handoff_requested", 1).await;
    let assigned = hook(&d.hooks, wa, "conversation.assigned", 1).await;
    assert_eq!(assigned.body["agent"], "rui");
    let c = d.server.conversation(wa).await.unwrap();
    assert_eq!(c["last_agent"], "rui");
    assert_eq!(c["mode"], "handoff", "assigning by API stops the bot");
    // Re-assigning to another agent is announced again.
    act(&d.server, wa, "assign", json!({"agent": "ana"})).await;
    let again = hook(&d.hooks, wa, "conversation.assigned", 2).await;
    assert_eq!(again.body["agent"], "ana");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_and_repeated_misses_hand_off_with_their_reason_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let llm = crate::standin::llm().await;
    let env = vec![
        ("TANDEM_LLM_BASE_URL".to_owned(), llm),
        ("TANDEM_LLM_MODEL".to_owned(), "test-model".to_owned()),
        ("TANDEM_LLM_TIMEOUT".to_owned(), "2s".to_owned()),
    ];
    let d = started_with(
        Backend::embedded(dir.path()),
        dir.path(),
        ONE_AGENT,
        "",
        env,
        "least_busy",
    )
    .await;
    let upset = "351920000071";
    post(
        &d.server,
        text(
            upset,
            "wamid.u1",
            "this is unacceptable, I want to file a complaint",
        ),
    )
    .await;
    let requested = hook(&d.hooks, upset, "conversation.handoff_requested", 1).await;
    assert_eq!(requested.body["reason"], "needs_human");
    assert_eq!(requested.body["triage"]["needs_human"], true);
    assert_eq!(requested.body["triage"]["sentiment"], "negative");
    let summary = requested.body["summary"].as_str().unwrap();
    assert!(summary.contains("file a complaint"), "{summary}");
    assert_eq!(summary.lines().count(), 3, "{summary}");
    // Triage (120 + 30) and summary (200 + 40) as the endpoint reported them.
    assert_eq!(
        d.server
            .metric("tandem_llm_tokens_total{kind=\"prompt\"")
            .await,
        320.0
    );
    assert_eq!(
        d.server
            .metric("tandem_llm_tokens_total{kind=\"completion\"")
            .await,
        70.0
    );

    // Not understood again and again: the menu's question gives up after its tries, then
    // after handoff_after_misses (3) misses in a row the bot hands over.
    let lost = "351920000072";
    for i in 0..8u64 {
        post(
            &d.server,
            text(lost, &format!("wamid.x{i}"), &format!("qwerty{i} zxcvb")),
        )
        .await;
        // Each turn applied and its replies sent before the next message.
        wait_for("the turn done", DEADLINE, || async {
            let c = d.server.conversation(lost).await?;
            (c["events_applied"].as_u64()? > i && c.get("outbox").is_none()).then_some(())
        })
        .await;
        if d.server.conversation(lost).await.unwrap()["mode"] == "handoff" {
            break;
        }
    }
    let requested = hook(&d.hooks, lost, "conversation.handoff_requested", 1).await;
    assert_eq!(requested.body["reason"], "fallback");
    assert_eq!(
        d.server
            .metric("tandem_handoffs_total{reason=\"needs_human\"")
            .await,
        1.0
    );
    assert_eq!(
        d.server
            .metric("tandem_handoffs_total{reason=\"fallback\"")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_hours_the_customer_hears_when_a_person_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let tomorrow = today.tomorrow().unwrap();
    let back = tomorrow.tomorrow().unwrap();
    let all_day = r#"["00:00-24:00"]"#;
    let team_hours = format!(
        "timezone = \"UTC\"\nhours = {{ mon = {all_day}, tue = {all_day}, wed = {all_day}, thu = {all_day}, fri = {all_day}, sat = {all_day}, sun = {all_day} }}\nclosed = [\"{today}\", \"{tomorrow}\"]\n{ONE_AGENT}"
    );
    let d = started(Backend::embedded(dir.path()), dir.path(), &team_hours, "").await;
    let wa = "351920000081";
    post(&d.server, text(wa, "wamid.n1", "agent")).await;
    let weekday = back.strftime("%A").to_string();
    wait_for_text(
        &d.graph,
        &format!("a person will reply from {weekday} 00:00"),
    )
    .await;
    let (_, queue) = d.server.api("/v1/queue").await;
    assert_eq!(queue["queue"][0]["team"], "support", "{queue}");
    assert_eq!(count(&d.hooks, wa, "conversation.assigned"), 0);
}

/// A CRM can act in its answer to a hook: here it hands the conversation back to the bot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_release_hands_the_conversation_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = started(Backend::embedded(dir.path()), dir.path(), ONE_AGENT, "").await;
    d.hooks.answer(
        "conversation.message",
        json!({"action": "release", "agent": "ana"}),
    );
    let wa = "351920000101";
    post(&d.server, text(wa, "wamid.r1", "agent please")).await;
    hook(&d.hooks, wa, "conversation.assigned", 1).await;
    post(&d.server, text(wa, "wamid.r2", "never mind, I found it")).await;
    hook(&d.hooks, wa, "conversation.message", 1).await;
    let resumed = hook(&d.hooks, wa, "conversation.resumed", 1).await;
    assert_eq!(resumed.body["resumed_because"], "released");
    let c = d.server.conversation(wa).await.unwrap();
    assert_eq!(c["mode"], "bot");
    assert!(
        crate::helpers::texts(&c, "system")
            .iter()
            .any(|t| t.contains("released by ana")),
        "{c}"
    );
}

/// A customer with a username and no phone: routed like anyone, the CRM told their BSUID and
/// username, the agent API reaching them by BSUID, and authentication templates refused.
async fn a_username_customer_reaches_an_agent_and_the_crm_knows_them_by_bsuid(backend: Backend) {
    const BSUID: &str = "US.13491208600000000004";
    let dir = tempfile::tempdir().unwrap();
    // The configuration's [engine] table gets the business's authentication templates.
    let path = config(dir.path(), ONE_AGENT, "", "least_busy");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[engine]\n",
        "[engine]\nauthentication_templates = [\"login_code\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    let d = started_on(backend, path, Vec::new()).await;
    let body = json!({"object": "whatsapp_business_account", "entry": [{"id": "104810000000001", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
        "contacts": [{"profile": {"name": "Dario M.", "username": "dario.m_88"}, "user_id": BSUID}],
        "messages": [{"from_user_id": BSUID, "id": "wamid.u1", "timestamp": now_secs().to_string(), "type": "text", "text": {"body": "I want to talk to a person"}}]}}]}]});
    post(&d.server, serde_json::to_vec(&body).unwrap()).await;
    let assigned = hook(&d.hooks, BSUID, "conversation.assigned", 1).await;
    let customer = &assigned.body["customer"];
    assert_eq!(customer["user_id"], BSUID, "{customer}");
    assert_eq!(customer["username"], "dario.m_88");
    assert_eq!(customer["name"], "Dario M.");
    assert_eq!(customer["phone"], Value::Null);
    assert!(customer["id"].as_str().unwrap().starts_with("c_"));
    assert_eq!(
        assigned.body["conversation"]["id"],
        format!("{PNID}:{}", customer["id"].as_str().unwrap())
    );
    // The agent writes through the API, addressing the conversation by BSUID.
    let (status, answer) = act(
        &d.server,
        BSUID,
        "messages",
        json!({"agent": "ana", "text": "Hi Dario, Ana here"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let sent = wait_for("the agent's message sent", DEADLINE, || async {
        d.graph
            .messages()
            .into_iter()
            .find(|m| m["text"]["body"] == "Hi Dario, Ana here")
    })
    .await;
    assert_eq!(sent["recipient"], BSUID);
    assert!(sent.get("to").is_none(), "{sent}");
    // An authentication template cannot reach a BSUID: refused with the reason.
    let (status, refused) = act(
        &d.server,
        BSUID,
        "messages",
        json!({"agent": "ana", "template": {"name": "login_code", "language": "en"}}),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused.to_string().contains("131062"), "{refused}");
    // One WhatsApp refuses anyway (not listed here) is noted in the transcript as such.
    d.graph.script(400, json!({"error": {"message": "(#131062) Business-scoped user ID recipients are not supported for this template", "type": "OAuthException", "code": 131062, "fbtrace_id": "x"}}));
    let (status, _) = act(
        &d.server,
        BSUID,
        "messages",
        json!({"agent": "ana", "template": {"name": "otp_other", "language": "en"}}),
    )
    .await;
    assert_eq!(status, 202);
    wait_for("the 131062 note", DEADLINE, || async {
        let c = d.server.conversation(BSUID).await?;
        crate::helpers::texts(&c, "system")
            .iter()
            .any(|t| t.contains("131062"))
            .then_some(())
    })
    .await;
}

crate::both_stores!(
    a_username_customer_reaches_an_agent_and_the_crm_knows_them_by_bsuid,
    a_customer_asking_for_a_person_reaches_an_agent_and_the_crm_follows,
    a_full_team_queues_with_an_honest_message_and_assigns_when_someone_frees_up,
    a_takeover_pauses_before_the_answer_and_the_phone_does_not_announce_twice,
    failing_hooks_are_retried_dead_lettered_and_redriven,
    a_restart_in_the_middle_of_retries_loses_no_hook,
    assigning_by_api_stops_the_bot_and_names_the_agent,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes_and_scopes_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let d = started(
        Backend::embedded(dir.path()),
        dir.path(),
        ONE_AGENT,
        r#"
[[api.tokens]]
name = "dashboard"
token_env = "TEST_READ_TOKEN"
scopes = ["read"]
"#,
    )
    .await;
    let doc: Value = d
        .server
        .client
        .get(d.server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let concrete = path.replace("{id}", &format!("{PNID}:351920000099"));
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // Every documented operation exists: without a token it is refused, not missing.
            let response = d
                .server
                .client
                .request(method.clone(), d.server.url(&concrete))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 401, "{method} {path}");
            // A read-only token may read and nothing else.
            let (status, _) = call(
                &d.server,
                method.clone(),
                &concrete,
                None,
                "read-only-token",
            )
            .await;
            if op["x-tandem-scope"] == "read" {
                assert_ne!(status, 403, "{method} {path}");
            } else {
                assert_eq!(status, 403, "{method} {path}");
            }
        }
    }
    assert!(operations >= 14, "{operations}");
    // Bad requests get a readable 400.
    let wa = "351920000061";
    post(&d.server, text(wa, "wamid.o1", "hi")).await;
    wait_for("the conversation", DEADLINE, || d.server.conversation(wa)).await;
    let (status, body) = act(&d.server, wa, "assign", json!({})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("agent"),
        "{body}"
    );
    let (status, body) = act(&d.server, wa, "assign", json!({"agent": "nobody"})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = act(&d.server, wa, "messages", json!({"txt": "typo"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"].as_str().unwrap().contains("txt"),
        "{body}"
    );
    let (status, _) = act(&d.server, "351999999999", "takeover", json!({})).await;
    assert_eq!(status, 404);
    let (status, body) = call(
        &d.server,
        reqwest::Method::PUT,
        "/v1/agents/ana/availability",
        Some(json!({"status": "busy"})),
        API_TOKEN,
    )
    .await;
    assert_eq!(status, 400, "{body}");
}

/// Sticky routing sends a returning customer to their last agent even when round robin
/// would pick another; everyone else goes to the least busy, ties to the agent given a
/// conversation longest ago. Under `least_busy` the same customer gets the tie-break's agent.
async fn returning_customer(strategy: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let agents = TWO_AGENTS.replace("capacity = 1", "capacity = 5");
    let d = started_with(
        Backend::embedded(dir.path()),
        dir.path(),
        &agents,
        "",
        Vec::new(),
        strategy,
    )
    .await;
    let assign = |wa: &'static str, n: usize| {
        let d = &d;
        async move {
            post(&d.server, text(wa, &format!("wamid.{wa}.{n}"), "agent")).await;
            hook(&d.hooks, wa, "conversation.assigned", n).await.body["agent"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(
        assign("351920000091", 1).await,
        "ana",
        "a tie goes to the first in turn"
    );
    act(&d.server, "351920000091", "close", json!({})).await;
    hook(&d.hooks, "351920000091", "conversation.closed", 1).await;
    assert_eq!(
        assign("351920000092", 1).await,
        "rui",
        "never assigned goes first"
    );
    assert_eq!(assign("351920000093", 1).await, "ana", "least busy");
    assert_eq!(assign("351920000094", 1).await, "rui", "a tie takes turns");
    assert_eq!(assign("351920000095", 1).await, "ana", "least busy");
    // Both have two open; the tie-break alone picks rui.
    assign("351920000091", 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_routing_returns_a_customer_to_their_last_agent() {
    assert_eq!(returning_customer("sticky").await, "ana");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_routing_takes_turns_on_ties() {
    assert_eq!(returning_customer("least_busy").await, "rui");
}
