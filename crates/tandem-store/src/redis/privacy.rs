//! The audit log, erasure, retention purges and record rewrites on Redis (the rules are in
//! [`crate::privacy`]).
//!
//! The audit log is a sorted set scored by time whose members are `{id:020}:{json}`, so
//! entries of one millisecond sort by id. An erasure first finds what to remove — the
//! customer's aliases from its alias set; its conversations, hook deliveries and dead letters
//! by incremental scans of those lists (`ZSCAN`, `HSCAN`; Redis keeps serving meanwhile) — then removes it in one call of `erase.lua`, which also
//! leaves the tombstones and raises the identity epoch, so from that moment no process can
//! store an event for the erased customer.

use std::collections::BTreeSet;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::Serialize;
use tandem_domain::{Alias, AliasKind, Conversation, ConversationId, DeadLetter, Timestamp};

use super::{RedisStore, decode, json, split_seq};
use crate::error::StoreError;
use crate::model::{HookJob, contact_key};
use crate::privacy::{
    AuditEntry, Erasure, ErasureReport, Purge, Tombstone, hook_names, letter_names, tombstone_key,
};

/// How many entries one `SCAN`-family call is asked for.
const SCAN_COUNT: usize = 1000;

/// Every key (`SCAN`) or member (`ZSCAN`, `HSCAN` pairs) matching `pattern`.
async fn scan_all(
    con: &mut ConnectionManager,
    command: &str,
    key: Option<&str>,
    pattern: &str,
) -> Result<Vec<String>, StoreError> {
    let mut cursor = 0_u64;
    let mut out = Vec::new();
    loop {
        let mut cmd = redis::cmd(command);
        if let Some(key) = key {
            cmd.arg(key);
        }
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let (next, page): (u64, Vec<String>) = cmd.query_async(con).await?;
        out.extend(page);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Up to `limit` members of the sorted set `key` scored (in ms) before `before`, lowest first.
async fn older(
    con: &mut ConnectionManager,
    key: &str,
    before: Timestamp,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    Ok(redis::cmd("ZRANGEBYSCORE")
        .arg(key)
        .arg("-inf")
        .arg(format!("({}", before.as_millis()))
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(con)
        .await?)
}

#[derive(Debug, Default, Serialize)]
struct ErasePlan {
    depth: String,
    ready: String,
    timers: String,
    convs: String,
    mode_prefix: String,
    epoch: String,
    tombstones: String,
    hooks: String,
    hooks_due: String,
    dead_hooks: String,
    dead_hooks_order: String,
    dead_letters: String,
    /// The customer's alias set.
    index: String,
    conversations: Vec<(String, String, String)>,
    contacts: Vec<String>,
    aliases: Vec<(String, String)>,
    hook_ids: Vec<String>,
    dead_hook_ids: Vec<String>,
    letters: Vec<String>,
    tombstones_set: Vec<(String, u64)>,
    new_hooks: Vec<(String, usize, u64)>,
}

impl RedisStore {
    pub(super) async fn append_audit_entry(
        &self,
        mut entry: AuditEntry,
    ) -> Result<u64, StoreError> {
        let mut con = self.con.clone();
        let id: u64 = con.incr(self.keys.audit_seq(), 1).await?;
        entry.id = id;
        let member = format!("{id:020}:{}", json(&entry)?);
        let _: i64 = con
            .zadd(self.keys.audit(), member, entry.at.as_millis())
            .await?;
        Ok(id)
    }

    pub(super) async fn audit_entries(
        &self,
        since: Timestamp,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut con = self.con.clone();
        let mut out = Vec::new();
        let mut offset = 0_usize;
        while out.len() < limit {
            let page: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(self.keys.audit())
                .arg(since.as_millis())
                .arg("+inf")
                .arg("LIMIT")
                .arg(offset)
                .arg(limit)
                .query_async(&mut con)
                .await?;
            if page.is_empty() {
                break;
            }
            offset += page.len();
            for member in &page {
                let (_, body) = member
                    .split_once(':')
                    .ok_or_else(|| StoreError::corrupt("audit entry", "no id prefix"))?;
                let entry: AuditEntry = decode("audit entry", body)?;
                if entry.at == since && entry.id <= after_id {
                    continue;
                }
                out.push(entry);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn purge_entries(
        &self,
        what: Purge,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut con = self.con.clone();
        match what {
            Purge::Audit => {
                let old = older(&mut con, &self.keys.audit(), before, limit).await?;
                if old.is_empty() {
                    return Ok(0);
                }
                let removed: usize = con.zrem(self.keys.audit(), &old).await?;
                Ok(removed)
            }
            Purge::DeadHooks => {
                let old = older(&mut con, &self.keys.dead_hooks_order(), before, limit).await?;
                if old.is_empty() {
                    return Ok(0);
                }
                let (removed, _): (usize, usize) = redis::pipe()
                    .atomic()
                    .hdel(self.keys.dead_hooks(), &old)
                    .zrem(self.keys.dead_hooks_order(), &old)
                    .query_async(&mut con)
                    .await?;
                Ok(removed)
            }
            Purge::DeadLetters => {
                // The list is newest first: the oldest are at its tail.
                let stop = isize::try_from(limit).unwrap_or(isize::MAX);
                let tail: Vec<String> = con.lrange(self.keys.dead_letters(), -stop, -1).await?;
                let mut removed = 0;
                for entry in tail.iter().rev() {
                    let (_, body) = split_seq(entry)?;
                    let letter: DeadLetter = decode("dead letter", body)?;
                    if letter.received_at >= before {
                        break;
                    }
                    let n: usize = con.lrem(self.keys.dead_letters(), -1, entry).await?;
                    removed += n;
                }
                Ok(removed)
            }
        }
    }

    pub(super) async fn rewrite(
        &self,
        conversation: Conversation,
        expected_rev: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        if expected_rev == 0 {
            return Ok(false);
        }
        let mut plan = self.plan(now);
        self.write_conversation(&mut plan, expected_rev, conversation, now)?;
        let answer = self.run(&plan).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(true),
            Some("conflict") => Ok(false),
            _ => Err(StoreError::Protocol(format!("{answer:?}"))),
        }
    }

    pub(super) async fn erase(&self, erasure: Erasure) -> Result<ErasureReport, StoreError> {
        let mut con = self.con.clone();
        let k = &self.keys;
        let customer = erasure.customer.as_str();
        let mut report = ErasureReport::default();

        let index = k.customer_aliases(&erasure.tenant, customer);
        let aliases = self.aliases_of(&erasure.tenant, &erasure.customer).await?;

        // Its conversations: recorded ones (the list of all conversations), and ones with
        // events waiting and no record yet (a waiting lane is in the ready set).
        let mut ids: BTreeSet<String> = BTreeSet::new();
        let pattern = format!("*:{customer}");
        for list in [k.all_conversations(), k.ready()] {
            let found = scan_all(&mut con, "ZSCAN", Some(&list), &pattern).await?;
            // ZSCAN answers member, score, member, score…
            ids.extend(found.into_iter().step_by(2));
        }
        let mut values: BTreeSet<String> = aliases.iter().map(|(_, a)| a.value.clone()).collect();
        let mut plan = ErasePlan {
            depth: k.inbox_depth(),
            ready: k.ready(),
            timers: k.timers(),
            convs: k.all_conversations(),
            mode_prefix: k.mode_index_prefix(),
            epoch: k.identity_epoch(),
            tombstones: k.tombstones(),
            hooks: k.hooks(),
            hooks_due: k.hooks_due(),
            dead_hooks: k.dead_hooks(),
            dead_hooks_order: k.dead_hooks_order(),
            dead_letters: k.dead_letters(),
            index: index.clone(),
            ..ErasePlan::default()
        };
        for raw in &ids {
            let id = ConversationId::parse(raw)
                .map_err(|e| StoreError::corrupt("conversation id", e))?;
            if let Some(record) = self.read_conversation(&id).await? {
                report.transcript_lines += record.transcript.len();
                let who = record.who();
                values.extend(who.phone.map(|p| p.as_str().to_owned()));
                values.extend(who.user_id.map(|u| u.as_str().to_owned()));
            }
            plan.conversations
                .push((raw.clone(), k.conversation(&id), k.inbox(&id)));
            report.conversation_ids.push(id);
        }
        let values: Vec<String> = values.into_iter().collect();
        for id in &report.conversation_ids {
            for value in &values {
                plan.contacts
                    .push(k.contact(&contact_key(id.phone_number_id(), value)));
            }
        }

        // Hook deliveries about the customer, pending or dead.
        for (hash, ids) in [
            (k.hooks(), &mut plan.hook_ids),
            (k.dead_hooks(), &mut plan.dead_hook_ids),
        ] {
            let pairs = scan_all(&mut con, "HSCAN", Some(&hash), "*").await?;
            for pair in pairs.chunks(2) {
                if let [id, body] = pair {
                    let job: HookJob = decode(id, body)?;
                    if hook_names(&job, &erasure.customer) {
                        ids.push(id.clone());
                    }
                }
            }
        }
        // Dead letters naming one of its identifiers.
        let letters: Vec<String> = con.lrange(k.dead_letters(), 0, -1).await?;
        plan.letters = letters
            .into_iter()
            .filter(|entry| letter_names(entry, &values))
            .collect();

        plan.aliases = aliases
            .iter()
            .map(|(key, _)| (key.clone(), customer.to_owned()))
            .collect();
        plan.tombstones_set = aliases
            .iter()
            .map(|(_, alias)| {
                (
                    tombstone_key(&erasure.tenant, alias),
                    erasure.now.as_millis(),
                )
            })
            .collect();
        let mut blobs = Vec::with_capacity(erasure.hooks.len());
        for hook in &erasure.hooks {
            blobs.push(json(hook)?);
            plan.new_hooks
                .push((hook.id.clone(), blobs.len(), hook.due.as_millis()));
        }
        let counts: Vec<usize> = self
            .scripts
            .erase
            .arg(json(&plan)?)
            .arg(&blobs)
            .invoke_async(&mut con)
            .await?;
        let [conversations, queued, contacts, aliases, hooks, letters] = counts[..] else {
            return Err(StoreError::Protocol(format!("erase answered {counts:?}")));
        };
        report.conversations = conversations;
        report.queued_events = queued;
        report.contacts = contacts;
        report.aliases = aliases;
        report.hooks = hooks;
        report.dead_letters = letters;
        if !erasure.hooks.is_empty() {
            self.signal.notify_waiters();
        }
        Ok(report)
    }

    /// Every customer owning an alias in `tenant`, each once, in id order: a scan of the
    /// tenant's alias keys and their owners.
    pub(super) async fn customers_of(
        &self,
        tenant: &str,
    ) -> Result<Vec<tandem_domain::CustomerId>, StoreError> {
        let mut con = self.con.clone();
        let prefix = self.keys.alias_prefix(tenant);
        let keys = scan_all(&mut con, "SCAN", None, &format!("{prefix}*")).await?;
        let mut customers = std::collections::BTreeSet::new();
        for chunk in keys.chunks(SCAN_COUNT) {
            let owners: Vec<Option<String>> = con.mget(chunk).await?;
            customers.extend(owners.into_iter().flatten());
        }
        customers
            .into_iter()
            .map(|c| {
                tandem_domain::CustomerId::parse(&c)
                    .map_err(|e| StoreError::corrupt(format!("customer id {c:?}"), e))
            })
            .collect()
    }

    /// The aliases `customer` owns in `tenant` (alias key, alias): from its alias set, else
    /// (a keyspace not yet indexed) from a scan of the tenant's aliases; every owner checked.
    pub(super) async fn aliases_of(
        &self,
        tenant: &str,
        customer: &tandem_domain::CustomerId,
    ) -> Result<Vec<(String, Alias)>, StoreError> {
        let mut con = self.con.clone();
        let k = &self.keys;
        let prefix = k.alias_prefix(tenant);
        let index = k.customer_aliases(tenant, customer.as_str());
        let indexed: bool = con.exists(k.alias_index()).await?;
        let names: Vec<String> = if indexed {
            con.smembers(&index).await?
        } else {
            scan_all(&mut con, "SCAN", None, &format!("{prefix}*"))
                .await?
                .into_iter()
                .filter_map(|key| key.strip_prefix(&prefix).map(str::to_owned))
                .collect()
        };
        let mut aliases = Vec::new();
        for chunk in names.chunks(SCAN_COUNT) {
            let keys: Vec<String> = chunk.iter().map(|n| format!("{prefix}{n}")).collect();
            let owners: Vec<Option<String>> = con.mget(&keys).await?;
            for ((name, key), owner) in chunk.iter().zip(keys).zip(owners) {
                if owner.as_deref() != Some(customer.as_str()) {
                    continue;
                }
                let Some((kind, value)) = name.split_once(':') else {
                    continue;
                };
                if let Some(kind) = AliasKind::parse(kind) {
                    let alias = Alias {
                        kind,
                        value: value.to_owned(),
                    };
                    aliases.push((key, alias));
                }
            }
        }
        Ok(aliases)
    }

    pub(super) async fn read_tombstone(
        &self,
        tenant: &str,
        alias: &Alias,
    ) -> Result<Option<Tombstone>, StoreError> {
        let mut con = self.con.clone();
        let at: Option<u64> = con
            .hget(self.keys.tombstones(), tombstone_key(tenant, alias))
            .await?;
        Ok(at.map(|ms| Tombstone {
            erased_at: Timestamp(ms),
        }))
    }

    pub(super) async fn read_identity_epoch(&self) -> Result<u64, StoreError> {
        let mut con = self.con.clone();
        let epoch: Option<u64> = con.get(self.keys.identity_epoch()).await?;
        Ok(epoch.unwrap_or(0))
    }
}
