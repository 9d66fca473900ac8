//! Load test of the handoff path: a customer asks for a person → the bot's handoff reply
//! (Graph API), the `conversation.handoff_requested` hook and, once the router has chosen an
//! agent, the `conversation.assigned` hook.
//!
//! Starts the release `tandem` binary on the shipped flows with a loopback Graph API
//! stand-in and a loopback hook receiver, one team of 20 agents (capacity 1000 each, least
//! busy), then posts signed "agent" messages at a fixed rate, each from a new customer, spread
//! over 100 business numbers. For every conversation it measures the time from sending the
//! webhook to each arrival and prints p50, p99 and max of each, in the same run, so the hook
//! and routing paths read as ratios of the reply path.
//!
//!   cargo build --release --bin tandem
//!   cargo run --release --example handoff_latency -- embedded 200 10
//!   cargo run --release --example handoff_latency -- redis://127.0.0.1:6379 200 10
//!
//! Arguments: store (`embedded` or a redis:// URL), conversations a second, seconds.
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

const SECRET: &str = "bench-secret";
const NUMBERS: usize = 100;

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

/// Hook arrivals by event: customer → first arrival.
#[derive(Clone, Default)]
struct Hooks {
    requested: Arrivals,
    assigned: Arrivals,
}

async fn hook(State(hooks): State<Hooks>, Json(body): Json<Value>) -> axum::http::StatusCode {
    let wa = body["customer"]["wa_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let map = match body["event"].as_str() {
        Some("conversation.handoff_requested") => &hooks.requested,
        Some("conversation.assigned") => &hooks.assigned,
        _ => return axum::http::StatusCode::OK,
    };
    map.lock().unwrap().entry(wa).or_insert_with(Instant::now);
    axum::http::StatusCode::OK
}

fn config(hook_url: &str) -> String {
    let mut text = format!(
        "[handoff]\ndefault_team = \"support\"\n[[handoff.teams]]\nid = \"support\"\nstrategy = \"least_busy\"\n[[hooks]]\nname = \"crm\"\nurl = \"{hook_url}\"\nsecret_env = \"BENCH_HOOK_SECRET\"\n"
    );
    for i in 0..20 {
        text.push_str(&format!(
            "[[handoff.agents]]\nid = \"agent{i}\"\nteams = [\"support\"]\ncapacity = 1000\n"
        ));
    }
    text
}

async fn graph(
    State(arrivals): State<Arrivals>,
    Path(_pnid): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    if body.get("type").is_some() {
        let to = body["to"].as_str().unwrap_or_default().to_owned();
        arrivals
            .lock()
            .unwrap()
            .entry(to)
            .or_insert_with(Instant::now);
        return Json(json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.BENCH"}]}));
    }
    Json(json!({"success": true}))
}

fn webhook(pnid: &str, wa_id: &str, id: &str, now: u64) -> Vec<u8> {
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": id, "timestamp": now.to_string(), "type": "text", "text": {"body": "agent"}}],
    });
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]})).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store_arg = args.get(1).cloned().unwrap_or_else(|| "embedded".into());
    let rate: u64 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(500);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);

    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route("/v23.0/{pnid}/messages", axum::routing::post(graph))
        .with_state(Arc::clone(&arrivals));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let graph_url = format!("http://{}/v23.0", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let hooks = Hooks::default();
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(hook))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tandem.toml");
    std::fs::write(&config_path, config(&hook_url)).unwrap();
    let prefix = format!("bench:{}", uuid::Uuid::new_v4());
    let store = if store_arg == "embedded" {
        dir.path().join("bench.redb").display().to_string()
    } else {
        store_arg.clone()
    };
    let binary = std::env::var("TANDEM_BIN").unwrap_or_else(|_| "target/release/tandem".into());
    let mut child = Command::new(&binary)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--flows",
            "flows",
            "--store",
            &store,
            "--config",
            config_path.to_str().unwrap(),
        ])
        .env("BENCH_HOOK_SECRET", "bench-hook-secret")
        .env("TANDEM_APP_SECRET", SECRET)
        .env("TANDEM_VERIFY_TOKEN", "bench")
        .env("TANDEM_API_TOKEN", "bench")
        .env("TANDEM_ACCESS_TOKEN", "bench")
        .env("TANDEM_GRAPH_URL", &graph_url)
        .env("TANDEM_REDIS_PREFIX", &prefix)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {binary}: {e} (cargo build --release --bin tandem)")
        });
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("tandem printed its address").unwrap();
        if let Some(addr) = line.strip_prefix("tandem listening on ") {
            break addr.to_owned();
        }
    };
    let url = format!("{base}/webhook");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let total = rate * seconds;
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let pnid = format!("1065400000{:05}", i as usize % NUMBERS);
        let wa_id = format!("3519{:08}", i);
        let body = webhook(&pnid, &wa_id, &format!("wamid.bench.{i}"), now_secs);
        let signature = tandem_whatsapp::signature::sign(SECRET.as_bytes(), &body);
        let (client, url, sent_at) = (client.clone(), url.clone(), Arc::clone(&sent_at));
        tasks.push(tokio::spawn(async move {
            sent_at.lock().unwrap().insert(wa_id, Instant::now());
            let response = client
                .post(&url)
                .header("x-hub-signature-256", signature)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let offered = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(30);
    while hooks.assigned.lock().unwrap().len() < total as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("stopping tandem");
    child.wait().expect("waiting for tandem");
    if store_arg != "embedded" {
        let client = redis::Client::open(store_arg.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut con)
            .await
            .unwrap();
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut con)
                .await
                .unwrap();
        }
    }
    let sent_at = sent_at.lock().unwrap();
    let store_label = if store_arg == "embedded" {
        "embedded"
    } else {
        "redis"
    };
    let mut p99s = Vec::new();
    for (what, map) in [
        ("reply", &arrivals),
        ("hook_requested", &hooks.requested),
        ("hook_assigned", &hooks.assigned),
    ] {
        let map = map.lock().unwrap();
        let mut latencies: Vec<Duration> = sent_at
            .iter()
            .filter_map(|(wa, sent)| map.get(wa).map(|got| got.duration_since(*sent)))
            .collect();
        latencies.sort();
        let p99 = percentile(&latencies, 0.99);
        p99s.push(p99);
        println!(
            "store={store_label} rate={rate}/s offered_for={:.1}s path={what} conversations={total} arrived={} p50={:.2}ms p99={:.2}ms max={:.2}ms p99_vs_reply={:.2}",
            offered.as_secs_f64(),
            latencies.len(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            p99.as_secs_f64() / p99s[0].as_secs_f64().max(1e-9),
        );
    }
}
