//! The conversation record (one per business number × customer) and the pure rules that
//! change it.
//!
//! The record is written by two parties: ingress, which only ever pauses the bot when a person
//! writes from the phone ([`Conversation::record_human_activity`]), and the conversation's lane,
//! which applies inbox events in order. Stores guard every write with [`Conversation::rev`], so
//! neither can overwrite the other's change.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bot::{
    Assignment, BotState, HandoffRequest, PendingSend, SendAction, SendOrigin, Triage,
};
use crate::customer::Identity;
use crate::event::{DeliveryStatus, Echo};
use crate::ids::{AgentId, ConversationId, MessageId, TeamId};
use crate::message::MessageContent;
use crate::outbound::OutboundContent;
use crate::pause::PauseRules;
use crate::time::Timestamp;

/// Who is talking to the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The bot answers.
    Bot,
    /// The bot asked for a person and is waiting for one.
    Handoff,
    /// A person is talking; the bot stays silent.
    Human,
}

impl Mode {
    /// All modes, in a stable order.
    pub const ALL: [Mode; 3] = [Mode::Bot, Mode::Handoff, Mode::Human];

    /// Returns the mode's snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::Handoff => "handoff",
            Self::Human => "human",
        }
    }

    /// Parses a mode name as written in the API (`bot`, `handoff`, `human`).
    pub fn parse(value: &str) -> Option<Mode> {
        Self::ALL.into_iter().find(|m| m.as_str() == value)
    }
}

/// Who is talking to the customer, with what that state holds. Stored flat in the record:
/// `mode` names the variant, its fields sit beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Control {
    /// The bot answers.
    Bot,
    /// The bot asked for a person and is waiting for one.
    Handoff {
        /// The request.
        handoff: HandoffRequest,
        /// The team and agent it is routed to, once chosen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignment: Option<Assignment>,
    },
    /// A person is talking; the bot stays silent until they go quiet.
    Human {
        /// What paused the bot.
        paused_by: PausedBy,
        /// When the bot resumes if no person writes again.
        #[serde(default)]
        resume_at: Option<Timestamp>,
        /// Set once `conversation.human_takeover` was announced for this stretch.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        takeover_announced: bool,
        /// The handoff request a person is answering, when the stretch began with one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        handoff: Option<HandoffRequest>,
        /// The team and agent the conversation is routed to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assignment: Option<Assignment>,
    },
}

impl Control {
    /// The mode this state is.
    pub fn mode(&self) -> Mode {
        match self {
            Self::Bot => Mode::Bot,
            Self::Handoff { .. } => Mode::Handoff,
            Self::Human { .. } => Mode::Human,
        }
    }
}

/// Why the bot is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PausedBy {
    /// A person wrote from the WhatsApp Business App or a linked device.
    Echo,
    /// An agent took over through the API.
    AgentApi,
    /// The bot handed the conversation to a person.
    Handoff,
    /// The imported history shows a person wrote recently.
    History,
}

/// Who wrote a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The customer.
    Customer,
    /// Tandem's bot.
    Bot,
    /// A person on the business side.
    Human,
    /// Tandem itself (pauses, resumes, notes).
    System,
}

/// One line of a conversation's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// When the message was sent (or the system event happened).
    pub at: Timestamp,
    /// Who wrote it.
    pub role: Role,
    /// The text, or a short label for non-text content.
    pub text: String,
    /// The message type (`text`, `media`, `location`, …) or `system`.
    pub kind: String,
    /// The wamid, for messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// True for messages imported from the phone's history.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub historical: bool,
    /// Delivery status of a message we sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeliveryStatus>,
    /// True when the author edited the message afterwards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// True when the author deleted the message afterwards.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// For a customer's text the bot handled: what the classifier made of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub understood: Option<Understood>,
    /// For media: the id to download it by from the Graph API (for about 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// For a voice note: the words spoken, as the transcriber heard them (also in `text`,
    /// after the `[audio]` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription: Option<String>,
}

/// What the classifier cascade made of a customer's text, kept on its transcript line so
/// that messages nobody understood can be reviewed and turned into examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Understood {
    /// Which stage decided: `rules`, `local`, `semantic`, `llm`, `answer` (the answer to the question the
    /// bot waited on) or `none` (nobody was sure: the menu, the fallback, or an answer the
    /// question refused).
    pub stage: String,
    /// The flow chosen, when a stage chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// The best flow of the last local stage (the model, or the semantic stage when on),
    /// when it was not sure enough to choose it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guess: Option<String>,
    /// The confidence of `intent` (or of `guess` when nothing was chosen), 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
}

