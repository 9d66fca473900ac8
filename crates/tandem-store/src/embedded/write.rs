//! One group commit: every table opened once, counters kept in memory and written once.
//!
//! Opening a redb table and reading a counter cost more than the inserts a webhook needs, so
//! the writer thread opens everything at the start of a group and every job of the group
//! works through the same [`Group`].

use redb::{ReadableTable, Table, WriteTransaction};
use tandem_domain::{Conversation, ConversationId, Timestamp};

use super::tables::*;
use crate::error::StoreError;
use crate::model::{HookJob, InboxItem, NumberState};

/// The open tables and counters of one write transaction.
pub(super) struct Group<'t> {
    pub(super) conversations: Table<'t, &'static str, &'static [u8]>,
    by_mode: Table<'t, (&'static str, &'static str), ()>,
    pub(super) inbox: Table<'t, (&'static str, u64), &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    dedupe: Table<'t, &'static str, u64>,
    dedupe_expiry: Table<'t, (u64, &'static str), ()>,
    timers: Table<'t, &'static str, u64>,
    pub(super) timer_queue: Table<'t, (u64, &'static str), ()>,
    pub(super) contacts: Table<'t, &'static str, &'static [u8]>,
    pub(super) accounts: Table<'t, &'static str, &'static [u8]>,
    pub(super) dead_letters: Table<'t, u64, &'static [u8]>,
    pub(super) hooks: Table<'t, &'static str, &'static [u8]>,
    hook_due: Table<'t, (u64, &'static str), ()>,
    pub(super) dead_hooks: Table<'t, &'static str, &'static [u8]>,
    pub(super) agents: Table<'t, &'static str, &'static [u8]>,
    pub(super) numbers: Table<'t, &'static str, &'static [u8]>,
    /// Opened by the first job that needs it: most groups never touch aliases.
    aliases: Option<Table<'t, (&'static str, &'static str, &'static str), &'static str>>,
    txn: &'t WriteTransaction,
    seq: u64,
    dead_letter_seq: u64,
    depth: u64,
}

fn open<'t, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &'t WriteTransaction,
    table: redb::TableDefinition<'static, K, V>,
) -> Result<Table<'t, K, V>, StoreError> {
    txn.open_table(table).map_err(redb_err("opening a table"))
}

impl<'t> Group<'t> {
    pub(super) fn open(txn: &'t WriteTransaction) -> Result<Self, StoreError> {
        let meta = open(txn, META)?;
        let counter = |name: &str| -> Result<u64, StoreError> {
            Ok(meta
                .get(name)
                .map_err(redb_err("reading a counter"))?
                .map_or(0, |v| v.value()))
        };
        let (seq, dead_letter_seq, depth) = (
            counter(SEQ)?,
            counter(DEAD_LETTER_SEQ)?,
            counter(INBOX_DEPTH)?,
        );
        Ok(Self {
            conversations: open(txn, CONVERSATIONS)?,
            by_mode: open(txn, BY_MODE)?,
            inbox: open(txn, INBOX)?,
            dedupe: open(txn, DEDUPE)?,
            dedupe_expiry: open(txn, DEDUPE_EXPIRY)?,
            timers: open(txn, TIMERS)?,
            timer_queue: open(txn, TIMER_QUEUE)?,
            contacts: open(txn, CONTACTS)?,
            accounts: open(txn, ACCOUNTS)?,
            dead_letters: open(txn, DEAD_LETTERS)?,
            hooks: open(txn, HOOKS)?,
            hook_due: open(txn, HOOK_DUE)?,
            dead_hooks: open(txn, DEAD_HOOKS)?,
            agents: open(txn, AGENTS)?,
            numbers: open(txn, NUMBERS)?,
            aliases: None,
            txn,
            meta,
            seq,
            dead_letter_seq,
            depth,
        })
    }

