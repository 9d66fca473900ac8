//! The values that go in and out of a [`crate::Store`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tandem_domain::{
    AccountUpdate, ContactUpdate, Conversation, ConversationEvent, ConversationId, DeadLetter,
    MessageId, Mode, PausedBy, PhoneNumberId, Timestamp,
};

/// Settings every backend shares.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long an event identity is remembered for deduplication (Meta retries for 7 days).
    pub dedupe_ttl: Duration,
    /// How many transcript lines a conversation keeps.
    pub transcript_cap: usize,
    /// Prefix of every Redis key, so several deployments or tests can share one server.
    pub redis_prefix: String,
    /// Timeout of every Redis call.
    pub redis_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            dedupe_ttl: Duration::from_secs(7 * 24 * 3600),
            transcript_cap: 200,
            redis_prefix: "tandem:v1".to_owned(),
            redis_timeout: Duration::from_secs(2),
        }
    }
}

/// Everything one webhook delivery asks to store, written atomically.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    /// When the webhook was received.
    pub received_at: Timestamp,
    /// The items, in the order the webhook listed them.
    pub items: Vec<IngestItem>,
    /// The identity epoch its customers were resolved under; the store refuses the batch
    /// when an erasure has raised the epoch since ([`crate::StoreError::StaleIdentities`]).
    /// `None` when no item was resolved through aliases.
    pub identity_epoch: Option<u64>,
}

/// One item of a delivery, with the identity it is deduplicated by.
#[derive(Debug, Clone)]
pub struct IngestItem {
    /// Identity, stable across Meta's retries.
    pub key: String,
    /// What to store.
    pub kind: IngestKind,
}

/// What an ingested item is.
// Conversation events are most of what is ingested and are moved a few times each, never
// kept in bulk: boxing them would cost an allocation per event for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum IngestKind {
    /// An event appended to a conversation's inbox.
    Conversation {
        /// The conversation.
        conversation: ConversationId,
        /// The event.
        event: ConversationEvent,
        /// Set for a human echo: pause the conversation in the same write.
        pause: Option<PauseOnIngest>,
    },
    /// An address-book change (last writer by timestamp wins).
    Contact(ContactUpdate),
    /// An account or number fact, appended to that account's recent events.
    Account(AccountUpdate),
    /// Signed input kept raw.
    DeadLetter(DeadLetter),
}

/// A pause applied at ingress (a human echo, an agent's take-over or message), unless the
/// echo is of a message we sent ourselves.
#[derive(Debug, Clone)]
pub struct PauseOnIngest {
    /// Who paused.
    pub by: PausedBy,
    /// For an echo: its wamid, looked up in the outbound registry.
    pub echo_id: Option<MessageId>,
    /// How long the pause holds ([`tandem_domain::PauseRules::hold`]).
    pub rules: std::sync::Arc<tandem_domain::PauseRules>,
}

/// What happened to one ingested item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Stored.
    Stored,
    /// Stored, and its conversation is now paused for a human.
    Paused,
    /// Stored as an echo of our own send: not a person, no pause.
    OwnEcho,
    /// Already seen within the deduplication window; nothing written.
    Duplicate,
}

/// The outcome of every item of a batch, in order.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    /// One outcome per item.
    pub outcomes: Vec<ItemOutcome>,
}

/// An event waiting in a conversation's inbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    /// Position in the store-wide arrival order.
    #[serde(skip)]
    pub seq: u64,
    /// When ingress stored it (the acknowledgement time).
    pub received_at: Timestamp,
    /// True for an echo whose wamid is in the outbound registry.
    #[serde(default)]
    pub own_echo: bool,
    /// The event.
    pub event: ConversationEvent,
}

/// The right to run one conversation's lane until the lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The conversation.
    pub conversation: ConversationId,
    /// Fencing token; a commit with a stale token is refused.
    pub token: String,
}