impl TranscriptEntry {
    /// Builds the transcript line for a message.
    pub fn message(at: Timestamp, role: Role, id: MessageId, content: &MessageContent) -> Self {
        Self {
            at,
            role,
            text: content.transcript_text(),
            kind: content.type_label().to_owned(),
            message_id: Some(id),
            media_id: match content {
                MessageContent::Media { media_id, .. } => media_id.clone(),
                _ => None,
            },
            ..Self::system(at, "")
        }
    }

    /// Builds the line of a message Tandem sent.
    pub fn sent(at: Timestamp, role: Role, id: MessageId, content: &OutboundContent) -> Self {
        Self {
            at,
            role,
            text: content.transcript_text(),
            kind: content.kind().to_owned(),
            message_id: Some(id),
            ..Self::system(at, "")
        }
    }

    /// Builds a system line, such as "bot resumed".
    pub fn system(at: Timestamp, text: impl Into<String>) -> Self {
        Self {
            at,
            role: Role::System,
            text: text.into(),
            kind: "system".to_owned(),
            message_id: None,
            historical: false,
            status: None,
            edited: false,
            deleted: false,
            understood: None,
            media_id: None,
            transcription: None,
        }
    }

    /// Keeps what was heard in a voice note: the words, and the line's text as
    /// `[audio] words` so every reader of the transcript sees them.
    pub fn transcribed(&mut self, words: &str) {
        self.text = format!("[audio] {words}");
        self.transcription = Some(words.to_owned());
    }
}

/// How long after a customer's last message free-form messages may be sent.
pub const CUSTOMER_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The identity implied by a customer id of the form used before aliases (a phone or a BSUID);
/// empty for `c_…` ids.
fn legacy_identity(id: &ConversationId) -> Identity {
    Identity::of(id.customer().as_str()).unwrap_or_default()
}

/// What the human-idle rule says about a conversation at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleDecision {
    /// No person is talking (or the conversation waits for one); nothing to do.
    NotPaused,
    /// The person has been quiet long enough: resume the bot.
    Resume,
    /// Not yet: check again at this time.
    WaitUntil(Timestamp),
}

/// The state of one conversation (business number × customer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    /// `{phone_number_id}:{customer id}`.
    pub id: ConversationId,
    /// The customer's identifiers as last seen: where messages go (the phone when known,
    /// else the BSUID) and what agents and hooks are shown.
    #[serde(default, skip_serializing_if = "Identity::is_blank")]
    pub customer: Identity,
    /// Who is talking, with what that state holds (the handoff request, the assignment, the
    /// pause).
    #[serde(flatten)]
    pub control: Control,
    /// The last time a person on the business side wrote.
    pub human_last_at: Option<Timestamp>,
    /// The last time the customer wrote (the 24-hour window starts here).
    pub customer_last_at: Option<Timestamp>,
    /// The customer's WhatsApp profile name.
    pub profile_name: Option<String>,
    /// The last lines of the conversation, oldest first.
    pub transcript: Vec<TranscriptEntry>,
    /// How many inbox events the lane has applied.
    pub events_applied: u64,
    /// The flow position, slots and variables.
    #[serde(default)]
    pub bot: BotState,
    /// The customer asked the bot to stop writing (until they opt back in).
    #[serde(default)]
    pub opted_out: bool,
    /// The language replies are written in, when known (`en`, `pt`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Messages waiting to be sent, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<PendingSend>,
    /// The agent who last served this customer (for sticky routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_agent: Option<AgentId>,
    /// The latest LLM triage of a customer message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triage: Option<Triage>,
    /// The id the next queued send gets.
    #[serde(default)]
    pub next_send_id: u64,
    /// Incremented by every write; stores refuse a write based on an older revision.
    pub rev: u64,
    /// When the record was created.
    pub created_at: Timestamp,
    /// When the record last changed.
    pub updated_at: Timestamp,
}

impl Conversation {
    /// Creates the record of a conversation seen for the first time; the bot is in charge.
    pub fn new(id: ConversationId, now: Timestamp) -> Self {
        Self {
            customer: legacy_identity(&id),
            id,
            control: Control::Bot,
            human_last_at: None,
            customer_last_at: None,
            profile_name: None,
            transcript: Vec::new(),
            events_applied: 0,
            bot: BotState::default(),
            opted_out: false,
            language: None,
            outbox: Vec::new(),
            last_agent: None,
            triage: None,
            next_send_id: 0,
            rev: 0,
            created_at: now,
            updated_at: now,
        }
    }

