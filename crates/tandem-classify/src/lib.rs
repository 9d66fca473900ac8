//! Intent classification for Tandem.
//!
//! - [`features`]: text to hashed word and character n-gram features.
//! - [`model`]: the local model (multinomial logistic regression over TF-IDF), trained at
//!   start-up from the flows' example utterances, with a confidence per answer.
//! - `llm` (feature `llm`, on by default): the LLM stage: a triage record from any OpenAI-compatible endpoint, with
//!   validation, repair, retries, a circuit breaker, a concurrency limit and a cache.
//! - `embed` (feature `llm`): sentence embeddings for the semantic stage — the `Embedder`
//!   trait and an OpenAI-compatible `/v1/embeddings` client, with checked, normalised vectors.
//! - `local_embed` (feature `semantic`): the in-process embedder, a sentence-transformers
//!   model run by candle from a local folder.
//! - `transcribe` (feature `llm`): voice notes to text through an OpenAI-compatible
//!   `/v1/audio/transcriptions` endpoint (whisper.cpp, faster-whisper servers, OpenAI).
//! - [`semantic`]: the semantic stage's head over sentence embeddings, fused with the
//!   local model's probabilities.
//! - [`eval`]: accuracy, macro-F1, out-of-scope precision and recall, and what the local
//!   stage answers alone at a confidence threshold, on labelled JSONL data.

#[cfg(feature = "llm")]
pub mod embed;
#[cfg(feature = "llm")]
mod endpoint;
pub mod eval;
pub mod features;
#[cfg(feature = "llm")]
pub mod llm;
#[cfg(feature = "semantic")]
pub mod local_embed;
pub mod model;
pub mod semantic;
#[cfg(feature = "llm")]
pub mod transcribe;

pub use model::{Example, Model, Prediction, TrainError, TrainOptions};

/// The confidence at which the local stage answers alone: on CLINC150 (full training data) it
/// answers 87 % of in-scope messages there (see docs/CLASSIFIER.md).
pub const DEFAULT_THRESHOLD: f32 = 0.8;