/// What to do with the conversation's timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerChange {
    /// Leave it as it is.
    Keep,
    /// Fire an idle check at this time.
    Set(Timestamp),
    /// Remove it.
    Clear,
}

/// The result of applying the oldest events of a lane, in order.
#[derive(Debug, Clone)]
pub struct StepCommit {
    /// When the step was applied.
    pub now: Timestamp,
    /// The inbox items applied: the lane's oldest ones, oldest first. Empty for a commit
    /// that only changes the record (the sender's bookkeeping of the outbox).
    pub seqs: Vec<u64>,
    /// The record revision the step was computed from.
    pub expected_rev: u64,
    /// The new record; the store sets its revision.
    pub conversation: Conversation,
    /// The timer change.
    pub timer: TimerChange,
    /// Wamids of messages just sent, added to the outbound registry in the same write.
    pub outbound: Vec<MessageId>,
    /// Hook deliveries the step produced, added to the hook outbox in the same write.
    pub hooks: Vec<HookJob>,
}

/// One delivery of one event to one hook target, waiting in the durable hook outbox (or,
/// after too many failed attempts, in the hook dead-letter list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookJob {
    /// Unique: `{event_id}.{target}`.
    pub id: String,
    /// The event's id, sent as the `Idempotency-Key` (stable across retries).
    pub event_id: String,
    /// The event name, such as `conversation.assigned`.
    pub event: String,
    /// The name of the hook target it goes to.
    pub target: String,
    /// The JSON body, sent and signed exactly as stored.
    pub body: String,
    /// When the event happened.
    pub created_at: Timestamp,
    /// When the next attempt is due.
    pub due: Timestamp,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What became of a hook delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSettle {
    /// The receiver answered 2xx: the delivery leaves the outbox.
    Delivered,
    /// Failed; try again at `due`.
    Retry {
        /// When to try again.
        due: Timestamp,
        /// Why it failed.
        error: String,
    },
    /// Failed for the last time: move it to the dead-letter list.
    Dead {
        /// Why it failed.
        error: String,
    },
}

/// Whether an agent takes conversations now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Takes new conversations (within capacity and schedule).
    Online,
    /// Keeps the conversations they have; takes no new ones.
    Away,
    /// Not working.
    Offline,
}

impl Presence {
    /// Parses `online`, `away` or `offline`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "online" => Some(Self::Online),
            "away" => Some(Self::Away),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }
}

/// What the store keeps about an agent (the rest is configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The agent's id, as configured.
    pub agent: String,
    /// Set through the API.
    pub presence: Presence,
    /// When the presence last changed.
    pub since: Timestamp,
    /// When the router last gave the agent a conversation (round-robin order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_assigned_at: Option<Timestamp>,
}

/// Whether a step was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written: the event took effect and left the inbox.
    Applied,
    /// The record changed meanwhile (for example an echo paused it): read and apply again.
    Conflict,
    /// The lease expired and another worker owns the lane now: stop.
    LeaseLost,
}

/// A page of conversations.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Only conversations in this mode.
    pub mode: Option<Mode>,
    /// Start after this id (ids are listed in ascending order).
    pub after: Option<ConversationId>,
    /// At most this many.
    pub limit: usize,
}

/// The recent facts about one account or number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountState {
    /// The WABA id or phone number id.
    pub account: String,
    /// The latest events, oldest first (at most [`AccountState::KEEP`]).
    pub events: Vec<AccountUpdate>,
}

impl AccountState {
    /// How many events an account keeps.
    pub const KEEP: usize = 50;

    /// Adds an event in time order and drops the oldest beyond [`AccountState::KEEP`].
    pub fn record(&mut self, update: AccountUpdate) {
        let index = self.events.partition_point(|e| e.at <= update.at);
        self.events.insert(index, update);
        if self.events.len() > Self::KEEP {
            let excess = self.events.len() - Self::KEEP;
            self.events.drain(..excess);
        }
    }
}

