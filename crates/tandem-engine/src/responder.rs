//! The bot's side of a lane step: run the flows for a customer message, perform the `call`
//! steps they ask for, and queue the replies in the conversation's outbox.
//!
//! Everything the turn decides lands in the record handed in, which the lane then commits in
//! one atomic write together with the event it answers. If the commit is refused (a person
//! paused the conversation meanwhile), the lane re-reads the record and runs the turn again
//! from there, so a reply computed before the pause is never queued.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tandem_classify::llm::{IntentInfo, Line, LlmClassifier, Triage};
use tandem_domain::{
    Conversation, InboundMessage, Role, SendAction, SendOrigin, StatusUpdate, Timestamp,
    TranscriptEntry,
};
use tandem_flows::{Bot, CallOutcome, CallRequest, Effect, Intent, TurnContext};

use crate::metrics;

/// Most `call` steps one turn may run.
const CALLS_PER_TURN: usize = 8;

/// The flows in force; replaced as a whole by a reload.
#[derive(Debug, Clone)]
pub struct FlowsHandle(Arc<RwLock<Arc<Bot>>>);

impl FlowsHandle {
    /// Wraps loaded flows.
    pub fn new(bot: Bot) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(bot))))
    }

    /// Returns the flows in force now.
    pub fn current(&self) -> Arc<Bot> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts new flows in force; turns already running finish on the old ones.
    pub fn replace(&self, bot: Bot) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(bot);
    }
}

/// Runs the flows for customer messages.
#[derive(Debug, Clone)]
pub struct Responder {
    flows: FlowsHandle,
    http: reqwest::Client,
    llm: Option<Arc<LlmClassifier>>,
}

/// What a turn did, for logs and metrics.
#[derive(Debug, Clone, Default)]
pub struct TurnSummary {
    /// Messages queued.
    pub queued: usize,
    /// The decisions, in order.
    pub decisions: Vec<String>,
    /// Set when the turn handed the conversation to a person.
    pub handoff: Option<String>,
    /// The intent the message was classified as, when any stage was sure.
    pub intent: Option<String>,
}

impl Responder {
    /// Builds a responder over `flows`; `call` steps go out through `http`.
    pub fn new(flows: FlowsHandle, http: reqwest::Client) -> Self {
        Self {
            flows,
            http,
            llm: None,
        }
    }

    /// Asks `llm` about messages neither the rules nor the local model are sure of.
    pub fn with_llm(mut self, llm: Arc<LlmClassifier>) -> Self {
        self.llm = Some(llm);
        self
    }

    /// The LLM stage: a triage of a message no earlier stage was sure of, outside a question.
    /// Keeps the detected language. A failure is logged, counted and noted in `decisions`;
    /// the caller falls back.
    async fn ask_llm(
        &self,
        bot: &Bot,
        c: &mut Conversation,
        message: &InboundMessage,
        text: &str,
        decisions: &mut Vec<String>,
    ) -> Option<Triage> {
        let llm = self.llm.as_ref()?;
        let intents: Vec<IntentInfo> = bot
            .flows
            .iter()
            .map(|f| IntentInfo {
                id: f.id.clone(),
                description: f.description.clone(),
                examples: f.examples.iter().take(3).cloned().collect(),
            })
            .collect();
        // The last ten lines before this message.
        let transcript = recent_lines(c, 10, Some(&message.id));
        match counted(llm.triage(&intents, &transcript, text)).await {
            Ok(triage) => {
                decisions.push(format!(
                    "llm: {} ({:.2}), language {}, urgency {}, sentiment {}, needs_human {}",
                    triage.intent,
                    triage.confidence,
                    triage.language,
                    triage.urgency,
                    triage.sentiment,
                    triage.needs_human
                ));
                c.triage = Some(tandem_domain::TriageNote {
                    intent: triage.intent.clone(),
                    confidence: triage.confidence,
                    language: triage.language.clone(),
                    urgency: triage.urgency.clone(),
                    sentiment: triage.sentiment.clone(),
                    needs_human: triage.needs_human,
                });
                // The detected language picks text variants, when the bot writes in it.
                if bot.settings.languages.contains(&triage.language) {
                    c.language = Some(triage.language.clone());
                }
                Some(triage)
            }
            Err(error) => {
                tracing::warn!(conversation = %c.id, %error, "LLM triage failed; falling back");
                decisions.push(format!("llm failed ({error}): fallback"));
                None
            }
        }
    }

