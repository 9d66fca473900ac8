//! The LLM stage: asks an OpenAI-compatible chat/completions endpoint (OpenAI, Azure, vLLM,
//! Ollama, llama.cpp) for a triage record of a customer message, through async-openai.
//!
//! The prompt is a minijinja template (`prompts/classify.j2`) built from the flows' ids,
//! descriptions and examples and the recent transcript. The answer is requested as JSON
//! (`json_schema` structured output, or JSON mode for servers without it) and validated: an
//! intent that is not a flow becomes out of scope; malformed JSON gets one repair attempt.
//! A server that refuses `json_schema` (llama.cpp's server answers 500) is asked the same
//! request in JSON mode at once, and, when that works, in JSON mode from then on. Answers that
//! fail validation are counted by reason, with the first one of each kept as an example
//! ([`LlmClassifier::rejections`]).
//! Every call has a timeout; only temporary failures are retried, a bounded number of times
//! with jittered backoff: 429 and 5xx by async-openai's backoff (which alone sees the HTTP
//! status), timeouts and connection errors here; a 400 or 401 is answered at once. After
//! repeated failures a circuit breaker stops calling for a while; a semaphore bounds
//! concurrent calls. Answers are cached (least recently used, bounded) under a digest of
//! everything that shapes them: the model, the rendered prompt (the flows' intents, the
//! conversation's recent transcript, the template) and the normalised message — so an answer
//! is never reused for another conversation's context or after a flow reload changed the
//! intents. Prompt templates are compiled once, when set. Every failure comes back as an
//! [`LlmError`] so the caller degrades to the local answer or the fallback — the LLM never
//! blocks a reply.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs, ResponseFormat,
    ResponseFormatJsonSchema,
};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::endpoint::{CallError, client, retrying};

/// Counter: tokens the LLM endpoint reported using, by kind (`prompt`, `completion`).
pub const LLM_TOKENS: &str = "tandem_llm_tokens_total";
/// Counter: answers that failed validation, by reason (`not_json`, `missing_field`,
/// `wrong_type`, `unknown_value`, `out_of_range`, `empty`, `other`).
pub const LLM_REJECTED: &str = "tandem_llm_rejected_total";

/// Answers of one rejection reason: how many, and the first one as an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    /// The reason, one of [`LLM_REJECTED`]'s labels.
    pub reason: &'static str,
    /// How many answers failed for it.
    pub count: u64,
    /// What was wrong with the first one, in the validator's words.
    pub problem: String,
    /// The first answer, cut to 300 characters.
    pub example: String,
}

/// The reason label of a validation problem (`parse_triage`'s or serde's words).
fn rejection_reason(problem: &str) -> &'static str {
    if problem.starts_with("missing field") {
        "missing_field"
    } else if problem.starts_with("invalid type") {
        "wrong_type"
    } else if problem.starts_with("unknown variant") {
        "unknown_value"
    } else if problem.contains("is not between") {
        "out_of_range"
    } else if problem.contains("EOF while parsing") && problem.ends_with("column 0") {
        "empty"
    } else if problem.starts_with("expected")
        || problem.contains("EOF while parsing")
        || problem.starts_with("key must be")
        || problem.starts_with("trailing characters")
    {
        "not_json"
    } else {
        "other"
    }
}

/// Where and how to reach the LLM.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Base URL of the API, such as `https://api.openai.com/v1` or `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The API key (empty for servers that need none); never shown by `Debug`.
    pub api_key: SecretString,
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
    /// Most tokens an answer may have (`max_tokens`). A triage is some 60 tokens; without a
    /// bound, a small model in JSON mode may write until its context is full.
    pub max_tokens: u32,
}

impl LlmConfig {
    /// Settings with sensible defaults for `base_url` and `model`.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: SecretString::from(String::new()),
            timeout: Duration::from_secs(4),
            retries: 1,
            structured_output: true,
            concurrency: 8,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            cache_size: 1000,
            max_tokens: 256,
        }
    }
}

/// A flow the LLM may choose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntentInfo {
    /// The flow id.
    pub id: String,
    /// What it does.
    pub description: Option<String>,
    /// A few example messages.
    pub examples: Vec<String>,
}

/// A transcript line shown to the LLM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// customer, bot, human or system.
    pub role: String,
    /// The text.
    pub text: String,
}

/// What the LLM says about a message, validated (the domain's triage record).
pub use tandem_domain::Triage;

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