    /// Opens a table the group does not keep open (one a rare job needs). The job must drop
    /// it before another job of the group opens it again.
    pub(super) fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: redb::TableDefinition<'static, K, V>,
    ) -> Result<Table<'t, K, V>, StoreError> {
        open(self.txn, table)
    }

    /// Reads a counter of the meta table that the group does not keep in memory.
    pub(super) fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(name)
            .map_err(redb_err("reading a counter"))?
            .map_or(0, |v| v.value()))
    }

    /// Writes a counter of the meta table that the group does not keep in memory.
    pub(super) fn set_counter(&mut self, name: &str, value: u64) -> Result<(), StoreError> {
        self.meta
            .insert(name, value)
            .map_err(redb_err("writing a counter"))?;
        Ok(())
    }

    /// Removes a conversation: its record, mode index entry, timer and waiting events.
    /// Returns the record (if it had one) and how many events were waiting.
    pub(super) fn remove_conversation(
        &mut self,
        id: &str,
    ) -> Result<(Option<Conversation>, usize), StoreError> {
        let record = self.read_conversation(id)?;
        if let Some(record) = &record {
            self.conversations
                .remove(id)
                .map_err(redb_err("removing a conversation"))?;
            self.by_mode
                .remove((record.mode().as_str(), id))
                .map_err(redb_err("updating the mode index"))?;
        }
        self.set_timer(id, None)?;
        let seqs = self.head_seqs(id, usize::MAX)?;
        for seq in &seqs {
            self.consume(id, *seq)?;
        }
        Ok((record, seqs.len()))
    }

    /// The customer alias table.
    pub(super) fn aliases(
        &mut self,
    ) -> Result<&mut Table<'t, (&'static str, &'static str, &'static str), &'static str>, StoreError>
    {
        if self.aliases.is_none() {
            self.aliases = Some(open(self.txn, ALIASES)?);
        }
        self.aliases
            .as_mut()
            .ok_or_else(|| StoreError::Protocol("the alias table did not open".into()))
    }

    /// Writes the counters back; the tables close when the group is dropped.
    pub(super) fn finish(mut self) -> Result<(), StoreError> {
        let e = redb_err::<redb::StorageError>;
        self.meta
            .insert(SEQ, self.seq)
            .map_err(e("writing a counter"))?;
        self.meta
            .insert(DEAD_LETTER_SEQ, self.dead_letter_seq)
            .map_err(e("writing a counter"))?;
        self.meta
            .insert(INBOX_DEPTH, self.depth)
            .map_err(e("writing a counter"))?;
        Ok(())
    }

    /// Returns true when `key` was seen and has not expired at `now`.
    pub(super) fn seen(&self, key: &str, now: Timestamp) -> Result<bool, StoreError> {
        let expiry = self
            .dedupe
            .get(key)
            .map_err(redb_err("reading a dedupe key"))?;
        Ok(expiry.is_some_and(|e| e.value() > now.as_millis()))
    }

    /// Remembers `key` until `expires`.
    pub(super) fn remember(&mut self, key: &str, expires: Timestamp) -> Result<(), StoreError> {
        let old = self
            .dedupe
            .insert(key, expires.as_millis())
            .map_err(redb_err("writing a dedupe key"))?
            .map(|v| v.value());
        if let Some(old) = old {
            self.dedupe_expiry
                .remove((old, key))
                .map_err(redb_err("writing a dedupe key"))?;
        }
        self.dedupe_expiry
            .insert((expires.as_millis(), key), ())
            .map_err(redb_err("writing a dedupe key"))?;
        Ok(())
    }

    /// Removes up to `limit` keys that expired before `now`; returns how many.
    pub(super) fn purge(&mut self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let mut expired = Vec::new();
        for row in self
            .dedupe_expiry
            .range(..(now.as_millis(), ""))
            .map_err(redb_err("reading dedupe"))?
            .take(limit)
        {
            let (key, _) = row.map_err(redb_err("reading dedupe"))?;
            let (at, k) = key.value();
            expired.push((at, k.to_owned()));
        }
        for (at, key) in &expired {
            self.dedupe_expiry
                .remove((*at, key.as_str()))
                .map_err(redb_err("purging dedupe"))?;
            self.dedupe
                .remove(key.as_str())
                .map_err(redb_err("purging dedupe"))?;
        }
        Ok(expired.len())
    }

    pub(super) fn read_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let found = self
            .conversations
            .get(id)
            .map_err(redb_err("reading a conversation"))?;
        found.map(|v| decode(id, v.value())).transpose()
    }

    /// Writes a record with the next revision and keeps the mode index in step.
    pub(super) fn write_conversation(
        &mut self,
        previous: Option<&Conversation>,
        mut conversation: Conversation,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let id = conversation.id.to_string();
        conversation.rev = previous.map_or(0, |p| p.rev) + 1;
        conversation.updated_at = now;
        if let Some(previous) = previous.filter(|p| p.mode() != conversation.mode()) {
            self.by_mode
                .remove((previous.mode().as_str(), id.as_str()))
                .map_err(redb_err("updating the mode index"))?;
        }
        if previous.is_none_or(|p| p.mode() != conversation.mode()) {
            self.by_mode
                .insert((conversation.mode().as_str(), id.as_str()), ())
                .map_err(redb_err("updating the mode index"))?;
        }
        let bytes = encode(&conversation)?;
        self.conversations
            .insert(id.as_str(), bytes.as_slice())
            .map_err(redb_err("writing a conversation"))?;
        Ok(())
    }

    /// Sets or clears a conversation's idle timer.
    pub(super) fn set_timer(&mut self, id: &str, due: Option<Timestamp>) -> Result<(), StoreError> {
        let old = self
            .timers
            .remove(id)
            .map_err(redb_err("updating timers"))?
            .map(|v| v.value());
        if let Some(old) = old {
            self.timer_queue
                .remove((old, id))
                .map_err(redb_err("updating timers"))?;
        }
        if let Some(due) = due {
            self.timers
                .insert(id, due.as_millis())
                .map_err(redb_err("updating timers"))?;
            self.timer_queue
                .insert((due.as_millis(), id), ())
                .map_err(redb_err("updating timers"))?;
        }
        Ok(())
    }

    /// Appends an event to a conversation's inbox.
    pub(super) fn enqueue(
        &mut self,
        id: &ConversationId,
        item: &InboxItem,
    ) -> Result<(), StoreError> {
        self.seq += 1;
        self.depth += 1;
        let key = id.to_string();
        let bytes = encode(item)?;
        self.inbox
            .insert((key.as_str(), self.seq), bytes.as_slice())
            .map_err(redb_err("writing the inbox"))?;
        Ok(())
    }

    /// Returns the sequence numbers of a conversation's `n` oldest waiting events.
    pub(super) fn head_seqs(&self, id: &str, n: usize) -> Result<Vec<u64>, StoreError> {
        let range = self
            .inbox
            .range((id, 0)..=(id, u64::MAX))
            .map_err(redb_err("reading the inbox"))?;
        let mut seqs = Vec::with_capacity(n.min(64));
        for row in range.take(n) {
            seqs.push(row.map_err(redb_err("reading the inbox"))?.0.value().1);
        }
        Ok(seqs)
    }

    /// Removes an applied event.
    pub(super) fn consume(&mut self, id: &str, seq: u64) -> Result<(), StoreError> {
        self.inbox
            .remove((id, seq))
            .map_err(redb_err("writing the inbox"))?;
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }

    /// Appends a dead letter.
    pub(super) fn add_dead_letter(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.dead_letter_seq += 1;
        self.dead_letters
            .insert(self.dead_letter_seq, bytes)
            .map_err(redb_err("writing a dead letter"))?;
        Ok(())
    }

    /// Reads a hook delivery of the outbox.
    pub(super) fn hook(&self, id: &str) -> Result<Option<HookJob>, StoreError> {
        let found = self.hooks.get(id).map_err(redb_err("reading a hook"))?;
        found.map(|v| decode(id, v.value())).transpose()
    }

    /// Writes a hook delivery into the outbox (replacing the one with its id).
    pub(super) fn put_hook(&mut self, job: &HookJob) -> Result<(), StoreError> {
        self.remove_hook(&job.id)?;
        let bytes = encode(job)?;
        self.hooks
            .insert(job.id.as_str(), bytes.as_slice())
            .map_err(redb_err("writing a hook"))?;
        self.hook_due
            .insert((job.due.as_millis(), job.id.as_str()), ())
            .map_err(redb_err("writing a hook"))?;
        Ok(())
    }

    /// Removes a hook delivery from the outbox; returns it when it was there.
    pub(super) fn remove_hook(&mut self, id: &str) -> Result<Option<HookJob>, StoreError> {
        let old = self.hook(id)?;
        if let Some(old) = &old {
            self.hooks.remove(id).map_err(redb_err("writing a hook"))?;
            self.hook_due
                .remove((old.due.as_millis(), id))
                .map_err(redb_err("writing a hook"))?;
        }
        Ok(old)
    }

    /// Returns the ids of up to `limit` deliveries due at `now`, oldest due first.
    pub(super) fn due_hook_ids(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for row in self
            .hook_due
            .range(..=(now.as_millis(), "\u{10FFFF}"))
            .map_err(redb_err("reading hooks"))?
            .take(limit)
        {
            let (key, _) = row.map_err(redb_err("reading hooks"))?;
            ids.push(key.value().1.to_owned());
        }
        Ok(ids)
    }

    /// Reads a number's state.
    pub(super) fn number(&self, id: &str) -> Result<Option<NumberState>, StoreError> {
        let found = self.numbers.get(id).map_err(redb_err("reading a number"))?;
        found.map(|v| decode(id, v.value())).transpose()
    }

    /// Writes a number's state.
    pub(super) fn put_number(&mut self, state: &NumberState) -> Result<(), StoreError> {
        let bytes = encode(state)?;
        self.numbers
            .insert(state.phone_number_id.as_str(), bytes.as_slice())
            .map_err(redb_err("writing a number"))?;
        Ok(())
    }
}