    /// Returns the flows handle (for reloads and the sender's window template).
    pub fn flows(&self) -> &FlowsHandle {
        &self.flows
    }

    /// Answers a customer message in a conversation the bot is in charge of: runs the
    /// flows, performs their calls, and queues the replies (after a mark-as-read with the
    /// typing indicator). Adds system lines for handoffs, opt-outs and flow errors.
    pub async fn respond(
        &self,
        c: &mut Conversation,
        message: &InboundMessage,
        contact_name: Option<&str>,
        now: Timestamp,
        cap: usize,
    ) -> TurnSummary {
        let bot = self.flows.current();
        let extract = self.llm.as_ref().is_some_and(|l| l.extracts());
        let ctx = TurnContext {
            now,
            contact_name,
            extract,
        };
        let text = tandem_flows::validate::answer_text(&message.content);
        let classified = text.map(|text| bot.classify(text)).unwrap_or_default();
        let mut intent = classified.intent;
        let mut llm_decisions = Vec::new();
        let mut person = None;
        let answers_question =
            intent.is_none() && c.bot.position.is_some() && bot.accepts(c, &message.content, &ctx);
        // A message that is not a valid answer to the question waited on (or that comes
        // outside one) is worth an LLM call: its triage may hand off even mid-flow.
        let consult_llm = intent.is_none() && !c.opted_out && !answers_question;
        if let Some(text) = text.filter(|_| consult_llm)
            && let Some(triage) = self
                .ask_llm(&bot, c, message, text, &mut llm_decisions)
                .await
        {
            person = bot.settings.handoff_on.reason(&triage);
            intent = (triage.intent != tandem_classify::eval::OUT_OF_SCOPE).then_some(Intent {
                flow: triage.intent,
                stage: "llm",
                confidence: triage.confidence,
            });
        }
        let stage = intent.as_ref().map_or("none", |i| i.stage);
        ::metrics::counter!(metrics::CLASSIFIER_DECISIONS, "stage" => stage).increment(1);
        if text.is_some() {
            let understood = understood(intent.as_ref(), classified.guess, answers_question);
            if let Some(line) = c.transcript.iter_mut().rev().find(|e| {
                e.role == tandem_domain::Role::Customer
                    && e.message_id.as_ref() == Some(&message.id)
            }) {
                line.understood = Some(understood);
            }
        }
        let mut turn = match person {
            // A triage rule (needs a person, urgent, upset) wins over any flow.
            Some(reason) => bot.hand_off_for(c, reason, &message.content, &ctx),
            None => bot.on_message(
                c,
                &message.content,
                intent.as_ref().map(|i| i.flow.as_str()),
                &ctx,
            ),
        };
        if let Some(request) = turn.extract.take() {
            // The validator refused the answer: the LLM may read the value out of it, then
            // the flow sees that value (or the original answer) once more, without this step.
            let mut earlier = std::mem::take(&mut turn.decisions);
            let value = self.extract(c, &request).await;
            let content = match &value {
                Some(value) => {
                    earlier.push(format!("the LLM read `{}` = {value}", request.slot));
                    tandem_domain::MessageContent::Text {
                        body: value.clone(),
                    }
                }
                None => message.content.clone(),
            };
            let again = TurnContext {
                extract: false,
                ..ctx
            };
            turn = bot.on_message(
                c,
                &content,
                intent.as_ref().map(|i| i.flow.as_str()),
                &again,
            );
            earlier.append(&mut turn.decisions);
            turn.decisions = earlier;
        }
        let mut effects = std::mem::take(&mut turn.effects);
        let mut decisions = std::mem::take(&mut turn.decisions);
        if let Some(i) = &intent {
            decisions.insert(
                0,
                format!(
                    "classified `{}` by {} ({:.2})",
                    i.flow, i.stage, i.confidence
                ),
            );
        }
        let mut errors = std::mem::take(&mut turn.errors);
        let mut calls = 0;
        while let Some(request) = turn.call.take() {
            calls += 1;
            let outcome = if calls > CALLS_PER_TURN {
                CallOutcome::Failed(format!("more than {CALLS_PER_TURN} calls in one turn"))
            } else {
                // The same message makes the same calls in the same order, so a turn run again
                // (after a crash or a lost lane) sends the same keys.
                let key = idempotency_key(&c.id, &message.id, calls);
                self.call(&request, &key).await
            };
            turn = bot.on_call_result(c, outcome, &ctx);
            effects.append(&mut turn.effects);
            decisions.append(&mut turn.decisions);
            errors.append(&mut turn.errors);
        }
        let mut summary = TurnSummary {
            decisions,
            intent: intent.as_ref().map(|i| i.flow.clone()),
            ..TurnSummary::default()
        };
        for error in &errors {
            tracing::warn!(conversation = %c.id, error, "flow error");
            ::metrics::counter!(metrics::FLOW_ERRORS).increment(1);
            c.push(
                TranscriptEntry::system(now, format!("flow error: {error}")),
                cap,
            );
        }
        let replies = effects
            .iter()
            .any(|e| matches!(e, Effect::Reply(_) | Effect::OptedOut(_)));
        if replies {
            c.queue_send(
                SendOrigin::Bot,
                SendAction::MarkRead {
                    message_id: message.id.clone(),
                },
                now,
            );
        }
        for effect in effects {
            match effect {
                Effect::Reply(content) => {
                    c.queue_send(SendOrigin::Bot, SendAction::Message { content }, now);
                    summary.queued += 1;
                }
                Effect::OptedOut(content) => {
                    c.queue_send(
                        SendOrigin::OptOutNotice,
                        SendAction::Message { content },
                        now,
                    );
                    summary.queued += 1;
                    c.push(TranscriptEntry::system(now, "customer opted out"), cap);
                }
                Effect::OptedIn => {
                    c.push(TranscriptEntry::system(now, "customer opted back in"), cap)
                }
                Effect::Handoff(request) => {
                    let team = request.team.as_deref().unwrap_or("any team");
                    c.push(
                        TranscriptEntry::system(
                            now,
                            format!("handed to a person ({team}): {}", request.reason),
                        ),
                        cap,
                    );
                    summary.handoff = Some(request.reason);
                }
            }
        }
        summary
    }