    /// Pauses the bot because a person on the business side is active, and moves the
    /// resume time to at least `at` + what `rules` hold for `by` (never earlier than it was:
    /// an agent's take-over keeps its cap). Keeps the original reason when already paused,
    /// carries a handoff request and its routing into the person's stretch, and marks the
    /// start of the stretch in the transcript. Bot messages still waiting in the outbox are
    /// cancelled: a person is talking now.
    pub fn record_human_activity(&mut self, by: PausedBy, at: Timestamp, rules: &PauseRules) {
        let hold = rules.hold(by, self);
        let last = self.human_last_at.map_or(at, |prev| prev.max(at));
        self.human_last_at = Some(last);
        let due = last.plus(hold);
        let control = std::mem::replace(&mut self.control, Control::Bot);
        self.control = match control {
            Control::Human {
                paused_by,
                resume_at,
                takeover_announced,
                handoff,
                assignment,
            } => Control::Human {
                paused_by,
                resume_at: Some(resume_at.map_or(due, |held| held.max(due))),
                takeover_announced,
                handoff,
                assignment,
            },
            started => {
                let who = match by {
                    PausedBy::Echo => "from the WhatsApp Business App",
                    PausedBy::AgentApi => "through the agent API",
                    PausedBy::Handoff => "after a handoff",
                    PausedBy::History => "(recent history on the phone)",
                };
                self.push(
                    TranscriptEntry::system(
                        at,
                        format!("a person took over {who}; the bot is paused"),
                    ),
                    usize::MAX,
                );
                let (handoff, assignment) = match started {
                    Control::Handoff {
                        handoff,
                        assignment,
                    } => (Some(handoff), assignment),
                    _ => (None, None),
                };
                Control::Human {
                    paused_by: by,
                    resume_at: Some(due),
                    takeover_announced: false,
                    handoff,
                    assignment,
                }
            }
        };
        self.cancel_bot_sends(at);
        self.bot.burst = None;
    }

    /// Who is talking.
    pub fn mode(&self) -> Mode {
        self.control.mode()
    }

    /// Why the bot is paused, when it is.
    pub fn paused_by(&self) -> Option<PausedBy> {
        match &self.control {
            Control::Bot => None,
            Control::Handoff { .. } => Some(PausedBy::Handoff),
            Control::Human { paused_by, .. } => Some(*paused_by),
        }
    }

    /// When the bot resumes if no person writes again (only while a person is talking).
    pub fn resume_at(&self) -> Option<Timestamp> {
        match &self.control {
            Control::Human { resume_at, .. } => *resume_at,
            _ => None,
        }
    }

    /// The request for a person, while one is awaited or answering it.
    pub fn handoff(&self) -> Option<&HandoffRequest> {
        match &self.control {
            Control::Handoff { handoff, .. } => Some(handoff),
            Control::Human { handoff, .. } => handoff.as_ref(),
            Control::Bot => None,
        }
    }

    /// The request for a person, to change it.
    pub fn handoff_mut(&mut self) -> Option<&mut HandoffRequest> {
        match &mut self.control {
            Control::Handoff { handoff, .. } => Some(handoff),
            Control::Human { handoff, .. } => handoff.as_mut(),
            Control::Bot => None,
        }
    }

    /// The team and agent the conversation is routed to, while a person is wanted or talking.
    pub fn assignment(&self) -> Option<&Assignment> {
        match &self.control {
            Control::Handoff { assignment, .. } | Control::Human { assignment, .. } => {
                assignment.as_ref()
            }
            Control::Bot => None,
        }
    }

    /// Marks the person's take-over as announced; true the first time in this stretch (when
    /// the hook should go out).
    pub fn announce_takeover(&mut self) -> bool {
        match &mut self.control {
            Control::Human {
                takeover_announced, ..
            } if !*takeover_announced => {
                *takeover_announced = true;
                true
            }
            _ => false,
        }
    }

    /// The customer's identifiers: what webhooks showed, completed for conversations stored
    /// before aliases existed (their customer id is the phone, or the BSUID, they were
    /// created with).
    pub fn who(&self) -> Identity {
        let mut who = legacy_identity(&self.id);
        who.merge(&self.customer);
        who
    }

