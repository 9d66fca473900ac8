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

#[path = "support/load.rs"]
mod load;

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use load::{Arrivals, Tandem, percentile};
use serde_json::Value;

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

/// One team of 20 agents, least busy, and the hook receiver.
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store = args.get(1).cloned().unwrap_or_else(|| "embedded".into());
    let rate: u64 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);

    let (graph_url, replies) = load::graph_standin().await;
    let hooks = Hooks::default();
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(hook))
        .with_state(hooks.clone());
    let hook_url = format!("{}/hooks", load::serve(app).await);
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tandem.toml");
    std::fs::write(&config_path, config(&hook_url)).unwrap();
    let config_arg = config_path.display().to_string();
    let tandem = Tandem::start(
        &store,
        &graph_url,
        dir,
        &["--config", &config_arg],
        &[("BENCH_HOOK_SECRET", "bench-hook-secret")],
    );
    let total = rate * seconds;
    let (sent_at, offered) = load::offer(&tandem.base, rate, seconds, "agent").await;
    load::wait_for(&hooks.assigned, total as usize).await;
    let label = tandem.store_label();
    tandem.stop().await;
    let mut reply_p99 = None;
    for (what, arrivals) in [
        ("reply", &replies),
        ("hook_requested", &hooks.requested),
        ("hook_assigned", &hooks.assigned),
    ] {
        let latencies = load::latencies(&sent_at, arrivals);
        let p99 = percentile(&latencies, 0.99);
        let baseline = *reply_p99.get_or_insert(p99);
        println!(
            "store={label} rate={rate}/s offered_for={:.1}s path={what} conversations={total} arrived={} p50={:.2}ms p99={:.2}ms max={:.2}ms p99_vs_reply={:.2}",
            offered.as_secs_f64(),
            latencies.len(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            p99.as_secs_f64() / baseline.as_secs_f64().max(1e-9),
        );
    }
}
