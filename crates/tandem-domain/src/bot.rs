//! What the bot keeps in a conversation record: the flow position with its slots and
//! variables, the opt-out flag, the pending handoff and the outbox of messages waiting to be
//! sent.
//!
//! The outbox lives in the record so that a step's replies are written in the same atomic
//! write as the state that produced them: an event either took effect with all its replies
//! queued, or not at all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, FlowId, MessageId, StepId, TeamId};
use crate::outbound::OutboundContent;
use crate::time::Timestamp;

/// Where a conversation stands in the flows, and what it has collected.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BotState {
    /// The flow step waiting for the customer's answer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<FlowPosition>,
    /// Values collected by `ask` steps and button choices, by slot name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, serde_json::Value>,
    /// Values set by `set` and `call` steps, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vars: BTreeMap<String, serde_json::Value>,
    /// Messages in a row the bot did not understand.
    #[serde(default)]
    pub misses: u32,
    /// When the bot last sent the after-hours notice (sent at most once a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hours_noted_at: Option<Timestamp>,
    /// Customer messages held to be answered as one turn (the burst window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<Burst>,
}

/// Short customer messages in a row, held so they are classified and answered once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burst {
    /// The messages' texts, oldest first.
    pub texts: Vec<String>,
    /// The latest message's id (marked read when the burst is answered).
    pub last_id: MessageId,
    /// When the latest message was sent.
    pub last_sent_at: Timestamp,
    /// When the first message was held.
    pub started_at: Timestamp,
    /// When the burst is answered unless another message extends it.
    pub due: Timestamp,
}

/// A flow step waiting for the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPosition {
    /// The flow's id.
    pub flow: FlowId,
    /// The step's id within the flow.
    pub step: StepId,
    /// Answers already refused at this step.
    #[serde(default)]
    pub tries: u32,
}

/// A request for a person, made by a flow or by the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffRequest {
    /// The team asked for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamId>,
    /// Why.
    pub reason: HandoffReason,
    /// How soon a person should answer.
    pub priority: Priority,
    /// When it was asked for.
    pub at: Timestamp,
    /// When a person first wrote to the customer after the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<Timestamp>,
    /// Set once the customer was told they wait in a queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub queue_noted: bool,
    /// Two or three lines for the person taking over, written by the LLM when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Who the conversation is routed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The team, when routed through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<TeamId>,
    /// The agent, once one is chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// When the agent (or, while none, the team) was set.
    pub at: Timestamp,
}

/// What the LLM read in a customer's message: the record the LLM stage answers with, kept on
/// the conversation for its latest message the LLM was asked about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Triage {
    /// The intent (a flow id, or `oos`).
    pub intent: String,
    /// 0 to 1.
    pub confidence: f32,
    /// ISO 639-1 language code.
    pub language: String,
    /// How urgent the customer's matter is.
    pub urgency: Urgency,
    /// How the customer feels.
    pub sentiment: Sentiment,
    /// The customer needs a person.
    pub needs_human: bool,
}

/// Why a conversation was handed to a person. Stored and shown as its text
/// (`customer_request`, `flow:returns`, or a flow author's own words).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum HandoffReason {
    /// The customer asked for a person (`customer_request`).
    CustomerRequest,
    /// The bot did not understand the customer too many times (`fallback`).
    Fallback,
    /// The LLM says the customer needs a person (`needs_human`).
    NeedsHuman,
    /// The LLM rates the matter urgent (`high_urgency`).
    HighUrgency,
    /// The LLM reads the customer as upset (`negative_sentiment`).
    NegativeSentiment,
    /// An agent or the API routed the conversation (`assigned`).
    Assigned,
    /// A flow's `handoff` step that gave no reason (`flow:<id>`).
    Flow(String),
    /// The reason a flow's `handoff` step gave, in its author's words.
    Stated(String),
}

impl HandoffReason {
    /// The text stored, shown to agents and matched by routing rules.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            Self::CustomerRequest => Cow::Borrowed("customer_request"),
            Self::Fallback => Cow::Borrowed("fallback"),
            Self::NeedsHuman => Cow::Borrowed("needs_human"),
            Self::HighUrgency => Cow::Borrowed("high_urgency"),
            Self::NegativeSentiment => Cow::Borrowed("negative_sentiment"),
            Self::Assigned => Cow::Borrowed("assigned"),
            Self::Flow(flow) => Cow::Owned(format!("flow:{flow}")),
            Self::Stated(words) => Cow::Borrowed(words),
        }
    }

    /// A bounded label for metrics: flows' and authors' reasons fold into `flow`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::CustomerRequest => "customer_request",
            Self::Fallback => "fallback",
            Self::NeedsHuman => "needs_human",
            Self::HighUrgency => "urgency",
            Self::NegativeSentiment => "sentiment",
            Self::Assigned => "assigned",
            Self::Flow(_) | Self::Stated(_) => "flow",
        }
    }
}

