//! What ingress hands on: conversation events for the ordered lanes, and facts about contacts,
//! accounts and unreadable input that are recorded directly.

use serde::{Deserialize, Serialize};

use crate::customer::{Identity, IdentityChange};
use crate::ids::{AgentId, MessageId, PhoneNumberId, TeamId, WaId};
use crate::message::MessageContent;
use crate::time::Timestamp;

/// An event in one conversation's inbox, applied by that conversation's lane in arrival order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConversationEvent {
    /// The customer wrote.
    Customer(InboundMessage),
    /// Someone on the business side wrote from the WhatsApp Business App or a linked device.
    Echo(Echo),
    /// A delivery status for a message we sent.
    Status(StatusUpdate),
    /// Past messages of this conversation imported from the phone.
    History(HistoryThread),
    /// The human-idle timer is due: check whether the bot may resume.
    IdleCheck,
    /// An agent acted through the API, or the router assigned or queued the conversation.
    Agent(AgentAction),
    /// WhatsApp announced new identifiers for the customer (a new BSUID or phone).
    IdentityChanged(Box<IdentityChange>),
}

impl ConversationEvent {
    /// Returns a short name for logs and metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Customer(_) => "customer",
            Self::Echo(_) => "echo",
            Self::Status(_) => "status",
            Self::History(_) => "history",
            Self::IdleCheck => "idle_check",
            Self::Agent(_) => "agent",
            Self::IdentityChanged(_) => "identity_changed",
        }
    }
}

/// Something an agent (through the API) or the router did to a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentAction {
    /// The agent who acted (or was chosen), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// When it was asked for.
    pub at: Timestamp,
    /// What was done.
    #[serde(flatten)]
    pub kind: AgentActionKind,
}

/// The kinds of [`AgentAction`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum AgentActionKind {
    /// A person takes the conversation; the bot stays silent until release or the cap.
    Takeover,
    /// The person hands the conversation back to the bot.
    Release,
    /// The conversation is done: back to the bot, with a fresh start.
    Close,
    /// Route to an agent or a team (the router picks the agent of a team).
    Assign {
        /// The team to queue the conversation for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team: Option<TeamId>,
    },
    /// A person sends a message through Tandem (the Cloud API).
    Message {
        /// What to send.
        content: crate::outbound::OutboundContent,
    },
    /// The router gave the conversation to `agent` (set on the action).
    Routed {
        /// The team it was routed for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team: Option<TeamId>,
    },
    /// The router could not assign anyone yet: tell the customer honestly.
    Queued {
        /// The team waited for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team: Option<TeamId>,
        /// Place in the team's queue, from 1.
        position: usize,
        /// Estimated wait in seconds, when someone is on duty.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wait_seconds: Option<u64>,
        /// When the team is next on duty, when nobody is now (in the team's time zone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_opening: Option<String>,
    },
}

impl AgentActionKind {
    /// Returns a short name for logs, metrics and the transcript.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Takeover => "takeover",
            Self::Release => "release",
            Self::Close => "close",
            Self::Assign { .. } => "assign",
            Self::Message { .. } => "message",
            Self::Routed { .. } => "routed",
            Self::Queued { .. } => "queued",
        }
    }
}

/// A message from the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The message's wamid.
    pub id: MessageId,
    /// When WhatsApp says it was sent.
    pub sent_at: Timestamp,
    /// What it says.
    pub content: MessageContent,
    /// The customer's WhatsApp profile name, when the webhook carried it.
    pub profile_name: Option<String>,
    /// Who sent it: the phone, BSUID and username the webhook carried.
    #[serde(default, skip_serializing_if = "Identity::is_blank")]
    pub from: Identity,
    /// The message this one replies to or was tapped on (`context.id`).
    pub context_id: Option<String>,
    /// Whether WhatsApp marked it as forwarded.
    pub forwarded: bool,
}

/// A message the business sent from the WhatsApp Business App or a linked device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Echo {
    /// The echoed message's wamid.
    pub id: MessageId,
    /// When it was sent.
    pub sent_at: Timestamp,
    /// What it says.
    pub content: MessageContent,
    /// Who it went to: the phone and BSUID the webhook carried.
    #[serde(default, skip_serializing_if = "Identity::is_blank")]
    pub to: Identity,
}

