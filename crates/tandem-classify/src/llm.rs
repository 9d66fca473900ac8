//! The LLM stage: asks an OpenAI-compatible chat/completions endpoint (OpenAI, Azure, vLLM,
//! Ollama, llama.cpp) for a triage record of a customer message, through async-openai.
//!
//! The prompt is a minijinja template (`prompts/classify.j2`) built from the flows' ids,
//! descriptions and examples and the recent transcript. The answer is requested as JSON
//! (`json_schema` structured output, or JSON mode for servers without it) and validated: an
//! intent that is not a flow becomes out of scope; malformed JSON gets one repair attempt.
//! Every call has a timeout; temporary failures (429, 5xx, network, timeout) are retried a
//! bounded number of times with jittered backoff; after repeated failures a circuit breaker
//! stops calling for a while; a semaphore bounds concurrent calls; identical normalised
//! messages are answered from a cache. Every failure comes back as an [`LlmError`] so the
//! caller degrades to the local answer or the fallback — the LLM never blocks a reply.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs, ResponseFormat,
    ResponseFormatJsonSchema,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Counter: tokens the LLM endpoint reported using, by kind (`prompt`, `completion`).
pub const LLM_TOKENS: &str = "tandem_llm_tokens_total";

/// Where and how to reach the LLM.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL of the API, such as `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The API key (empty for servers that need none).
    pub api_key: String,
    /// Timeout of one call.
    pub timeout: Duration,
    /// Retries after a temporary failure.
    pub retries: u32,
    /// Ask for `json_schema` structured output (else JSON mode).
    pub structured_output: bool,
    /// Calls at once.
    pub concurrency: usize,
    /// Failures in a row that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open.
    pub breaker_cooldown: Duration,
    /// Answers kept in the cache.
    pub cache_size: usize,
}

impl LlmConfig {
    /// Settings with sensible defaults for `base_url` and `model`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: String::new(),
            timeout: Duration::from_secs(4),
            retries: 1,
            structured_output: true,
            concurrency: 8,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            cache_size: 1000,
        }
    }
}

/// A flow the LLM may choose.
#[derive(Debug, Clone, Serialize)]
pub struct IntentInfo {
    /// The flow id.
    pub id: String,
    /// What it does.
    pub description: Option<String>,
    /// A few example messages.
    pub examples: Vec<String>,
}

/// A transcript line shown to the LLM.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// customer, bot, human or system.
    pub role: String,
    /// The text.
    pub text: String,
}

/// What the LLM says about a message, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triage {
    /// A known flow id, or `oos`.
    pub intent: String,
    /// 0 to 1.
    pub confidence: f32,
    /// ISO 639-1 language code.
    pub language: String,
    /// low, normal or high.
    pub urgency: String,
    /// negative, neutral or positive.
    pub sentiment: String,
    /// The customer needs a person.
    pub needs_human: bool,
}

/// Why the LLM gave no usable answer; the caller falls back.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The endpoint answered an error (after the retries).
    #[error("the endpoint failed: {0}")]
    Endpoint(String),
    /// The answer was not a valid triage record, even after the repair attempt.
    #[error("unusable answer: {0}")]
    Malformed(String),
    /// Too many recent failures: not calling for now.
    #[error("circuit open after repeated failures")]
    CircuitOpen,
    /// The prompt template failed.
    #[error("prompt: {0}")]
    Prompt(String),
}

impl LlmError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Endpoint(_) => "endpoint",
            Self::Malformed(_) => "malformed",
            Self::CircuitOpen => "circuit_open",
            Self::Prompt(_) => "prompt",
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// A triage client; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct LlmClassifier {
    client: Client<OpenAIConfig>,
    config: LlmConfig,
    prompt: String,
    summary_prompt: Option<String>,
    extract_prompt: Option<String>,
    permits: tokio::sync::Semaphore,
    breaker: Mutex<Breaker>,
    cache: Mutex<(HashMap<String, Triage>, VecDeque<String>)>,
}

/// The answer's JSON Schema, for endpoints with structured output.
fn triage_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["intent", "confidence", "language", "urgency", "sentiment", "needs_human"],
        "properties": {
            "intent": {"type": "string"},
            "confidence": {"type": "number"},
            "language": {"type": "string"},
            "urgency": {"type": "string", "enum": ["low", "normal", "high"]},
            "sentiment": {"type": "string", "enum": ["negative", "neutral", "positive"]},
            "needs_human": {"type": "boolean"}
        }
    })
}

