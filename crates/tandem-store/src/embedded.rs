//! The embedded backend: one redb file, one writer thread with group commit.
//!
//! Every write (ingest, lane commit, timers, outbound registry, purge) is a job sent to the
//! writer thread. The thread takes every job waiting at that moment, runs them all in one
//! write transaction and commits once, so N concurrent webhooks cost one fsync instead of N.
//! A job checks its preconditions before it writes anything, so a refused job (a conflict, a
//! lost lease) never leaves half a write in the shared transaction. If the commit itself
//! fails, every job of the batch gets the error and nothing of the batch is visible.
//!
//! Layout: `tables` (table definitions, encoding), `write` (a group's open tables and
//! counters), `jobs` (ingest, lane commit, timers), `lanes` (who holds which lane, in memory).

mod aliases;
mod jobs;
mod lanes;
mod privacy;
mod tables;
mod write;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tandem_domain::{
    Alias, ContactUpdate, Conversation, ConversationId, CustomerId, CustomerLookup, DeadLetter,
    MessageId, PhoneNumberId, Resolved, Timestamp,
};
use tokio::sync::{Notify, mpsc, oneshot};

use self::lanes::LaneBook;
use self::tables::*;
use self::write::Group;
use crate::error::StoreError;
use crate::model::{
    AccountState, AgentState, Claim, CommitOutcome, HookJob, HookSettle, InboxItem, IngestBatch,
    IngestReport, ListQuery, NumberState, NumberTouch, StepCommit, StoreOptions, StoreStats,
    next_slot, touched,
};
use crate::privacy::{AuditEntry, Erasure, ErasureReport, Purge, Tombstone};
use crate::store::Store;

/// How many jobs one group commit takes at most.
const MAX_GROUP: usize = 512;

/// The embedded store: a redb file owned by this process. See the module docs.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: mpsc::UnboundedSender<Job>,
}

#[derive(Debug)]
struct Shared {
    db: Database,
    options: StoreOptions,
    lanes: Mutex<LaneBook>,
    /// Next free send slot per business number (Unix ms). One process owns the file, so
    /// this in-memory schedule is the whole truth; it need not survive a restart.
    send_slots: Mutex<HashMap<PhoneNumberId, std::collections::VecDeque<u64>>>,
    signal: Arc<Notify>,
}

