//! Lane workers, the idle-timer pump and store upkeep (expired keys, the retention sweep).
//!
//! A worker claims one conversation's lane from the store, decides its waiting events in
//! arrival order ([`crate::turn::decide`]; the events waiting at that moment together, in one
//! atomic commit), and gives the lane back. Several
//! workers run lanes of different conversations in parallel; with a shared Redis store,
//! workers of several processes do, and the store's lease guarantees one owner per lane.
//!
//! Workers sleep on the store's work signal (raised by this process's ingress) and also look
//! every `poll` interval, which is how they see events another replica stored.

use std::sync::Arc;
use std::time::Duration;

use tandem_domain::Clock;
use tandem_store::{Claim, CommitOutcome, StepCommit, Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::EngineConfig;
use crate::hook_sender::HookSender;
use crate::metrics;
use crate::responder::drive;
use crate::router::Router;
use crate::tenants::{Tenant, TenantParts, Tenants};
use crate::turn::{Decision, Input, Parts};

/// How often expired deduplication keys are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// The running background work of the engine. Stop it with [`Dispatcher::shutdown`].
#[derive(Debug)]
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

#[derive(Debug, Clone)]
struct Worker {
    store: Arc<dyn Store>,
    config: EngineConfig,
    clock: Arc<dyn Clock>,
    bot: LaneParts,
    /// The parts of a conversation whose number no tenant owns (its tenant was removed):
    /// its events are recorded, nothing is sent.
    nobody: Arc<Tenant>,
}

/// The parts lanes use besides the store: the tenants (whose flows answer customers and whose
/// senders send the outbox; without a responder a tenant's lanes only record, without a
/// sender its replies wait in the outbox) and the shared background workers.
#[derive(Debug, Clone, Default)]
pub struct LaneParts {
    /// The tenants in force.
    pub tenants: Tenants,
    /// Raised when a commit wrote hook deliveries, so the deliverer looks at once.
    pub hooks_ready: Arc<tokio::sync::Notify>,
    /// Delivers the hook outbox; none when no hook is configured.
    pub hook_sender: Option<HookSender>,
    /// Raised when a commit changed who waits for a person, so this process's router looks
    /// at once instead of at its next tick.
    pub routing_ready: Arc<tokio::sync::Notify>,
    /// Watches the numbers' links; none in processes that run no lanes.
    pub monitor: Option<Arc<crate::health::Monitor>>,
}

impl Dispatcher {
    /// Starts `config.workers` lane workers, the timer pump and the purge task.
    pub fn start(
        store: Arc<dyn Store>,
        config: EngineConfig,
        clock: Arc<dyn Clock>,
        bot: LaneParts,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let nobody = Arc::new(Tenant::new("(none)", TenantParts::default(), &config));
        let worker = Worker {
            store,
            config,
            clock,
            bot,
            nobody,
        };
        let mut tasks = JoinSet::new();
        for _ in 0..worker.config.workers {
            tasks.spawn(worker.clone().run_lanes(stopped.clone()));
        }
        if worker.config.workers > 0 {
            tasks.spawn(worker.clone().run_timers(stopped.clone()));
            // Declared tenants may gain teams or hooks on a reload; a single business has
            // what it started with.
            let tenants = &worker.bot.tenants;
            let declared = !tenants.is_single();
            if declared || tenants.any_routing() {
                let router = Router::new(
                    Arc::clone(&worker.store),
                    tenants.clone(),
                    Arc::clone(&worker.clock),
                    worker.config.clone(),
                );
                tasks.spawn(router.run(Arc::clone(&worker.bot.routing_ready), stopped.clone()));
            }
            if let Some(monitor) = worker.bot.monitor.clone() {
                tasks.spawn(monitor.run(stopped.clone()));
            }
            if let Some(hooks) = worker.bot.hook_sender.clone()
                && (declared || tenants.any_hooks())
            {
                tasks.spawn(hooks.run(Arc::clone(&worker.bot.hooks_ready), stopped.clone()));
            }
        }
        // Declared tenants may keep transcripts for their own period, from any reload on.
        if worker.config.retention.is_on() || !worker.bot.tenants.is_single() {
            let sweeper = crate::privacy::Sweeper::new(
                Arc::clone(&worker.store),
                worker.config.retention.clone(),
            )
            .with_tenants(worker.bot.tenants.clone());
            tasks.spawn(sweeper.run(Arc::clone(&worker.clock), stopped.clone()));
        }
        tasks.spawn(worker.run_purge(stopped));
        Self { stop, tasks }
    }

    /// Asks every task to stop after its current step and waits for them, at most `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        // An error means every task already ended: nothing left to signal.
        if self.stop.send(true).is_err() {
            tracing::debug!("engine tasks had already stopped");
        }
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(?grace, "engine tasks did not stop in time; aborting them");
            self.tasks.abort_all();
        }
    }
}

