//! No loss: what was answered 200 takes effect exactly once, across `kill -9`, restarts and
//! retries; a store that cannot take the events gets Meta a 503; one conversation's events
//! take effect in arrival order.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::both_stores;
use crate::helpers::{Backend, Server, Spec, assert_redis_answers, messages_body, texts, wait_for};

both_stores!(
    a_kill_9_after_the_200_loses_nothing,
    a_kill_9_while_lanes_run_applies_each_event_once,
    one_conversation_applies_in_arrival_order
);

/// 4 conversations × `per` messages, one message per webhook.
fn bodies(tag: &str, per: usize) -> (Vec<Vec<u8>>, HashMap<String, Vec<String>>) {
    let mut bodies = Vec::new();
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..per {
        for c in 0..4 {
            let wa = format!("155500{c}{c}{c}{c}");
            let text = format!("{tag} message {i} to {c}");
            bodies.push(messages_body(&[(
                &wa,
                &format!("wamid.{tag}.{c}.{i}"),
                &text,
            )]));
            expected.entry(wa).or_default().push(text);
        }
    }
    (bodies, expected)
}

/// Every delivery was answered 200.
fn assert_all_acknowledged(statuses: &[u16]) {
    assert!(statuses.iter().all(|s| *s == 200), "statuses: {statuses:?}");
}

async fn assert_each_applied_once(server: &Server, expected: &HashMap<String, Vec<String>>) {
    for (wa, texts_sent) in expected {
        let n = texts_sent.len();
        let c = wait_for(
            &format!("{wa} to apply {n} events"),
            Duration::from_secs(20),
            || async {
                server
                    .conversation(wa)
                    .await
                    .filter(|c| c["events_applied"] == n)
            },
        )
        .await;
        let mut got = texts(&c, "customer");
        got.sort();
        let mut want = texts_sent.clone();
        want.sort();
        assert_eq!(
            got, want,
            "{wa}: every acknowledged message, each exactly once"
        );
    }
}

async fn a_kill_9_after_the_200_loses_nothing(backend: Backend) {
    // An ingest-only node (no lane workers): every event is stored but none has taken effect
    // when the process dies.
    let mut spec = Spec::new(backend);
    spec.workers = 0;
    let mut server = Server::start(spec.clone());
    let (bodies, expected) = bodies("k", 10);
    let statuses = server.post_signed_concurrently(bodies.clone()).await;
    assert_all_acknowledged(&statuses);
    server.kill9();

    spec.workers = 4;
    let server = Server::start(spec);
    assert_each_applied_once(&server, &expected).await;
    // Meta retries the same deliveries after the restart: nothing happens twice.
    let statuses = server.post_signed_concurrently(bodies).await;
    assert_all_acknowledged(&statuses);
    assert_eq!(server.metric("tandem_webhook_duplicates_total").await, 40.0);
    assert_each_applied_once(&server, &expected).await;
}

async fn a_kill_9_while_lanes_run_applies_each_event_once(backend: Backend) {
    let spec = Spec::new(backend);
    let mut server = Server::start(spec.clone());
    let (bodies, expected) = bodies("r", 25);
    let statuses = server.post_signed_concurrently(bodies).await;
    assert_all_acknowledged(&statuses);
    server.kill9();
    let server = Server::start(spec);
    assert_each_applied_once(&server, &expected).await;
}

async fn one_conversation_applies_in_arrival_order(backend: Backend) {
    let server = Server::start(Spec::new(backend));
    let sent: Vec<String> = (0..60).map(|i| format!("ordered {i:02}")).collect();
    for (i, text) in sent.iter().enumerate() {
        let body = messages_body(&[("15550005555", &format!("wamid.o{i}"), text)]);
        assert_eq!(server.post_signed(&body).await.status(), 200);
    }
    let c = wait_for("all 60 to apply", Duration::from_secs(20), || async {
        server
            .conversation("15550005555")
            .await
            .filter(|c| c["events_applied"] == 60)
    })
    .await;
    assert_eq!(texts(&c, "customer"), sent);
}

/// A private Redis server on a free port, stopped when dropped.
struct PrivateRedis {
    port: u16,
}

impl PrivateRedis {
    fn start(port: u16) -> Self {
        let status = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("redis-server is installed (it is a test prerequisite)");
        assert!(status.success());
        let redis = Self { port };
        let url = redis.url();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::panic::catch_unwind(|| assert_redis_answers(&url)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "private redis did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_answers_503_so_meta_retries() {
    let redis = PrivateRedis::start(free_port());
    let server = Server::start(Spec::new(Backend::Redis {
        url: redis.url(),
        prefix: "tandem-e2e-503".into(),
    }));
    let body = messages_body(&[("15550004000", "wamid.before", "before")]);
    assert_eq!(server.post_signed(&body).await.status(), 200);

    redis.stop();
    let during = messages_body(&[("15550004000", "wamid.during", "during the outage")]);
    assert_eq!(server.post_signed(&during).await.status(), 503);
    let ready = server
        .client
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(
        server
            .client
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Redis is back (empty: it keeps nothing on disk); Meta's retry of the refused delivery
    // is accepted and takes effect.
    let _restarted = PrivateRedis::start(redis.port);
    let retried = wait_for(
        "the retry to be accepted",
        Duration::from_secs(20),
        || async {
            let status = server.post_signed(&during).await.status();
            (status == 200).then_some(status)
        },
    )
    .await;
    assert_eq!(retried, 200);
    let c = wait_for(
        "the retried message to apply",
        Duration::from_secs(20),
        || async {
            server
                .conversation("15550004000")
                .await
                .filter(|c| texts(c, "customer").contains(&"during the outage".to_owned()))
        },
    )
    .await;
    assert_eq!(c["mode"], "bot");
    assert!(server.metric("tandem_webhook_requests_total").await >= 3.0);
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(Spec::new(Backend::embedded(dir.path())));
    assert_eq!(
        server
            .post_signed(&messages_body(&[("15550003000", "wamid.t", "bye")]))
            .await
            .status(),
        200
    );
    assert!(server.terminate().success());
}
