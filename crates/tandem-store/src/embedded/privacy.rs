//! The audit log, erasure, retention purges and record rewrites of the embedded store (the
//! rules are in [`crate::privacy`]). Writes run in the writer thread's group.

use redb::{ReadTransaction, ReadableTable};
use tandem_domain::{Alias, AliasKind, Conversation, ConversationId, DeadLetter, Timestamp};

use super::LaneDelta;
use super::tables::*;
use super::write::Group;
use crate::error::StoreError;
use crate::model::{HookJob, contact_key};
use crate::privacy::{
    AuditEntry, Erasure, ErasureReport, Purge, Tombstone, hook_names, letter_names, tombstone_key,
};

/// Appends an audit entry with the next id.
pub(super) fn append_audit(
    group: &mut Group<'_>,
    mut entry: AuditEntry,
) -> Result<u64, StoreError> {
    let id = group.counter(AUDIT_SEQ)? + 1;
    group.set_counter(AUDIT_SEQ, id)?;
    entry.id = id;
    let bytes = encode(&entry)?;
    group
        .table(AUDIT)?
        .insert((entry.at.as_millis(), id), bytes.as_slice())
        .map_err(redb_err("writing the audit log"))?;
    Ok(id)
}

/// Lists entries after `(since, after_id)` in `(at, id)` order.
pub(super) fn audit(
    txn: &ReadTransaction,
    since: Timestamp,
    after_id: u64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let table = txn
        .open_table(AUDIT)
        .map_err(redb_err("opening the audit log"))?;
    let start = (since.as_millis(), after_id.saturating_add(1));
    let mut out = Vec::new();
    for row in table
        .range(start..)
        .map_err(redb_err("reading the audit log"))?
        .take(limit)
    {
        let (_, value) = row.map_err(redb_err("reading the audit log"))?;
        out.push(decode("audit entry", value.value())?);
    }
    Ok(out)
}

/// Removes up to `limit` entries of `what` older than `before`, oldest first.
pub(super) fn purge(
    group: &mut Group<'_>,
    what: Purge,
    before: Timestamp,
    limit: usize,
) -> Result<usize, StoreError> {
    let cutoff = before.as_millis();
    match what {
        Purge::Audit => {
            let mut table = group.table(AUDIT)?;
            let mut old = Vec::new();
            for row in table
                .range(..(cutoff, 0))
                .map_err(redb_err("reading the audit log"))?
                .take(limit)
            {
                old.push(row.map_err(redb_err("reading the audit log"))?.0.value());
            }
            for key in &old {
                table
                    .remove(*key)
                    .map_err(redb_err("purging the audit log"))?;
            }
            Ok(old.len())
        }
        Purge::DeadLetters => {
            // Ids grow with arrival, so the oldest come first; stop at the first young one.
            let mut old = Vec::new();
            for row in group
                .dead_letters
                .iter()
                .map_err(redb_err("reading dead letters"))?
                .take(limit)
            {
                let (id, value) = row.map_err(redb_err("reading dead letters"))?;
                let letter: DeadLetter = decode("dead letter", value.value())?;
                if letter.received_at.as_millis() >= cutoff {
                    break;
                }
                old.push(id.value());
            }
            for id in &old {
                group
                    .dead_letters
                    .remove(*id)
                    .map_err(redb_err("purging dead letters"))?;
            }
            Ok(old.len())
        }
        Purge::DeadHooks => {
            let mut old = Vec::new();
            for row in group
                .dead_hooks
                .iter()
                .map_err(redb_err("reading dead hooks"))?
            {
                let (id, value) = row.map_err(redb_err("reading dead hooks"))?;
                let job: HookJob = decode(id.value(), value.value())?;
                if job.due.as_millis() < cutoff {
                    old.push(id.value().to_owned());
                    if old.len() == limit {
                        break;
                    }
                }
            }
            for id in &old {
                group
                    .dead_hooks
                    .remove(id.as_str())
                    .map_err(redb_err("purging dead hooks"))?;
            }
            Ok(old.len())
        }
    }
}

