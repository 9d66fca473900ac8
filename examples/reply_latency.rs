//! Load test of the bot's reply path: webhook in → Graph API request out.
//!
//! Starts the release `tandem` binary on the shipped flows with a loopback Graph API
//! stand-in, then posts signed customer messages ("opening hours", a rule-matched intent) at a
//! fixed rate, each from a new customer, spread over 100 business numbers (so no number goes
//! past WhatsApp's 20 messages a second). For every conversation it measures the time from
//! sending the webhook to the stand-in receiving the bot's reply, and prints p50, p99 and max.
//!
//!   cargo build --release --bin tandem
//!   cargo run --release --example reply_latency -- embedded 500 10
//!   cargo run --release --example reply_latency -- redis://127.0.0.1:6379 500 10
//!
//! Arguments: store (`embedded` or a redis:// URL), conversations a second, seconds, and the
//! customer's message (default "opening hours"). `TANDEM_EMBEDDER` (and the other
//! `TANDEM_EMBEDDER_*`/`TANDEM_SEMANTIC_*` settings) in the environment turn the semantic
//! stage on; a message no rule catches then goes through it:
//!
//!   cargo build --release --features semantic --bin tandem
//!   cargo run --release --example reply_latency -- embedded 200 10 "has my parcel been dispatched yet?"
//!   TANDEM_EMBEDDER="$(scripts/fetch-model.sh)" \
//!     cargo run --release --example reply_latency -- embedded 200 10 "has my parcel been dispatched yet?"
#![allow(
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

#[path = "support/load.rs"]
mod load;

use load::{Tandem, percentile};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store = args.get(1).cloned().unwrap_or_else(|| "embedded".into());
    let rate: u64 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(500);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let message = args
        .get(4)
        .cloned()
        .unwrap_or_else(|| "opening hours".into());

    let (graph_url, arrivals) = load::graph_standin().await;
    let tandem = Tandem::start(&store, &graph_url, tempfile::tempdir().unwrap(), &[], &[]);
    let total = rate * seconds;
    let (sent_at, offered) = load::offer(&tandem.base, rate, seconds, &message).await;
    load::wait_for(&arrivals, total as usize).await;
    let label = tandem.store_label();
    tandem.stop().await;
    let latencies = load::latencies(&sent_at, &arrivals);
    println!(
        "store={label} semantic={} rate={rate}/s offered_for={:.1}s conversations={total} answered={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        std::env::var("TANDEM_EMBEDDER").is_ok(),
        offered.as_secs_f64(),
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}
