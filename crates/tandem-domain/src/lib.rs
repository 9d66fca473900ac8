//! The vocabulary of Tandem: identifiers, the conversation record, events and errors.
//!
//! This crate owns the data every other crate speaks about and the pure rules that change a
//! conversation record. It does no IO, spawns nothing and knows nothing of HTTP, Redis or
//! redb.
//!
//! Layout:
//! - [`ids`]: validated newtypes for phone number ids, customer ids, phones, business-scoped
//!   user ids, message ids and the conversation id `{phone_number_id}:{customer id}`.
//! - [`customer`]: what a payload says about a customer ([`Identity`]) and the aliases that
//!   resolve to one customer id.
//! - [`time`]: [`Timestamp`] in Unix milliseconds and the injectable [`Clock`].
//! - [`message`]: the content of a WhatsApp message as Tandem keeps it.
//! - [`event`]: events that ingress writes to a conversation's inbox, and account-level facts.
//! - [`conversation`]: the conversation record, its modes and the rules that change it.
//! - [`bot`]: the bot's part of the record: flow position, slots, handoff request, outbox.
//! - [`outbound`]: the content of messages Tandem sends.
//! - [`backoff`]: the retry delays of sends, hook deliveries and LLM calls.
//! - [`error`]: the small shared [`ErrorKind`] every crate's errors map to.

pub mod backoff;
pub mod bot;
pub mod conversation;
pub mod customer;
pub mod error;
pub mod event;
pub mod ids;
pub mod message;
pub mod outbound;
pub mod pause;
pub mod time;

pub use backoff::Backoff;
pub use bot::{
    Assignment, BotState, Burst, FlowPosition, HandoffReason, HandoffRequest, PendingSend,
    Priority, SendAction, SendOrigin, Sentiment, Triage, Urgency,
};
pub use conversation::{Control, Conversation, Mode, PausedBy, Role, TranscriptEntry, Understood};
pub use customer::{Alias, AliasKind, CustomerLookup, Identity, IdentityChange, Resolved};
pub use error::ErrorKind;
pub use event::{
    AccountUpdate, AgentAction, AgentActionKind, ContactUpdate, ConversationEvent, DeadLetter,
    DeliveryStatus, Echo, HistoryMessage, HistoryThread, InboundMessage, StatusUpdate,
};
pub use ids::{
    AgentId, ConversationId, CustomerId, FlowId, IdError, MessageId, Phone, PhoneNumberId, StepId,
    TeamId, UserId, WaId, WabaId,
};
pub use message::MessageContent;
pub use outbound::{ListRow, ListSection, OutboundContent};
pub use pause::PauseRules;
pub use time::{Clock, SystemClock, Timestamp};
