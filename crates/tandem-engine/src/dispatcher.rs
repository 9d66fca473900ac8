//! Lane workers, the idle-timer pump and store upkeep.
//!
//! A worker claims one conversation's lane from the store, applies its waiting events in
//! arrival order (the events waiting at that moment together, in one atomic commit), and
//! gives the lane back. Several
//! workers run lanes of different conversations in parallel; with a shared Redis store,
//! workers of several processes do, and the store's lease guarantees one owner per lane.
//!
//! Workers sleep on the store's work signal (raised by this process's ingress) and also look
//! every `poll` interval, which is how they see events another replica stored.

use std::sync::Arc;
use std::time::Duration;

use tandem_domain::{Burst, Clock, ConversationEvent, InboundMessage, Mode};
use tandem_store::{Claim, CommitOutcome, StepCommit, Store, StoreError, TimerChange};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::apply::{ApplyContext, apply};
use crate::config::EngineConfig;
use crate::desk::{Desk, DeskContext};
use crate::hook_sender::HookSender;
use crate::metrics;
use crate::responder::Responder;
use crate::router::Router;
use crate::sender::Sender;
use tandem_handoff::HookEvent;

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
}

/// The parts a lane uses besides the store: the flows that answer customers and the sender of the
/// outbox. Without a responder the lanes only record; without a sender replies wait in the
/// outbox.
#[derive(Debug, Clone, Default)]
pub struct LaneParts {
    /// Runs the flows for customer messages.
    pub responder: Option<Responder>,
    /// Sends outboxes through the Graph API.
    pub sender: Option<Sender>,
    /// Routing and hook targets.
    pub desk: Desk,
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
        let worker = Worker {
            store,
            config,
            clock,
            bot,
        };
        let mut tasks = JoinSet::new();
        for _ in 0..worker.config.workers {
            tasks.spawn(worker.clone().run_lanes(stopped.clone()));
        }
        if worker.config.workers > 0 {
            tasks.spawn(worker.clone().run_timers(stopped.clone()));
            if worker.bot.desk.routing.routes() {
                let router = Router::new(
                    Arc::clone(&worker.store),
                    Arc::clone(&worker.bot.desk.routing),
                    Arc::clone(&worker.clock),
                    worker.config.clone(),
                );
                tasks.spawn(router.run(Arc::clone(&worker.bot.routing_ready), stopped.clone()));
            }
            if let Some(monitor) = worker.bot.monitor.clone() {
                tasks.spawn(monitor.run(stopped.clone()));
            }
            if let Some(hooks) = worker.bot.hook_sender.clone() {
                tasks.spawn(hooks.run(Arc::clone(&worker.bot.hooks_ready), stopped.clone()));
            }
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

/// Holds a customer text in the conversation's burst: answered `window` after the latest
/// message, and at most four windows after the first.
fn hold(
    record: &mut tandem_domain::Conversation,
    message: &InboundMessage,
    text: &str,
    now: tandem_domain::Timestamp,
    window: Duration,
) {
    let burst = record.bot.burst.get_or_insert_with(|| Burst {
        texts: Vec::new(),
        last_id: message.id.clone(),
        last_sent_at: message.sent_at,
        started_at: now,
        due: now,
    });
    burst.texts.push(text.to_owned());
    burst.last_id = message.id.clone();
    burst.last_sent_at = message.sent_at;
    burst.due = now
        .plus(window)
        .min(burst.started_at.plus(window.saturating_mul(4)));
}

/// The held burst as one customer message: its texts, one per line.
fn burst_message(burst: &Burst) -> InboundMessage {
    InboundMessage {
        id: burst.last_id.clone(),
        sent_at: burst.last_sent_at,
        content: tandem_domain::MessageContent::Text {
            body: burst.texts.join("\n"),
        },
        profile_name: None,
        // The identifiers of the texts were noted when each was applied.
        from: tandem_domain::Identity::default(),
        context_id: None,
        forwarded: false,
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

    /// Applies up to `max` of the lane's oldest events in one commit; returns the outcome and
    /// how many events it covered, or `None` when the inbox is empty.
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
        let ctx = ApplyContext {
            now,
            human_idle: self.config.human_idle,
            transcript_cap: self.config.transcript_cap,
        };
        let expected_rev = conversation.rev;
        let mut record = conversation;
        let mut resumed = Vec::new();
        let mut timer = TimerChange::Keep;
        let mut happenings = Vec::new();
        let desk = &self.bot.desk;
        let desk_ctx = DeskContext {
            now,
            cap: self.config.transcript_cap,
            responder: self.bot.responder.as_ref(),
        };
        let contact = tandem_store::contact_for(self.store.as_ref(), &record).await?;
        let name = contact
            .as_ref()
            .filter(|c| !c.removed)
            .and_then(|c| c.full_name.clone());
        for item in &items {
            let mode_before = record.mode;
            let step = apply(record, item, &ctx);
            record = step.conversation;
            if step.timer != TimerChange::Keep {
                timer = step.timer;
            }
            if let Some(reason) = step.resumed {
                resumed.push(reason);
                desk.on_resumed(&mut record, reason, &desk_ctx, &mut happenings);
            }
            match &item.event {
                ConversationEvent::Echo(_) if !item.own_echo => {
                    desk.on_echo(&mut record, self.config.human_idle, now, &mut happenings);
                }
                ConversationEvent::Agent(action) => {
                    desk.on_agent(&mut record, action, &desk_ctx, &mut happenings);
                }
                ConversationEvent::Customer(message) if mode_before != Mode::Bot => {
                    desk.on_customer_while_person(message, &mut happenings);
                }
                _ => {}
            }
            if let (Some(responder), ConversationEvent::Status(status)) =
                (&self.bot.responder, &item.event)
                && status.status == tandem_domain::DeliveryStatus::Failed
            {
                responder.on_failed_send(&mut record, status, now, self.config.transcript_cap);
            }
            if let (Some(responder), ConversationEvent::Customer(message)) =
                (&self.bot.responder, &item.event)
                && record.mode == Mode::Bot
            {
                let new_session = record
                    .transcript
                    .iter()
                    .rev()
                    .filter(|e| e.role == tandem_domain::Role::Customer && !e.historical)
                    .nth(1)
                    .is_none_or(|previous| {
                        message.sent_at.since(previous.at)
                            >= tandem_domain::conversation::CUSTOMER_WINDOW
                    });
                if new_session {
                    ::metrics::counter!(metrics::SESSIONS).increment(1);
                }
                let window = self.config.burst_window;
                let text = tandem_flows::validate::answer_text(&message.content);
                match text {
                    // Outside a question, a text may wait for the rest of a burst.
                    Some(text)
                        if !window.is_zero()
                            && record.bot.position.is_none()
                            && !record.opted_out =>
                    {
                        hold(&mut record, message, text, now, window);
                    }
                    _ => {
                        // A held burst goes first, then this message.
                        self.answer_burst(
                            responder,
                            &mut record,
                            name.as_deref(),
                            now,
                            &mut happenings,
                        )
                        .await;
                        self.bot_turn(
                            responder,
                            &mut record,
                            message,
                            name.as_deref(),
                            now,
                            &mut happenings,
                        )
                        .await;
                    }
                }
            }
        }
        // A held burst whose window has passed is answered now, as one turn.
        if let Some(responder) = &self.bot.responder
            && record.mode == Mode::Bot
            && record.bot.burst.as_ref().is_some_and(|b| b.due <= now)
        {
            self.answer_burst(
                responder,
                &mut record,
                name.as_deref(),
                now,
                &mut happenings,
            )
            .await;
        }
        // The timer follows the record: idle pause, retries and waiting sends.
        if self.bot.responder.is_some() || !record.outbox.is_empty() || record.mode == Mode::Human {
            timer = match record.next_wake(now, self.config.send_recovery) {
                Some(at) => TimerChange::Set(at),
                None => TimerChange::Clear,
            };
        }
        let queue_changed = happenings.iter().any(|h| {
            matches!(
                h.event,
                HookEvent::HandoffRequested | HookEvent::Resumed | HookEvent::Closed
            )
        });
        let hooks = desk.hook_jobs(&record, name.as_deref(), happenings, now);
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
                ::metrics::counter!(metrics::APPLIED, "event" => item.event.label()).increment(1);
                ::metrics::histogram!(metrics::ACK_TO_EFFECT)
                    .record(done.since(item.received_at).as_secs_f64());
            }
            for reason in resumed {
                ::metrics::counter!(metrics::RESUMES, "reason" => reason).increment(1);
                tracing::info!(reason, "bot resumed");
            }
            if has_hooks {
                self.bot.hooks_ready.notify_one();
            }
            if queue_changed {
                self.bot.routing_ready.notify_one();
            }
            if has_sends && let Some(sender) = &self.bot.sender {
                sender.drain(claim, self.config.lease).await?;
            }
        }
        Ok(Some((outcome, items.len())))
    }

