//! The decision of a conversation turn: (record, events, context, clock) → (new record,
//! effects), with no IO.
//!
//! [`decide`] is the one place where Tandem decides what a conversation's events do: the
//! pure event step ([`crate::apply`]), the desk's handoff bookkeeping, the burst of texts
//! answered as one, the classifier cascade, the flows, the texts the engine sends on its own,
//! the timer that follows the record, and the hooks and metrics that announce it all.
//!
//! Whatever needs the outside world — a voice note's transcription, a semantic decision, an
//! LLM triage, a slot extraction, a handoff summary, a flow's `call` to the business's
//! backend — is a [`Request`]. `decide` stops at the first
//! request whose [`Answer`] is not yet in the [`Journal`] and returns it as [`Pending`]; the
//! driver ([`crate::Responder::drive`]) performs it, writes the answer in the journal and
//! calls `decide` again, which replays the turn from the start with the answers it already
//! has. Because the decision is deterministic, the replay asks the same requests in the same
//! order, so every request is performed once per run of the turn, and a turn run again after
//! a lost lease sends the same idempotency keys.
//!
//! The server's lanes ([`crate::dispatcher`]) and the sandbox ([`crate::Sandbox`], `tandem
//! chat` and `tandem test`) run this same function; they differ only in where the record
//! comes from and what happens to the decision (a store commit and the Graph API, or an
//! in-memory record and a list of replies).

use std::sync::Arc;
use std::time::Duration;

use tandem_classify::llm::{IntentInfo, Line, Triage};
use tandem_domain::{
    Burst, Conversation, ConversationEvent, DeliveryStatus, InboundMessage, MessageContent, Mode,
    PauseRules, Role, Timestamp,
};
use tandem_flows::{Bot, CallOutcome, CallRequest};
use tandem_handoff::HookEvent;
use tandem_store::{InboxItem, TimerChange};

use crate::apply::{ApplyContext, apply};
use crate::desk::{Desk, Happening};
use crate::metrics;
use crate::reply;
use crate::responder::Responder;

/// Most requests one decision may make; past it every request is answered as failed, so a
/// turn always ends.
const MAX_REQUESTS: usize = 64;

/// The settings a decision reads.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a person's activity pauses the bot.
    pub pause: Arc<PauseRules>,
    /// How many transcript lines to keep.
    pub transcript_cap: usize,
    /// How long a text outside a question waits for the customer's next one (zero: never).
    pub burst_window: Duration,
    /// When a queued send with no retry time is looked at again.
    pub send_recovery: Duration,
    /// Which LLM requests the deployment can answer.
    pub llm: LlmUse,
    /// When the semantic stage is on: the local model's confidence at which it still
    /// answers alone.
    pub semantic: Option<f32>,
    /// True when customers' voice notes are transcribed.
    pub transcribe: bool,
}

impl Settings {
    /// The settings of `config`, pausing as `desk`'s teams say, with the LLM requests
    /// `responder` can answer.
    pub fn new(config: &crate::EngineConfig, desk: &Desk, responder: Option<&Responder>) -> Self {
        Self {
            pause: Arc::new(desk.routing.pause_rules(config.human_idle)),
            transcript_cap: config.transcript_cap,
            burst_window: config.burst_window,
            send_recovery: config.send_recovery,
            llm: responder.map_or_else(LlmUse::default, Responder::llm_use),
            semantic: responder.and_then(Responder::semantic_lexical_threshold),
            transcribe: responder.is_some_and(Responder::transcribes),
        }
    }
}

/// Which LLM requests a turn may make.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmUse {
    /// Triage of messages no earlier stage was sure of.
    pub triage: bool,
    /// Reading a refused answer's value.
    pub extract: bool,
    /// The summary a person reads at a handoff.
    pub summarize: bool,
}

/// The policy a decision follows: the flows (none: the lanes only record) and the desk.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The flows in force; `None` when the deployment runs no bot.
    pub flows: Option<&'a Bot>,
    /// Routing and hook targets.
    pub desk: &'a Desk,
}

/// What one decision is about besides the record.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The lane's events, oldest first.
    pub items: &'a [InboxItem],
    /// The customer's name in the business's address book, when known.
    pub contact_name: Option<&'a str>,
    /// The time of the decision.
    pub now: Timestamp,
}