/// Reads an answer as a triage record: JSON (possibly inside a ```json fence), every field
/// present and in range; an intent that is not among `known` becomes `oos`.
///
/// # Errors
/// Says what is wrong with the answer.
pub fn parse_triage(answer: &str, known: &[IntentInfo]) -> Result<Triage, String> {
    let trimmed = answer.trim();
    let body = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|s| s.strip_suffix("```"))
        .unwrap_or(trimmed);
    let mut triage: Triage = serde_json::from_str(body.trim()).map_err(|e| e.to_string())?;
    if !(0.0..=1.0).contains(&triage.confidence) {
        return Err(format!(
            "confidence {} is not between 0 and 1",
            triage.confidence
        ));
    }
    if !["low", "normal", "high"].contains(&triage.urgency.as_str()) {
        return Err(format!(
            "urgency {:?} is not low, normal or high",
            triage.urgency
        ));
    }
    if !["negative", "neutral", "positive"].contains(&triage.sentiment.as_str()) {
        return Err(format!(
            "sentiment {:?} is not negative, neutral or positive",
            triage.sentiment
        ));
    }
    if triage.intent != "oos" && !known.iter().any(|i| i.id == triage.intent) {
        triage.intent = "oos".to_owned();
    }
    triage.language = triage.language.to_lowercase();
    Ok(triage)
}

/// Compiles a prompt template once, so a syntax error is found at start-up.
fn check_prompt(prompt: &str) -> Result<(), LlmError> {
    minijinja::Environment::new()
        .template_from_str(prompt)
        .map(|_| ())
        .map_err(|e| LlmError::Prompt(e.to_string()))
}

