//! The flows in force and the outside world of a turn: the driver that runs
//! [`crate::turn::decide`] and performs the requests it makes (voice notes' transcriptions,
//! semantic decisions, LLM triage, slot extraction, handoff summaries, flows' backend calls),
//! feeding their answers back.
//!
//! The decision itself does no IO; this is the only place a turn waits on the network. The
//! lanes commit the decision in one atomic write together with the events it answers. If the
//! commit is refused (a person paused the conversation meanwhile), the lane re-reads the
//! record and decides again from there, so a reply decided before the pause is never queued.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tandem_classify::llm::LlmClassifier;
use tandem_domain::Conversation;
use tandem_flows::{Bot, CallOutcome, CallRequest};

use crate::metrics;
use crate::semantic::SemanticStage;
use crate::turn::{Answer, Decision, Input, Journal, LlmUse, Parts, Request, Settings, decide};
use crate::voice::Voice;

/// The flows in force; replaced as a whole by a reload.
#[derive(Debug, Clone)]
pub struct FlowsHandle {
    bot: Arc<RwLock<Arc<Bot>>>,
    /// Counts replacements, so users of the flows see a reload.
    generation: Arc<AtomicU64>,
}

impl FlowsHandle {
    /// Wraps loaded flows.
    pub fn new(bot: Bot) -> Self {
        Self::shared(Arc::new(bot))
    }

    /// Wraps flows another handle may hold too (tenants with identical flows share them).
    pub fn shared(bot: Arc<Bot>) -> Self {
        Self {
            bot: Arc::new(RwLock::new(bot)),
            generation: Arc::default(),
        }
    }