/// Something the turn needs from the outside world before it can go on.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Ask the LLM which flow `text` asks for, with the recent transcript.
    Triage {
        /// The flows the LLM may choose.
        intents: Vec<IntentInfo>,
        /// The lines before the message, oldest first.
        transcript: Vec<Line>,
        /// The customer's text.
        text: String,
    },
    /// Ask the semantic stage which flow `text` asks for.
    Semantic {
        /// The customer's text.
        text: String,
    },
    /// Download a customer's voice note and transcribe it.
    Transcribe {
        /// The audio's media id.
        media_id: String,
        /// Its MIME type, as WhatsApp gave it.
        mime_type: Option<String>,
        /// The customer's language when the conversation knows it (a hint for the
        /// transcriber; `None`: its own setting or detection).
        language: Option<String>,
    },
    /// Ask the LLM to read a refused answer's value.
    Extract(tandem_flows::ExtractRequest),
    /// Ask the LLM for the lines a person taking over reads first.
    Summary {
        /// Why the conversation was handed off.
        reason: String,
        /// The recent transcript, oldest first.
        transcript: Vec<Line>,
    },
    /// Make a flow's `call` to the business's backend.
    Call {
        /// The rendered request.
        request: CallRequest,
        /// The `Idempotency-Key` it carries unless the flow sets its own: derived from the
        /// conversation, the message answered and the call's place in the turn.
        key: String,
    },
}

impl Request {
    /// The answer given when the request cannot be made.
    pub(crate) fn refused(&self, why: &str) -> Answer {
        match self {
            Self::Triage { .. } => Answer::Triage(Err(why.to_owned())),
            Self::Semantic { .. } => Answer::Semantic(Err(why.to_owned())),
            Self::Transcribe { .. } => Answer::Transcript(Err(why.to_owned())),
            Self::Extract(_) => Answer::Extract(None),
            Self::Summary { .. } => Answer::Summary(None),
            Self::Call { .. } => Answer::Call(CallOutcome::Failed(why.to_owned())),
        }
    }
}

/// The result of a [`Request`], as the driver got it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The triage, or why there is none (the turn falls back).
    Triage(Result<Triage, String>),
    /// The semantic stage's best intent (sure or not), or why there is none.
    Semantic(Result<tandem_classify::semantic::SemanticMatch, String>),
    /// The words of a voice note, or why there are none (it stays an attachment).
    Transcript(Result<String, String>),
    /// The value read, when the LLM found one.
    Extract(Option<String>),
    /// The summary, when the LLM gave one.
    Summary(Option<String>),
    /// How the backend answered.
    Call(CallOutcome),
}

/// The answers a turn got so far, in the order it asked.
#[derive(Debug, Clone, Default)]
pub struct Journal(Vec<(Request, Answer)>);

impl Journal {
    /// Records the answer to a pending request.
    pub fn answer(&mut self, pending: Pending, answer: Answer) {
        self.0.truncate(pending.at);
        self.0.push((*pending.request, answer));
    }

    /// How many requests were answered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no request was answered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A request the decision waits on.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// What to perform (boxed: a pending request travels up through every `?`).
    pub request: Box<Request>,
    /// Its place in the journal.
    at: usize,
}

/// Hands out the journal's answers in order while a decision replays.
pub(crate) struct Io<'j> {
    journal: &'j Journal,
    next: usize,
}

impl Io<'_> {
    /// The answer to `request`: from the journal when the turn already asked it, otherwise
    /// `Err(Pending)` so the driver performs it.
    pub(crate) fn ask(&mut self, request: Request) -> Result<Answer, Pending> {
        let at = self.next;
        if at >= MAX_REQUESTS {
            return Ok(request.refused("too many requests in one turn"));
        }
        match self.journal.0.get(at) {
            Some((asked, answer)) if *asked == request => {
                self.next += 1;
                Ok(answer.clone())
            }
            // Not asked yet, or the replay asked something else (a journal from another
            // input): perform it, dropping what the journal held from here on.
            _ => Err(Pending {
                request: Box::new(request),
                at,
            }),
        }
    }
}

/// Why the bot resumed, as metrics and logs label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// No message from a person for the idle time.
    HumanIdle,
    /// An agent released the conversation.
    Released,
}

impl Resumed {
    /// The bounded label.
    pub fn label(self) -> &'static str {
        match self {
            Self::HumanIdle => "human_idle",
            Self::Released => "released",
        }
    }
}