/// How a single completion failed: `refused` when the server answered an error status
/// (as opposed to no answer, a timeout or an unreadable one).
struct Failure {
    error: LlmError,
    refused: bool,
}

impl Failure {
    fn other(error: LlmError) -> Self {
        Self {
            error,
            refused: false,
        }
    }
}

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// The names of the prompt templates in the classifier's environment.
const CLASSIFY: &str = "classify";
const SUMMARY: &str = "summary";
const EXTRACT: &str = "extract";

/// A triage client; cheap to share behind an `Arc`.
pub struct LlmClassifier {
    client: Client<OpenAIConfig>,
    config: LlmConfig,
    /// The prompt templates, compiled once.
    prompts: minijinja::Environment<'static>,
    permits: tokio::sync::Semaphore,
    breaker: Mutex<Breaker>,
    cache: Mutex<lru::LruCache<[u8; 32], Triage>>,
    /// Set once the server refused `json_schema` and answered in JSON mode.
    json_mode: AtomicBool,
    /// Answers that failed validation, by reason.
    rejections: Mutex<BTreeMap<&'static str, Rejection>>,
}

impl std::fmt::Debug for LlmClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClassifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
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
    // Urgency and sentiment outside their words are refused here, by name.
    let mut triage: Triage = serde_json::from_str(body.trim()).map_err(|e| e.to_string())?;
    if !(0.0..=1.0).contains(&triage.confidence) {
        return Err(format!(
            "confidence {} is not between 0 and 1",
            triage.confidence
        ));
    }
    if triage.intent != "oos" && !known.iter().any(|i| i.id == triage.intent) {
        triage.intent = "oos".to_owned();
    }
    triage.language = triage.language.to_lowercase();
    Ok(triage)
}

/// True for an error the server answered that may be about the request's format (not the
/// key, the quota or the model, which JSON mode would not change).
fn may_be_the_format(error: &OpenAIError) -> bool {
    let OpenAIError::ApiError(api) = error else {
        return false;
    };
    let words = format!(
        "{} {} {}",
        api.message,
        api.r#type.as_deref().unwrap_or_default(),
        api.code.as_deref().unwrap_or_default()
    )
    .to_lowercase();
    ![
        "api_key",
        "api key",
        "auth",
        "permission",
        "quota",
        "model_not_found",
        "rate_limit",
    ]
    .iter()
    .any(|w| words.contains(w))
}

/// True when an error names the request's format (`response_format`, `json_schema`).
fn names_the_format(error: &LlmError) -> bool {
    let text = error.to_string().to_lowercase();
    text.contains("response_format") || text.contains("json_schema")
}

