//! Starting the real binary and talking to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
pub const API_TOKEN: &str = "test-api-token";
pub const PNID: &str = "106540000000001";

/// Where a server keeps its state.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A redb file.
    Embedded(PathBuf),
    /// A Redis URL and key prefix.
    Redis { url: String, prefix: String },
}

impl Backend {
    /// A fresh embedded store in `dir`.
    pub fn embedded(dir: &Path) -> Self {
        Self::Embedded(dir.join("data").join("tandem.redb"))
    }

    /// A fresh key prefix on the test Redis, which must be running.
    pub fn redis() -> Self {
        let url = redis_url();
        assert_redis_answers(&url);
        Self::Redis {
            url,
            prefix: format!("tandem-e2e:{}", uuid::Uuid::new_v4()),
        }
    }
}

pub fn redis_url() -> String {
    std::env::var("TANDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Fails the test with instructions when Redis does not answer PING.
pub fn assert_redis_answers(url: &str) {
    let host = url.trim_start_matches("redis://").trim_end_matches('/');
    let answered = TcpStream::connect(host).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf)?;
        Ok(buf.starts_with(b"+PONG"))
    });
    if !matches!(answered, Ok(true)) {
        panic!(
            "Redis is required for this test and did not answer at {url} ({answered:?}).\n\
             Start one with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        );
    }
}

/// Options of one server process.
#[derive(Debug, Clone)]
pub struct Spec {
    pub backend: Backend,
    pub human_idle: &'static str,
    pub workers: usize,
    pub config: Option<PathBuf>,
    /// Flows directory; without one the server runs with no bot (from a directory with no
    /// ./flows).
    pub flows: Option<PathBuf>,
    /// Extra environment variables (they win over the defaults, `RUST_LOG` included).
    pub env: Vec<(String, String)>,
    /// A file the server's log (stderr) is written to.
    pub log: Option<PathBuf>,
}

impl Spec {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            human_idle: "30m",
            workers: 4,
            config: None,
            flows: None,
            env: Vec::new(),
            log: None,
        }
    }

    /// A server running the shipped flows, sending to `graph`, calling `shop`.
    pub fn with_bot(backend: Backend, graph: &str, shop: &str) -> Self {
        let mut spec = Self::new(backend);
        spec.flows = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("flows"));
        spec.env = vec![
            ("TANDEM_GRAPH_URL".into(), graph.into()),
            ("TANDEM_ACCESS_TOKEN".into(), "test-access-token".into()),
            ("TANDEM_FLOW_SHOP_API".into(), shop.into()),
            ("TANDEM_SEND_BACKOFF".into(), "100ms".into()),
        ];
        spec
    }
}

/// A running `tandem serve` process.
pub struct Server {
    child: Child,
    backend: Backend,
    pub base: String,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts the binary and waits for it to print its address.
    pub fn start(spec: Spec) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tandem"));
        command.arg("serve").arg("--listen").arg("127.0.0.1:0");
        if let Some(config) = &spec.config {
            command.arg("--config").arg(config);
        }
        match &spec.flows {
            Some(flows) => {
                command.arg("--flows").arg(flows);
            }
            None => {
                command.current_dir(std::env::temp_dir());
            }
        }
        // Tests poll the API every 20 ms; the rate limit has its own test.
        command.env("TANDEM_API_RATE_LIMIT", "0");
        command
            .env("TANDEM_APP_SECRET", SECRET)
            .env("TANDEM_VERIFY_TOKEN", VERIFY_TOKEN)
            .env("TANDEM_API_TOKEN", API_TOKEN)
            .env("TANDEM_HUMAN_IDLE", spec.human_idle)
            .env("TANDEM_WORKERS", spec.workers.to_string())
            .env(
                "RUST_LOG",
                std::env::var("TEST_LOG").map_or("warn", |_| "info"),
            )
            .stdout(Stdio::piped())
            .stderr(match &spec.log {
                Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
                None if std::env::var("TEST_LOG").is_ok() => Stdio::inherit(),
                None => Stdio::null(),
            });
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        match &spec.backend {
            Backend::Embedded(path) => command.env("TANDEM_STORE", path),
            Backend::Redis { url, prefix } => command
                .env("TANDEM_STORE", url)
                .env("TANDEM_REDIS_PREFIX", prefix),
        };
        let mut child = command.spawn().expect("the tandem binary starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("tandem listening on ") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(base) => base,
            Err(_) => {
                let status = child.try_wait();
                let _ = child.kill();
                panic!("tandem did not report its address within 30s (exit status: {status:?})");
            }
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Server {
            child,
            base,
            client,
            backend: spec.backend,
        }
    }

    /// Sends SIGHUP (reload the flows).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops the process with SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .arg("-TERM")
            .arg(&pid)
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a body signed with the test secret.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        let signature = tandem_whatsapp::sign(SECRET.as_bytes(), body);
        self.post_with(body, Some(&signature)).await
    }

    /// Posts signed bodies all at once; returns the statuses in the order given.
    pub async fn post_signed_concurrently(&self, bodies: Vec<Vec<u8>>) -> Vec<u16> {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, body) in bodies.into_iter().enumerate() {
            let client = self.client.clone();
            let url = self.url("/webhook");
            tasks.spawn(async move {
                let signature = tandem_whatsapp::sign(SECRET.as_bytes(), &body);
                let response = client
                    .post(url)
                    .header("x-hub-signature-256", signature)
                    .body(body)
                    .send()
                    .await;
                (index, response.map(|r| r.status().as_u16()).unwrap_or(0))
            });
        }
        let mut statuses = tasks.join_all().await;
        statuses.sort_unstable();
        statuses.into_iter().map(|(_, status)| status).collect()
    }

    /// Posts a body with the given signature header (or none).
    pub async fn post_with(&self, body: &[u8], signature: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/webhook"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send().await.unwrap()
    }

    /// GETs an API path with the bearer token; returns status and JSON.
    pub async fn api(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Reads one conversation, `None` when it does not exist yet.
    pub async fn conversation(&self, wa_id: &str) -> Option<Value> {
        let (status, body) = self.api(&format!("/v1/conversations/{PNID}:{wa_id}")).await;
        match status {
            200 => Some(body),
            404 => None,
            other => panic!("unexpected status {other}: {body}"),
        }
    }

    /// Reads a metric's value (summed over its labels) from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            // A name with labels (`name{label="v"`) matches the series holding them.
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ', ',', '}']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Server {
    /// Stops the process and removes its Redis keys, so the shared server does not fill up
    /// run after run (for replicas, whichever stops last removes what is left).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Backend::Redis { url, prefix } = &self.backend {
            delete_prefix(url, prefix);
        }
    }
}

