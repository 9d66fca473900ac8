//! The Redis backend, for several replicas sharing one Redis server.
//!
//! Reads go straight to Redis. Every write is one Lua script, so it is atomic. A delivery of
//! plain events (no echo, contact or account fact; most deliveries) is one call of
//! `ingest.lua`, which drops duplicates with `SET NX`. Anything else goes through a [`Plan`]
//! applied by `apply.lua`, optimistically: it reads what it needs (dedupe keys, records it will
//! pause, contacts), computes the writes, and the script re-checks every guard before writing;
//! if another replica got there first, the attempt is repeated from the reads.
//! Lane commits are fenced by the claim's lease token and the record's revision.
//!
//! Scripts name their keys through arguments, so this backend needs a single Redis server
//! (or a primary with replicas), not Redis Cluster.
//!
//! Layout: `keys` (every key name), `ingest` (both ingest paths), `customers` (aliases and the
//! schema migration), the Lua scripts beside them (`apply`, `ingest`, `claim`, `release`,
//! `fire_timers`, `reserve_send_slot`, `take_hooks`, `settle_hook`, `redrive_hook`, `lead`,
//! `touch_number`, `resolve`, `renew`).

mod customers;
mod ingest;
mod keys;
mod privacy;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use serde::Serialize;
use tandem_domain::{
    Alias, ContactUpdate, Conversation, ConversationEvent, ConversationId, CustomerId,
    CustomerLookup, DeadLetter, MessageId, PhoneNumberId, Resolved, Timestamp,
};
use tokio::sync::Notify;

use self::keys::Keys;
use crate::error::StoreError;
use crate::model::{
    AccountState, AgentState, Claim, CommitOutcome, HookJob, HookSettle, InboxItem, IngestBatch,
    IngestReport, ListQuery, NumberState, NumberTouch, StepCommit, StoreOptions, StoreStats,
    TimerChange,
};
use crate::privacy::{AuditEntry, Erasure, ErasureReport, Purge, Tombstone};
use crate::store::Store;

/// How often an ingest is retried when other writers keep changing what it read.
const MAX_ATTEMPTS: u32 = 16;

/// The Redis store. Cheap to clone; clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisStore {
    con: ConnectionManager,
    keys: Keys,
    options: StoreOptions,
    scripts: Arc<Scripts>,
    signal: Arc<Notify>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password, so it is not shown.
        f.debug_struct("RedisStore")
            .field("prefix", &self.options.redis_prefix)
            .finish_non_exhaustive()
    }
}

struct Scripts {
    apply: Script,
    ingest: Script,
    claim: Script,
    release: Script,
    fire_timers: Script,
    reserve_send_slot: Script,
    take_hooks: Script,
    settle_hook: Script,
    redrive_hook: Script,
    lead: Script,
    touch_number: Script,
    resolve: Script,
    renew: Script,
    erase: Script,
}

/// A write plan for `apply.lua`: guards first, then writes. Field names are the script's.
#[derive(Debug, Default, Serialize)]
struct Plan {
    now: String,
    keys: PlanKeys,
    /// The identity epoch key and the epoch the batch's customers were resolved under.
    epoch: Option<(String, u64)>,
    absent: Vec<String>,
    revs: Vec<(String, u64)>,
    equals: Vec<(String, Option<String>)>,
    lease: Option<(String, String, u64)>,
    /// Inbox key, first and last applied seq, and how many were applied.
    head: Option<(String, String, String, usize)>,
    set_px: Vec<(String, String, u64)>,
    /// Key and blob index.
    set: Vec<(String, usize)>,
    convs: Vec<ConversationWrite>,
    /// Inbox key, conversation id, blob index.
    enqueue: Vec<(String, String, usize)>,
    timers: Vec<(String, Option<String>)>,
    /// Blob indexes.
    dead_letters: Vec<usize>,
    /// Hook delivery id, blob index, due time.
    hooks: Vec<(String, usize, String)>,
    /// Number hash, new revision, blob index of the lifecycle JSON.
    numbers: Vec<(String, u64, usize)>,
    /// Large values (records, events) travel as separate script arguments, so the script
    /// does not decode them as JSON; the plan refers to them by 1-based index.
    #[serde(skip)]
    blobs: Vec<String>,
}

impl Plan {
    fn blob(&mut self, value: String) -> usize {
        self.blobs.push(value);
        self.blobs.len()
    }
}

