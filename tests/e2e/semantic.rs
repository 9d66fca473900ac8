//! The semantic stage end to end: the real server with the in-process model (feature
//! `semantic`, the real all-MiniLM-L6-v2 files from `scripts/fetch-model.sh`) and with an
//! embeddings endpoint stand-in that fails, stalls and answers garbage.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{Backend, Server, Spec, text, wait_for};
use crate::standin::{Embeddings, EmbeddingsMode, Graph, Shop};

const DEADLINE: Duration = Duration::from_secs(20);

/// Customer `wa_id` writes `body`; returns what the cascade made of it, once answered.
async fn ask(server: &Server, graph: &Graph, wa_id: &str, body: &str) -> Value {
    let webhook = text(wa_id, &format!("wamid.{wa_id}"), body);
    assert_eq!(server.post_signed(&webhook).await.status(), 200);
    understood(server, graph, wa_id).await
}

/// Waits for a reply to `wa_id` and returns the conversation once its customer line says
/// how it was understood.
async fn understood(server: &Server, graph: &Graph, wa_id: &str) -> Value {
    wait_for(&format!("a reply to {wa_id}"), DEADLINE, || async {
        graph
            .messages()
            .iter()
            .any(|m| m["to"] == wa_id && m["type"] != "reaction")
            .then_some(())
    })
    .await;
    let conversation = server.conversation(wa_id).await.unwrap();
    let line = conversation["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["role"] == "customer")
        .cloned()
        .unwrap();
    line["understood"].clone()
}

/// The model folder `scripts/fetch-model.sh` fills (or `TANDEM_TEST_MODEL`).
#[cfg(feature = "semantic")]
fn model_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("TANDEM_TEST_MODEL").map_or_else(
        || {
            std::env::var_os("TANDEM_MODELS")
                .map_or_else(
                    || {
                        std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                            .join(".cache/tandem/models")
                    },
                    std::path::PathBuf::from,
                )
                .join("all-MiniLM-L6-v2")
        },
        std::path::PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").is_file(),
        "no model at {}: run scripts/fetch-model.sh (or set TANDEM_TEST_MODEL)",
        dir.display()
    );
    dir
}

#[cfg(feature = "semantic")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_model_answers_what_the_lexical_model_misses_and_restarts_reuse_its_vectors()
{
    let store = tempfile::tempdir().unwrap();
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let mut spec = Spec::with_bot(Backend::embedded(store.path()), &graph.url, &shop.url);
    spec.env
        .push(("TANDEM_EMBEDDER".into(), model_dir().display().to_string()));
    let mut server = Server::start(spec.clone());
    assert!(
        server
            .metric("tandem_semantic_examples_embedded_total")
            .await
            > 20.0,
        "the flows' examples were embedded before the server answered"
    );
    // No trigger word and too far from the examples' words for the lexical model alone.
    let u = ask(
        &server,
        &graph,
        "351910000401",
        "has my parcel been dispatched yet?",
    )
    .await;
    assert_eq!(
        (u["stage"].as_str(), u["intent"].as_str()),
        (Some("semantic"), Some("order_status")),
        "{u}"
    );
    let u = ask(
        &server,
        &graph,
        "351910000402",
        "these pots came cracked, I want my money back",
    )
    .await;
    assert_eq!(
        (u["stage"].as_str(), u["intent"].as_str()),
        (Some("semantic"), Some("returns")),
        "{u}"
    );
    // Out of scope: nobody is sure, the customer gets the menu.
    let u = ask(
        &server,
        &graph,
        "351910000403",
        "can you write me a poem about cats",
    )
    .await;
    assert_eq!(u["stage"], "none", "{u}");
    assert!(server.terminate().success());

    // A restart reads every example's vector from the store: nothing is embedded again.
    let server = Server::start(spec);
    assert_eq!(
        server
            .metric("tandem_semantic_examples_embedded_total")
            .await,
        0.0
    );
    let u = ask(
        &server,
        &graph,
        "351910000404",
        "has my parcel been dispatched yet?",
    )
    .await;
    assert_eq!(u["stage"], "semantic", "{u}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embeddings_endpoint_that_stalls_fails_or_answers_garbage_never_holds_a_reply() {
    let graph = Graph::start().await;
    let shop = Shop::start(Duration::ZERO).await;
    let embeddings = Embeddings::start().await;
    let backend = Backend::redis();
    let mut spec = Spec::with_bot(backend, &graph.url, &shop.url);
    spec.env.extend([
        ("TANDEM_EMBEDDER".into(), embeddings.url.clone()),
        ("TANDEM_EMBEDDER_MODEL".into(), "concepts".into()),
        ("TANDEM_EMBEDDER_TIMEOUT".into(), "300ms".into()),
    ]);
    let mut server = Server::start(spec.clone());
    let examples = embeddings.texts_seen();
    assert!(
        examples > 20,
        "the examples were embedded at start-up: {examples}"
    );
    let u = ask(
        &server,
        &graph,
        "351910000411",
        "has my parcel been dispatched yet?",
    )
    .await;
    assert_eq!(
        (u["stage"].as_str(), u["intent"].as_str()),
        (Some("semantic"), Some("order_status")),
        "{u}"
    );

    // Each way of failing: the customer still gets an answer (a first message: the menu),
    // and the failure is counted by its reason.
    for (mode, wa, reason) in [
        (EmbeddingsMode::Stall, "351910000412", "timeout"),
        (EmbeddingsMode::Garbage, "351910000413", "malformed"),
        (EmbeddingsMode::Error, "351910000414", "endpoint"),
    ] {
        embeddings.set_mode(mode);
        let u = ask(&server, &graph, wa, "has my parcel been dispatched yet?").await;
        assert_eq!(u["stage"], "none", "{mode:?}: {u}");
        let failures = server
            .metric(&format!(
                "tandem_semantic_failures_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert!(failures >= 1.0, "{mode:?} counted as {reason}");
    }
    embeddings.set_mode(EmbeddingsMode::Normal);
    assert!(server.terminate().success());

    // Another process on the same Redis finds every example's vector there.
    let before = embeddings.texts_seen();
    let server = Server::start(spec);
    assert_eq!(embeddings.texts_seen(), before, "no example embedded again");
    let u = ask(
        &server,
        &graph,
        "351910000415",
        "has my parcel been dispatched yet?",
    )
    .await;
    assert_eq!(u["stage"], "semantic", "{u}");
}