impl From<String> for HandoffReason {
    fn from(text: String) -> Self {
        match text.as_str() {
            "customer_request" => Self::CustomerRequest,
            "fallback" => Self::Fallback,
            "needs_human" => Self::NeedsHuman,
            "high_urgency" => Self::HighUrgency,
            "negative_sentiment" => Self::NegativeSentiment,
            "assigned" => Self::Assigned,
            _ => match text.strip_prefix("flow:") {
                Some(flow) => Self::Flow(flow.to_owned()),
                None => Self::Stated(text),
            },
        }
    }
}

impl From<&str> for HandoffReason {
    fn from(text: &str) -> Self {
        Self::from(text.to_owned())
    }
}

impl From<HandoffReason> for String {
    fn from(reason: HandoffReason) -> Self {
        reason.as_text().into_owned()
    }
}

impl std::fmt::Display for HandoffReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_text())
    }
}

impl PartialEq<&str> for HandoffReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_text() == *other
    }
}

/// How soon a person should answer a handoff; the queue serves higher priorities first.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// After everyone else.
    Low,
    /// The usual.
    #[default]
    Normal,
    /// Before normal requests.
    High,
    /// First.
    Urgent,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Self; 4] = [Self::Low, Self::Normal, Self::High, Self::Urgent];

    /// The word used in flows, payloads and routing rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }

    /// The priority named `word`, if any.
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == word)
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent a customer's matter is, as the LLM rates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// Can wait.
    Low,
    /// The usual.
    Normal,
    /// Needs attention soon.
    High,
}

impl Urgency {
    /// The word used in payloads, routing rules and prompts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

/// How a customer feels, as the LLM reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sentiment {
    /// Upset or angry.
    Negative,
    /// Neither.
    Neutral,
    /// Pleased.
    Positive,
}

impl Sentiment {
    /// The word used in payloads and prompts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Negative => "negative",
            Self::Neutral => "neutral",
            Self::Positive => "positive",
        }
    }
}

impl std::fmt::Display for Urgency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Sentiment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who asked for a message to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendOrigin {
    /// The bot: held back while a person has the conversation, and cancelled by a pause.
    Bot,
    /// The bot's confirmation of an opt-out: the one message sent after it.
    OptOutNotice,
    /// A person on the business side, through the agent API: sent while a person has the
    /// conversation, never cancelled by a pause.
    Agent,
}

impl SendOrigin {
    /// Returns true for messages the bot wrote (cancelled when a person takes over).
    pub fn is_bot(self) -> bool {
        matches!(self, Self::Bot | Self::OptOutNotice)
    }
}

/// What a pending send does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SendAction {
    /// Send a message.
    Message {
        /// The content.
        content: OutboundContent,
    },
    /// Mark the customer's message as read and show the typing indicator.
    MarkRead {
        /// The customer's message.
        message_id: MessageId,
    },
}

/// A message waiting in a conversation's outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSend {
    /// Unique within the conversation, increasing.
    pub id: u64,
    /// Who asked for it.
    pub origin: SendOrigin,
    /// What to do.
    pub action: SendAction,
    /// When it was queued.
    pub queued_at: Timestamp,
    /// Failed attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time (set after a failed attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_priorities_are_stored_as_the_words_they_always_were() {
        for text in [
            "customer_request",
            "fallback",
            "needs_human",
            "high_urgency",
            "negative_sentiment",
            "assigned",
            "flow:returns",
            "order system unavailable",
        ] {
            let reason: HandoffReason = serde_json::from_value(text.into()).unwrap();
            assert_eq!(serde_json::to_value(&reason).unwrap(), text);
            assert_eq!(reason, text);
        }
        assert_eq!(HandoffReason::from("flow:returns").label(), "flow");
        assert_eq!(HandoffReason::from("asked nicely").label(), "flow");
        assert_eq!(HandoffReason::HighUrgency.label(), "urgency");
        for p in Priority::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(Priority::parse(p.as_str()), Some(p));
        }
        assert!(Priority::Urgent > Priority::High && Priority::Low < Priority::Normal);
        assert_eq!(Priority::parse("soon"), None);
    }
}
