//! The in-process embedder on the real all-MiniLM-L6-v2 files (`scripts/fetch-model.sh`
//! puts them where [`model_dir`] looks; the test fails when they are missing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use tandem_classify::embed::{EmbedError, Embedder};
use tandem_classify::local_embed::{LocalEmbedder, LocalOptions, Pooling};

/// The model folder: `TANDEM_TEST_MODEL`, else where `scripts/fetch-model.sh` puts it.
fn model_dir() -> PathBuf {
    let dir = std::env::var_os("TANDEM_TEST_MODEL").map_or_else(
        || {
            let models = std::env::var_os("TANDEM_MODELS").map_or_else(
                || {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/tandem/models")
                },
                PathBuf::from,
            );
            models.join("all-MiniLM-L6-v2")
        },
        PathBuf::from,
    );
    assert!(
        dir.join("model.safetensors").is_file(),
        "no model at {}: run scripts/fetch-model.sh (or set TANDEM_TEST_MODEL)",
        dir.display()
    );
    dir
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_model_puts_paraphrases_together_and_batches_change_nothing() {
    let embedder = LocalEmbedder::load(&model_dir(), LocalOptions::default()).unwrap();
    assert_eq!(
        embedder.pooling(),
        Pooling::Mean,
        "1_Pooling/config.json says mean"
    );
    assert!(
        embedder.model().starts_with("all-MiniLM-L6-v2@"),
        "{}",
        embedder.model()
    );
    let texts: Vec<String> = [
        "where is my order",
        "has my parcel been dispatched yet?",
        "what time do you close today?",
        "can you write me a poem about cats",
    ]
    .map(String::from)
    .to_vec();
    let vectors = embedder.embed(&texts).await.unwrap();
    assert_eq!(vectors.len(), 4);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length, got {norm}");
    }
    let related = cosine(&vectors[0], &vectors[1]);
    assert!(related > 0.4, "order / parcel: {related}");
    assert!(related > cosine(&vectors[0], &vectors[2]) + 0.2);
    assert!(related > cosine(&vectors[0], &vectors[3]) + 0.2);
    // A text alone and in a padded batch gives the same vector.
    let alone = embedder.embed(&texts[1..2]).await.unwrap();
    let same = cosine(&alone[0], &vectors[1]);
    assert!(same > 0.9999, "padding changed the vector: {same}");
    // The same text always gives the same vector.
    assert_eq!(embedder.embed(&texts[1..2]).await.unwrap(), alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_is_another_model_and_a_timeout_is_an_error_not_a_wait() {
    let plain = LocalEmbedder::load(&model_dir(), LocalOptions::default()).unwrap();
    let prefixed = LocalEmbedder::load(
        &model_dir(),
        LocalOptions {
            prefix: "query: ".into(),
            ..LocalOptions::default()
        },
    )
    .unwrap();
    assert_ne!(
        plain.model(),
        prefixed.model(),
        "cached vectors must not mix"
    );
    let slow = LocalEmbedder::load(
        &model_dir(),
        LocalOptions {
            timeout: Duration::ZERO,
            ..LocalOptions::default()
        },
    )
    .unwrap();
    let texts = vec!["a long message ".repeat(20); 8];
    assert!(matches!(
        slow.embed(&texts).await,
        Err(EmbedError::Timeout(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_finds_every_core_busy_skips_at_once_but_examples_wait() {
    let embedder = LocalEmbedder::load(
        &model_dir(),
        LocalOptions {
            queue: Duration::ZERO,
            timeout: Duration::from_secs(60),
            ..LocalOptions::default()
        },
    )
    .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let long = vec!["a long message about plants and pots ".repeat(10); 16];
    let one = vec!["where is my order".to_owned()];
    // Every core takes a long batch first (futures are polled in order), then one more
    // message finds none free.
    let mut calls: Vec<_> = (0..cores).map(|_| embedder.embed(&long)).collect();
    calls.push(embedder.embed(&one));
    let results = futures_join_all(calls).await;
    assert!(results[..cores].iter().all(Result::is_ok));
    assert!(
        matches!(results[cores], Err(EmbedError::Busy(_))),
        "{:?}",
        results[cores].as_ref().err()
    );
    // The flows' examples wait for their turn instead.
    let mut calls: Vec<_> = (0..cores).map(|_| embedder.embed_examples(&long)).collect();
    calls.push(embedder.embed_examples(&one));
    assert!(futures_join_all(calls).await.iter().all(Result::is_ok));
}

/// Polls every future in order, then waits for all of them.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|v| v.unwrap()).collect()
}

#[test]
fn a_folder_that_is_not_a_model_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = LocalEmbedder::load(dir.path(), LocalOptions::default()).unwrap_err();
    assert!(error.path.ends_with("config.json"), "{error}");
    std::fs::copy(
        model_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let error = LocalEmbedder::load(dir.path(), LocalOptions::default()).unwrap_err();
    assert!(error.path.ends_with("tokenizer.json"), "{error}");
    std::fs::copy(
        model_dir().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), b"not weights").unwrap();
    let error = LocalEmbedder::load(dir.path(), LocalOptions::default()).unwrap_err();
    assert!(error.path.ends_with("model.safetensors"), "{error}");
}