    /// The name to show for the customer when the business's address book has none: the
    /// WhatsApp profile name, else the username.
    pub fn display_name(&self) -> Option<&str> {
        self.profile_name
            .as_deref()
            .or(self.customer.username.as_deref())
    }

    /// The customer as agents, hooks and the API show them: Tandem's id, the phone when
    /// known, the BSUID, parent BSUID, username, the WhatsApp profile name, and the name to
    /// show (`contact_name`, the business's address-book label, wins over the profile name). `wa_id` repeats the phone (or the
    /// BSUID when there is no phone) for receivers written before usernames.
    pub fn customer_card(&self, contact_name: Option<&str>) -> serde_json::Value {
        let who = self.who();
        let phone = who.phone.as_ref().map(|p| p.as_str());
        let user_id = who.user_id.as_ref().map(|u| u.as_str());
        serde_json::json!({
            "id": self.id.customer().as_str(),
            "phone": phone,
            "user_id": user_id,
            "parent_user_id": who.parent_user_id.as_ref().map(|u| u.as_str()),
            "username": who.username,
            "name": contact_name.or(self.display_name()),
            "profile_name": self.profile_name,
            "wa_id": phone.or(user_id),
        })
    }

    /// Takes the identifiers a webhook carried for the customer (new ones replace old ones;
    /// what it leaves out is kept).
    pub fn note_identity(&mut self, seen: &Identity) {
        self.customer.merge(seen);
    }

    /// Decides, at `now`, whether the bot may resume after the people went quiet. A
    /// conversation waiting for a person (`handoff`) is never resumed by time.
    pub fn idle_decision(&self, now: Timestamp) -> IdleDecision {
        match &self.control {
            Control::Human {
                resume_at: Some(at),
                ..
            } if *at <= now => IdleDecision::Resume,
            Control::Human {
                resume_at: Some(at),
                ..
            } => IdleDecision::WaitUntil(*at),
            Control::Human {
                resume_at: None, ..
            } => IdleDecision::Resume,
            _ => IdleDecision::NotPaused,
        }
    }

    /// Routes the conversation to `team` and/or `agent`, while a person is wanted or talking
    /// (the bot needs no routing: nothing happens then). An agent becomes the customer's last
    /// agent (sticky routing).
    pub fn assign(&mut self, team: Option<TeamId>, agent: Option<AgentId>, at: Timestamp) {
        let slot = match &mut self.control {
            Control::Handoff { assignment, .. } | Control::Human { assignment, .. } => assignment,
            Control::Bot => return,
        };
        if agent.is_some() {
            self.last_agent.clone_from(&agent);
        }
        *slot = Some(Assignment { team, agent, at });
    }

    /// Hands the conversation back to the bot and notes why in the transcript. The flow
    /// the bot was in is left and the routing cleared: the customer starts afresh.
    pub fn resume(&mut self, at: Timestamp, reason: &str, cap: usize) {
        self.control = Control::Bot;
        self.bot.position = None;
        self.bot.misses = 0;
        self.push(
            TranscriptEntry::system(at, format!("bot resumed: {reason}")),
            cap,
        );
    }

    /// Appends a line and keeps at most `cap` lines, dropping the oldest.
    ///
    /// Lines are kept in the order their messages were sent (a line goes after every line
    /// sent at the same time or earlier), so an echo recorded at ingress and a customer
    /// message applied later by the lane still read in the order people wrote them.
    pub fn push(&mut self, entry: TranscriptEntry, cap: usize) {
        let index = self.transcript.partition_point(|e| e.at <= entry.at);
        self.transcript.insert(index, entry);
        self.trim(cap);
    }

    /// Records a message a person sent from the phone: pauses the bot (see
    /// [`Conversation::record_human_activity`], measured from `received_at`) and adds the
    /// message to the transcript, or applies it to the line it edits or deletes. Applying
    /// the same echo twice changes nothing more.
    pub fn record_echo(
        &mut self,
        echo: &Echo,
        received_at: Timestamp,
        rules: &PauseRules,
        cap: usize,
    ) {
        self.note_identity(&echo.to);
        self.record_human_activity(PausedBy::Echo, received_at, rules);
        if !self.amend(&echo.content) && !self.has_message(&echo.id) {
            self.push(
                TranscriptEntry::message(echo.sent_at, Role::Human, echo.id.clone(), &echo.content),
                cap,
            );
        }
    }

