//! Voice notes to text: an OpenAI-compatible `/v1/audio/transcriptions` client (whisper.cpp's
//! server, faster-whisper servers such as speaches, vLLM, OpenAI), through async-openai.
//!
//! The audio goes up as a multipart form with a file name whose extension names its format
//! (servers pick the decoder by it); the answer is read leniently (only `text` matters). Like
//! the LLM stage, a call has a timeout, 429 and 5xx are retried by async-openai's backoff and
//! timeouts and refused connections here, a bounded number of times. An answer with no words
//! is a failure: the caller treats the voice note as an attachment, as without a transcriber.

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::InputSource;
use async_openai::types::audio::{AudioInput, AudioResponseFormat, CreateTranscriptionRequest};
use secrecy::SecretString;
use serde::Deserialize;

use crate::endpoint::{CallError, client, retrying};

/// Longest transcript kept, in characters (a WhatsApp text holds 4,096).
pub const MAX_CHARS: usize = 4096;

/// Why a voice note has no text; the caller answers it as an attachment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranscribeError {
    /// No answer within the timeout.
    #[error("no transcription within {0:?}")]
    Timeout(Duration),
    /// The endpoint answered an error (after the retries) or could not be reached.
    #[error("the transcription endpoint failed: {0}")]
    Endpoint(String),
    /// The answer is not a transcription.
    #[error("unusable transcription: {0}")]
    Malformed(String),
    /// The transcription holds no words.
    #[error("nothing was heard in the audio")]
    Silent,
}

impl TranscribeError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Endpoint(_) => "endpoint",
            Self::Malformed(_) => "malformed",
            Self::Silent => "silent",
        }
    }
}

/// Where and how to reach a transcription endpoint.
#[derive(Debug, Clone)]
pub struct TranscribeConfig {
    /// Base URL of the API, such as `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// The model name (`whisper-1` at OpenAI; servers running one model ignore it).
    pub model: String,
    /// The API key (empty for servers that need none); never shown by `Debug`.
    pub api_key: SecretString,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Retries after a temporary failure.
    pub retries: u32,
    /// The spoken language as an ISO-639-1 code, when every customer speaks one (`None`:
    /// the server detects it).
    pub language: Option<String>,
}

impl TranscribeConfig {
    /// Settings with defaults for `base_url` and `model`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: SecretString::from(String::new()),
            timeout: Duration::from_secs(20),
            retries: 1,
            language: None,
        }
    }
}

/// The part of a transcription answer that matters.
#[derive(Debug, Deserialize)]
struct Answer {
    text: String,
}

/// An OpenAI-compatible `/v1/audio/transcriptions` client.
pub struct Transcriber {
    client: Client<OpenAIConfig>,
    config: TranscribeConfig,
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

impl Transcriber {
    /// Builds a client.
    pub fn new(config: TranscribeConfig) -> Self {
        let client = client(&config.base_url, &config.api_key, config.retries);
        Self { client, config }
    }

    /// The model, for logs.
    pub fn model(&self) -> &str {
        &self.config.model
    }

    /// The text spoken in `audio` (of MIME type `mime_type`), trimmed and cut to
    /// [`MAX_CHARS`]. `language` (ISO-639-1), when given, wins over the configured one.
    ///
    /// # Errors
    /// A [`TranscribeError`]: the caller treats the audio as an attachment.
    pub async fn transcribe(
        &self,
        audio: Vec<u8>,
        mime_type: Option<&str>,
        language: Option<&str>,
    ) -> Result<String, TranscribeError> {
        let request = CreateTranscriptionRequest {
            file: AudioInput {
                source: InputSource::VecU8 {
                    filename: file_name(mime_type).to_owned(),
                    vec: audio,
                },
            },
            model: self.config.model.clone(),
            language: language
                .map(str::to_owned)
                .or_else(|| self.config.language.clone()),
            response_format: Some(AudioResponseFormat::Json),
            temperature: Some(0.0),
            ..CreateTranscriptionRequest::default()
        };
        let call = retrying(self.config.timeout, self.config.retries, || async {
            self.client
                .audio()
                .transcription()
                .create_byot::<_, Answer>(request.clone())
                .await
        });
        let answer = match call.await {
            Ok(answer) => answer,
            Err(CallError::TimedOut) => return Err(TranscribeError::Timeout(self.config.timeout)),
            Err(CallError::Failed(OpenAIError::JSONDeserialize(e, _))) => {
                return Err(TranscribeError::Malformed(format!(
                    "not a transcription answer: {e}"
                )));
            }
            Err(CallError::Failed(e)) => return Err(TranscribeError::Endpoint(e.to_string())),
        };
        let text = answer.text.trim();
        if !text.chars().any(char::is_alphanumeric) {
            return Err(TranscribeError::Silent);
        }
        Ok(text.chars().take(MAX_CHARS).collect())
    }
}

/// The file name the audio is sent under: its extension tells the server the format.
/// WhatsApp voice notes are `audio/ogg; codecs=opus`; other audio may be AAC, MP4, MPEG or AMR.
pub fn file_name(mime_type: Option<&str>) -> &'static str {
    let essence = mime_type
        .and_then(|m| m.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("audio/mpeg" | "audio/mp3") => "audio.mp3",
        Some("audio/mp4" | "audio/m4a" | "audio/x-m4a") => "audio.m4a",
        Some("audio/aac") => "audio.aac",
        Some("audio/amr") => "audio.amr",
        Some("audio/wav" | "audio/x-wav" | "audio/wave") => "audio.wav",
        Some("audio/webm") => "audio.webm",
        Some("audio/flac") => "audio.flac",
        // Voice notes, and the format WhatsApp uses when the type is missing.
        _ => "audio.ogg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_follows_the_mime_type() {
        assert_eq!(file_name(Some("audio/ogg; codecs=opus")), "audio.ogg");
        assert_eq!(file_name(Some("Audio/MPEG")), "audio.mp3");
        assert_eq!(file_name(Some("audio/mp4")), "audio.m4a");
        assert_eq!(file_name(None), "audio.ogg");
    }
}