#[derive(Debug, Default, Serialize)]
struct PlanKeys {
    seq: String,
    ready: String,
    depth: String,
    timers: String,
    convs: String,
    mode_prefix: String,
    dead_letters: String,
    dead_letter_seq: String,
    hooks: String,
    hooks_due: String,
}

#[derive(Debug, Serialize)]
struct ConversationWrite {
    key: String,
    cid: String,
    rev: u64,
    data: usize,
    mode: &'static str,
}

fn json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::corrupt("(encoding)", e))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Splits a stored `seq:json` entry.
fn split_seq(entry: &str) -> Result<(u64, &str), StoreError> {
    let (seq, body) = entry
        .split_once(':')
        .ok_or_else(|| StoreError::corrupt("list entry", "no sequence prefix"))?;
    let seq = seq
        .parse()
        .map_err(|e| StoreError::corrupt("list entry", e))?;
    Ok((seq, body))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::corrupt(what, e))
}

enum Attempt<T> {
    Done(T),
    Conflict,
}

impl RedisStore {
    /// Connects to Redis at `url` and checks that it answers.
    ///
    /// # Errors
    /// Returns a [`StoreError`] when the URL is invalid or Redis does not answer.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.redis_timeout))
            .set_response_timeout(Some(options.redis_timeout))
            .set_number_of_retries(2);
        let con = ConnectionManager::new_with_config(client, config).await?;
        let store = Self {
            con,
            keys: Keys::new(&options.redis_prefix),
            options,
            scripts: Arc::new(Scripts {
                apply: Script::new(include_str!("redis/apply.lua")),
                ingest: Script::new(include_str!("redis/ingest.lua")),
                claim: Script::new(include_str!("redis/claim.lua")),
                release: Script::new(include_str!("redis/release.lua")),
                fire_timers: Script::new(include_str!("redis/fire_timers.lua")),
                reserve_send_slot: Script::new(include_str!("redis/reserve_send_slot.lua")),
                take_hooks: Script::new(include_str!("redis/take_hooks.lua")),
                settle_hook: Script::new(include_str!("redis/settle_hook.lua")),
                redrive_hook: Script::new(include_str!("redis/redrive_hook.lua")),
                lead: Script::new(include_str!("redis/lead.lua")),
                touch_number: Script::new(include_str!("redis/touch_number.lua")),
                resolve: Script::new(include_str!("redis/resolve.lua")),
                renew: Script::new(include_str!("redis/renew.lua")),
                erase: Script::new(include_str!("redis/erase.lua")),
            }),
            signal: Arc::new(Notify::new()),
        };
        store.ping().await?;
        store.migrate().await?;
        store.ensure_alias_index().await?;
        Ok(store)
    }

    fn plan(&self, now: Timestamp) -> Plan {
        let k = &self.keys;
        Plan {
            now: now.to_string(),
            keys: PlanKeys {
                seq: k.seq(),
                ready: k.ready(),
                depth: k.inbox_depth(),
                timers: k.timers(),
                convs: k.all_conversations(),
                mode_prefix: k.mode_index_prefix(),
                dead_letters: k.dead_letters(),
                dead_letter_seq: k.dead_letter_seq(),
                hooks: k.hooks(),
                hooks_due: k.hooks_due(),
            },
            ..Plan::default()
        }
    }

    fn write_conversation(
        &self,
        plan: &mut Plan,
        expected_rev: u64,
        mut conversation: Conversation,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        conversation.rev = expected_rev + 1;
        conversation.updated_at = now;
        plan.revs
            .push((self.keys.conversation(&conversation.id), expected_rev));
        let data = plan.blob(json(&conversation)?);
        plan.convs.push(ConversationWrite {
            key: self.keys.conversation(&conversation.id),
            cid: conversation.id.to_string(),
            rev: conversation.rev,
            mode: conversation.mode().as_str(),
            data,
        });
        Ok(())
    }

    async fn run(&self, plan: &Plan) -> Result<Vec<String>, StoreError> {
        let mut con = self.con.clone();
        let answer: Vec<String> = self
            .scripts
            .apply
            .arg(json(plan)?)
            .arg(&plan.blobs)
            .invoke_async(&mut con)
            .await?;
        Ok(answer)
    }

    /// Reads a number's hash: the lifecycle JSON with the activity fields laid over it.
    async fn read_number(&self, id: &PhoneNumberId) -> Result<Option<NumberState>, StoreError> {
        let mut con = self.con.clone();
        let fields: std::collections::HashMap<String, String> =
            con.hgetall(self.keys.number(id)).await?;
        let Some(data) = fields.get("data") else {
            return Ok(None);
        };
        let mut state: NumberState = decode("number", data)?;
        let time = |name: &str| {
            fields
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Timestamp)
        };
        state.last_phone_at = time("phone_at");
        state.last_api_at = time("api_at");
        state.held_sends = fields.get("held").and_then(|v| v.parse().ok()).unwrap_or(0);
        if let Some(waba) = fields.get("waba") {
            state.waba_id = Some(waba.clone());
        }
        state.rev = fields.get("rev").and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Some(state))
    }

    async fn read_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<Conversation>, StoreError> {
        let mut con = self.con.clone();
        let raw: Option<String> = con.hget(self.keys.conversation(id), "data").await?;
        raw.map(|r| decode(&id.to_string(), &r)).transpose()
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    fn work_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.signal)
    }

    async fn ingest(&self, batch: IngestBatch) -> Result<IngestReport, StoreError> {
        if batch.items.iter().all(ingest::is_plain) {
            return self.ingest_plain(&batch).await;
        }
        for _ in 0..MAX_ATTEMPTS {
            if let Attempt::Done(report) = self.try_ingest(&batch).await? {
                return Ok(report);
            }
        }
        Err(StoreError::Contention(MAX_ATTEMPTS))
    }

    async fn claim(&self, now: Timestamp, lease: Duration) -> Result<Option<Claim>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let mut con = self.con.clone();
        let claimed: Option<String> = self
            .scripts
            .claim
            .arg(self.keys.ready())
            .arg(self.keys.lease_prefix())
            .arg(now.as_millis())
            .arg(millis(lease))
            .arg(&token)
            .invoke_async(&mut con)
            .await?;
        claimed
            .map(|id| {
                let conversation =
                    ConversationId::parse(&id).map_err(|e| StoreError::corrupt("ready set", e))?;
                Ok(Claim {
                    conversation,
                    token,
                })
            })
            .transpose()
    }

    async fn head(
        &self,
        claim: &Claim,
        now: Timestamp,
        max: usize,
    ) -> Result<Option<(Conversation, Vec<InboxItem>)>, StoreError> {
        let mut con = self.con.clone();
        let id = &claim.conversation;
        let last = isize::try_from(max.max(1)).unwrap_or(isize::MAX) - 1;
        let (entries, record): (Vec<String>, Option<String>) = redis::pipe()
            .lrange(self.keys.inbox(id), 0, last)
            .hget(self.keys.conversation(id), "data")
            .query_async(&mut con)
            .await?;
        if entries.is_empty() {
            return Ok(None);
        }
        let mut items = Vec::with_capacity(entries.len());
        for entry in &entries {
            let (seq, body) = split_seq(entry)?;
            let mut item: InboxItem = decode(&id.to_string(), body)?;
            item.seq = seq;
            items.push(item);
        }
        let conversation = match record {
            Some(raw) => decode(&id.to_string(), &raw)?,
            None => Conversation::new(id.clone(), now),
        };
        Ok(Some((conversation, items)))
    }

    async fn commit(
        &self,
        claim: &Claim,
        commit: StepCommit,
        lease: Duration,
    ) -> Result<CommitOutcome, StoreError> {
        let id = &claim.conversation;
        let mut plan = self.plan(commit.now);
        plan.lease = Some((self.keys.lease(id), claim.token.clone(), millis(lease)));
        if let (Some(first), Some(last)) = (commit.seqs.first(), commit.seqs.last()) {
            plan.head = Some((
                self.keys.inbox(id),
                first.to_string(),
                last.to_string(),
                commit.seqs.len(),
            ));
        }
        self.write_conversation(
            &mut plan,
            commit.expected_rev,
            commit.conversation,
            commit.now,
        )?;
        match commit.timer {
            TimerChange::Keep => {}
            TimerChange::Set(due) => plan.timers.push((id.to_string(), Some(due.to_string()))),
            TimerChange::Clear => plan.timers.push((id.to_string(), None)),
        }
        for sent in &commit.outbound {
            plan.set_px.push((
                self.keys.outbound(sent.as_str()),
                "1".to_owned(),
                millis(self.options.dedupe_ttl),
            ));
        }
        for hook in &commit.hooks {
            let blob = plan.blob(json(hook)?);
            plan.hooks
                .push((hook.id.clone(), blob, hook.due.as_millis().to_string()));
        }
        let answer = self.run(&plan).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(CommitOutcome::Applied),
            Some("conflict") => Ok(CommitOutcome::Conflict),
            Some("lease_lost") => Ok(CommitOutcome::LeaseLost),
            _ => Err(StoreError::Protocol(format!("{answer:?}"))),
        }
    }

    async fn renew(
        &self,
        claim: &Claim,
        now: Timestamp,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let id = &claim.conversation;
        let renewed: i64 = self
            .scripts
            .renew
            .arg(self.keys.lease(id))
            .arg(self.keys.ready())
            .arg(id.to_string())
            .arg(&claim.token)
            .arg(now.as_millis())
            .arg(millis(lease))
            .invoke_async(&mut con)
            .await?;
        Ok(renewed == 1)
    }

    async fn release(&self, claim: Claim, now: Timestamp) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let id = &claim.conversation;
        let _released: i64 = self
            .scripts
            .release
            .arg(self.keys.ready())
            .arg(self.keys.lease(id))
            .arg(self.keys.inbox(id))
            .arg(id.to_string())
            .arg(&claim.token)
            .arg(now.as_millis())
            .invoke_async(&mut con)
            .await?;
        self.signal.notify_waiters();
        Ok(())
    }

    async fn fire_due_timers(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        let item = InboxItem {
            seq: 0,
            received_at: now,
            own_echo: false,
            event: ConversationEvent::IdleCheck,
        };
        let mut con = self.con.clone();
        let fired: usize = self
            .scripts
            .fire_timers
            .arg(self.keys.timers())
            .arg(self.keys.seq())
            .arg(self.keys.ready())
            .arg(self.keys.inbox_depth())
            .arg(self.keys.inbox_prefix())
            .arg(now.as_millis())
            .arg(limit)
            .arg(json(&item)?)
            .invoke_async(&mut con)
            .await?;
        if fired > 0 {
            self.signal.notify_waiters();
        }
        Ok(fired)
    }

    async fn record_outbound(&self, id: &MessageId, _now: Timestamp) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let () = con
            .pset_ex(
                self.keys.outbound(id.as_str()),
                1,
                millis(self.options.dedupe_ttl),
            )
            .await?;
        Ok(())
    }

    async fn reserve_send_slot(
        &self,
        phone_number_id: &PhoneNumberId,
        now: Timestamp,
        per_second: u32,
    ) -> Result<Timestamp, StoreError> {
        let mut con = self.con.clone();
        let slot: String = self
            .scripts
            .reserve_send_slot
            .arg(self.keys.send_slot(phone_number_id))
            .arg(now.as_millis())
            .arg(per_second.max(1))
            .invoke_async(&mut con)
            .await?;
        slot.parse()
            .map(Timestamp)
            .map_err(|e| StoreError::corrupt("send slot", e))
    }

    async fn resolve_customers(
        &self,
        tenant: &str,
        lookups: &[CustomerLookup],
    ) -> Result<Vec<Resolved>, StoreError> {
        self.resolve(tenant, lookups).await
    }

    async fn customer_of(
        &self,
        tenant: &str,
        alias: &Alias,
    ) -> Result<Option<CustomerId>, StoreError> {
        self.owner(tenant, alias).await
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.read_conversation(id).await
    }

    async fn list_conversations(&self, query: &ListQuery) -> Result<Vec<Conversation>, StoreError> {
        let index = match query.mode {
            Some(mode) => self.keys.mode_index(mode),
            None => self.keys.all_conversations(),
        };
        let min = query
            .after
            .as_ref()
            .map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut con = self.con.clone();
        let ids: Vec<String> = con
            .zrangebylex_limit(
                index,
                min,
                "+",
                0,
                isize::try_from(query.limit).unwrap_or(isize::MAX),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            let id = ConversationId::parse(id).map_err(|e| StoreError::corrupt("mode index", e))?;
            pipe.hget(self.keys.conversation(&id), "data");
        }
        let records: Vec<Option<String>> = pipe.query_async(&mut con).await?;
        records
            .into_iter()
            .flatten()
            .map(|raw| decode("conversation", &raw))
            .collect()
    }

    async fn contact(
        &self,
        number: &PhoneNumberId,
        who: &str,
    ) -> Result<Option<ContactUpdate>, StoreError> {
        let mut con = self.con.clone();
        let key = self.keys.contact(&crate::model::contact_key(number, who));
        let raw: Option<String> = con.get(key).await?;
        raw.map(|r| decode("contact", &r)).transpose()
    }

    async fn account(&self, account: &str) -> Result<Option<AccountState>, StoreError> {
        let mut con = self.con.clone();
        let raw: Option<String> = con.get(self.keys.account(account)).await?;
        raw.map(|r| decode("account", &r)).transpose()
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut con = self.con.clone();
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        let raw: Vec<String> = con.lrange(self.keys.dead_letters(), 0, stop).await?;
        raw.iter()
            .map(|entry| {
                let (id, body) = split_seq(entry)?;
                Ok((id, decode("dead letter", body)?))
            })
            .collect()
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut con = self.con.clone();
        let (depth, letters, conversations, hooks_pending, hooks_dead): (
            Option<i64>,
            u64,
            u64,
            u64,
            u64,
        ) = redis::pipe()
            .get(self.keys.inbox_depth())
            .llen(self.keys.dead_letters())
            .zcard(self.keys.all_conversations())
            .hlen(self.keys.hooks())
            .hlen(self.keys.dead_hooks())
            .query_async(&mut con)
            .await?;
        Ok(StoreStats {
            inbox_depth: u64::try_from(depth.unwrap_or(0)).unwrap_or(0),
            dead_letters: letters,
            conversations,
            hooks_pending,
            hooks_dead,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
        Ok(())
    }

    async fn purge_expired(&self, _now: Timestamp) -> Result<usize, StoreError> {
        // Redis expires deduplication keys by itself (SET … PX).
        Ok(0)
    }

    async fn due_hooks(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HookJob>, StoreError> {
        let mut con = self.con.clone();
        let held = now.plus(lease);
        let raw: Vec<String> = self
            .scripts
            .take_hooks
            .arg(self.keys.hooks())
            .arg(self.keys.hooks_due())
            .arg(now.as_millis())
            .arg(limit)
            .arg(held.as_millis())
            .invoke_async(&mut con)
            .await?;
        raw.iter()
            .map(|r| {
                let mut job: HookJob = decode("hook", r)?;
                job.due = held;
                Ok(job)
            })
            .collect()
    }

    async fn settle_hook(
        &self,
        job: &HookJob,
        settle: HookSettle,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut next = job.clone();
        let (outcome, score) = match settle {
            HookSettle::Delivered => ("delivered", now),
            HookSettle::Retry { due, error } => {
                next.attempts += 1;
                next.due = due;
                next.last_error = Some(error);
                ("retry", due)
            }
            HookSettle::Dead { error } => {
                next.attempts += 1;
                next.due = now;
                next.last_error = Some(error);
                ("dead", now)
            }
        };
        let mut con = self.con.clone();
        let _settled: i64 = self
            .scripts
            .settle_hook
            .arg(self.keys.hooks())
            .arg(self.keys.hooks_due())
            .arg(self.keys.dead_hooks())
            .arg(self.keys.dead_hooks_order())
            .arg(&job.id)
            .arg(outcome)
            .arg(json(&next)?)
            .arg(score.as_millis())
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    async fn dead_hooks(&self, limit: usize) -> Result<Vec<HookJob>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut con = self.con.clone();
        let stop = isize::try_from(limit).unwrap_or(isize::MAX) - 1;
        let ids: Vec<String> = con.zrevrange(self.keys.dead_hooks_order(), 0, stop).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.dead_hooks())
            .arg(&ids)
            .query_async(&mut con)
            .await?;
        raw.into_iter()
            .flatten()
            .map(|r| decode("dead hook", &r))
            .collect()
    }

    async fn redrive_hook(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let raw: Option<String> = con.hget(self.keys.dead_hooks(), id).await?;
        let Some(raw) = raw else {
            return Ok(false);
        };
        let dead: HookJob = decode("dead hook", &raw)?;
        let job = HookJob {
            due: now,
            attempts: 0,
            ..dead
        };
        let moved: i64 = self
            .scripts
            .redrive_hook
            .arg(self.keys.hooks())
            .arg(self.keys.hooks_due())
            .arg(self.keys.dead_hooks())
            .arg(self.keys.dead_hooks_order())
            .arg(id)
            .arg(json(&job)?)
            .arg(now.as_millis())
            .invoke_async(&mut con)
            .await?;
        Ok(moved == 1)
    }

    async fn set_agent(&self, state: AgentState) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let () = con
            .hset(self.keys.agents(), &state.agent, json(&state)?)
            .await?;
        Ok(())
    }

    async fn agents(&self) -> Result<Vec<AgentState>, StoreError> {
        let mut con = self.con.clone();
        let raw: Vec<String> = con.hvals(self.keys.agents()).await?;
        raw.iter().map(|r| decode("agent", r)).collect()
    }

    async fn embeddings(
        &self,
        model: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con.clone();
        let mut out = Vec::with_capacity(keys.len());
        // In slices, so one read never holds Redis for long.
        for chunk in keys.chunks(512) {
            let found: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(self.keys.embeddings(model))
                .arg(chunk)
                .query_async(&mut con)
                .await?;
            out.extend(found);
        }
        Ok(out)
    }

    async fn put_embeddings(
        &self,
        model: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        for chunk in entries.chunks(512) {
            let () = con
                .hset_multiple(self.keys.embeddings(model), chunk)
                .await?;
        }
        Ok(())
    }

    async fn touch_number(
        &self,
        id: &PhoneNumberId,
        touch: NumberTouch,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let initial = NumberState::new(id.clone(), now);
        let text = |t: Option<Timestamp>| t.map_or_else(String::new, |t| t.as_millis().to_string());
        let mut con = self.con.clone();
        let _touched: i64 = self
            .scripts
            .touch_number
            .arg(self.keys.number(id))
            .arg(self.keys.numbers())
            .arg(id.as_str())
            .arg(json(&initial)?)
            .arg(touch.waba_id.clone().unwrap_or_default())
            .arg(text(touch.phone_at))
            .arg(text(touch.api_at))
            .arg(touch.held)
            .invoke_async(&mut con)
            .await?;
        Ok(())
    }

    async fn number(&self, id: &PhoneNumberId) -> Result<Option<NumberState>, StoreError> {
        self.read_number(id).await
    }

    async fn numbers(&self) -> Result<Vec<NumberState>, StoreError> {
        let mut con = self.con.clone();
        let ids: Vec<String> = con.zrange(self.keys.numbers(), 0, -1).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id = PhoneNumberId::parse(&id).map_err(|e| StoreError::corrupt("numbers", e))?;
            if let Some(state) = self.read_number(&id).await? {
                out.push(state);
            }
        }
        Ok(out)
    }

    async fn update_number(
        &self,
        state: NumberState,
        hooks: Vec<HookJob>,
    ) -> Result<bool, StoreError> {
        let now = state.changed_at;
        let mut plan = self.plan(now);
        let key = self.keys.number(&state.phone_number_id);
        plan.revs.push((key.clone(), state.rev));
        let mut next = state;
        next.rev += 1;
        let data = plan.blob(json(&next)?);
        plan.numbers.push((key, next.rev, data));
        for hook in &hooks {
            let blob = plan.blob(json(hook)?);
            plan.hooks
                .push((hook.id.clone(), blob, hook.due.as_millis().to_string()));
        }
        let answer = self.run(&plan).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(true),
            Some("conflict") => Ok(false),
            _ => Err(StoreError::Protocol(format!("{answer:?}"))),
        }
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        self.append_audit_entry(entry).await
    }

    async fn audit(
        &self,
        since: Timestamp,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_entries(since, after_id, limit).await
    }

    async fn purge_older(
        &self,
        what: Purge,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.purge_entries(what, before, limit).await
    }

    async fn rewrite_conversation(
        &self,
        conversation: Conversation,
        expected_rev: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.rewrite(conversation, expected_rev, now).await
    }

    async fn erase_customer(&self, erasure: Erasure) -> Result<ErasureReport, StoreError> {
        self.erase(erasure).await
    }

    async fn tenant_customers(&self, tenant: &str) -> Result<Vec<CustomerId>, StoreError> {
        self.customers_of(tenant).await
    }

    async fn customer_aliases(
        &self,
        tenant: &str,
        customer: &CustomerId,
    ) -> Result<Vec<Alias>, StoreError> {
        let found = self.aliases_of(tenant, customer).await?;
        Ok(found.into_iter().map(|(_, alias)| alias).collect())
    }

    async fn tombstone(
        &self,
        tenant: &str,
        alias: &Alias,
    ) -> Result<Option<Tombstone>, StoreError> {
        self.read_tombstone(tenant, alias).await
    }

    async fn identity_epoch(&self) -> Result<u64, StoreError> {
        self.read_identity_epoch().await
    }

    async fn lead(
        &self,
        role: &str,
        holder: &str,
        _now: Timestamp,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let led: i64 = self
            .scripts
            .lead
            .arg(self.keys.lead(role))
            .arg(holder)
            .arg(millis(ttl))
            .invoke_async(&mut con)
            .await?;
        Ok(led == 1)
    }
}
