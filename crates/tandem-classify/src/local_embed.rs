//! The in-process embedder (feature `semantic`): a sentence-transformers BERT model loaded
//! from a local folder and run on the CPU by candle. Nothing is fetched at run time.
//!
//! The folder holds what `sentence-transformers` saves: `config.json` (a BERT configuration),
//! `model.safetensors`, `tokenizer.json`, and optionally `1_Pooling/config.json` (mean, CLS
//! or max pooling; mean when absent). Vectors come back L2-normalised, as the
//! [`Embedder`] contract says. Texts are embedded in batches on a blocking thread, so the
//! async runtime never waits on the model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use sha2::Digest;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::embed::{EmbedError, Embedder};

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean of the tokens' vectors (most sentence-transformers models).
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
    /// The largest value of each dimension over the tokens.
    Max,
}

/// `1_Pooling/config.json`, the fields that choose the pooling.
#[derive(Debug, Default, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

/// Why a model folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    /// The file that failed.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

fn load_error(path: &Path, message: impl std::fmt::Display) -> LoadError {
    LoadError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Settings of the in-process embedder besides its folder.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Put before every text (multilingual-e5 models expect `query: `).
    pub prefix: String,
    /// Longest input in tokens; longer texts are cut.
    pub max_tokens: usize,
    /// Texts per forward pass.
    pub batch: usize,
    /// Longest wait for one call.
    pub timeout: Duration,
    /// Longest wait for a free core before a call gives up as [`EmbedError::Busy`]: under a
    /// burst beyond what the CPU can embed, messages skip the stage at once instead of
    /// queueing (and holding their conversations) up to the timeout.
    pub queue: Duration,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            max_tokens: 128,
            batch: 32,
            timeout: Duration::from_secs(2),
            queue: Duration::from_millis(20),
        }
    }
}

/// The model and its tokenizer, shared by the blocking threads that run it.
struct Loaded {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
}

/// A sentence-transformers model run in this process.
pub struct LocalEmbedder {
    loaded: Arc<Loaded>,
    name: String,
    options: LocalOptions,
    /// One permit per core: a call waits for a free core within its timeout, so a burst
    /// beyond what the CPU can embed times out (the message goes on to the next stage)
    /// instead of piling up work that finishes after nobody waits for it.
    cores: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model", &self.name)
            .field("pooling", &self.loaded.pooling)
            .finish_non_exhaustive()
    }
}

impl LocalEmbedder {
    /// Loads the model in `dir`.
    ///
    /// # Errors
    /// A [`LoadError`] naming the missing or unreadable file.
    pub fn load(dir: &Path, options: LocalOptions) -> Result<Self, LoadError> {
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| load_error(&config_path, e))?;
        let config: Config = serde_json::from_str(&text)
            .map_err(|e| load_error(&config_path, format!("not a BERT configuration: {e}")))?;
        let pooling_path = dir.join("1_Pooling").join("config.json");
        let pooling = match std::fs::read_to_string(&pooling_path) {
            Err(_) => Pooling::Mean,
            Ok(text) => {
                let p: PoolingConfig =
                    serde_json::from_str(&text).map_err(|e| load_error(&pooling_path, e))?;
                if p.pooling_mode_cls_token {
                    Pooling::Cls
                } else if p.pooling_mode_max_tokens {
                    Pooling::Max
                } else {
                    Pooling::Mean
                }
            }
        };
        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| load_error(&tokenizer_path, e))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: options.max_tokens.min(config.max_position_embeddings),
                ..TruncationParams::default()
            }))
            .map_err(|e| load_error(&tokenizer_path, e))?;
        let weights = dir.join("model.safetensors");
        // Read whole rather than memory-mapped: mapping a file is `unsafe` (another process
        // could change it under us) and this workspace forbids unsafe code.
        let bytes = std::fs::read(&weights).map_err(|e| load_error(&weights, e))?;
        // The model's identity for caches: its folder's name and a digest of everything that
        // shapes a vector (another model in a folder of the same name is another model).
        let mut digest = sha2::Sha256::new();
        for part in [text.as_bytes(), bytes.as_slice(), options.prefix.as_bytes()] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part);
        }
        digest.update(std::fs::read(&tokenizer_path).map_err(|e| load_error(&tokenizer_path, e))?);
        let digest = digest.finalize();
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device)
            .map_err(|e| load_error(&weights, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| load_error(&weights, e))?;
        let folder = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let name = format!(
            "{folder}@{}",
            digest
                .iter()
                .take(6)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Ok(Self {
            loaded: Arc::new(Loaded {
                model,
                tokenizer,
                pooling,
            }),
            name,
            options,
            cores: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
        })
    }

    /// The model's name for logs and caches: `<folder>@<digest of its files and prefix>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pooling the model's configuration asks for.
    pub fn pooling(&self) -> Pooling {
        self.loaded.pooling
    }

    /// Embeds `texts` on the calling thread (blocking), in batches.
    ///
    /// # Errors
    /// [`EmbedError::Malformed`] when the model fails on the input.
    pub fn embed_blocking(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.options.batch.max(1)) {
            let inputs: Vec<String> = chunk
                .iter()
                .map(|t| format!("{}{t}", self.options.prefix))
                .collect();
            out.extend(
                self.loaded
                    .forward(inputs)
                    .map_err(|e| EmbedError::Malformed(e.to_string()))?,
            );
        }
        Ok(out)
    }
}