    /// Asks for a person: the bot stops answering and the conversation waits in `handoff`.
    pub fn request_handoff(&mut self, request: HandoffRequest) {
        self.bot.position = None;
        match &mut self.control {
            Control::Bot => {
                self.control = Control::Handoff {
                    handoff: request,
                    assignment: None,
                };
            }
            Control::Handoff { handoff, .. } => *handoff = request,
            Control::Human { handoff, .. } => *handoff = Some(request),
        }
    }

    /// Queues a message for the sender and returns its id.
    pub fn queue_send(&mut self, origin: SendOrigin, action: SendAction, now: Timestamp) -> u64 {
        let id = self.next_send_id;
        self.next_send_id += 1;
        self.outbox.push(PendingSend {
            id,
            origin,
            action,
            queued_at: now,
            attempts: 0,
            not_before: None,
        });
        id
    }

    /// Drops every bot message still waiting to be sent and notes it in the transcript.
    /// Returns how many were dropped.
    pub fn cancel_bot_sends(&mut self, at: Timestamp) -> usize {
        let before = self.outbox.len();
        self.outbox.retain(|s| !s.origin.is_bot());
        let dropped = before - self.outbox.len();
        if dropped > 0 {
            let note = format!("{dropped} bot message(s) not sent: a person is talking");
            // Not trimmed here: the next line pushed with the cap trims.
            self.push(TranscriptEntry::system(at, note), usize::MAX);
        }
        dropped
    }

    /// Returns true while free-form messages may be sent: the customer wrote in the last
    /// 24 hours.
    pub fn window_open(&self, now: Timestamp) -> bool {
        self.customer_last_at
            .is_some_and(|at| at.plus(CUSTOMER_WINDOW) > now)
    }

    /// Returns when the customer-service window closes, if it is open at `now`.
    pub fn window_closes_at(&self, now: Timestamp) -> Option<Timestamp> {
        self.customer_last_at
            .map(|at| at.plus(CUSTOMER_WINDOW))
            .filter(|closes| *closes > now)
    }

    /// Returns true when a queued message from `origin` may be sent now: no person is
    /// talking, and the customer has not opted out (except for the opt-out confirmation).
    pub fn may_send(&self, origin: SendOrigin) -> bool {
        origin == SendOrigin::Agent
            || (self.mode() != Mode::Human
                && (!self.opted_out || origin == SendOrigin::OptOutNotice))
    }

    /// Returns when the conversation's timer should next fire: when a phone pause may end,
    /// when a held burst of messages is due, when a failed send may be retried, or — while
    /// sends wait — `recovery` from now, so that sends a crashed process left behind are
    /// picked up again.
    pub fn next_wake(&self, now: Timestamp, recovery: Duration) -> Option<Timestamp> {
        let idle = match self.idle_decision(now) {
            IdleDecision::WaitUntil(at) => Some(at),
            IdleDecision::Resume => Some(now),
            IdleDecision::NotPaused => None,
        };
        let sends = self
            .outbox
            .iter()
            .map(|s| s.not_before.unwrap_or(now.plus(recovery)))
            .min();
        let burst = self.bot.burst.as_ref().map(|b| b.due);
        [idle, sends, burst].into_iter().flatten().min()
    }

    /// Returns true when the transcript already holds a line for this message.
    pub fn has_message(&self, id: &MessageId) -> bool {
        self.transcript
            .iter()
            .any(|e| e.message_id.as_ref() == Some(id))
    }

    /// Merges imported history lines in time order, skipping messages already present, and
    /// keeps at most `cap` lines.
    pub fn merge_historical(&mut self, entries: Vec<TranscriptEntry>, cap: usize) {
        for mut entry in entries {
            if entry
                .message_id
                .as_ref()
                .is_some_and(|id| self.has_message(id))
            {
                continue;
            }
            entry.historical = true;
            let index = self.transcript.partition_point(|e| e.at <= entry.at);
            self.transcript.insert(index, entry);
        }
        self.trim(cap);
    }

    /// Applies an edit or a deletion to the line of the message it refers to.
    /// Returns false when that message is not in the transcript.
    pub fn amend(&mut self, content: &MessageContent) -> bool {
        let Some(target) = content.amends() else {
            return false;
        };
        let Some(entry) = self
            .transcript
            .iter_mut()
            .find(|e| e.message_id.as_ref() == Some(&target))
        else {
            return false;
        };
        match content {
            MessageContent::Revoke { .. } => entry.deleted = true,
            MessageContent::Edit { body, .. } => {
                entry.edited = true;
                if let Some(body) = body {
                    entry.text.clone_from(body);
                }
            }
            _ => {}
        }
        true
    }