/// Replaces a record if its revision is still `expected_rev`.
pub(super) fn rewrite(
    group: &mut Group<'_>,
    conversation: Conversation,
    expected_rev: u64,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let key = conversation.id.to_string();
    let previous = group.read_conversation(&key)?;
    match previous {
        Some(previous) if previous.rev == expected_rev => {
            group.write_conversation(Some(&previous), conversation, now)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Erases a customer (see [`crate::privacy`]).
pub(super) fn erase(
    group: &mut Group<'_>,
    erasure: Erasure,
    delta: &mut LaneDelta,
) -> Result<ErasureReport, StoreError> {
    let mut report = ErasureReport::default();
    let customer = erasure.customer.as_str().to_owned();
    let tenant = erasure.tenant.as_str();

    // The customer's aliases in the tenant.
    let aliases = aliases_of(&*group.aliases()?, tenant, &customer)?;

    // Every conversation of the customer, on any number: ids end in `:{customer}`.
    let suffix = format!(":{customer}");
    let mut ids: Vec<String> = Vec::new();
    for row in group
        .conversations
        .iter()
        .map_err(redb_err("reading conversations"))?
    {
        let (key, _) = row.map_err(redb_err("reading conversations"))?;
        if key.value().ends_with(&suffix) {
            ids.push(key.value().to_owned());
        }
    }
    for row in group.inbox.iter().map_err(redb_err("reading the inbox"))? {
        let (key, _) = row.map_err(redb_err("reading the inbox"))?;
        let id = key.value().0;
        if id.ends_with(&suffix) {
            ids.push(id.to_owned());
        }
    }
    ids.sort();
    ids.dedup();
    let mut values: Vec<String> = aliases.iter().map(|a| a.value.clone()).collect();
    for id in &ids {
        let (record, queued) = group.remove_conversation(id)?;
        let parsed =
            ConversationId::parse(id).map_err(|e| StoreError::corrupt("conversation id", e))?;
        if let Some(record) = record {
            report.conversations += 1;
            report.transcript_lines += record.transcript.len();
            let who = record.who();
            values.extend(who.phone.map(|p| p.as_str().to_owned()));
            values.extend(who.user_id.map(|u| u.as_str().to_owned()));
        }
        report.queued_events += queued;
        if queued > 0 {
            delta.consumed.push((parsed.clone(), queued as u64));
        }
        report.conversation_ids.push(parsed);
    }
    values.sort();
    values.dedup();

    // Address-book entries: under each number the customer wrote to, by phone or BSUID.
    for id in &report.conversation_ids {
        for value in &values {
            let key = contact_key(id.phone_number_id(), value);
            if group
                .contacts
                .remove(key.as_str())
                .map_err(redb_err("removing a contact"))?
                .is_some()
            {
                report.contacts += 1;
            }
        }
    }

    // Hook deliveries about the customer, pending or dead.
    let mut pending = Vec::new();
    for row in group.hooks.iter().map_err(redb_err("reading hooks"))? {
        let (id, value) = row.map_err(redb_err("reading hooks"))?;
        let job: HookJob = decode(id.value(), value.value())?;
        if hook_names(&job, &erasure.customer) {
            pending.push(job.id);
        }
    }
    for id in &pending {
        group.remove_hook(id)?;
    }
    let mut dead = Vec::new();
    for row in group
        .dead_hooks
        .iter()
        .map_err(redb_err("reading dead hooks"))?
    {
        let (id, value) = row.map_err(redb_err("reading dead hooks"))?;
        let job: HookJob = decode(id.value(), value.value())?;
        if hook_names(&job, &erasure.customer) {
            dead.push(job.id);
        }
    }
    for id in &dead {
        group
            .dead_hooks
            .remove(id.as_str())
            .map_err(redb_err("removing a dead hook"))?;
    }
    report.hooks = pending.len() + dead.len();

    // Dead letters naming one of its identifiers.
    let mut letters = Vec::new();
    for row in group
        .dead_letters
        .iter()
        .map_err(redb_err("reading dead letters"))?
    {
        let (id, value) = row.map_err(redb_err("reading dead letters"))?;
        let letter: DeadLetter = decode("dead letter", value.value())?;
        if letter_names(&letter.body, &values) {
            letters.push(id.value());
        }
    }
    for id in &letters {
        group
            .dead_letters
            .remove(*id)
            .map_err(redb_err("removing a dead letter"))?;
    }
    report.dead_letters = letters.len();

    // Aliases go; tombstones stay.
    {
        let table = group.aliases()?;
        for alias in &aliases {
            table
                .remove((tenant, alias.kind.as_str(), alias.value.as_str()))
                .map_err(redb_err("removing an alias"))?;
        }
    }
    {
        let mut tombstones = group.table(TOMBSTONES)?;
        for alias in &aliases {
            tombstones
                .insert(
                    tombstone_key(tenant, alias).as_str(),
                    erasure.now.as_millis(),
                )
                .map_err(redb_err("writing a tombstone"))?;
        }
    }
    report.aliases = aliases.len();
    let epoch = group.counter(IDENTITY_EPOCH)? + 1;
    group.set_counter(IDENTITY_EPOCH, epoch)?;
    for hook in &erasure.hooks {
        group.put_hook(hook)?;
    }
    Ok(report)
}

/// Every customer owning an alias in `tenant`, each once, in id order.
pub(super) fn customers_of(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
    tenant: &str,
) -> Result<Vec<tandem_domain::CustomerId>, StoreError> {
    let mut customers = std::collections::BTreeSet::new();
    for row in table
        .range((tenant, "", "")..)
        .map_err(redb_err("reading aliases"))?
    {
        let (key, owner) = row.map_err(redb_err("reading aliases"))?;
        if key.value().0 != tenant {
            break;
        }
        customers.insert(owner.value().to_owned());
    }
    customers
        .into_iter()
        .map(|c| {
            tandem_domain::CustomerId::parse(&c)
                .map_err(|e| StoreError::corrupt(format!("customer id {c:?}"), e))
        })
        .collect()
}

/// The aliases `customer` owns in `tenant`, from any handle on the alias table.
pub(super) fn aliases_of(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
    tenant: &str,
    customer: &str,
) -> Result<Vec<Alias>, StoreError> {
    let mut aliases = Vec::new();
    for row in table
        .range((tenant, "", "")..)
        .map_err(redb_err("reading aliases"))?
    {
        let (key, owner) = row.map_err(redb_err("reading aliases"))?;
        let (t, kind, value) = key.value();
        if t != tenant {
            break;
        }
        if owner.value() == customer
            && let Some(kind) = AliasKind::parse(kind)
        {
            aliases.push(Alias {
                kind,
                value: value.to_owned(),
            });
        }
    }
    Ok(aliases)
}

/// Reads the tombstone of an alias.
pub(super) fn tombstone(
    txn: &ReadTransaction,
    tenant: &str,
    alias: &Alias,
) -> Result<Option<Tombstone>, StoreError> {
    let table = txn
        .open_table(TOMBSTONES)
        .map_err(redb_err("opening tombstones"))?;
    let found = table
        .get(tombstone_key(tenant, alias).as_str())
        .map_err(redb_err("reading a tombstone"))?;
    Ok(found.map(|v| Tombstone {
        erased_at: Timestamp(v.value()),
    }))
}