    /// Asks the LLM to read a refused answer's value; `None` when it finds none or fails
    /// (logged and counted).
    async fn extract(
        &self,
        c: &Conversation,
        request: &tandem_flows::ExtractRequest,
    ) -> Option<String> {
        let llm = self.llm.as_ref()?;
        let answer = llm.extract(&request.question, &request.expects, &request.answer);
        match counted(answer).await {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!(conversation = %c.id, %error, "slot extraction failed; the answer is refused as usual");
                None
            }
        }
    }

    /// Asks the LLM (when configured with a summary prompt) for the two or three lines the
    /// person taking over reads first, and keeps them on the handoff request. A failure is
    /// logged and counted; the handoff goes on without a summary.
    pub async fn summarize(&self, c: &mut Conversation) {
        let (Some(llm), Some(reason)) = (&self.llm, c.handoff.as_ref().map(|h| h.reason.clone()))
        else {
            return;
        };
        if !llm.summarizes() {
            return;
        }
        let lines = recent_lines(c, 30, None);
        match counted(llm.summarize(&reason, &lines)).await {
            Ok(summary) => {
                if let Some(handoff) = c.handoff.as_mut() {
                    handoff.summary = Some(summary);
                }
            }
            Err(error) => {
                tracing::warn!(conversation = %c.id, %error, "handoff summary failed; handing off without one");
            }
        }
    }

    /// True when the bot's opening hours are closed at `now` (the customer was told so).
    pub fn closed_at(&self, now: Timestamp) -> bool {
        self.flows.current().closed_at(now)
    }

    /// Queues the built-in text `name` (`queue_wait`, `queue_closed`, `bot_back`) with `queue`
    /// in scope, when the business left it non-empty and the customer's window is open (these
    /// messages are never worth a paid template).
    pub fn notice(
        &self,
        c: &mut Conversation,
        name: &str,
        queue: serde_json::Value,
        now: Timestamp,
        cap: usize,
    ) {
        if !c.window_open(now) {
            return;
        }
        let bot = self.flows.current();
        let ctx = TurnContext {
            now,
            contact_name: None,
            extract: false,
        };
        match bot.notice(c, name, queue, &ctx) {
            Ok(Some(content)) => {
                c.queue_send(SendOrigin::Bot, SendAction::Message { content }, now);
            }
            Ok(None) => {}
            Err(error) => {
                ::metrics::counter!(metrics::FLOW_ERRORS).increment(1);
                c.push(
                    TranscriptEntry::system(now, format!("flow error in texts.{name}: {error}")),
                    cap,
                );
            }
        }
    }

    /// Handles a delivery failure WhatsApp reported for one of the bot's messages: for 131047
    /// (the 24-hour window had closed) the configured window template is queued once, so the
    /// customer still hears from the business; other failures are noted in the transcript.
    pub fn on_failed_send(
        &self,
        c: &mut Conversation,
        status: &StatusUpdate,
        now: Timestamp,
        cap: usize,
    ) {
        let ours = c.transcript.iter().any(|e| {
            e.role == Role::Bot
                && e.message_id.as_ref() == Some(&status.message_id)
                && e.kind != "template"
        });
        if !ours {
            return;
        }
        let codes: Vec<String> = status.error_codes.iter().map(i64::to_string).collect();
        let window_closed = status.error_codes.contains(&131_047);
        let template = self.flows.current().window_template_content();
        match template {
            Some(content) if window_closed && c.may_send(SendOrigin::Bot) => {
                c.push(
                    TranscriptEntry::system(now, "a bot message failed: the 24-hour window had closed (131047); the window template is queued"),
                    cap,
                );
                c.queue_send(SendOrigin::Bot, SendAction::Message { content }, now);
            }
            _ => c.push(
                TranscriptEntry::system(
                    now,
                    format!("a bot message failed (error {})", codes.join(", ")),
                ),
                cap,
            ),
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

/// What the cascade made of a customer's text, for its transcript line: the stage and flow
/// that decided, or, when none did, the local model's unsure best guess.
fn understood(
    intent: Option<&Intent>,
    guess: Option<(String, f32)>,
    answers_question: bool,
) -> tandem_domain::Understood {
    match intent {
        Some(i) => tandem_domain::Understood {
            stage: i.stage.to_owned(),
            intent: Some(i.flow.clone()),
            guess: None,
            confidence: Some(i.confidence),
        },
        None => {
            let guess = guess.filter(|_| !answers_question);
            tandem_domain::Understood {
                stage: if answers_question { "answer" } else { "none" }.to_owned(),
                intent: None,
                confidence: guess.as_ref().map(|g| g.1),
                guess: guess.map(|g| g.0),
            }
        }
    }
}

/// The last `n` transcript lines (without the line of message `except`), oldest first, as
/// the LLM's prompts show them.
fn recent_lines(
    c: &Conversation,
    n: usize,
    except: Option<&tandem_domain::MessageId>,
) -> Vec<Line> {
    let mut lines: Vec<Line> = c
        .transcript
        .iter()
        .rev()
        .filter(|e| except.is_none_or(|id| e.message_id.as_ref() != Some(id)))
        .take(n)
        .map(|e| Line {
            role: format!("{:?}", e.role).to_lowercase(),
            text: e.text.clone(),
        })
        .collect();
    lines.reverse();
    lines
}

/// The `Idempotency-Key` of the `n`-th call of the turn answering `message`: the same for
/// every run of that turn, and a valid header value whatever the ids hold.
fn idempotency_key(
    conversation: &tandem_domain::ConversationId,
    message: &tandem_domain::MessageId,
    n: usize,
) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-:=+/".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "tandem-{}-{}-{n}",
        safe(&conversation.to_string()),
        safe(message.as_str())
    )
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