impl Shared {
    // A std Mutex: held for a few map operations, never across an await.
    fn lanes(&self) -> MutexGuard<'_, LaneBook> {
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

enum Job {
    Ingest(
        IngestBatch,
        oneshot::Sender<Result<IngestReport, StoreError>>,
    ),
    Commit(
        Claim,
        // Boxed: a conversation record is much larger than the other jobs.
        Box<StepCommit>,
        Duration,
        oneshot::Sender<Result<CommitOutcome, StoreError>>,
    ),
    FireTimers(Timestamp, usize, oneshot::Sender<Result<usize, StoreError>>),
    RecordOutbound(
        MessageId,
        Timestamp,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Purge(Timestamp, oneshot::Sender<Result<usize, StoreError>>),
    Erase(Erasure, oneshot::Sender<Result<ErasureReport, StoreError>>),
    /// Any other write: runs in the group and answers once the group is committed.
    Custom(CustomJob),
}

/// A write run by the writer thread; returns the function that answers its caller (with
/// `None` once the group is committed, or the error that stopped the group).
type CustomJob = Box<dyn for<'t> FnOnce(&mut Group<'t>) -> Result<Answer, StoreError> + Send>;
type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// Changes to the in-memory lane book that become true only once the batch is committed.
#[derive(Default)]
struct LaneDelta {
    enqueued: Vec<ConversationId>,
    consumed: Vec<(ConversationId, u64)>,
}

impl EmbeddedStore {
    /// Opens (or creates) the database file at `path` and starts the writer thread.
    ///
    /// # Errors
    /// Returns a [`StoreError`] when the file cannot be created, opened or read, for example
    /// because another process holds it.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(redb_err("creating the data directory"))?;
        }
        let db = Database::create(path).map_err(redb_err("opening the database file"))?;
        let txn = db
            .begin_write()
            .map_err(redb_err("starting a transaction"))?;
        create_all(&txn)?;
        aliases::migrate(&txn)?;
        txn.commit().map_err(redb_err("committing"))?;
        let lanes = rebuild_lanes(&db)?;
        let shared = Arc::new(Shared {
            db,
            options,
            lanes: Mutex::new(lanes),
            send_slots: Mutex::new(HashMap::new()),
            signal: Arc::new(Notify::new()),
        });
        let (writer, jobs) = mpsc::unbounded_channel();
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("tandem-store-writer".into())
            .spawn(move || run_writer(&thread_shared, jobs))
            .map_err(redb_err("starting the writer thread"))?;
        Ok(Self { shared, writer })
    }

    async fn submit<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(job(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `write` in the writer thread's next group; answers once the group is committed.
    async fn write<T: Send + 'static>(
        &self,
        write: impl for<'t> FnOnce(&mut Group<'t>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let job: CustomJob = Box::new(move |group| {
            let value = write(group)?;
            Ok(Box::new(move |failed: Option<&StoreError>| {
                let answer = match failed {
                    None => Ok(value),
                    Some(error) => Err(StoreError::Embedded {
                        context: "group commit failed",
                        source: error.to_string().into(),
                    }),
                };
                // A caller that stopped waiting does not need the answer.
                drop(tx.send(answer));
            }))
        });
        self.writer
            .send(Job::Custom(job))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let txn = shared
                .db
                .begin_read()
                .map_err(redb_err("starting a read"))?;
            f(&txn)
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn rebuild_lanes(db: &Database) -> Result<LaneBook, StoreError> {
    let txn = db.begin_read().map_err(redb_err("starting a read"))?;
    let inbox = txn
        .open_table(INBOX)
        .map_err(redb_err("opening the inbox"))?;
    let mut book = LaneBook::default();
    for row in inbox.iter().map_err(redb_err("reading the inbox"))? {
        let (key, _) = row.map_err(redb_err("reading the inbox"))?;
        let (id, _) = key.value();
        let id = ConversationId::parse(id).map_err(|e| StoreError::corrupt("inbox key", e))?;
        book.add_pending(&id, 1);
    }
    Ok(book)
}

fn run_writer(shared: &Shared, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_group(shared, batch);
    }
}

/// A job's reply, held back until the group is committed.
enum Reply {
    Ingest(
        oneshot::Sender<Result<IngestReport, StoreError>>,
        IngestReport,
    ),
    Commit(
        oneshot::Sender<Result<CommitOutcome, StoreError>>,
        CommitOutcome,
        Option<(ConversationId, Timestamp)>,
    ),
    Count(oneshot::Sender<Result<usize, StoreError>>, usize),
    Erased(
        oneshot::Sender<Result<ErasureReport, StoreError>>,
        ErasureReport,
    ),
    /// A job refused before it wrote anything; the rest of the group goes on.
    Refused(
        oneshot::Sender<Result<IngestReport, StoreError>>,
        StoreError,
    ),
    Unit(oneshot::Sender<Result<(), StoreError>>),
    Custom(Answer),
}

impl Reply {
    fn fail(self, error: &StoreError) {
        let error = || StoreError::Embedded {
            context: "group commit failed",
            source: error.to_string().into(),
        };
        // A caller that stopped waiting does not need the answer.
        match self {
            Reply::Ingest(tx, _) => drop(tx.send(Err(error()))),
            Reply::Commit(tx, ..) => drop(tx.send(Err(error()))),
            Reply::Count(tx, _) => drop(tx.send(Err(error()))),
            Reply::Erased(tx, _) => drop(tx.send(Err(error()))),
            Reply::Refused(tx, _) => drop(tx.send(Err(error()))),
            Reply::Unit(tx) => drop(tx.send(Err(error()))),
            Reply::Custom(answer) => answer(Some(&error())),
        }
    }
}

fn run_group(shared: &Shared, batch: Vec<Job>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut delta = LaneDelta::default();
    let outcome = (|| -> Result<(), StoreError> {
        let txn = shared
            .db
            .begin_write()
            .map_err(redb_err("starting a transaction"))?;
        let mut group = Group::open(&txn)?;
        for job in batch {
            replies.push(run_job(shared, &mut group, job, &mut delta)?);
        }
        group.finish()?;
        txn.commit().map_err(redb_err("committing"))
    })();
    if let Err(error) = outcome {
        tracing::error!(error = %error, "embedded store write failed");
        for reply in replies {
            reply.fail(&error);
        }
        return;
    }
    let mut wake = !delta.enqueued.is_empty();
    {
        let mut lanes = shared.lanes();
        for id in &delta.enqueued {
            lanes.add_pending(id, 1);
        }
        for (id, count) in &delta.consumed {
            lanes.consumed(id, *count);
        }
        for reply in &replies {
            if let Reply::Commit(_, CommitOutcome::Applied, Some((id, until))) = reply {
                lanes.extend(id, *until);
            }
        }
    }
    for reply in replies {
        match reply {
            Reply::Ingest(tx, report) => drop(tx.send(Ok(report))),
            Reply::Commit(tx, outcome, _) => drop(tx.send(Ok(outcome))),
            Reply::Count(tx, n) => {
                wake |= n > 0;
                drop(tx.send(Ok(n)));
            }
            Reply::Unit(tx) => drop(tx.send(Ok(()))),
            Reply::Erased(tx, report) => {
                wake = true;
                drop(tx.send(Ok(report)));
            }
            Reply::Refused(tx, error) => drop(tx.send(Err(error))),
            Reply::Custom(answer) => answer(None),
        }
    }
    if wake {
        shared.signal.notify_waiters();
    }
}

/// Runs one job inside the group's transaction. Storage errors abort the whole group.
fn run_job(
    shared: &Shared,
    group: &mut Group<'_>,
    job: Job,
    delta: &mut LaneDelta,
) -> Result<Reply, StoreError> {
    Ok(match job {
        Job::Ingest(batch, tx) => {
            let stale = match batch.identity_epoch {
                Some(epoch) => Some(group.counter(IDENTITY_EPOCH)?).filter(|s| *s != epoch),
                None => None,
            };
            match stale {
                Some(stored) => Reply::Refused(tx, StoreError::StaleIdentities { stored }),
                None => Reply::Ingest(tx, jobs::ingest(shared, group, batch, delta)?),
            }
        }
        Job::Erase(erasure, tx) => Reply::Erased(tx, privacy::erase(group, erasure, delta)?),
        Job::Commit(claim, step, lease, tx) => {
            let until = step.now.plus(lease);
            let outcome = jobs::commit(shared, group, &claim, *step, delta)?;
            Reply::Commit(tx, outcome, Some((claim.conversation, until)))
        }
        Job::FireTimers(now, limit, tx) => {
            Reply::Count(tx, jobs::fire_timers(group, now, limit, delta)?)
        }
        Job::RecordOutbound(id, now, tx) => {
            group.remember(
                &jobs::outbound_key(&id),
                now.plus(shared.options.dedupe_ttl),
            )?;
            Reply::Unit(tx)
        }
        Job::Purge(now, tx) => Reply::Count(tx, group.purge(now, 10_000)?),
        Job::Custom(job) => Reply::Custom(job(group)?),
    })
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn work_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.shared.signal)
    }

    async fn ingest(&self, batch: IngestBatch) -> Result<IngestReport, StoreError> {
        self.submit(|tx| Job::Ingest(batch, tx)).await
    }

    async fn claim(&self, now: Timestamp, lease: Duration) -> Result<Option<Claim>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let claimed = self
            .shared
            .lanes()
            .claim(now, now.plus(lease), token.clone());
        Ok(claimed.map(|conversation| Claim {
            conversation,
            token,
        }))
    }

    async fn head(
        &self,
        claim: &Claim,
        now: Timestamp,
        max: usize,
    ) -> Result<Option<(Conversation, Vec<InboxItem>)>, StoreError> {
        let id = claim.conversation.clone();
        self.read(move |txn| {
            let key = id.to_string();
            let inbox = txn
                .open_table(INBOX)
                .map_err(redb_err("opening the inbox"))?;
            let range = inbox
                .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
                .map_err(redb_err("reading the inbox"))?;
            let mut items = Vec::new();
            for row in range.take(max.max(1)) {
                let (k, v) = row.map_err(redb_err("reading the inbox"))?;
                let mut item: InboxItem = decode(&key, v.value())?;
                item.seq = k.value().1;
                items.push(item);
            }
            if items.is_empty() {
                return Ok(None);
            }
            let table = txn
                .open_table(CONVERSATIONS)
                .map_err(redb_err("opening conversations"))?;
            let conversation = match table
                .get(key.as_str())
                .map_err(redb_err("reading a conversation"))?
            {
                Some(v) => decode(&key, v.value())?,
                None => Conversation::new(id, now),
            };
            Ok(Some((conversation, items)))
        })
        .await
    }

    async fn commit(
        &self,
        claim: &Claim,
        commit: StepCommit,
        lease: Duration,
    ) -> Result<CommitOutcome, StoreError> {
        let claim = claim.clone();
        self.submit(|tx| Job::Commit(claim, Box::new(commit), lease, tx))
            .await
    }

    async fn renew(
        &self,
        claim: &Claim,
        now: Timestamp,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut lanes = self.shared.lanes();
        if !lanes.holds(&claim.conversation, &claim.token) {
            return Ok(false);
        }
        lanes.extend(&claim.conversation, now.plus(lease));
        Ok(true)
    }

    async fn release(&self, claim: Claim, _now: Timestamp) -> Result<(), StoreError> {
        if self
            .shared
            .lanes()
            .release(&claim.conversation, &claim.token)
        {
            self.shared.signal.notify_waiters();
        }
        Ok(())
    }

    async fn fire_due_timers(&self, now: Timestamp, limit: usize) -> Result<usize, StoreError> {
        self.submit(|tx| Job::FireTimers(now, limit, tx)).await
    }

    async fn record_outbound(&self, id: &MessageId, now: Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        self.submit(|tx| Job::RecordOutbound(id, now, tx)).await
    }

    async fn reserve_send_slot(
        &self,
        phone_number_id: &PhoneNumberId,
        now: Timestamp,
        per_second: u32,
    ) -> Result<Timestamp, StoreError> {
        let mut slots = self
            .shared
            .send_slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let recent = slots.entry(phone_number_id.clone()).or_default();
        Ok(next_slot(recent, now, per_second))
    }

    async fn resolve_customers(
        &self,
        tenant: &str,
        lookups: &[CustomerLookup],
    ) -> Result<Vec<Resolved>, StoreError> {
        // Most lookups name customers whose aliases are all known: a read answers them
        // without a write (and its fsync).
        let (t, l) = (tenant.to_owned(), lookups.to_vec());
        let answers = self
            .read(move |txn| {
                let table = txn
                    .open_table(ALIASES)
                    .map_err(redb_err("opening aliases"))?;
                let (answers, writes) =
                    crate::customers::resolve_all(&l, |alias| aliases::owner(&table, &t, alias))?;
                Ok(writes.is_empty().then_some(answers))
            })
            .await?;
        if let Some(answers) = answers {
            return Ok(answers);
        }
        let (t, l) = (tenant.to_owned(), lookups.to_vec());
        self.write(move |group| aliases::resolve_in(group.aliases()?, &t, &l))
            .await
    }

    async fn customer_of(
        &self,
        tenant: &str,
        alias: &Alias,
    ) -> Result<Option<CustomerId>, StoreError> {
        let (t, a) = (tenant.to_owned(), alias.clone());
        self.read(move |txn| {
            let table = txn
                .open_table(ALIASES)
                .map_err(redb_err("opening aliases"))?;
            aliases::owner(&table, &t, &a)
        })
        .await
    }

    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        let key = id.to_string();
        self.read(move |txn| {
            let table = txn
                .open_table(CONVERSATIONS)
                .map_err(redb_err("opening conversations"))?;
            let found = table
                .get(key.as_str())
                .map_err(redb_err("reading a conversation"))?;
            found.map(|v| decode(&key, v.value())).transpose()
        })
        .await
    }

    async fn list_conversations(&self, query: &ListQuery) -> Result<Vec<Conversation>, StoreError> {
        let query = query.clone();
        self.read(move |txn| {
            let table = txn
                .open_table(CONVERSATIONS)
                .map_err(redb_err("opening conversations"))?;
            let after = query.after.as_ref().map(ToString::to_string);
            let ids: Vec<String> = match query.mode {
                Some(mode) => {
                    let index = txn
                        .open_table(BY_MODE)
                        .map_err(redb_err("opening the mode index"))?;
                    let start = after.as_deref().unwrap_or("");
                    let mut ids = Vec::new();
                    for row in index
                        .range((mode.as_str(), start)..)
                        .map_err(redb_err("reading the mode index"))?
                    {
                        let (key, _) = row.map_err(redb_err("reading the mode index"))?;
                        let (m, id) = key.value();
                        if m != mode.as_str() || ids.len() >= query.limit {
                            break;
                        }
                        if after.as_deref() != Some(id) {
                            ids.push(id.to_owned());
                        }
                    }
                    ids
                }
                None => {
                    let start = after.clone().unwrap_or_default();
                    let mut ids = Vec::new();
                    for row in table
                        .range(start.as_str()..)
                        .map_err(redb_err("reading conversations"))?
                    {
                        let (key, _) = row.map_err(redb_err("reading conversations"))?;
                        if ids.len() >= query.limit {
                            break;
                        }
                        if after.as_deref() != Some(key.value()) {
                            ids.push(key.value().to_owned());
                        }
                    }
                    ids
                }
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(v) = table
                    .get(id.as_str())
                    .map_err(redb_err("reading a conversation"))?
                {
                    out.push(decode(&id, v.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn contact(
        &self,
        number: &PhoneNumberId,
        who: &str,
    ) -> Result<Option<ContactUpdate>, StoreError> {
        let key = crate::model::contact_key(number, who);
        self.read(move |txn| {
            let table = txn
                .open_table(CONTACTS)
                .map_err(redb_err("opening contacts"))?;
            let found = table
                .get(key.as_str())
                .map_err(redb_err("reading a contact"))?;
            found.map(|v| decode(&key, v.value())).transpose()
        })
        .await
    }

    async fn account(&self, account: &str) -> Result<Option<AccountState>, StoreError> {
        let key = account.to_owned();
        self.read(move |txn| {
            let table = txn
                .open_table(ACCOUNTS)
                .map_err(redb_err("opening accounts"))?;
            let found = table
                .get(key.as_str())
                .map_err(redb_err("reading an account"))?;
            found.map(|v| decode(&key, v.value())).transpose()
        })
        .await
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        self.read(move |txn| {
            let table = txn
                .open_table(DEAD_LETTERS)
                .map_err(redb_err("opening dead letters"))?;
            let mut out = Vec::new();
            for row in table
                .iter()
                .map_err(redb_err("reading dead letters"))?
                .rev()
                .take(limit)
            {
                let (k, v) = row.map_err(redb_err("reading dead letters"))?;
                out.push((k.value(), decode("dead letter", v.value())?));
            }
            Ok(out)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META).map_err(redb_err("opening meta"))?;
            let counter = |name: &str| -> Result<u64, StoreError> {
                Ok(meta
                    .get(name)
                    .map_err(redb_err("reading a counter"))?
                    .map_or(0, |v| v.value()))
            };
            let letters = txn
                .open_table(DEAD_LETTERS)
                .map_err(redb_err("opening dead letters"))?;
            let conversations = txn
                .open_table(CONVERSATIONS)
                .map_err(redb_err("opening conversations"))?;
            let count = |table: TableDefinition<'_, &str, &[u8]>| -> Result<u64, StoreError> {
                txn.open_table(table)
                    .map_err(redb_err("opening hooks"))?
                    .len()
                    .map_err(redb_err("counting hooks"))
            };
            Ok(StoreStats {
                inbox_depth: counter(INBOX_DEPTH)?,
                dead_letters: letters.len().map_err(redb_err("counting dead letters"))?,
                conversations: conversations
                    .len()
                    .map_err(redb_err("counting conversations"))?,
                hooks_pending: count(HOOKS)?,
                hooks_dead: count(DEAD_HOOKS)?,
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|_| Ok(())).await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.submit(|tx| Job::Purge(now, tx)).await
    }

    async fn due_hooks(
        &self,
        now: Timestamp,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<HookJob>, StoreError> {
        self.write(move |group| {
            let mut taken = Vec::new();
            for id in group.due_hook_ids(now, limit)? {
                if let Some(mut job) = group.remove_hook(&id)? {
                    job.due = now.plus(lease);
                    group.put_hook(&job)?;
                    taken.push(job);
                }
            }
            Ok(taken)
        })
        .await
    }

    async fn settle_hook(
        &self,
        job: &HookJob,
        settle: HookSettle,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let id = job.id.clone();
        self.write(move |group| {
            let Some(mut stored) = group.remove_hook(&id)? else {
                return Ok(());
            };
            match settle {
                HookSettle::Delivered => {}
                HookSettle::Retry { due, error } => {
                    stored.attempts += 1;
                    stored.due = due;
                    stored.last_error = Some(error);
                    group.put_hook(&stored)?;
                }
                HookSettle::Dead { error } => {
                    stored.attempts += 1;
                    stored.due = now;
                    stored.last_error = Some(error);
                    let bytes = encode(&stored)?;
                    group
                        .dead_hooks
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(redb_err("writing a dead hook"))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn dead_hooks(&self, limit: usize) -> Result<Vec<HookJob>, StoreError> {
        let mut all: Vec<HookJob> = self
            .read(|txn| {
                let table = txn
                    .open_table(DEAD_HOOKS)
                    .map_err(redb_err("opening dead hooks"))?;
                let mut out = Vec::new();
                for row in table.iter().map_err(redb_err("reading dead hooks"))? {
                    let (k, v) = row.map_err(redb_err("reading dead hooks"))?;
                    out.push(decode(k.value(), v.value())?);
                }
                Ok(out)
            })
            .await?;
        all.sort_by(|a, b| b.due.cmp(&a.due).then_with(|| a.id.cmp(&b.id)));
        all.truncate(limit);
        Ok(all)
    }

    async fn redrive_hook(&self, id: &str, now: Timestamp) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |group| {
            let Some(dead) = group
                .dead_hooks
                .remove(id.as_str())
                .map_err(redb_err("writing a dead hook"))?
                .map(|v| decode::<HookJob>(&id, v.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            let job = HookJob {
                due: now,
                attempts: 0,
                ..dead
            };
            group.put_hook(&job)?;
            Ok(true)
        })
        .await
    }

    async fn set_agent(&self, state: AgentState) -> Result<(), StoreError> {
        self.write(move |group| {
            let bytes = encode(&state)?;
            group
                .agents
                .insert(state.agent.as_str(), bytes.as_slice())
                .map_err(redb_err("writing an agent"))?;
            Ok(())
        })
        .await
    }

    async fn agents(&self) -> Result<Vec<AgentState>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(AGENTS).map_err(redb_err("opening agents"))?;
            let mut out = Vec::new();
            for row in table.iter().map_err(redb_err("reading agents"))? {
                let (k, v) = row.map_err(redb_err("reading agents"))?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn embeddings(
        &self,
        model: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let (model, keys) = (model.to_owned(), keys.to_vec());
        self.read(move |txn| {
            let table = txn
                .open_table(EMBEDDINGS)
                .map_err(redb_err("opening embeddings"))?;
            keys.iter()
                .map(|key| {
                    Ok(table
                        .get((model.as_str(), key.as_str()))
                        .map_err(redb_err("reading an embedding"))?
                        .map(|v| v.value().to_vec()))
                })
                .collect()
        })
        .await
    }

    async fn put_embeddings(
        &self,
        model: &str,
        entries: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let model = model.to_owned();
        self.write(move |group| {
            let mut table = group.table(EMBEDDINGS)?;
            for (key, bytes) in &entries {
                table
                    .insert((model.as_str(), key.as_str()), bytes.as_slice())
                    .map_err(redb_err("writing an embedding"))?;
            }
            Ok(())
        })
        .await
    }

    async fn touch_number(
        &self,
        id: &PhoneNumberId,
        touch: NumberTouch,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        self.write(move |group| {
            let stored = group.number(id.as_str())?;
            let next = touched(stored, &id, &touch, now);
            group.put_number(&next)
        })
        .await
    }

    async fn number(&self, id: &PhoneNumberId) -> Result<Option<NumberState>, StoreError> {
        let id = id.to_string();
        self.read(move |txn| {
            let table = txn
                .open_table(NUMBERS)
                .map_err(redb_err("opening numbers"))?;
            let found = table
                .get(id.as_str())
                .map_err(redb_err("reading a number"))?;
            found.map(|v| decode(&id, v.value())).transpose()
        })
        .await
    }

    async fn numbers(&self) -> Result<Vec<NumberState>, StoreError> {
        self.read(|txn| {
            let table = txn
                .open_table(NUMBERS)
                .map_err(redb_err("opening numbers"))?;
            let mut out = Vec::new();
            for row in table.iter().map_err(redb_err("reading numbers"))? {
                let (k, v) = row.map_err(redb_err("reading numbers"))?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn update_number(
        &self,
        state: NumberState,
        hooks: Vec<HookJob>,
    ) -> Result<bool, StoreError> {
        self.write(move |group| {
            let stored = group.number(state.phone_number_id.as_str())?;
            if stored.as_ref().map_or(0, |s| s.rev) != state.rev {
                return Ok(false);
            }
            let mut next = state;
            if let Some(stored) = stored {
                next.last_phone_at = stored.last_phone_at;
                next.last_api_at = stored.last_api_at;
                next.held_sends = stored.held_sends;
                next.waba_id = next.waba_id.or(stored.waba_id);
            }
            next.rev += 1;
            group.put_number(&next)?;
            for hook in &hooks {
                group.put_hook(hook)?;
            }
            Ok(true)
        })
        .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<u64, StoreError> {
        self.write(move |group| privacy::append_audit(group, entry))
            .await
    }

    async fn audit(
        &self,
        since: Timestamp,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |txn| privacy::audit(txn, since, after_id, limit))
            .await
    }

    async fn purge_older(
        &self,
        what: Purge,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.write(move |group| privacy::purge(group, what, before, limit))
            .await
    }

    async fn rewrite_conversation(
        &self,
        conversation: Conversation,
        expected_rev: u64,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(move |group| privacy::rewrite(group, conversation, expected_rev, now))
            .await
    }

    async fn erase_customer(&self, erasure: Erasure) -> Result<ErasureReport, StoreError> {
        self.submit(|tx| Job::Erase(erasure, tx)).await
    }

    async fn tenant_customers(&self, tenant: &str) -> Result<Vec<CustomerId>, StoreError> {
        let tenant = tenant.to_owned();
        self.read(move |txn| {
            let table = txn
                .open_table(ALIASES)
                .map_err(redb_err("opening aliases"))?;
            privacy::customers_of(&table, &tenant)
        })
        .await
    }

    async fn customer_aliases(
        &self,
        tenant: &str,
        customer: &CustomerId,
    ) -> Result<Vec<Alias>, StoreError> {
        let (tenant, customer) = (tenant.to_owned(), customer.as_str().to_owned());
        self.read(move |txn| {
            let table = txn
                .open_table(ALIASES)
                .map_err(redb_err("opening aliases"))?;
            privacy::aliases_of(&table, &tenant, &customer)
        })
        .await
    }

    async fn tombstone(
        &self,
        tenant: &str,
        alias: &Alias,
    ) -> Result<Option<Tombstone>, StoreError> {
        let (tenant, alias) = (tenant.to_owned(), alias.clone());
        self.read(move |txn| privacy::tombstone(txn, &tenant, &alias))
            .await
    }

    async fn identity_epoch(&self) -> Result<u64, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META).map_err(redb_err("opening meta"))?;
            Ok(meta
                .get(IDENTITY_EPOCH)
                .map_err(redb_err("reading a counter"))?
                .map_or(0, |v| v.value()))
        })
        .await
    }

    async fn lead(
        &self,
        _role: &str,
        _holder: &str,
        _now: Timestamp,
        _ttl: Duration,
    ) -> Result<bool, StoreError> {
        // One process owns the file (redb locks it), so it leads every role.
        Ok(true)
    }
}