/// The digest the cache keys an answer by: everything the request says.
fn cache_key(model: &str, system: &str, message: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    for part in [model, system, &normalise(message)] {
        digest.update(part.len().to_le_bytes());
        digest.update(part.as_bytes());
    }
    digest.finalize().into()
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
        let mut prompts = minijinja::Environment::new();
        prompts
            .add_template_owned(CLASSIFY, prompt)
            .map_err(|e| LlmError::Prompt(e.to_string()))?;
        let client = client(&config.base_url, &config.api_key, config.retries);
        let cache_size = NonZeroUsize::new(config.cache_size).unwrap_or(NonZeroUsize::MIN);
        Ok(Self {
            client,
            permits: tokio::sync::Semaphore::new(config.concurrency.max(1)),
            config,
            prompts,
            breaker: Mutex::new(Breaker::default()),
            cache: Mutex::new(lru::LruCache::new(cache_size)),
            json_mode: AtomicBool::new(false),
            rejections: Mutex::new(BTreeMap::new()),
        })
    }

    /// True when requests go in JSON mode: asked for (`structured_output` off), or the server
    /// refused `json_schema`.
    pub fn uses_json_mode(&self) -> bool {
        !self.config.structured_output || self.json_mode.load(Ordering::Relaxed)
    }

    /// `format` for a JSON answer: the schema, unless the server is known to refuse it.
    fn json_format(&self, schema: ResponseFormatJsonSchema) -> ResponseFormat {
        if self.uses_json_mode() {
            ResponseFormat::JsonObject
        } else {
            ResponseFormat::JsonSchema {
                json_schema: schema,
            }
        }
    }

    /// Answers that failed validation so far, by reason, each with its first example.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.rejections
            .lock()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Counts an answer that failed validation.
    fn reject(&self, problem: &str, answer: &str) {
        let reason = rejection_reason(problem);
        ::metrics::counter!(LLM_REJECTED, "reason" => reason).increment(1);
        if let Ok(mut rejections) = self.rejections.lock() {
            rejections
                .entry(reason)
                .or_insert_with(|| Rejection {
                    reason,
                    count: 0,
                    problem: problem.chars().take(300).collect(),
                    example: answer.chars().take(300).collect(),
                })
                .count += 1;
        }
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

    /// Renders the compiled template `name` with `context`.
    fn render(&self, name: &str, context: minijinja::Value) -> Result<String, LlmError> {
        self.prompts
            .get_template(name)
            .and_then(|t| t.render(context))
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
        let system = self.render(CLASSIFY, minijinja::context! { intents, transcript })?;
        let key = cache_key(&self.config.model, &system, message);
        if let Ok(mut cache) = self.cache.lock()
            && let Some(hit) = cache.get(&key)
        {
            return Ok(hit.clone());
        }
        let _permit = self.admit().await?;
        let result = self.triage_uncached(&system, intents, message).await;
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
        if let (Ok(triage), Ok(mut cache)) = (&result, self.cache.lock())
            && self.config.cache_size > 0
        {
            cache.put(key, triage.clone());
        }
        result
    }

    async fn triage_uncached(
        &self,
        system: &str,
        intents: &[IntentInfo],
        message: &str,
    ) -> Result<Triage, LlmError> {
        let mut messages: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestSystemMessage::from(system).into(),
            ChatCompletionRequestUserMessage::from(message).into(),
        ];
        let answer = self.complete(&messages).await?;
        match parse_triage(&answer, intents) {
            Ok(triage) => Ok(triage),
            Err(problem) => {
                self.reject(&problem, &answer);
                // One repair attempt: show the model its answer and what is wrong with it.
                tracing::debug!(%problem, "LLM answer malformed; asking for a repair");
                messages.push(
                    ChatCompletionRequestUserMessage::from(
                        format!("Your answer was not valid ({problem}). Answer again with only the JSON object.").as_str(),
                    )
                    .into(),
                );
                let again = self.complete(&messages).await?;
                parse_triage(&again, intents).map_err(|problem| {
                    self.reject(&problem, &again);
                    LlmError::Malformed(problem)
                })
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
        if !self.summarizes() {
            return Err(LlmError::Prompt("no handoff summary prompt".into()));
        }
        let _permit = self.admit().await?;
        let system = self.render(SUMMARY, minijinja::context! { transcript, reason })?;
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
        if !self.extracts() {
            return Err(LlmError::Prompt("no slot extraction prompt".into()));
        }
        let _permit = self.admit().await?;
        let system = self.render(EXTRACT, minijinja::context! { question, expects })?;
        let messages: Vec<ChatCompletionRequestMessage> = vec![
            ChatCompletionRequestSystemMessage::from(system.as_str()).into(),
            ChatCompletionRequestUserMessage::from(answer).into(),
        ];
        let format = self.json_format(ResponseFormatJsonSchema {
            description: Some("a value read out of an answer".into()),
            name: "extraction".into(),
            schema: Some(json!({
                "type": "object",
                "properties": {"value": {"type": ["string", "null"]}},
                "required": ["value"],
                "additionalProperties": false
            })),
            strict: Some(true),
        });
        let raw = self.complete_with(&messages, Some(format)).await?;
        let parsed: serde_json::Value = serde_json::from_str(raw.trim()).map_err(|e| {
            self.reject(&e.to_string(), &raw);
            LlmError::Malformed(format!("not JSON: {e}"))
        })?;
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
        self.prompts
            .add_template_owned(EXTRACT, prompt)
            .map_err(|e| LlmError::Prompt(e.to_string()))?;
        Ok(self)
    }

    /// Forgets every cached answer (the flows were reloaded).
    pub fn clear_cache(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Returns true when a handoff summary prompt is set.
    pub fn summarizes(&self) -> bool {
        self.prompts.get_template(SUMMARY).is_ok()
    }

    /// Returns true when a slot extraction prompt is set.
    pub fn extracts(&self) -> bool {
        self.prompts.get_template(EXTRACT).is_ok()
    }

    /// Sets the handoff summary prompt template (minijinja, sees `transcript` and `reason`).
    ///
    /// # Errors
    /// The template's syntax error.
    pub fn with_summary_prompt(mut self, prompt: String) -> Result<Self, LlmError> {
        self.prompts
            .add_template_owned(SUMMARY, prompt)
            .map_err(|e| LlmError::Prompt(e.to_string()))?;
        Ok(self)
    }

    /// One completion with bounded retries of temporary failures, each within the timeout.
    async fn complete(
        &self,
        messages: &[ChatCompletionRequestMessage],
    ) -> Result<String, LlmError> {
        let format = self.json_format(ResponseFormatJsonSchema {
            description: Some("triage of a customer message".into()),
            name: "triage".into(),
            schema: Some(triage_schema()),
            strict: Some(true),
        });
        self.complete_with(messages, Some(format)).await
    }

    /// One completion in `format` (plain text when `None`). async-openai retries 429 and 5xx
    /// (see [`LlmClassifier::new`]); here a timeout or a failed connection is retried, up to
    /// `retries` times. Nothing else is retried.
    async fn complete_with(
        &self,
        messages: &[ChatCompletionRequestMessage],
        format: Option<ResponseFormat>,
    ) -> Result<String, LlmError> {
        let schema = matches!(format, Some(ResponseFormat::JsonSchema { .. }));
        match self.complete_once(messages, format).await {
            Ok(answer) => Ok(answer),
            // The server answered an error to a structured-output request: ask the same in
            // JSON mode, and keep to JSON mode if that works (llama.cpp's server refuses
            // `json_schema` with a 500). An unreachable server is not asked twice.
            Err(Failure {
                error,
                refused: true,
            }) if schema => {
                // The server said so in words (llama.cpp: "Input should be 'text' or
                // 'json_object'"): JSON mode from now on, whatever the retry gives.
                let said = names_the_format(&error);
                if said {
                    self.use_json_mode(&error);
                }
                match self
                    .complete_once(messages, Some(ResponseFormat::JsonObject))
                    .await
                {
                    Ok(answer) => {
                        self.use_json_mode(&error);
                        Ok(answer)
                    }
                    // The retry's own failure (a timeout) is the news when the refusal was
                    // plainly about the format; else the first error stands.
                    Err(again) => Err(if said { again.error } else { error }),
                }
            }
            Err(failure) => Err(failure.error),
        }
    }

    /// Switches to JSON mode for good, saying so once.
    fn use_json_mode(&self, refusal: &LlmError) {
        if !self.json_mode.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %refusal, "the LLM endpoint refused json_schema structured output; using JSON mode from now on");
        }
    }

    /// [`LlmClassifier::complete_with`] without the JSON-mode fallback.
    async fn complete_once(
        &self,
        messages: &[ChatCompletionRequestMessage],
        format: Option<ResponseFormat>,
    ) -> Result<String, Failure> {
        let mut args = CreateChatCompletionRequestArgs::default();
        // `max_tokens` rather than `max_completion_tokens`: every compatible server knows it.
        #[allow(deprecated)]
        args.model(self.config.model.clone())
            .messages(messages.to_vec())
            .temperature(0.0)
            .max_tokens(self.config.max_tokens);
        if let Some(format) = format {
            args.response_format(format);
        }
        let request = args
            .build()
            .map_err(|e| Failure::other(LlmError::Endpoint(e.to_string())))?;
        let call = retrying(self.config.timeout, self.config.retries, || async {
            self.client.chat().create(request.clone()).await
        });
        let response = match call.await {
            Ok(response) => response,
            Err(CallError::TimedOut) => {
                return Err(Failure::other(LlmError::Timeout(self.config.timeout)));
            }
            Err(CallError::Failed(OpenAIError::JSONDeserialize(e, _))) => {
                return Err(Failure::other(LlmError::Malformed(format!(
                    "not a chat completion: {e}"
                ))));
            }
            Err(CallError::Failed(e)) => {
                return Err(Failure {
                    refused: may_be_the_format(&e),
                    error: LlmError::Endpoint(e.to_string()),
                });
            }
        };
        if let Some(usage) = &response.usage {
            ::metrics::counter!(LLM_TOKENS, "kind" => "prompt")
                .increment(u64::from(usage.prompt_tokens));
            ::metrics::counter!(LLM_TOKENS, "kind" => "completion")
                .increment(u64::from(usage.completion_tokens));
        }
        response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| Failure::other(LlmError::Malformed("no message content".into())))
    }
}