    /// Returns the flows in force now.
    pub fn current(&self) -> Arc<Bot> {
        Arc::clone(
            &self
                .bot
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts new flows in force; turns already running finish on the old ones.
    pub fn replace(&self, bot: Bot) {
        *self
            .bot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(bot);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// How many times the flows were replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The flows in force and the clients a turn's requests go out through.
#[derive(Debug, Clone)]
pub struct Responder {
    flows: FlowsHandle,
    http: reqwest::Client,
    llm: Option<Arc<LlmClassifier>>,
    semantic: Option<Arc<SemanticStage>>,
    voice: Option<Voice>,
    /// The flows' generation the LLM's answer cache was filled under; a reload empties it.
    cached_generation: Arc<AtomicU64>,
}

impl Responder {
    /// Builds a responder over `flows`; `call` steps go out through `http`.
    pub fn new(flows: FlowsHandle, http: reqwest::Client) -> Self {
        Self {
            cached_generation: Arc::new(AtomicU64::new(flows.generation())),
            flows,
            http,
            llm: None,
            semantic: None,
            voice: None,
        }
    }

    /// Asks `stage` about messages the local model is not sure of, before the LLM.
    pub fn with_semantic(mut self, stage: Arc<SemanticStage>) -> Self {
        self.semantic = Some(stage);
        self
    }

    /// The semantic stage, when on.
    pub fn semantic(&self) -> Option<&Arc<SemanticStage>> {
        self.semantic.as_ref()
    }

    /// With the semantic stage on, the local model's confidence at which it answers alone.
    pub fn semantic_lexical_threshold(&self) -> Option<f32> {
        self.semantic
            .as_ref()
            .map(|s| s.options().lexical_threshold)
    }

    /// Transcribes customers' voice notes through `voice`.
    pub fn with_voice(mut self, voice: Voice) -> Self {
        self.voice = Some(voice);
        self
    }

    /// True when customers' voice notes are transcribed.
    pub fn transcribes(&self) -> bool {
        self.voice.is_some()
    }

    /// Asks `llm` about messages neither the rules nor the local model are sure of.
    pub fn with_llm(mut self, llm: Arc<LlmClassifier>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// Returns the flows handle (for reloads and the sender's window template).
    pub fn flows(&self) -> &FlowsHandle {
        &self.flows
    }

    /// Which LLM requests this responder can answer.
    pub fn llm_use(&self) -> LlmUse {
        self.llm
            .as_ref()
            .map_or_else(LlmUse::default, |llm| LlmUse {
                triage: true,
                extract: llm.extracts(),
                summarize: llm.summarizes(),
            })
    }

    /// Performs one request of a turn.
    pub async fn perform(
        &self,
        conversation: &tandem_domain::ConversationId,
        request: &Request,
    ) -> Answer {
        match request {
            Request::Call { request, key } => Answer::Call(self.call(request, key).await),
            Request::Triage {
                intents,
                transcript,
                text,
            } => {
                let Some(llm) = &self.llm else {
                    return request.refused("no LLM is configured");
                };
                let generation = self.flows.generation();
                if self.cached_generation.swap(generation, Ordering::AcqRel) != generation {
                    // The flows were reloaded: no answer given under the old ones is reused.
                    llm.clear_cache();
                }
                let answer = counted(llm.triage(intents, transcript, text)).await;
                Answer::Triage(answer.map_err(|error| {
                    tracing::warn!(%conversation, %error, "LLM triage failed; falling back");
                    error.to_string()
                }))
            }
            Request::Semantic { text } => {
                let Some(stage) = &self.semantic else {
                    return request.refused("no semantic stage is configured");
                };
                let bot = self.flows.current();
                Answer::Semantic(stage.decide(&bot, text).await.inspect_err(|error| {
                    tracing::debug!(%conversation, %error, "semantic stage skipped");
                }))
            }
            Request::Transcribe {
                media_id,
                mime_type,
                language,
            } => {
                let Some(voice) = &self.voice else {
                    return request.refused("no transcriber is configured");
                };
                let words = voice
                    .transcribe(media_id, mime_type.as_deref(), language.as_deref())
                    .await;
                Answer::Transcript(words.inspect_err(|error| {
                    tracing::warn!(%conversation, %error, "voice note not transcribed; answered as an attachment");
                }))
            }
            Request::Extract(request) => {
                let Some(llm) = &self.llm else {
                    return Answer::Extract(None);
                };
                let answer = llm.extract(&request.question, &request.expects, &request.answer);
                match counted(answer).await {
                    Ok(value) => Answer::Extract(value),
                    Err(error) => {
                        tracing::warn!(%conversation, %error, "slot extraction failed; the answer is refused as usual");
                        Answer::Extract(None)
                    }
                }
            }
            Request::Summary { reason, transcript } => {
                let Some(llm) = &self.llm else {
                    return Answer::Summary(None);
                };
                match counted(llm.summarize(reason, transcript)).await {
                    Ok(summary) => Answer::Summary(Some(summary)),
                    Err(error) => {
                        tracing::warn!(%conversation, %error, "handoff summary failed; handing off without one");
                        Answer::Summary(None)
                    }
                }
            }
        }
    }

    /// Makes a flow's `call`, with `Idempotency-Key: key` unless the flow sets its own.
    async fn call(&self, request: &CallRequest, key: &str) -> CallOutcome {
        let method =
            reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
        let mut builder = self
            .http
            .request(method, &request.url)
            .timeout(request.timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if !request
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("idempotency-key"))
        {
            builder = builder.header("Idempotency-Key", key);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let started = std::time::Instant::now();
        let result = builder.send().await;
        let outcome = match result {
            Err(e) if e.is_timeout() => CallOutcome::Failed(format!(
                "no answer within {}",
                humantime::format_duration(request.timeout)
            )),
            Err(e) => CallOutcome::Failed(format!("request failed: {e}")),
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Err(e) => CallOutcome::Failed(format!("reading the answer failed: {e}")),
                    Ok(bytes) => {
                        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                        });
                        CallOutcome::Answered { status, body }
                    }
                }
            }
        };
        let label = match &outcome {
            CallOutcome::Answered { status, .. } if (200..300).contains(status) => "ok",
            CallOutcome::Answered { .. } => "error_status",
            CallOutcome::Failed(_) => "failed",
        };
        ::metrics::counter!(metrics::FLOW_CALLS, "outcome" => label).increment(1);
        ::metrics::histogram!(metrics::FLOW_CALL_SECONDS).record(started.elapsed().as_secs_f64());
        outcome
    }
}

/// Runs [`decide`] on `record` until it needs nothing more, performing each request through
/// `responder` (without one, every request is answered as failed). A replay needs the record
/// as it was before the turn: `again` gives it (the lane reads it once more from the store,
/// which costs nothing next to the request just made; the sandbox keeps a copy).
///
/// # Errors
/// What `again` fails with.
pub(crate) async fn drive<E, Again>(
    record: Conversation,
    input: &Input<'_>,
    parts: &Parts<'_>,
    settings: &Settings,
    responder: Option<&Responder>,
    mut again: impl FnMut() -> Again,
) -> Result<Decision, E>
where
    Again: std::future::Future<Output = Result<Conversation, E>>,
{
    let id = record.id.clone();
    let mut journal = Journal::default();
    let mut record = record;
    loop {
        match decide(record, input, parts, settings, &journal) {
            Ok(decision) => return Ok(decision),
            Err(pending) => {
                let answer = match responder {
                    Some(r) => r.perform(&id, &pending.request).await,
                    None => pending.request.refused("no responder"),
                };
                journal.answer(pending, answer);
                record = again().await?;
            }
        }
    }
}

/// Awaits one LLM call, recording its duration and outcome.
async fn counted<T>(
    call: impl std::future::Future<Output = Result<T, tandem_classify::llm::LlmError>>,
) -> Result<T, tandem_classify::llm::LlmError> {
    let started = std::time::Instant::now();
    let answer = call.await;
    ::metrics::histogram!(metrics::LLM_SECONDS).record(started.elapsed().as_secs_f64());
    let outcome = answer.as_ref().map_or_else(|e| e.label(), |_| "ok");
    ::metrics::counter!(metrics::LLM_CALLS, "outcome" => outcome).increment(1);
    answer
}

/// Builds the HTTP client `call` steps use.
///
/// # Errors
/// Fails when the TLS set-up fails.
pub fn call_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .user_agent(concat!("tandem/", env!("CARGO_PKG_VERSION")))
        .build()
}