    /// Answers the held burst, if any, as one turn.
    async fn answer_burst(
        &self,
        responder: &Responder,
        record: &mut tandem_domain::Conversation,
        name: Option<&str>,
        now: tandem_domain::Timestamp,
        happenings: &mut Vec<crate::desk::Happening>,
    ) {
        if let Some(burst) = record.bot.burst.take() {
            self.bot_turn(
                responder,
                record,
                &burst_message(&burst),
                name,
                now,
                happenings,
            )
            .await;
        }
    }

    /// Runs one bot turn for `message` and records what it did (handoff, metrics).
    async fn bot_turn(
        &self,
        responder: &Responder,
        record: &mut tandem_domain::Conversation,
        message: &InboundMessage,
        name: Option<&str>,
        now: tandem_domain::Timestamp,
        happenings: &mut Vec<crate::desk::Happening>,
    ) {
        let summary = responder
            .respond(record, message, name, now, self.config.transcript_cap)
            .await;
        let ended = if summary.handoff.is_some() {
            responder.summarize(record).await;
            self.bot
                .desk
                .on_handoff(record, summary.intent.as_deref(), happenings);
            "handoff"
        } else if summary.queued > 0 {
            "reply"
        } else {
            "silent"
        };
        ::metrics::counter!(metrics::TURNS, "ended" => ended).increment(1);
        tracing::debug!(decisions = ?summary.decisions, "bot turn");
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