/// The state of a business number's link between the WhatsApp Business App and the Cloud
/// API (Coexistence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    /// Linked and recently used from the phone.
    Linked,
    /// Linked, but the phone has not been seen for the heartbeat time: the link may drop.
    AtRisk,
    /// Meta removed the link (`PARTNER_REMOVED`); sends are held.
    Disconnected,
    /// The companion was removed (`ACCOUNT_OFFBOARDED`); sends are held until reconnected.
    Offboarded,
}

impl Link {
    /// Every state, in a stable order.
    pub const ALL: [Link; 4] = [
        Link::Linked,
        Link::AtRisk,
        Link::Disconnected,
        Link::Offboarded,
    ];

    /// The state's snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linked => "linked",
            Self::AtRisk => "at_risk",
            Self::Disconnected => "disconnected",
            Self::Offboarded => "offboarded",
        }
    }

    /// True when sends for the number must be held.
    pub fn holds_sends(self) -> bool {
        matches!(self, Self::Disconnected | Self::Offboarded)
    }
}

/// What Tandem knows about one business number (phone number id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberState {
    /// The phone number id.
    pub phone_number_id: PhoneNumberId,
    /// The WABA the number belongs to (from webhooks' `entry.id`), once seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waba_id: Option<String>,
    /// The link's state.
    pub link: Link,
    /// Why it is in that state (Meta's event and reason, or the heartbeat rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state last changed.
    pub changed_at: Timestamp,
    /// When Tandem first saw the number.
    pub first_seen_at: Timestamp,
    /// The last activity seen from the phone (echoes, history, contact sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_phone_at: Option<Timestamp>,
    /// The last message Tandem sent through the Cloud API for the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_api_at: Option<Timestamp>,
    /// Sends held back while the number was disconnected.
    #[serde(default)]
    pub held_sends: u64,
    /// The time of the latest account event applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_seen_at: Option<Timestamp>,
    /// How many account events at exactly `account_seen_at` were applied (several can share
    /// one second).
    #[serde(default)]
    pub account_seen_count: u32,
    /// When the owner was reminded to open the Business App (once per at-risk stretch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminded_at: Option<Timestamp>,
    /// Onboarding through Tandem (`POST /v1/numbers`): what was done, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onboarding: Option<Onboarding>,
    /// Incremented by every lifecycle write; [`crate::Store::update_number`] is guarded by it.
    #[serde(default)]
    pub rev: u64,
}

/// What onboarding did for a number. Each sync is requested at most once: Meta allows one
/// request per onboarding, within about 24 hours of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Onboarding {
    /// When the number was onboarded (Tandem's first onboarding call for it).
    pub started_at: Timestamp,
    /// The tenant it was onboarded into, when the deployment serves several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// True for a number shared with the WhatsApp Business App (Coexistence).
    pub coexistence: bool,
    /// The number as Meta shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_phone_number: Option<String>,
    /// The business's verified name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_name: Option<String>,
    /// When the app was subscribed to the account's webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed_at: Option<Timestamp>,
    /// The contacts sync.
    #[serde(default)]
    pub contacts: SyncRequest,
    /// The history sync.
    #[serde(default)]
    pub history: SyncRequest,
}

/// Where a one-time sync request stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SyncRequest {
    /// Not asked for (yet).
    #[default]
    NotRequested,
    /// Being asked for since `at`; an answer was not recorded (the process stopped
    /// meanwhile). Never asked again: Meta allows one request.
    Requesting {
        /// When the request started.
        at: Timestamp,
    },
    /// Meta accepted the request.
    Requested {
        /// When.
        at: Timestamp,
        /// Meta's request id.
        request_id: String,
    },
    /// Meta refused it.
    Failed {
        /// When.
        at: Timestamp,
        /// Meta's error code, when it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i64>,
        /// What Meta said.
        error: String,
    },
}

impl SyncRequest {
    /// True once a request was made (whatever came of it): it is never made again.
    pub fn attempted(&self) -> bool {
        !matches!(self, Self::NotRequested)
    }
}