impl Loaded {
    /// One forward pass over `texts`: pooled, normalised vectors.
    fn forward(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| format!("tokenizer: {e}"))?;
        let rows = encodings.len();
        let width = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for e in &encodings {
            ids.extend(e.get_ids().iter().copied());
            mask.extend(e.get_attention_mask().iter().copied());
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let device = &self.model.device;
            let ids = Tensor::from_vec(ids, (rows, width), device)?;
            let mask = Tensor::from_vec(mask, (rows, width), device)?;
            let types = ids.zeros_like()?;
            let tokens = self.model.forward(&ids, &types, Some(&mask))?;
            let pooled = match self.pooling {
                Pooling::Cls => tokens.narrow(1, 0, 1)?.squeeze(1)?,
                Pooling::Mean => {
                    let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                    let sum = tokens.broadcast_mul(&weights)?.sum(1)?;
                    let count = weights.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                    sum.broadcast_div(&count)?
                }
                Pooling::Max => {
                    let weights = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                    // Padding positions get a large negative value so they never win.
                    let shift = ((weights.ones_like()? - &weights)? * -1e9f64)?;
                    tokens.broadcast_add(&shift)?.max(1)?
                }
            };
            let norm = pooled
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12f32, f32::MAX)?;
            pooled.broadcast_div(&norm)?.to_vec2::<f32>()
        };
        run().map_err(|e| format!("model: {e}"))
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn model(&self) -> &str {
        &self.name
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run(
            texts,
            self.options.queue.min(self.options.timeout),
            self.options.timeout,
        )
        .await
    }

    async fn embed_examples(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Examples wait their turn for a core; a batch has a minute.
        self.run(texts, Duration::from_secs(60), Duration::from_secs(60))
            .await
    }
}

impl LocalEmbedder {
    /// Embeds `texts` on a blocking thread once a core is free (waiting at most `queue`),
    /// within `timeout` overall.
    async fn run(
        &self,
        texts: &[String],
        queue: Duration,
        timeout: Duration,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let this = Self {
            loaded: Arc::clone(&self.loaded),
            name: String::new(),
            options: self.options.clone(),
            cores: Arc::clone(&self.cores),
        };
        let texts = texts.to_vec();
        let run = async move {
            let permit = tokio::time::timeout(queue, Arc::clone(&this.cores).acquire_owned())
                .await
                .map_err(|_| EmbedError::Busy(queue))?
                .map_err(|_| EmbedError::Malformed("the embedder is closed".into()))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                this.embed_blocking(&texts)
            })
            .await
            .map_err(|e| EmbedError::Malformed(format!("the model stopped: {e}")))?
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or(Err(EmbedError::Timeout(timeout)))
    }
}
