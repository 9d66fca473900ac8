//! The redb tables and the read/write helpers every transaction uses.

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tandem_domain::{Conversation, Timestamp};

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

pub(super) const SEQ: &str = "seq";
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
    Ok(())
}

/// Adds `delta` to a counter and returns the new value.
pub(super) fn bump(txn: &WriteTransaction, name: &str, delta: i64) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META).map_err(redb_err("opening meta"))?;
    let current = meta
        .get(name)
        .map_err(redb_err("reading a counter"))?
        .map_or(0, |v| v.value());
    let next = current.saturating_add_signed(delta);
    meta.insert(name, next)
        .map_err(redb_err("writing a counter"))?;
    Ok(next)
}

pub(super) fn read_conversation(
    txn: &WriteTransaction,
    id: &str,
) -> Result<Option<Conversation>, StoreError> {
    let table = txn
        .open_table(CONVERSATIONS)
        .map_err(redb_err("opening conversations"))?;
    let found = table.get(id).map_err(redb_err("reading a conversation"))?;
    found.map(|v| decode(id, v.value())).transpose()
}

/// Writes a record with the next revision and keeps the mode index in step.
pub(super) fn write_conversation(
    txn: &WriteTransaction,
    previous: Option<&Conversation>,
    mut conversation: Conversation,
    now: Timestamp,
) -> Result<(), StoreError> {
    let id = conversation.id.to_string();
    conversation.rev = previous.map_or(0, |p| p.rev) + 1;
    conversation.updated_at = now;
    let mut by_mode = txn
        .open_table(BY_MODE)
        .map_err(redb_err("opening the mode index"))?;
    if let Some(previous) = previous {
        by_mode
            .remove((previous.mode.as_str(), id.as_str()))
            .map_err(redb_err("updating the mode index"))?;
    }
    by_mode
        .insert((conversation.mode.as_str(), id.as_str()), ())
        .map_err(redb_err("updating the mode index"))?;
    let mut table = txn
        .open_table(CONVERSATIONS)
        .map_err(redb_err("opening conversations"))?;
    table
        .insert(id.as_str(), encode(&conversation)?.as_slice())
        .map_err(redb_err("writing a conversation"))?;
    Ok(())
}

/// Sets or clears a conversation's idle timer.
pub(super) fn set_timer(
    txn: &WriteTransaction,
    id: &str,
    due: Option<Timestamp>,
) -> Result<(), StoreError> {
    let mut timers = txn.open_table(TIMERS).map_err(redb_err("opening timers"))?;
    let mut queue = txn
        .open_table(TIMER_QUEUE)
        .map_err(redb_err("opening timers"))?;
    if let Some(old) = timers.remove(id).map_err(redb_err("updating timers"))? {
        queue
            .remove((old.value(), id))
            .map_err(redb_err("updating timers"))?;
    }
    if let Some(due) = due {
        timers
            .insert(id, due.as_millis())
            .map_err(redb_err("updating timers"))?;
        queue
            .insert((due.as_millis(), id), ())
            .map_err(redb_err("updating timers"))?;
    }
    Ok(())
}

/// Returns true when `key` was seen and has not expired at `now`.
pub(super) fn seen(
    dedupe: &Table<'_, &str, u64>,
    key: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let expiry = dedupe.get(key).map_err(redb_err("reading a dedupe key"))?;
    Ok(expiry.is_some_and(|e| e.value() > now.as_millis()))
}

/// Remembers `key` until `expires`.
pub(super) fn remember(
    txn: &WriteTransaction,
    key: &str,
    expires: Timestamp,
) -> Result<(), StoreError> {
    let mut dedupe = txn.open_table(DEDUPE).map_err(redb_err("opening dedupe"))?;
    let mut expiry = txn
        .open_table(DEDUPE_EXPIRY)
        .map_err(redb_err("opening dedupe"))?;
    if let Some(old) = dedupe
        .insert(key, expires.as_millis())
        .map_err(redb_err("writing a dedupe key"))?
    {
        expiry
            .remove((old.value(), key))
            .map_err(redb_err("writing a dedupe key"))?;
    }
    expiry
        .insert((expires.as_millis(), key), ())
        .map_err(redb_err("writing a dedupe key"))?;
    Ok(())
}