impl NumberState {
    /// A number seen for the first time at `now`: linked.
    pub fn new(phone_number_id: PhoneNumberId, now: Timestamp) -> Self {
        Self {
            phone_number_id,
            waba_id: None,
            link: Link::Linked,
            reason: None,
            changed_at: now,
            first_seen_at: now,
            last_phone_at: None,
            last_api_at: None,
            held_sends: 0,
            account_seen_at: None,
            account_seen_count: 0,
            reminded_at: None,
            onboarding: None,
            rev: 0,
        }
    }
}

/// Activity seen for a number, merged into its state (times only move forward; counts add).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumberTouch {
    /// The number's WABA, when the webhook named it.
    pub waba_id: Option<String>,
    /// Activity from the phone.
    pub phone_at: Option<Timestamp>,
    /// A send through the Cloud API.
    pub api_at: Option<Timestamp>,
    /// Sends held back.
    pub held: u64,
}

/// Counts for health and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Events stored but not yet applied by their lane.
    pub inbox_depth: u64,
    /// Entries in the dead-letter list.
    pub dead_letters: u64,
    /// Conversations known.
    pub conversations: u64,
    /// Hook deliveries waiting (or being attempted).
    pub hooks_pending: u64,
    /// Hook deliveries given up on, waiting for a re-drive.
    pub hooks_dead: u64,
}

/// Applies a pause requested at ingress to a record. For an echo this also records the
/// message in the transcript, so both are in place when the webhook is answered.
pub fn apply_pause(
    record: &mut Conversation,
    event: &ConversationEvent,
    pause: &PauseOnIngest,
    now: Timestamp,
    cap: usize,
) {
    match event {
        ConversationEvent::Echo(echo) => record.record_echo(echo, now, &pause.rules, cap),
        _ => record.record_human_activity(pause.by, now, &pause.rules),
    }
}

/// The key of an address-book entry: the business number and the phone (or BSUID) the
/// Business App keeps it under. The same text as the conversation id of customers stored
/// before aliases existed.
pub(crate) fn contact_key(number: &PhoneNumberId, who: &str) -> String {
    format!("{number}:{who}")
}

/// Returns whether a contact change should replace the stored one (last writer by time wins).
pub(crate) fn contact_wins(stored: Option<&ContactUpdate>, update: &ContactUpdate) -> bool {
    stored.is_none_or(|s| s.at <= update.at)
}

/// Gives the next send slot of a number whose latest slots (oldest first, at most
/// `per_second`) are `recent`, in a sliding one-second window: `now`, unless `per_second`
/// slots already lie in the second before, then one second after the oldest of them (and
/// never before the latest). Updates `recent`.
pub(crate) fn next_slot(
    recent: &mut std::collections::VecDeque<u64>,
    now: Timestamp,
    per_second: u32,
) -> Timestamp {
    let rate = per_second.max(1) as usize;
    let mut slot = now.as_millis();
    if recent.len() >= rate
        && let Some(oldest) = recent.get(recent.len() - rate)
    {
        slot = slot.max(oldest + 1000);
    }
    if let Some(last) = recent.back() {
        slot = slot.max(*last);
    }
    recent.push_back(slot);
    while recent.len() > rate {
        recent.pop_front();
    }
    Timestamp(slot)
}

/// Merges `touch` into `state` (a new number when `None`).
pub(crate) fn touched(
    state: Option<NumberState>,
    id: &PhoneNumberId,
    touch: &NumberTouch,
    now: Timestamp,
) -> NumberState {
    let mut state = state.unwrap_or_else(|| NumberState::new(id.clone(), now));
    if touch.waba_id.is_some() {
        state.waba_id.clone_from(&touch.waba_id);
    }
    let later = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    state.last_phone_at = later(state.last_phone_at, touch.phone_at);
    state.last_api_at = later(state.last_api_at, touch.api_at);
    state.held_sends += touch.held;
    state
}
