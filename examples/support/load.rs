//! What the latency examples share: the loopback Graph API stand-in that notes when each
//! customer's first message arrives, starting the release `tandem` binary, offering signed
//! customer texts at a fixed rate, and percentiles.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

/// The app secret the load is signed with.
pub const SECRET: &str = "bench-secret";
/// Business numbers the load is spread over (5 conversations a second each at 500/s).
pub const NUMBERS: usize = 100;

/// First arrival per customer (wa_id).
pub type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

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

/// Serves `app` on a loopback port; returns its base URL.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Starts the Graph API stand-in; returns its URL (for `TANDEM_GRAPH_URL`) and the arrivals.
pub async fn graph_standin() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let app = axum::Router::new()
        .route("/v23.0/{pnid}/messages", axum::routing::post(graph))
        .with_state(Arc::clone(&arrivals));
    (format!("{}/v23.0", serve(app).await), arrivals)
}

/// The release binary serving the shipped flows on `store` (`embedded` or a redis:// URL).
pub struct Tandem {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    store: String,
    prefix: String,
    /// Holds the embedded store file and any configuration written by the caller.
    pub dir: tempfile::TempDir,
}

impl Tandem {
    /// Starts it with `args` added to `serve` and `env` added to the environment.
    pub fn start(
        store: &str,
        graph_url: &str,
        dir: tempfile::TempDir,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Tandem {
        let prefix = format!("bench:{}", uuid::Uuid::new_v4());
        let store_url = if store == "embedded" {
            dir.path().join("bench.redb").display().to_string()
        } else {
            store.to_owned()
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
                &store_url,
            ])
            .args(args)
            .envs(env.iter().copied())
            .env("TANDEM_APP_SECRET", SECRET)
            .env("TANDEM_VERIFY_TOKEN", "bench")
            .env("TANDEM_API_TOKEN", "bench")
            .env("TANDEM_ACCESS_TOKEN", "bench")
            .env("TANDEM_GRAPH_URL", graph_url)
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
        Tandem {
            child,
            base,
            store: store.to_owned(),
            prefix,
            dir,
        }
    }

    /// The store's label for the report.
    pub fn store_label(&self) -> &'static str {
        if self.store == "embedded" {
            "embedded"
        } else {
            "redis"
        }
    }

    /// Stops the process and removes its Redis keys.
    pub async fn stop(mut self) {
        self.child.kill().expect("stopping tandem");
        self.child.wait().expect("waiting for tandem");
        if self.store == "embedded" {
            return;
        }
        let client = redis::Client::open(self.store.as_str()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
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
}

fn webhook(pnid: &str, wa_id: &str, id: &str, now: u64, text: &str) -> Vec<u8> {
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": "Bench"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": id, "timestamp": now.to_string(), "type": "text", "text": {"body": text}}],
    });
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]})).unwrap()
}

/// Posts `text` from a new customer `rate` times a second for `seconds`, spread over
/// [`NUMBERS`] business numbers; returns when each customer's webhook was sent and how long
/// offering took.
pub async fn offer(
    base: &str,
    rate: u64,
    seconds: u64,
    text: &str,
) -> (HashMap<String, Instant>, Duration) {
    let url = format!("{base}/webhook");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    let started = Instant::now();
    for i in 0..rate * seconds {
        tick.tick().await;
        let pnid = format!("1065400000{:05}", i as usize % NUMBERS);
        let wa_id = format!("3519{:08}", i);
        let body = webhook(&pnid, &wa_id, &format!("wamid.bench.{i}"), now_secs, text);
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
    let sent_at = sent_at.lock().unwrap().clone();
    (sent_at, offered)
}

/// Waits until `arrivals` holds `total` customers, at most 30 s.
pub async fn wait_for(arrivals: &Arrivals, total: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().unwrap().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The latencies from each customer's send to their arrival, sorted.
pub fn latencies(sent_at: &HashMap<String, Instant>, arrivals: &Arrivals) -> Vec<Duration> {
    let arrivals = arrivals.lock().unwrap();
    let mut out: Vec<Duration> = sent_at
        .iter()
        .filter_map(|(wa, sent)| arrivals.get(wa).map(|got| got.duration_since(*sent)))
        .collect();
    out.sort();
    out
}

/// The `p` percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