    /// Records a delivery status on the line of the message it refers to, never moving it
    /// backwards. Returns false when that message is not in the transcript.
    pub fn record_status(&mut self, id: &MessageId, status: DeliveryStatus) -> bool {
        match self
            .transcript
            .iter_mut()
            .find(|e| e.message_id.as_ref() == Some(id))
        {
            Some(entry) => {
                entry.status = Some(entry.status.map_or(status, |s| s.advance(status)));
                true
            }
            None => false,
        }
    }

    fn trim(&mut self, cap: usize) {
        if self.transcript.len() > cap {
            let excess = self.transcript.len() - cap;
            self.transcript.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Conversation {
        Conversation::new(ConversationId::parse("1:2").unwrap(), Timestamp(0))
    }

    fn text(at: u64, id: &str) -> TranscriptEntry {
        let content = MessageContent::Text { body: id.into() };
        TranscriptEntry::message(
            Timestamp(at),
            Role::Customer,
            MessageId::parse(id).unwrap(),
            &content,
        )
    }

    #[test]
    fn human_activity_pauses_and_pushes_the_resume_time() {
        let mut c = conv();
        let idle = PauseRules::new(Duration::from_secs(60), Duration::from_secs(60));
        c.record_human_activity(PausedBy::Echo, Timestamp(1_000), &idle);
        assert_eq!(c.mode(), Mode::Human);
        assert_eq!(c.resume_at(), Some(Timestamp(61_000)));
        // A later echo moves the resume time; an older one (a late retry) does not pull it back.
        c.record_human_activity(PausedBy::Echo, Timestamp(5_000), &idle);
        c.record_human_activity(PausedBy::Echo, Timestamp(2_000), &idle);
        assert_eq!(c.resume_at(), Some(Timestamp(65_000)));
        assert_eq!(
            c.idle_decision(Timestamp(64_999)),
            IdleDecision::WaitUntil(Timestamp(65_000))
        );
        assert_eq!(c.idle_decision(Timestamp(65_000)), IdleDecision::Resume);
        c.resume(Timestamp(65_000), "idle", 10);
        assert_eq!(c.mode(), Mode::Bot);
        assert_eq!(c.idle_decision(Timestamp(99_000)), IdleDecision::NotPaused);
        assert_eq!(c.transcript.last().unwrap().role, Role::System);
    }

    #[test]
    fn lines_read_in_the_order_they_were_sent_and_an_echo_is_recorded_once() {
        let mut c = conv();
        let echo = Echo {
            id: MessageId::parse("e1").unwrap(),
            sent_at: Timestamp(200),
            content: MessageContent::Text {
                body: "on it".into(),
            },
            to: Identity::default(),
        };
        let rules = PauseRules::new(Duration::from_secs(60), Duration::from_secs(60));
        c.record_echo(&echo, Timestamp(5_000), &rules, 10);
        c.record_echo(&echo, Timestamp(5_000), &rules, 10);
        // A customer message sent before the echo, applied after it, goes before it.
        c.push(text(100, "m1"), 10);
        c.push(text(300, "m2"), 10);
        let texts: Vec<_> = c
            .transcript
            .iter()
            .filter(|e| e.role != Role::System)
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(texts, ["m1", "on it", "m2"]);
        assert_eq!(c.mode(), Mode::Human);
        assert_eq!(c.resume_at(), Some(Timestamp(65_000)));
    }

    #[test]
    fn records_stored_with_flat_mode_fields_read_into_the_mode_with_its_data() {
        let base = |extra: serde_json::Value| {
            let mut record = serde_json::json!({
                "id": "1:2", "human_last_at": null, "customer_last_at": null,
                "profile_name": null, "transcript": [], "events_applied": 0, "rev": 3,
                "created_at": 0, "updated_at": 0,
            });
            for (k, v) in extra.as_object().unwrap() {
                record[k] = v.clone();
            }
            serde_json::from_value::<Conversation>(record).unwrap()
        };
        let bot = base(serde_json::json!({"mode": "bot", "paused_by": null, "resume_at": null}));
        assert_eq!(bot.control, Control::Bot);
        let request = serde_json::json!({
            "team": "support", "reason": "customer_request", "priority": "normal", "at": 5,
        });
        let waiting = base(serde_json::json!({
            "mode": "handoff", "paused_by": "handoff", "resume_at": null, "handoff": request,
        }));
        assert_eq!(waiting.mode(), Mode::Handoff);
        assert_eq!(waiting.paused_by(), Some(PausedBy::Handoff));
        assert_eq!(waiting.handoff().unwrap().reason, "customer_request");
        let human = base(serde_json::json!({
            "mode": "human", "paused_by": "echo", "resume_at": 900, "handoff": request,
            "assignment": {"team": "support", "agent": "ana", "at": 7},
            "takeover_announced": true,
        }));
        assert_eq!(human.resume_at(), Some(Timestamp(900)));
        assert_eq!(human.assignment().unwrap().agent.as_deref(), Some("ana"));
        assert!(human.handoff().is_some());
        // Written back, the fields sit beside `mode` as before.
        let written = serde_json::to_value(&human).unwrap();
        assert_eq!(written["mode"], "human");
        assert_eq!(written["paused_by"], "echo");
        assert_eq!(written["resume_at"], 900);
        assert_eq!(written["assignment"]["agent"], "ana");
        assert_eq!(
            serde_json::from_value::<Conversation>(written).unwrap(),
            human
        );
    }

    #[test]
    fn an_agent_takeover_holds_the_pause_until_its_cap_even_through_echoes() {
        let mut c = conv();
        let rules = PauseRules::new(Duration::from_secs(60), Duration::from_secs(3600));
        c.record_human_activity(PausedBy::AgentApi, Timestamp(0), &rules);
        c.record_human_activity(PausedBy::Echo, Timestamp(1_000), &rules);
        assert_eq!(c.paused_by(), Some(PausedBy::AgentApi));
        assert_eq!(
            c.idle_decision(Timestamp(61_000)),
            IdleDecision::WaitUntil(Timestamp(3_600_000))
        );
        assert_eq!(c.idle_decision(Timestamp(3_600_000)), IdleDecision::Resume);
        let notes = c
            .transcript
            .iter()
            .filter(|e| e.role == Role::System)
            .count();
        assert_eq!(notes, 1, "one line marks the start of the human stretch");
    }

    #[test]
    fn a_conversation_waiting_for_a_person_is_not_resumed_by_time() {
        let mut c = conv();
        c.request_handoff(HandoffRequest {
            team: None,
            reason: "customer_request".into(),
            priority: crate::Priority::Normal,
            at: Timestamp(0),
            answered_at: None,
            queue_noted: false,
            summary: None,
        });
        assert_eq!(c.mode(), Mode::Handoff);
        assert_eq!(
            c.idle_decision(Timestamp(u64::MAX / 2)),
            IdleDecision::NotPaused
        );
    }

    #[test]
    fn history_merges_in_time_order_without_duplicates_and_respects_the_cap() {
        let mut c = conv();
        c.push(text(300, "c"), 10);
        c.merge_historical(vec![text(200, "b"), text(100, "a"), text(300, "c")], 10);
        let ids: Vec<_> = c.transcript.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!(c.transcript[0].historical);
        assert!(!c.transcript[2].historical);
        c.merge_historical(vec![text(50, "z")], 3);
        assert_eq!(c.transcript.len(), 3);
        assert_eq!(c.transcript[0].text, "a");
    }

    #[test]
    fn edits_deletions_and_statuses_change_the_referenced_line() {
        let mut c = conv();
        c.push(text(1, "wamid.1"), 10);
        let edit = MessageContent::Edit {
            original_message_id: "wamid.1".into(),
            body: Some("new".into()),
        };
        assert!(c.amend(&edit));
        assert_eq!(c.transcript[0].text, "new");
        assert!(c.transcript[0].edited);
        assert!(c.amend(&MessageContent::Revoke {
            original_message_id: "wamid.1".into()
        }));
        assert!(c.transcript[0].deleted);
        assert!(!c.amend(&MessageContent::Revoke {
            original_message_id: "wamid.9".into()
        }));
        let id = MessageId::parse("wamid.1").unwrap();
        assert!(c.record_status(&id, DeliveryStatus::Read));
        assert!(c.record_status(&id, DeliveryStatus::Delivered));
        assert_eq!(c.transcript[0].status, Some(DeliveryStatus::Read));
    }
}