/// The delivery state of a message we sent, ranked so it never moves backwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// A status value Tandem does not know.
    Other,
    /// Accepted by WhatsApp.
    Sent,
    /// Delivered to the customer's phone.
    Delivered,
    /// Read by the customer.
    Read,
    /// A voice message was played.
    Played,
    /// Delivery failed; final.
    Failed,
}

impl DeliveryStatus {
    /// Parses WhatsApp's status string; unknown values become [`DeliveryStatus::Other`].
    pub fn parse(value: &str) -> Self {
        match value {
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "played" => Self::Played,
            "failed" => Self::Failed,
            _ => Self::Other,
        }
    }

    /// Returns the status that results from learning `next` after `self`: the higher one.
    pub fn advance(self, next: DeliveryStatus) -> DeliveryStatus {
        self.max(next)
    }
}

/// A `statuses[]` item: what happened to a message we sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The wamid our send call returned.
    pub message_id: MessageId,
    /// The new status.
    pub status: DeliveryStatus,
    /// The raw status string, kept when it is one Tandem does not know.
    pub status_raw: String,
    /// When it happened.
    pub at: Timestamp,
    /// Error codes of a failed status (for example 131047).
    pub error_codes: Vec<i64>,
    /// The `biz_opaque_callback_data` we set on the send.
    pub callback_data: Option<String>,
    /// Who the message went to: `recipient_id`, `recipient_user_id` and `contacts[]`.
    #[serde(default, skip_serializing_if = "Identity::is_blank")]
    pub recipient: Identity,
}

/// One conversation's share of a history-sync chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryThread {
    /// 0 = day 0–1, 1 = day 1–90, 2 = day 90–180.
    pub phase: Option<u8>,
    /// The chunk's order within its phase; chunks arrive out of order.
    pub chunk_order: Option<u32>,
    /// Sync progress in percent.
    pub progress: Option<u8>,
    /// The messages, in the order the chunk lists them.
    pub messages: Vec<HistoryMessage>,
    /// The customer of the thread (`threads[].id`: a phone, or a BSUID).
    #[serde(default, skip_serializing_if = "Identity::is_blank")]
    pub customer: Identity,
}

/// One past message from a history import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// The message's wamid.
    pub id: MessageId,
    /// When the device says it was sent.
    pub sent_at: Timestamp,
    /// True when the business sent it, false when the customer did.
    pub from_business: bool,
    /// What it says.
    pub content: MessageContent,
    /// `history_context.status`, such as `READ`.
    pub status: Option<String>,
}

/// A contact added, edited or removed in the Business App's address book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactUpdate {
    /// The business number whose address book changed.
    pub phone_number_id: PhoneNumberId,
    /// The contact's number.
    pub wa_id: WaId,
    /// The full name the business gave the contact; absent on removal.
    pub full_name: Option<String>,
    /// The first name; absent on removal.
    pub first_name: Option<String>,
    /// True when the contact was removed.
    pub removed: bool,
    /// When the change happened on the phone.
    pub at: Timestamp,
}

/// A fact about a business account or number that is not part of one conversation:
/// `account_update` events, top-level `errors`, a declined history sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountUpdate {
    /// The WABA id, or the phone number id for number-level facts.
    pub account: String,
    /// The event name, such as `PARTNER_REMOVED` or `HISTORY_DECLINED`.
    pub event: String,
    /// When it happened.
    pub at: Timestamp,
    /// The change's `value` as received.
    pub raw: serde_json::Value,
}

/// Input that was correctly signed but could not be used; kept raw so nothing is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When the webhook was received.
    pub received_at: Timestamp,
    /// Why it was kept: `unparseable_body`, `unparseable_change` or `unknown_field`.
    pub reason: String,
    /// The webhook field, when known.
    pub field: Option<String>,
    /// What was wrong, for people reading the list.
    pub detail: String,
    /// The raw input: the whole body, or the change that could not be read.
    pub body: String,
    /// True when `body` is base64 because the raw bytes were not UTF-8.
    pub body_base64: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_status_never_moves_backwards() {
        let s = DeliveryStatus::Read.advance(DeliveryStatus::Delivered);
        assert_eq!(s, DeliveryStatus::Read);
        assert_eq!(
            DeliveryStatus::Delivered.advance(DeliveryStatus::Failed),
            DeliveryStatus::Failed
        );
        assert_eq!(DeliveryStatus::parse("played"), DeliveryStatus::Played);
        assert_eq!(DeliveryStatus::parse("weird"), DeliveryStatus::Other);
    }
}
