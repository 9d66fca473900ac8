//! The redb tables and the read/write helpers every transaction uses.

use redb::{TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;

/// Conversation id → conversation record (JSON).
pub(super) const CONVERSATIONS: TableDefinition<'_, &str, &[u8]> =
    TableDefinition::new("conversations");
/// (mode, conversation id) → (), for listing by mode.
pub(super) const BY_MODE: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("conversations_by_mode");
/// (conversation id, seq) → inbox item (JSON).
pub(super) const INBOX: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("inbox");
/// Counters: `seq`, `dead_letter_seq`, `inbox_depth`.
pub(super) const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Deduplication key (also `outbound:{wamid}`) → expiry time.
pub(super) const DEDUPE: TableDefinition<'_, &str, u64> = TableDefinition::new("dedupe");
/// (expiry time, key) → (), to purge expired keys in order.
pub(super) const DEDUPE_EXPIRY: TableDefinition<'_, (u64, &str), ()> =
    TableDefinition::new("dedupe_expiry");
/// Conversation id → due time of its idle timer.
pub(super) const TIMERS: TableDefinition<'_, &str, u64> = TableDefinition::new("timers");
/// (due time, conversation id) → (), to fire timers in order.
pub(super) const TIMER_QUEUE: TableDefinition<'_, (u64, &str), ()> =
    TableDefinition::new("timer_queue");
/// Conversation id → the business's address-book entry (JSON).
pub(super) const CONTACTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("contacts");
/// Account or number id → recent facts (JSON).
pub(super) const ACCOUNTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("accounts");
/// Dead-letter id → dead letter (JSON).
pub(super) const DEAD_LETTERS: TableDefinition<'_, u64, &[u8]> =
    TableDefinition::new("dead_letters");

/// Hook delivery id → hook job (JSON): the hook outbox.
pub(super) const HOOKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("hooks");
/// (due time, hook delivery id) → (), to take due deliveries in order.
pub(super) const HOOK_DUE: TableDefinition<'_, (u64, &str), ()> = TableDefinition::new("hook_due");
/// Hook delivery id → hook job (JSON), given up on.
pub(super) const DEAD_HOOKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("dead_hooks");
/// Agent id → agent state (JSON).
pub(super) const AGENTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("agents");

/// Phone number id → number state (JSON).
pub(super) const NUMBERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("numbers");

/// (tenant, alias kind, alias value) → customer id.
pub(super) const ALIASES: TableDefinition<'_, (&str, &str, &str), &str> =
    TableDefinition::new("customer_aliases");

/// (time in ms, id) → audit entry (JSON): the append-only audit log.
pub(super) const AUDIT: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("audit");
/// Digest of tenant and alias → when its customer was erased (ms).
pub(super) const TOMBSTONES: TableDefinition<'_, &str, u64> = TableDefinition::new("tombstones");

/// (model, digest of a text) → its embedding (little-endian f32s): the semantic stage's
/// cache of example vectors.
pub(super) const EMBEDDINGS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("embeddings");

pub(super) const SEQ: &str = "seq";
/// The last audit entry id given.
pub(super) const AUDIT_SEQ: &str = "audit_seq";
/// Raised by every erasure; ingest refuses batches resolved under an older value.
pub(super) const IDENTITY_EPOCH: &str = "identity_epoch";
/// The schema version of the file (absent before version 2).
pub(super) const SCHEMA: &str = "schema_version";
pub(super) const DEAD_LETTER_SEQ: &str = "dead_letter_seq";
pub(super) const INBOX_DEPTH: &str = "inbox_depth";

pub(super) fn redb_err<E: std::error::Error + Send + Sync + 'static>(
    context: &'static str,
) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::embedded(context, e)
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::corrupt("(encoding)", e))
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::corrupt(what, e))
}

/// Creates every table so read transactions never meet a missing one.
pub(super) fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CONVERSATIONS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(BY_MODE)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(INBOX).map_err(redb_err("creating tables"))?;
    txn.open_table(META).map_err(redb_err("creating tables"))?;
    txn.open_table(DEDUPE)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(DEDUPE_EXPIRY)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(TIMERS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(TIMER_QUEUE)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(CONTACTS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(ACCOUNTS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(DEAD_LETTERS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(HOOKS).map_err(redb_err("creating tables"))?;
    txn.open_table(HOOK_DUE)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(DEAD_HOOKS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(AGENTS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(NUMBERS)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(ALIASES)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(AUDIT).map_err(redb_err("creating tables"))?;
    txn.open_table(TOMBSTONES)
        .map_err(redb_err("creating tables"))?;
    txn.open_table(EMBEDDINGS)
        .map_err(redb_err("creating tables"))?;
    Ok(())
}