fn delete_prefix(url: &str, prefix: &str) {
    let Ok(mut con) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return;
    };
    let Ok(keys) = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query::<Vec<String>>(&mut con)
    else {
        return;
    };
    for chunk in keys.chunks(500) {
        if redis::cmd("DEL").arg(chunk).query::<i64>(&mut con).is_err() {
            break;
        }
    }
}

/// Polls `check` until it returns `Some`, failing after `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a fixture from `tests/fixtures/whatsapp`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/whatsapp")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every fixture file name, sorted.
pub fn fixture_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whatsapp");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// A webhook body with customer text messages (`wa_id`, wamid, text) for the test number.
pub fn messages_body(messages: &[(&str, &str, &str)]) -> Vec<u8> {
    let items: Vec<Value> = messages
        .iter()
        .map(|(wa, id, text)| {
            serde_json::json!({"from": wa, "id": id, "timestamp": "1768041000", "type": "text", "text": {"body": text}})
        })
        .collect();
    envelope("messages", serde_json::json!({"messages": items}))
}

/// A webhook body with one human echo to `wa_id`.
pub fn echo_body(wa_id: &str, id: &str, text: &str) -> Vec<u8> {
    let echo = serde_json::json!({"from": "15550001111", "to": wa_id, "id": id, "timestamp": "1768041500", "type": "text", "text": {"body": text}});
    envelope(
        "smb_message_echoes",
        serde_json::json!({"message_echoes": [echo]}),
    )
}

fn envelope(field: &str, mut value: Value) -> Vec<u8> {
    value["messaging_product"] = "whatsapp".into();
    value["metadata"] =
        serde_json::json!({"display_phone_number": "15550001111", "phone_number_id": PNID});
    let body = serde_json::json!({"object": "whatsapp_business_account", "entry": [{"id": "104810000000001", "changes": [{"field": field, "value": value}]}]});
    serde_json::to_vec(&body).unwrap()
}

/// Now in Unix seconds, as webhooks write times.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A webhook (business account 104810000000001) with one customer message of `content` (a WhatsApp message object without
/// `from`, `id` and `timestamp`), sent at `sent_at` (Unix seconds).
pub fn customer(wa_id: &str, id: &str, sent_at: u64, content: Value) -> Vec<u8> {
    let mut message = content;
    message["from"] = wa_id.into();
    message["id"] = id.into();
    message["timestamp"] = sent_at.to_string().into();
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID},
        "contacts": [{"profile": {"name": "Ana Silva"}, "wa_id": wa_id}],
        "messages": [message],
    });
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "104810000000001", "changes": [{"field": "messages", "value": value}]}]})).unwrap()
}

/// A webhook with one customer text sent now by a customer named by a phone (`from`) and/or
/// a BSUID (`from_user_id`), with the matching `contacts[]` entry — as usernames come.
pub fn text_by(phone: Option<&str>, bsuid: Option<&str>, id: &str, body: &str) -> Vec<u8> {
    let mut message = json!({"id": id, "timestamp": now_secs().to_string(), "type": "text", "text": {"body": body}});
    let mut contact = json!({"profile": {"name": "Customer"}});
    if let Some(phone) = phone {
        message["from"] = phone.into();
        contact["wa_id"] = phone.into();
    }
    if let Some(bsuid) = bsuid {
        message["from_user_id"] = bsuid.into();
        contact["user_id"] = bsuid.into();
    }
    let value = json!({"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID}, "contacts": [contact], "messages": [message]});
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "104810000000001", "changes": [{"field": "messages", "value": value}]}]})).unwrap()
}

/// A webhook with one customer text sent now.
pub fn text(wa_id: &str, id: &str, body: &str) -> Vec<u8> {
    customer(
        wa_id,
        id,
        now_secs(),
        json!({"type": "text", "text": {"body": body}}),
    )
}

/// A webhook with one human echo (from the phone) to `wa_id`, sent now.
pub fn echo(wa_id: &str, id: &str, body: &str) -> Vec<u8> {
    let echo = json!({"from": "15550001111", "to": wa_id, "id": id, "timestamp": now_secs().to_string(), "type": "text", "text": {"body": body}});
    let value = json!({"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": PNID}, "message_echoes": [echo]});
    serde_json::to_vec(&json!({"object": "whatsapp_business_account", "entry": [{"id": "104810000000001", "changes": [{"field": "smb_message_echoes", "value": value}]}]})).unwrap()
}

/// The texts of a conversation's transcript lines with the given role.
pub fn texts(conversation: &Value, role: &str) -> Vec<String> {
    conversation["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["role"] == role)
        .map(|l| l["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs a test body against each backend.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name($crate::helpers::Backend::embedded(dir.path())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::redis()).await;
                }
            )*
        }
    };
}
