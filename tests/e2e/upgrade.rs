//! An upgrade from a version that keyed customers by phone: the stores in
//! `tests/fixtures/legacy` were written by that version (`make.sh` says how). The new binary
//! migrates them at start and every conversation is found and extended, by phone and by BSUID.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, PNID, Server, Spec, redis_url, text_by, texts, wait_for};
use crate::standin::{Graph, Shop};

const DEADLINE: Duration = Duration::from_secs(15);

fn legacy(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_of_the_previous_version_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::embedded(dir.path());
    let Backend::Embedded(path) = &backend else {
        unreachable!()
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy(legacy("v1.redb"), path).unwrap();
    upgraded(backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_keyspace_of_the_previous_version_keeps_working() {
    let backend = Backend::redis();
    let Backend::Redis { prefix, .. } = &backend else {
        unreachable!()
    };
    load_keyspace(prefix);
    upgraded(backend).await;
}

/// Writes the recorded keyspace under `prefix`.
fn load_keyspace(prefix: &str) {
    let keys: Vec<Value> =
        serde_json::from_slice(&std::fs::read(legacy("v1-redis.json")).unwrap()).unwrap();
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    for entry in keys {
        let key = format!("{prefix}:{}", entry["key"].as_str().unwrap());
        let value = &entry["value"];
        let pairs = || -> Vec<(String, String)> {
            value
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_str().unwrap().to_owned(),
                        p[1].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let cmd = match entry["type"].as_str().unwrap() {
            "string" => redis::cmd("SET")
                .arg(&key)
                .arg(value.as_str().unwrap())
                .clone(),
            "hash" => {
                let mut c = redis::cmd("HSET");
                c.arg(&key);
                for (field, v) in pairs() {
                    c.arg(field).arg(v);
                }
                c
            }
            "zset" => {
                let mut c = redis::cmd("ZADD");
                c.arg(&key);
                for (member, score) in pairs() {
                    c.arg(score).arg(member);
                }
                c
            }
            "list" => {
                let mut c = redis::cmd("RPUSH");
                c.arg(&key);
                for item in value.as_array().unwrap() {
                    c.arg(item.as_str().unwrap());
                }
                c
            }
            other => panic!("{key}: type {other} is not in the recorded keyspace"),
        };
        let _: () = cmd.query(&mut con).unwrap();
    }
}

async fn post(server: &Server, body: &[u8]) {
    let response = server.post_signed(body).await;
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["kept"], 0, "{report}");
}

/// What every upgraded store must show.
async fn upgraded(backend: Backend) {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let server = Server::start(Spec::with_bot(backend, &graph.url, &shop.url));
    // Stored before the upgrade, found by phone as before; the id keeps its old form.
    let ana = server.conversation("15550002222").await.unwrap();
    assert_eq!(ana["id"], format!("{PNID}:15550002222"));
    assert_eq!(ana["customer"]["phone"], "15550002222");
    let before = ana["events_applied"].as_u64().unwrap();
    // Ana now writes with phone and BSUID, then with the BSUID alone: her old conversation.
    post(
        &server,
        &text_by(
            Some("15550002222"),
            Some("US.13491208600000000001"),
            "wamid.up.1",
            "hi again",
        ),
    )
    .await;
    post(
        &server,
        &text_by(
            None,
            Some("US.13491208600000000001"),
            "wamid.up.2",
            "anyone?",
        ),
    )
    .await;
    // Waits for the messages themselves: a timer of the old record (an idle check) is an
    // applied event too.
    let ana = wait_for("Ana's new messages applied", DEADLINE, || async {
        let c = server.conversation("US.13491208600000000001").await?;
        let applied = c["events_applied"].as_u64()? >= before + 2;
        (applied && texts(&c, "customer").iter().any(|t| t == "anyone?")).then_some(c)
    })
    .await;
    assert_eq!(ana["id"], format!("{PNID}:15550002222"));
    assert_eq!(
        texts(&ana, "customer"),
        [
            "Hi, what time do you open on Saturday?",
            "hi again",
            "anyone?"
        ]
    );
    assert_eq!(
        texts(&ana, "human"),
        ["Hi Ana, Marta here - I'll sort out the damaged box for you personally."]
    );
    // Carla's message waited in the inbox through the upgrade: applied to her old id.
    let carla = wait_for("the waiting message applied", DEADLINE, || async {
        server.conversation("15550004444").await
    })
    .await;
    assert_eq!(carla["id"], format!("{PNID}:15550004444"));
    assert_eq!(texts(&carla, "customer"), ["is anyone there?"]);
    // Ben writes again: his old conversation, answered at his phone.
    post(
        &server,
        &text_by(Some("15550003333"), None, "wamid.up.3", "opening hours"),
    )
    .await;
    let ben = wait_for("Ben's message applied", DEADLINE, || async {
        let c = server.conversation("15550003333").await?;
        (texts(&c, "customer").len() == 2).then_some(c)
    })
    .await;
    assert_eq!(ben["id"], format!("{PNID}:15550003333"));
    let reply = wait_for("a reply to Ben", DEADLINE, || async {
        graph
            .messages()
            .into_iter()
            .find(|m| m["to"] == "15550003333")
    })
    .await;
    assert!(reply.get("recipient").is_none());
    // No customer was created for anyone the old store knew.
    assert_eq!(server.metric("tandem_customers_created_total").await, 0.0);
    let (status, found) = server.api("/v1/customers/US.13491208600000000001").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["customer"]["id"], "15550002222");
}