fn normalise(text: &str) -> String {
    text.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl LlmClassifier {
    /// Builds a client; `prompt` is the classifier prompt template (minijinja).
    ///
    /// # Errors
    /// The template's syntax error.
    pub fn new(config: LlmConfig, prompt: String) -> Result<Self, LlmError> {
        check_prompt(&prompt)?;
        let openai = OpenAIConfig::new()
            .with_api_base(config.base_url.trim_end_matches('/'))
            .with_api_key(config.api_key.clone());
        // Retries are ours (bounded, inside the timeout), not async-openai's.
        let no_retries = backoff::ExponentialBackoff {
            max_elapsed_time: Some(Duration::ZERO),
            ..backoff::ExponentialBackoff::default()
        };
        let client = Client::with_config(openai).with_backoff(no_retries);
        Ok(Self {
            client,
            permits: tokio::sync::Semaphore::new(config.concurrency.max(1)),
            config,
            prompt,
            summary_prompt: None,
            extract_prompt: None,
            breaker: Mutex::new(Breaker::default()),
            cache: Mutex::new((HashMap::new(), VecDeque::new())),
        })
    }

    /// Refuses while the circuit breaker is open, then waits for a call slot.
    async fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, LlmError> {
        {
            let breaker = self.breaker.lock().map_err(|_| LlmError::CircuitOpen)?;
            if breaker.open_until.is_some_and(|t| t > Instant::now()) {
                return Err(LlmError::CircuitOpen);
            }
        }
        self.permits
            .acquire()
            .await
            .map_err(|_| LlmError::CircuitOpen)
    }

    fn render(&self, intents: &[IntentInfo], transcript: &[Line]) -> Result<String, LlmError> {
        let env = minijinja::Environment::new();
        env.render_str(&self.prompt, minijinja::context! { intents, transcript })
            .map_err(|e| LlmError::Prompt(e.to_string()))
    }

    /// Classifies `message` among `intents`, seeing the recent `transcript`.
    ///
    /// # Errors
    /// An [`LlmError`]; the caller falls back to the local answer or the fallback flow.
    pub async fn triage(
        &self,
        intents: &[IntentInfo],
        transcript: &[Line],
        message: &str,
    ) -> Result<Triage, LlmError> {
        let key = normalise(message);
        if let Ok(cache) = self.cache.lock()
            && let Some(hit) = cache.0.get(&key)
        {
            return Ok(hit.clone());
        }
        let _permit = self.admit().await?;
        let result = self.triage_uncached(intents, transcript, message).await;
        if let Ok(mut breaker) = self.breaker.lock() {
            match &result {
                Ok(_) | Err(LlmError::Malformed(_)) => *breaker = Breaker::default(),
                Err(_) => {
                    breaker.failures += 1;
                    if breaker.failures >= self.config.breaker_failures {
                        breaker.open_until = Some(Instant::now() + self.config.breaker_cooldown);
                        breaker.failures = 0;
                    }
                }
            }
        }
        if let (Ok(triage), Ok(mut cache)) = (&result, self.cache.lock()) {
            if cache.0.insert(key.clone(), triage.clone()).is_none() {
                cache.1.push_back(key);
            }
            while cache.1.len() > self.config.cache_size {
                if let Some(old) = cache.1.pop_front() {
                    cache.0.remove(&old);
                }
            }
        }
        result
    }

    async fn triage_uncached(
        &self,
        intents: &[IntentInfo],
        transcript: &[Line],
        message: &str,
    ) -> Result<Triage, LlmError> {
        let system = self.render(intents, transcript)?;
        let mut messages: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestSystemMessage::from(system.as_str()).into(),
            ChatCompletionRequestUserMessage::from(message).into(),
        ];
        let answer = self.complete(&messages).await?;
        match parse_triage(&answer, intents) {
            Ok(triage) => Ok(triage),
            Err(problem) => {
                // One repair attempt: show the model its answer and what is wrong with it.
                tracing::debug!(%problem, "LLM answer malformed; asking for a repair");
                messages.push(
                    ChatCompletionRequestUserMessage::from(
                        format!("Your answer was not valid ({problem}). Answer again with only the JSON object.").as_str(),
                    )
                    .into(),
                );
                let again = self.complete(&messages).await?;
                parse_triage(&again, intents).map_err(LlmError::Malformed)
            }
        }
    }

    /// Writes the two or three lines a person taking over reads first, from the handoff
    /// summary prompt (see [`LlmClassifier::with_summary_prompt`]) and the transcript.
    ///
    /// # Errors
    /// An [`LlmError`], or [`LlmError::Prompt`] when no summary prompt is set; the handoff
    /// goes on without a summary.
    pub async fn summarize(&self, reason: &str, transcript: &[Line]) -> Result<String, LlmError> {
        let Some(prompt) = &self.summary_prompt else {
            return Err(LlmError::Prompt("no handoff summary prompt".into()));
        };
        let _permit = self.admit().await?;
        let system = minijinja::Environment::new()
            .render_str(prompt, minijinja::context! { transcript, reason })
            .map_err(|e| LlmError::Prompt(e.to_string()))?;
        let messages: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestSystemMessage::from(system.as_str()).into(),
            ChatCompletionRequestUserMessage::from("Write the summary now.").into(),
        ];
        let summary = self.complete_with(&messages, None).await?;
        let summary = summary.trim();
        if summary.is_empty() {
            return Err(LlmError::Malformed("an empty summary".into()));
        }
        // Two or three lines; anything longer is cut, never trusted to fit a CRM field.
        Ok(summary
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
            .chars()
            .take(600)
            .collect())
    }

    /// Reads a slot value out of a customer's answer the flow's validator refused, with the
    /// extraction prompt (see [`LlmClassifier::with_extract_prompt`]). `Ok(None)`: the answer
    /// holds no such value.
    ///
    /// # Errors
    /// An [`LlmError`], or [`LlmError::Prompt`] when no extraction prompt is set; the flow
    /// then refuses the answer as usual.
    pub async fn extract(
        &self,
        question: &str,
        expects: &str,
        answer: &str,
    ) -> Result<Option<String>, LlmError> {
        let Some(prompt) = &self.extract_prompt else {
            return Err(LlmError::Prompt("no slot extraction prompt".into()));
        };
        let _permit = self.admit().await?;
        let system = minijinja::Environment::new()
            .render_str(prompt, minijinja::context! { question, expects })
            .map_err(|e| LlmError::Prompt(e.to_string()))?;
        let messages: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestSystemMessage::from(system.as_str()).into(),
            ChatCompletionRequestUserMessage::from(answer).into(),
        ];
        let format = if self.config.structured_output {
            ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("a value read out of an answer".into()),
                    name: "extraction".into(),
                    schema: Some(json!({
                        "type": "object",
                        "properties": {"value": {"type": ["string", "null"]}},
                        "required": ["value"],
                        "additionalProperties": false
                    })),
                    strict: Some(true),
                },
            }
        } else {
            ResponseFormat::JsonObject
        };
        let raw = self.complete_with(&messages, Some(format)).await?;
        let parsed: serde_json::Value = serde_json::from_str(raw.trim())
            .map_err(|e| LlmError::Malformed(format!("not JSON: {e}")))?;
        match &parsed["value"] {
            serde_json::Value::Null => Ok(None),
            serde_json::Value::String(v) if v.trim().is_empty() => Ok(None),
            serde_json::Value::String(v) => Ok(Some(v.trim().chars().take(500).collect())),
            serde_json::Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(LlmError::Malformed(format!("`value` is {other}"))),
        }
    }

    /// Sets the slot extraction prompt template (minijinja, sees `question` and `expects`).
    ///
    /// # Errors
    /// The template's syntax error.
    pub fn with_extract_prompt(mut self, prompt: String) -> Result<Self, LlmError> {
        check_prompt(&prompt)?;
        self.extract_prompt = Some(prompt);
        Ok(self)
    }

    /// Returns true when a handoff summary prompt is set.
    pub fn summarizes(&self) -> bool {
        self.summary_prompt.is_some()
    }

    /// Returns true when a slot extraction prompt is set.
    pub fn extracts(&self) -> bool {
        self.extract_prompt.is_some()
    }

    /// Sets the handoff summary prompt template (minijinja, sees `transcript` and `reason`).
    ///
    /// # Errors
    /// The template's syntax error.
    pub fn with_summary_prompt(mut self, prompt: String) -> Result<Self, LlmError> {
        check_prompt(&prompt)?;
        self.summary_prompt = Some(prompt);
        Ok(self)
    }

    /// One completion with bounded retries of temporary failures, each within the timeout.
    async fn complete(
        &self,
        messages: &[ChatCompletionRequestMessage],
    ) -> Result<String, LlmError> {
        let format = if self.config.structured_output {
            ResponseFormat::JsonSchema {
                json_schema: ResponseFormatJsonSchema {
                    description: Some("triage of a customer message".into()),
                    name: "triage".into(),
                    schema: Some(triage_schema()),
                    strict: Some(true),
                },
            }
        } else {
            ResponseFormat::JsonObject
        };
        self.complete_with(messages, Some(format)).await
    }

    /// One completion in `format` (plain text when `None`), with bounded retries.
    async fn complete_with(
        &self,
        messages: &[ChatCompletionRequestMessage],
        format: Option<ResponseFormat>,
    ) -> Result<String, LlmError> {
        let mut args = CreateChatCompletionRequestArgs::default();
        args.model(self.config.model.clone())
            .messages(messages.to_vec())
            .temperature(0.0);
        if let Some(format) = format {
            args.response_format(format);
        }
        let request = args
            .build()
            .map_err(|e| LlmError::Endpoint(e.to_string()))?;
        let mut attempt = 0;
        loop {
            let call = tokio::time::timeout(
                self.config.timeout,
                self.client.chat().create(request.clone()),
            )
            .await;
            let error = match call {
                Ok(Ok(response)) => {
                    if let Some(usage) = &response.usage {
                        ::metrics::counter!(LLM_TOKENS, "kind" => "prompt")
                            .increment(u64::from(usage.prompt_tokens));
                        ::metrics::counter!(LLM_TOKENS, "kind" => "completion")
                            .increment(u64::from(usage.completion_tokens));
                    }
                    return response
                        .choices
                        .into_iter()
                        .next()
                        .and_then(|c| c.message.content)
                        .ok_or_else(|| LlmError::Malformed("no message content".into()));
                }
                Ok(Err(OpenAIError::JSONDeserialize(e, _))) => {
                    return Err(LlmError::Malformed(format!("not a chat completion: {e}")));
                }
                Ok(Err(e)) => LlmError::Endpoint(e.to_string()),
                Err(_) => LlmError::Timeout(self.config.timeout),
            };
            if attempt >= self.config.retries {
                return Err(error);
            }
            attempt += 1;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let jitter = Duration::from_millis(u64::from(nanos % 100));
            tokio::time::sleep(Duration::from_millis(100) * attempt + jitter).await;
        }
    }
}