/// How a bot turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEnd {
    /// It queued replies.
    Reply,
    /// It handed the conversation to a person.
    Handoff,
    /// It queued nothing.
    Silent,
}

impl TurnEnd {
    /// The bounded label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Reply => "reply",
            Self::Handoff => "handoff",
            Self::Silent => "silent",
        }
    }
}

/// A metric or log line the decision calls for, recorded by the driver once the decision
/// took effect (so a turn decided again after a conflict counts once).
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// A customer message opened a new bot session.
    Session,
    /// A bot turn ended.
    Turn(TurnEnd),
    /// The classifier stage that decided (`rules`, `local`, `semantic`, `llm`, `none`).
    Classified(&'static str),
    /// A flow failed (a template, a call's result); the text says how.
    FlowError(String),
    /// A conversation was handed off, with the bounded reason label.
    Handoff(&'static str),
    /// An agent or the router acted (the action's label).
    AgentAction(&'static str),
    /// A person first answered after a handoff, this long after it.
    FirstHumanReply(Duration),
    /// An agent was assigned after this wait in `team`'s queue.
    QueueWait {
        /// The team (empty when none).
        team: String,
        /// How long the conversation waited.
        waited: Duration,
    },
    /// The bot took the conversation back.
    Resumed(Resumed),
}

impl Note {
    /// Records the metric (and log line) of this note for `conversation` of `tenant` (turns
    /// and handoffs are counted per tenant).
    pub fn record(
        &self,
        conversation: &tandem_domain::ConversationId,
        tenant: &::metrics::SharedString,
    ) {
        match self {
            Self::Session => ::metrics::counter!(metrics::SESSIONS).increment(1),
            Self::Turn(end) => {
                ::metrics::counter!(metrics::TURNS, "ended" => end.label(), "tenant" => tenant.clone()).increment(1);
            }
            Self::Classified(stage) => {
                ::metrics::counter!(metrics::CLASSIFIER_DECISIONS, "stage" => *stage).increment(1);
            }
            Self::FlowError(error) => {
                tracing::warn!(%conversation, error, "flow error");
                ::metrics::counter!(metrics::FLOW_ERRORS).increment(1);
            }
            Self::Handoff(reason) => {
                ::metrics::counter!(metrics::HANDOFFS, "reason" => *reason, "tenant" => tenant.clone()).increment(1);
            }
            Self::AgentAction(action) => {
                ::metrics::counter!(metrics::AGENT_ACTIONS, "action" => *action).increment(1);
            }
            Self::FirstHumanReply(after) => {
                ::metrics::histogram!(metrics::FIRST_HUMAN_REPLY).record(after.as_secs_f64());
            }
            Self::QueueWait { team, waited } => {
                ::metrics::histogram!(metrics::QUEUE_WAIT, "team" => team.clone())
                    .record(waited.as_secs_f64());
            }
            Self::Resumed(reason) => {
                ::metrics::counter!(metrics::RESUMES, "reason" => reason.label()).increment(1);
                tracing::info!(%conversation, reason = reason.label(), "bot resumed");
            }
        }
    }
}

/// What a decision produced besides the record: the hooks' happenings, notes for metrics and
/// logs, and the decisions in words.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// What hooks announce, in order.
    pub happenings: Vec<Happening>,
    /// Metrics and log lines.
    pub notes: Vec<Note>,
    /// What the bot decided, step by step (for `tandem chat`, `tandem test` and debug logs).
    pub decisions: Vec<String>,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The new record: transcript, mode, flow position, and the outbox the sender drains.
    pub conversation: Conversation,
    /// What becomes of the conversation's timer.
    pub timer: TimerChange,
    /// Hooks, metrics and decisions.
    pub effects: Effects,
}

impl Decision {
    /// True when the decision changed who waits for a person (the router should look).
    pub fn queue_changed(&self) -> bool {
        self.effects.happenings.iter().any(|h| {
            matches!(
                h.event,
                HookEvent::HandoffRequested | HookEvent::Resumed | HookEvent::Closed
            )
        })
    }
}

/// Decides what `input`'s events do to `record`, with the answers `journal` holds; returns
/// the first request it still needs as `Err(Pending)`.
///
/// The record is taken by value (most turns need no request, and then it is never copied);
/// a replay starts again from the record as read before the turn.
///
/// # Errors
/// `Pending` when the turn needs a request performed; perform it, record the answer with
/// [`Journal::answer`] and call again with the record as it was.
pub fn decide(
    record: Conversation,
    input: &Input<'_>,
    parts: &Parts<'_>,
    settings: &Settings,
    journal: &Journal,
) -> Result<Decision, Pending> {
    let mut io = Io { journal, next: 0 };
    let now = input.now;
    let cap = settings.transcript_cap;
    let ctx = ApplyContext {
        now,
        rules: &settings.pause,
        transcript_cap: cap,
    };
    let desk = parts.desk;
    let env = reply::Env {
        bot: parts.flows,
        now,
        cap,
        contact_name: input.contact_name,
        llm: settings.llm,
        semantic: settings.semantic,
    };
    let mut record = record;
    let mut timer = TimerChange::Keep;
    let mut out = Effects::default();
    for item in input.items {
        let mode_before = record.mode();
        let step = apply(record, item, &ctx);
        record = step.conversation;
        if step.timer != TimerChange::Keep {
            timer = step.timer;
        }
        // A voice note goes on as the words heard in it (for the bot, the agents and the
        // hooks), unless the bot waits for media and takes the audio itself.
        let heard = match &item.event {
            ConversationEvent::Customer(message) if settings.transcribe => {
                transcribe(&mut record, message, &mut io, &mut out)?
            }
            _ => None,
        };
        if step.resumed.is_some() {
            desk.on_resumed(&mut record, Resumed::HumanIdle, &env, &mut out);
        }
        match &item.event {
            ConversationEvent::Echo(_) if !item.own_echo => {
                desk.on_echo(&mut record, now, &mut out);
            }
            ConversationEvent::Agent(action) => {
                desk.on_agent(&mut record, action, &env, &mut out);
            }
            ConversationEvent::Customer(message) if mode_before != Mode::Bot => {
                desk.on_customer_while_person(&record, message, &mut out);
            }
            ConversationEvent::Status(status) if status.status == DeliveryStatus::Failed => {
                if let Some(bot) = parts.flows {
                    reply::on_failed_send(bot, &mut record, status, now, cap);
                }
            }
            ConversationEvent::Customer(message)
                if parts.flows.is_some() && record.mode() == Mode::Bot =>
            {
                if opens_session(&record, message) {
                    out.notes.push(Note::Session);
                }
                let message = match &heard {
                    Some(spoken) if !takes_media(&record, message, &env, parts.flows) => spoken,
                    _ => message,
                };
                let window = settings.burst_window;
                match tandem_flows::validate::answer_text(&message.content) {
                    // Outside a question, a text may wait for the rest of a burst.
                    Some(text)
                        if !window.is_zero()
                            && record.bot.position.is_none()
                            && !record.opted_out =>
                    {
                        hold(&mut record, message, text, now, window);
                        out.decisions
                            .push("held: the customer may still be typing".into());
                    }
                    _ => {
                        // A held burst goes first, then this message.
                        answer_burst(&mut record, &env, desk, &mut io, &mut out)?;
                        bot_turn(&mut record, message, &env, desk, &mut io, &mut out)?;
                    }
                }
            }
            _ => {}
        }
    }
    // A held burst whose window has passed is answered now, as one turn.
    if parts.flows.is_some()
        && record.mode() == Mode::Bot
        && record.bot.burst.as_ref().is_some_and(|b| b.due <= now)
    {
        answer_burst(&mut record, &env, desk, &mut io, &mut out)?;
    }
    // The timer follows the record: idle pause, retries and waiting sends.
    if parts.flows.is_some() || !record.outbox.is_empty() || record.mode() == Mode::Human {
        timer = match record.next_wake(now, settings.send_recovery) {
            Some(at) => TimerChange::Set(at),
            None => TimerChange::Clear,
        };
    }
    Ok(Decision {
        conversation: record,
        timer,
        effects: out,
    })
}

/// With a transcriber on, transcribes a customer's voice note: its transcript line keeps the
/// words, and the message the turn goes on with is returned as a text of them. Without words
/// (the download or the transcriber failed, or nothing was heard) it stays an attachment.
fn transcribe(
    record: &mut Conversation,
    message: &InboundMessage,
    io: &mut Io<'_>,
    out: &mut Effects,
) -> Result<Option<InboundMessage>, Pending> {
    let MessageContent::Media {
        kind,
        media_id: Some(media_id),
        mime_type,
        ..
    } = &message.content
    else {
        return Ok(None);
    };
    if kind != "audio" {
        return Ok(None);
    }
    let request = Request::Transcribe {
        media_id: media_id.clone(),
        mime_type: mime_type.clone(),
        language: record.language.clone(),
    };
    let words = match io.ask(request)? {
        Answer::Transcript(Ok(words)) => words,
        Answer::Transcript(Err(error)) => {
            out.decisions
                .push(format!("voice note not transcribed: {error}"));
            return Ok(None);
        }
        _ => return Ok(None),
    };
    if let Some(line) = record
        .transcript
        .iter_mut()
        .rev()
        .find(|e| e.role == Role::Customer && e.message_id.as_ref() == Some(&message.id))
    {
        line.transcribed(&words);
    }
    out.decisions.push(format!("voice note heard: {words:?}"));
    Ok(Some(InboundMessage {
        content: MessageContent::Text { body: words },
        ..message.clone()
    }))
}

/// True when the bot waits at a question that takes `message`'s media as it is (a voice note
/// sent where the flow asks for audio or any media).
fn takes_media(
    record: &Conversation,
    message: &InboundMessage,
    env: &reply::Env<'_>,
    bot: Option<&Bot>,
) -> bool {
    let ctx = tandem_flows::TurnContext {
        now: env.now,
        contact_name: env.contact_name,
        extract: false,
    };
    record.bot.position.is_some()
        && bot.is_some_and(|bot| bot.accepts(record, &message.content, &ctx))
}

/// True when `message` (already in the transcript) comes a whole customer window after the
/// customer's previous live message, or is their first.
fn opens_session(record: &Conversation, message: &InboundMessage) -> bool {
    record
        .transcript
        .iter()
        .rev()
        .filter(|e| e.role == Role::Customer && !e.historical)
        .nth(1)
        .is_none_or(|previous| {
            message.sent_at.since(previous.at) >= tandem_domain::conversation::CUSTOMER_WINDOW
        })
}

/// Holds a customer text in the conversation's burst: answered `window` after the latest
/// message, and at most four windows after the first.
fn hold(
    record: &mut Conversation,
    message: &InboundMessage,
    text: &str,
    now: Timestamp,
    window: Duration,
) {
    let burst = record.bot.burst.get_or_insert_with(|| Burst {
        texts: Vec::new(),
        last_id: message.id.clone(),
        last_sent_at: message.sent_at,
        started_at: now,
        due: now,
    });
    burst.texts.push(text.to_owned());
    burst.last_id = message.id.clone();
    burst.last_sent_at = message.sent_at;
    burst.due = now
        .plus(window)
        .min(burst.started_at.plus(window.saturating_mul(4)));
}

/// Answers the held burst, if any, as one turn: its texts, one per line.
fn answer_burst(
    record: &mut Conversation,
    env: &reply::Env<'_>,
    desk: &Desk,
    io: &mut Io<'_>,
    out: &mut Effects,
) -> Result<(), Pending> {
    let Some(burst) = record.bot.burst.take() else {
        return Ok(());
    };
    let message = InboundMessage {
        id: burst.last_id.clone(),
        sent_at: burst.last_sent_at,
        content: MessageContent::Text {
            body: burst.texts.join("\n"),
        },
        profile_name: None,
        // The identifiers of the texts were noted when each was applied.
        from: tandem_domain::Identity::default(),
        context_id: None,
        forwarded: false,
    };
    bot_turn(record, &message, env, desk, io, out)
}

/// Runs one bot turn for `message`: the reply, and at a handoff the summary and the team.
fn bot_turn(
    record: &mut Conversation,
    message: &InboundMessage,
    env: &reply::Env<'_>,
    desk: &Desk,
    io: &mut Io<'_>,
    out: &mut Effects,
) -> Result<(), Pending> {
    let Some(bot) = env.bot else {
        return Ok(());
    };
    let summary = reply::respond(bot, record, message, env, io, out)?;
    let ended = if summary.handoff {
        reply::summarize(record, env, io)?;
        desk.on_handoff(record, summary.intent.as_deref(), out);
        TurnEnd::Handoff
    } else if summary.queued > 0 {
        TurnEnd::Reply
    } else {
        TurnEnd::Silent
    };
    out.notes.push(Note::Turn(ended));
    Ok(())
}

#[cfg(test)]
mod tests;
