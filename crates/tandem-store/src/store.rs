//! The [`Store`] trait and [`open`], which picks a backend from a URL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tandem_domain::{
    Alias, ContactUpdate, Conversation, ConversationId, CustomerId, CustomerLookup, DeadLetter,
    MessageId, PhoneNumberId, Resolved, Timestamp,
};
use tokio::sync::Notify;

use crate::error::StoreError;
use crate::model::{
    AccountState, AgentState, Claim, CommitOutcome, HookJob, HookSettle, InboxItem, IngestBatch,
    IngestReport, ListQuery, NumberState, NumberTouch, StepCommit, StoreOptions, StoreStats,
};
use crate::privacy::{AuditEntry, Erasure, ErasureReport, Purge, Tombstone};
use crate::{EmbeddedStore, RedisStore};

/// Durable state shared by ingress, the lanes and the API. See the crate docs for guarantees.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Returns the backend's name, `embedded` or `redis`, for logs and metrics labels.
    fn backend(&self) -> &'static str;

    /// Returns the signal raised when work may be waiting (an ingest or a released lane).
    fn work_signal(&self) -> Arc<Notify>;

    /// Stores a webhook delivery atomically: deduplicates each item, appends conversation
    /// events to their inboxes, pauses conversations for human echoes, records contacts,
    /// account facts and dead letters. Durable when it returns.
    async fn ingest(&self, batch: IngestBatch) -> Result<IngestReport, StoreError>;

    /// Finds the customer of each lookup among `tenant`'s aliases, creating customers nobody
    /// knows and attaching new aliases, atomically and in order (a later lookup sees what an
    /// earlier one created). Idempotent: the same lookups again give the same customers and
    /// write nothing. The rule is in the `customers` module docs.
    async fn resolve_customers(
        &self,
        tenant: &str,
        lookups: &[CustomerLookup],
    ) -> Result<Vec<Resolved>, StoreError>;

    /// Returns the customer that owns `alias` in `tenant`.
    async fn customer_of(
        &self,
        tenant: &str,
        alias: &Alias,
    ) -> Result<Option<CustomerId>, StoreError>;

    /// Takes the lane of one conversation with waiting events, for `lease`.
    async fn claim(&self, now: Timestamp, lease: Duration) -> Result<Option<Claim>, StoreError>;

    /// Returns the claimed conversation's record (a new one if it has none) and its oldest
    /// waiting events (at most `max`, oldest first), or `None` when the inbox is empty.
    async fn head(
        &self,
        claim: &Claim,
        now: Timestamp,
        max: usize,
    ) -> Result<Option<(Conversation, Vec<InboxItem>)>, StoreError>;

    /// Writes the result of applying the lane's oldest events and removes them from the inbox,
    /// atomically. Refused with `Conflict` when the record or the inbox head changed since
    /// [`Store::head`], and with `LeaseLost` when the claim is no longer the lane's owner.
    async fn commit(
        &self,
        claim: &Claim,
        commit: StepCommit,
        lease: Duration,
    ) -> Result<CommitOutcome, StoreError>;

    /// Extends the claim's lease to `now + lease` while its owner is still working (a slow
    /// backend call or LLM request inside a step). Returns false when the claim no longer owns
    /// the lane: another worker may run it, and this owner's commit will be refused.
    async fn renew(
        &self,
        claim: &Claim,
        now: Timestamp,
        lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives the lane back; it is offered again at once if events are still waiting.
    async fn release(&self, claim: Claim, now: Timestamp) -> Result<(), StoreError>;

    /// Moves due idle timers into their inboxes as idle checks; returns how many fired.
    async fn fire_due_timers(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError>;

    /// Records the wamid of a message we sent, so an echo of it is not taken for a person.
    async fn record_outbound(&self, id: &MessageId, now: Timestamp) -> Result<(), StoreError>;

    /// Reserves the next send slot of a business number that may send `per_second` messages
    /// a second, and returns when that send may start (`now` or later). Slots are counted in
    /// a sliding one-second window across every process sharing the store: a quiet number may
    /// send a burst of up to `per_second` at once, and no one-second window ever holds more.
    async fn reserve_send_slot(
        &self,
        phone_number_id: &PhoneNumberId,
        now: Timestamp,
        per_second: u32,
    ) -> Result<Timestamp, StoreError>;

    /// Reads one conversation.
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError>;

    /// Lists conversations in id order.
    async fn list_conversations(&self, query: &ListQuery) -> Result<Vec<Conversation>, StoreError>;

    /// Reads the business's address-book entry for `who` (a phone, or a BSUID) on a number.
    async fn contact(
        &self,
        number: &PhoneNumberId,
        who: &str,
    ) -> Result<Option<ContactUpdate>, StoreError>;

    /// Reads the recent facts about an account or number.
    async fn account(&self, account: &str) -> Result<Option<AccountState>, StoreError>;

    /// Lists dead letters, newest first, with their ids.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<(u64, DeadLetter)>, StoreError>;

    /// Returns counts for health and metrics.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Takes up to `limit` hook deliveries due at `now`, oldest due first, and holds them for
    /// `lease`: a delivery not settled by then is offered again (at-least-once).
    async fn due_hooks(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HookJob>, StoreError>;

    /// Records the outcome of an attempt; a delivery already settled is left alone.
    async fn settle_hook(
        &self,
        job: &HookJob,
        settle: HookSettle,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Lists hook deliveries given up on, most recent first.
    async fn dead_hooks(&self, limit: usize) -> Result<Vec<HookJob>, StoreError>;

    /// Moves a dead hook delivery back to the outbox, due now with no attempts counted.
    /// Returns false when there is no such dead delivery.
    async fn redrive_hook(&self, id: &str, now: Timestamp) -> Result<bool, StoreError>;

    /// Writes an agent's presence and round-robin bookkeeping.
    async fn set_agent(&self, state: AgentState) -> Result<(), StoreError>;

    /// Reads every agent's stored state.
    async fn agents(&self) -> Result<Vec<AgentState>, StoreError>;

    /// Reads cached sentence embeddings of `model` by key (a digest of the text), in order;
    /// `None` where none is stored. The bytes are the vector's little-endian `f32`s.
    async fn embeddings(
        &self,
        model: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    /// Caches sentence embeddings of `model`, by key.
    async fn put_embeddings(
        &self,
        model: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError>;

    /// Takes or renews the single leadership of `role` (such as the router) for `ttl`.
    /// Returns true when `holder` leads now. The embedded store has one process, which
    /// always leads.
    async fn lead(
        &self,
        role: &str,
        holder: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Merges activity into a number's state, creating it when new. Times only move forward
    /// and held counts add, so concurrent touches from several processes all count.
    async fn touch_number(
        &self,
        id: &PhoneNumberId,
        touch: NumberTouch,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Reads one number's state.
    async fn number(&self, id: &PhoneNumberId) -> Result<Option<NumberState>, StoreError>;

    /// Reads every known number's state, in id order.
    async fn numbers(&self) -> Result<Vec<NumberState>, StoreError>;

    /// Writes a number's lifecycle (link, reason, reminders, the account events seen) and the
    /// hooks announcing it, atomically, if its revision is still `state.rev`; the stored
    /// revision becomes `state.rev + 1`. Activity times and held counts are kept from the
    /// store (touches win). Returns false when the revision changed (read and decide again).
    async fn update_number(
        &self,
        state: NumberState,
        hooks: Vec<HookJob>,
    ) -> Result<bool, StoreError>;

    /// Appends an entry to the audit log and returns the id it was given.
    async fn append_audit(&self, entry: AuditEntry) -> Result<u64, StoreError>;

    /// Lists up to `limit` audit entries in `(at, id)` order, starting after `(since,
    /// after_id)`: `after_id = 0` includes every entry taken at `since`.
    async fn audit(
        &self,
        since: Timestamp,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Removes up to `limit` entries of `what` older than `before`, oldest first, and
    /// returns how many; fewer than `limit` means none are left.
    async fn purge_older(
        &self,
        what: Purge,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;

    /// Replaces a conversation record (outside its lane: retention trims transcripts) if its
    /// revision is still `expected_rev`; the stored revision becomes `expected_rev + 1`.
    /// Returns false when the record changed or is gone (a lane commit conflicts the same way
    /// with this write).
    async fn rewrite_conversation(
        &self,
        conversation: Conversation,
        expected_rev: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Erases a customer's data, leaves tombstones, raises the identity epoch and queues
    /// `erasure.hooks`. Rules in [`crate::privacy`].
    async fn erase_customer(&self, erasure: Erasure) -> Result<ErasureReport, StoreError>;

    /// Lists the aliases `customer` owns in `tenant`.
    async fn customer_aliases(
        &self,
        tenant: &str,
        customer: &CustomerId,
    ) -> Result<Vec<Alias>, StoreError>;

    /// Lists every customer with an alias in `tenant`, each once, in id order (removing a
    /// tenant erases each).
    async fn tenant_customers(&self, tenant: &str) -> Result<Vec<CustomerId>, StoreError>;

    /// Reads the tombstone an erasure left for `alias` in `tenant`.
    async fn tombstone(&self, tenant: &str, alias: &Alias)
    -> Result<Option<Tombstone>, StoreError>;

    /// Returns the identity epoch, raised by every erasure (0 before the first).
    async fn identity_epoch(&self) -> Result<u64, StoreError>;

    /// Removes one batch of expired deduplication keys (where the backend does not expire them
    /// itself) and returns how many; 0 means none are left.
    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError>;
}

/// Reads the business's address-book entry for a conversation's customer: under the phone
/// when WhatsApp shares it, else under the BSUID.
///
/// # Errors
/// The store's error.
pub async fn contact_for(
    store: &dyn Store,
    conversation: &Conversation,
) -> Result<Option<ContactUpdate>, StoreError> {
    let who = conversation.who();
    let number = conversation.id.phone_number_id();
    if let Some(phone) = &who.phone
        && let Some(found) = store.contact(number, phone.as_str()).await?
    {
        return Ok(Some(found));
    }
    match &who.user_id {
        Some(user) => store.contact(number, user.as_str()).await,
        None => Ok(None),
    }
}

/// Opens the store named by `url`: `redis://…` or `rediss://…` for Redis, anything else is
/// the path of the embedded database file (created, with its directory, if missing).
///
/// # Errors
/// Returns a [`StoreError`] when the file cannot be opened or Redis cannot be reached.
pub async fn open(url: &str, options: StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("redis://")
        || url.starts_with("rediss://")
        || url.starts_with("redis+unix://")
    {
        Ok(Arc::new(RedisStore::connect(url, options).await?))
    } else {
        let path = std::path::PathBuf::from(url);
        let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&path, options))
            .await
            .map_err(|e| StoreError::Config(format!("opening the embedded store failed: {e}")))??;
        Ok(Arc::new(store))
    }
}