fn record_error(stage: &'static str, error: &StoreError) {
    ::metrics::counter!(metrics::ERRORS, "stage" => stage, "error_kind" => error.kind().as_str())
        .increment(1);
    tracing::warn!(stage, error = %error, "engine store operation failed");
}

impl Worker {
    async fn run_lanes(self, mut stopped: watch::Receiver<bool>) {
        let signal = self.store.work_signal();
        while !*stopped.borrow() {
            // Register for the signal before looking, so a wake-up between the look and the
            // wait is not missed.
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.store.claim(self.clock.now(), self.config.lease).await {
                Ok(Some(claim)) => {
                    self.run_lane(claim).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => record_error("processing", &error),
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(self.config.poll) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    async fn run_lane(&self, claim: Claim) {
        let mut applied = 0;
        while applied < self.config.lane_budget {
            let asked = self.config.lane_budget - applied;
            match self.renewing(&claim, self.step(&claim, asked)).await {
                // Fewer than asked: the inbox was drained. Events that arrived since make the
                // release offer the lane again, so there is no need to look once more.
                Ok(Some((CommitOutcome::Applied, n))) if n < asked => break,
                Ok(Some((CommitOutcome::Applied, n))) => applied += n,
                Ok(Some((CommitOutcome::Conflict, _))) => {
                    ::metrics::counter!(metrics::CONFLICTS).increment(1);
                }
                // Another worker owns the lane now; it is not ours to release.
                Ok(Some((CommitOutcome::LeaseLost, _))) => return,
                Ok(None) => break,
                Err(error) => {
                    record_error("processing", &error);
                    break;
                }
            }
        }
        if let Err(error) = self.store.release(claim, self.clock.now()).await {
            record_error("processing", &error);
        }
    }

    /// Runs `work` while renewing the claim's lease every third of it, so a step waiting on a
    /// slow backend call, an LLM request or a send keeps its lane: otherwise another worker
    /// would take the lane when the lease ran out and run the same turn again, repeating its
    /// calls. When the lease is lost anyway (a stalled process), renewing stops and the step's
    /// commit is refused.
    async fn renewing<T>(&self, claim: &Claim, work: impl std::future::Future<Output = T>) -> T {
        let every = self.config.lease / 3;
        tokio::pin!(work);
        let mut owned = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep(every), if owned => {
                    match self.store.renew(claim, self.clock.now(), self.config.lease).await {
                        Ok(true) => {}
                        Ok(false) => owned = false,
                        Err(error) => record_error("processing", &error),
                    }
                }
            }
        }
    }

    /// Decides up to `max` of the lane's oldest events ([`crate::turn::decide`], performing
    /// its requests) and commits the decision in one write; returns the outcome and how many
    /// events it covered, or `None` when the inbox is empty. After the commit: metrics, the
    /// hook and routing wake-ups, and the sender's drain.
    async fn step(
        &self,
        claim: &Claim,
        max: usize,
    ) -> Result<Option<(CommitOutcome, usize)>, StoreError> {
        let now = self.clock.now();
        let Some((conversation, items)) = self.store.head(claim, now, max).await? else {
            return Ok(None);
        };
        let span = tracing::debug_span!("conversation", events = items.len());
        let _entered = span.enter();
        let contact = tandem_store::contact_for(self.store.as_ref(), &conversation).await?;
        let name = contact
            .as_ref()
            .filter(|c| !c.removed)
            .and_then(|c| c.full_name.clone());
        let tenant = self
            .bot
            .tenants
            .of_number(conversation.id.phone_number_id())
            .await
            .unwrap_or_else(|| Arc::clone(&self.nobody));
        let flows = tenant.responder.as_ref().map(|r| r.flows().current());
        let parts = Parts {
            flows: flows.as_deref(),
            desk: &tenant.desk,
        };
        let input = Input {
            items: &items,
            contact_name: name.as_deref(),
            now,
        };
        let (expected_rev, id) = (conversation.rev, conversation.id.clone());
        // A replay reads the record again; should a pause have changed it since, the commit
        // below is refused on the revision and the step runs again.
        let store = &self.store;
        let again = || async move {
            match store.head(claim, now, max).await? {
                Some((record, _)) => Ok(record),
                None => Err(StoreError::Protocol(
                    "the lane's events left the inbox while it was held".into(),
                )),
            }
        };
        let responder = tenant.responder.as_ref();
        let decision = drive(
            conversation,
            &input,
            &parts,
            &tenant.settings,
            responder,
            again,
        )
        .await?;
        let queue_changed = decision.queue_changed();
        let Decision {
            conversation: record,
            timer,
            effects,
        } = decision;
        let hooks = tenant
            .desk
            .hook_jobs(&record, name.as_deref(), effects.happenings, now);
        let has_hooks = !hooks.is_empty();
        let has_sends = !record.outbox.is_empty();
        let commit = StepCommit {
            now,
            seqs: items.iter().map(|i| i.seq).collect(),
            expected_rev,
            conversation: record,
            timer,
            outbound: Vec::new(),
            hooks,
        };
        let outcome = self.store.commit(claim, commit, self.config.lease).await?;
        if outcome == CommitOutcome::Applied {
            let done = self.clock.now();
            for item in &items {
                ::metrics::counter!(metrics::APPLIED, "event" => item.event.label(), "tenant" => tenant.label.clone()).increment(1);
                ::metrics::histogram!(metrics::ACK_TO_EFFECT)
                    .record(done.since(item.received_at).as_secs_f64());
            }
            for note in &effects.notes {
                note.record(&id, &tenant.label);
            }
            if !effects.decisions.is_empty() {
                tracing::debug!(decisions = ?effects.decisions, "bot turn");
            }
            if has_hooks {
                self.bot.hooks_ready.notify_one();
            }
            if queue_changed {
                self.bot.routing_ready.notify_one();
            }
            if has_sends && let Some(sender) = &tenant.sender {
                sender.drain(claim, self.config.lease).await?;
            }
        }
        Ok(Some((outcome, items.len())))
    }

    async fn run_timers(self, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.timer_tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            if let Err(error) = self.store.fire_due_timers(self.clock.now(), 1000).await {
                record_error("timers", &error);
            }
        }
    }

    async fn run_purge(self, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(PURGE_EVERY);
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            // Each call removes one batch in its own write, so webhooks interleave; keep going
            // until a call finds nothing, so purging keeps up with any ingest rate.
            let mut purged = 0;
            loop {
                match self.store.purge_expired(self.clock.now()).await {
                    Ok(0) => break,
                    Ok(n) => purged += n,
                    Err(error) => {
                        record_error("upkeep", &error);
                        break;
                    }
                }
                if *stopped.borrow() {
                    break;
                }
            }
            if purged > 0 {
                tracing::debug!(purged, "expired deduplication keys purged");
            }
        }
    }
}
