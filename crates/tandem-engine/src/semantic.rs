//! The semantic stage of the cascade at run time: the embedder, the heads trained on each
//! loaded flows' examples, and the cache of example vectors in the store.
//!
//! One [`SemanticStage`] serves the deployment: tenants with identical flows share one
//! loaded [`Bot`] and so one head. A head is built in the background the first time a bot is
//! seen (or awaited at start-up with [`SemanticStage::prepare`]): the examples' vectors are
//! read from the store by a digest of model and text, only the missing ones are embedded
//! (and stored, so replicas and restarts reuse them, and a reload embeds only what changed),
//! then the head is trained on a blocking thread. Until it is ready — and whenever the
//! embedder fails or is slow — the stage answers "not sure" and the message goes on to the
//! LLM or the fallback: it never holds a reply beyond the embedder's timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tandem_classify::embed::{EmbedError, Embedder};
use tandem_classify::semantic::{SemanticIndex, SemanticMatch, SemanticOptions};
use tandem_flows::Bot;
use tandem_store::Store;
use tokio::sync::OnceCell;

use crate::metrics;

/// Texts embedded per call while building a head.
const BUILD_BATCH: usize = 32;
/// A failed build is tried again after this long.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Why a head could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// The embedder failed on the examples.
    #[error("embedding the examples failed: {0}")]
    Embed(#[from] EmbedError),
    /// The examples cannot train a head.
    #[error("{0}")]
    Train(#[from] tandem_classify::semantic::SemanticError),
    /// The store could not be read or written.
    #[error("the embeddings cache failed: {0}")]
    Store(String),
}

/// One bot's head: built once, shared by every caller.
#[derive(Debug)]
struct Entry {
    bot: Weak<Bot>,
    started: AtomicBool,
    built: OnceCell<Result<Arc<SemanticIndex>, BuildError>>,
    failed_at: Mutex<Option<Instant>>,
}

/// The embedder and the heads of the loaded flows.
#[derive(Debug)]
pub struct SemanticStage {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn Store>,
    options: SemanticOptions,
    /// By the address of the bot (checked against the weak pointer, so a new bot at a
    /// reused address is not mistaken for an old one).
    heads: Mutex<HashMap<usize, Arc<Entry>>>,
}

impl SemanticStage {
    /// A stage embedding with `embedder`, caching example vectors in `store`.
    pub fn new(
        embedder: Arc<dyn Embedder>,
        store: Arc<dyn Store>,
        options: SemanticOptions,
    ) -> Self {
        Self {
            embedder,
            store,
            options,
            heads: Mutex::default(),
        }
    }

    /// The settings the heads decide with.
    pub fn options(&self) -> &SemanticOptions {
        &self.options
    }

    /// The embedding model.
    pub fn model(&self) -> &str {
        self.embedder.model()
    }

    /// The entry of `bot`, made when new (entries of dropped bots and failed builds past
    /// their retry time are replaced).
    fn entry(&self, bot: &Arc<Bot>) -> Arc<Entry> {
        let key = Arc::as_ptr(bot) as usize;
        let mut heads = self.heads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = heads.get(&key)
            && entry.bot.upgrade().is_some_and(|b| Arc::ptr_eq(&b, bot))
        {
            let stale = entry
                .failed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() >= RETRY_AFTER);
            if !stale {
                return Arc::clone(entry);
            }
        }
        // Heads of flows no longer loaded go when a new one comes.
        heads.retain(|_, e| e.bot.strong_count() > 0);
        let entry = Arc::new(Entry {
            bot: Arc::downgrade(bot),
            started: AtomicBool::new(false),
            built: OnceCell::new(),
            failed_at: Mutex::new(None),
        });
        heads.insert(key, Arc::clone(&entry));
        entry
    }

    /// Builds `bot`'s head now, or waits for the build under way; returns it.
    ///
    /// # Errors
    /// The build's [`BuildError`] (tried again after a while by [`SemanticStage::ready`]).
    pub async fn prepare(
        self: &Arc<Self>,
        bot: &Arc<Bot>,
    ) -> Result<Arc<SemanticIndex>, BuildError> {
        let entry = self.entry(bot);
        entry.started.store(true, Ordering::Release);
        self.build_into(&entry, bot).await
    }

    async fn build_into(
        &self,
        entry: &Entry,
        bot: &Arc<Bot>,
    ) -> Result<Arc<SemanticIndex>, BuildError> {
        entry
            .built
            .get_or_init(|| async {
                let started = Instant::now();
                let built = self.build(bot).await;
                match &built {
                    Ok(index) => {
                        ::metrics::histogram!(metrics::SEMANTIC_BUILD_SECONDS)
                            .record(started.elapsed().as_secs_f64());
                        tracing::info!(
                            model = self.embedder.model(),
                            examples = index.examples(),
                            intents = index.intents().len(),
                            seconds = started.elapsed().as_secs_f64(),
                            "semantic stage ready"
                        );
                    }
                    Err(error) => {
                        ::metrics::counter!(metrics::SEMANTIC_FAILURES, "reason" => "build")
                            .increment(1);
                        tracing::error!(%error, "the semantic stage could not be built; unsure messages go to the LLM or the fallback until it is");
                        *entry
                            .failed_at
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    }
                }
                built.map(Arc::new)
            })
            .await
            .clone()
    }

    /// `bot`'s head when it is built; otherwise starts building it in the background and
    /// returns `None`.
    pub fn ready(self: &Arc<Self>, bot: &Arc<Bot>) -> Option<Arc<SemanticIndex>> {
        let entry = self.entry(bot);
        if let Some(built) = entry.built.get() {
            return built.as_ref().ok().cloned();
        }
        if !entry.started.swap(true, Ordering::AcqRel) {
            let (stage, bot) = (Arc::clone(self), Arc::clone(bot));
            tokio::spawn(async move {
                // The outcome is kept in the entry and logged there.
                drop(stage.build_into(&entry, &bot).await);
            });
        }
        None
    }

    /// The examples' vectors (from the cache, the rest embedded and cached) and the head
    /// trained on them.
    async fn build(&self, bot: &Bot) -> Result<SemanticIndex, BuildError> {
        let examples = bot.training_examples();
        let model = self.embedder.model().to_owned();
        let keys: Vec<String> = examples.iter().map(|e| text_key(&model, &e.text)).collect();
        let cached = self
            .store
            .embeddings(&model, &keys)
            .await
            .map_err(|e| BuildError::Store(e.to_string()))?;
        let mut vectors: Vec<Option<Vec<f32>>> = cached
            .into_iter()
            .map(|bytes| bytes.and_then(|b| decode_vector(&b)))
            .collect();
        let missing: Vec<usize> = (0..vectors.len())
            .filter(|&i| vectors[i].is_none())
            .collect();
        for chunk in missing.chunks(BUILD_BATCH) {
            let texts: Vec<String> = chunk.iter().map(|&i| examples[i].text.clone()).collect();
            let embedded = self.embedder.embed_examples(&texts).await?;
            let mut entries = Vec::with_capacity(chunk.len());
            for (&i, vector) in chunk.iter().zip(embedded) {
                entries.push((keys[i].clone(), encode_vector(&vector)));
                vectors[i] = Some(vector);
            }
            self.store
                .put_embeddings(&model, entries)
                .await
                .map_err(|e| BuildError::Store(e.to_string()))?;
        }
        ::metrics::counter!(metrics::SEMANTIC_EXAMPLES_EMBEDDED).increment(missing.len() as u64);
        let labelled: Vec<(String, Vec<f32>)> = examples
            .into_iter()
            .zip(vectors)
            .filter_map(|(e, v)| v.map(|v| (e.intent, v)))
            .collect();
        let options = self.options.clone();
        tokio::task::spawn_blocking(move || SemanticIndex::train(&model, &labelled, options))
            .await
            .map_err(|e| BuildError::Store(format!("training stopped: {e}")))?
            .map_err(BuildError::from)
    }

    /// Decides on `text` for `bot`: the head's fused answer (with the lexical model's
    /// probabilities), or why there is none (not built yet, the embedder failed).
    ///
    /// # Errors
    /// A reason in words; the message goes on to the next stage.
    pub async fn decide(
        self: &Arc<Self>,
        bot: &Arc<Bot>,
        text: &str,
    ) -> Result<SemanticMatch, String> {
        let Some(index) = self.ready(bot) else {
            ::metrics::counter!(metrics::SEMANTIC_FAILURES, "reason" => "not_ready").increment(1);
            return Err("the semantic stage is still being built".into());
        };
        let started = Instant::now();
        let embedded = self.embedder.embed(&[text.to_owned()]).await;
        ::metrics::histogram!(metrics::SEMANTIC_EMBED_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let vector = match embedded {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            Ok(_) => return Err("the embedder gave no vector".into()),
            Err(error) => {
                ::metrics::counter!(metrics::SEMANTIC_FAILURES, "reason" => error.label())
                    .increment(1);
                return Err(error.to_string());
            }
        };
        let lexical = bot.classifier.as_ref().map(|m| (m, m.probabilities(text)));
        index
            .decide(
                &vector,
                lexical
                    .as_ref()
                    .map(|(m, p)| tandem_classify::semantic::Lexical::of(m, text, p)),
            )
            .ok_or_else(|| {
                ::metrics::counter!(metrics::SEMANTIC_FAILURES, "reason" => "dimension")
                    .increment(1);
                format!(
                    "the embedder's vector has {} numbers, not the head's",
                    vector.len()
                )
            })
    }
}

/// The cache key of `text` under `model`: a SHA-256 digest (hex) of both.
pub fn text_key(model: &str, text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    hex::encode(hasher.finalize())
}

/// A vector as its little-endian `f32` bytes.
fn encode_vector(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Bytes back into a vector; `None` when they are not a whole number of finite `f32`s (a
/// damaged entry is embedded again).
fn decode_vector(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let vector: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    vector.iter().all(|x| x.is_finite()).then_some(vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_damaged_bytes_are_refused() {
        let v = vec![0.25f32, -1.5, 3.0];
        assert_eq!(decode_vector(&encode_vector(&v)), Some(v));
        assert_eq!(decode_vector(&[1, 2, 3]), None);
        assert_eq!(decode_vector(&[]), None);
        assert_eq!(decode_vector(&f32::NAN.to_le_bytes()), None);
        assert_ne!(text_key("a", "b"), text_key("ab", ""));
        assert_eq!(text_key("m", "hi").len(), 64);
    }
}
