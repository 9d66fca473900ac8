//! Data protection in the engine: erasing a customer on request, with the `customer.erased`
//! hook, and the retention sweep that removes what is older than the business keeps.
//!
//! The store does the removing ([`tandem_store::Store::erase_customer`],
//! [`tandem_store::Store::purge_older`], [`tandem_store::Store::rewrite_conversation`]); this
//! module decides what to ask for and counts what went.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tandem_domain::{Clock, ConversationId, CustomerId, Timestamp};
use tandem_handoff::{HookEvent, Hooks};
use tandem_store::{Erasure, ErasureReport, ListQuery, Purge, Store, StoreError};
use tokio::sync::watch;

use crate::metrics;

/// How long what customers wrote is kept (`[retention]`). Off by default: nothing is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Transcript lines, dead letters and dead hook deliveries older than this are removed.
    pub transcripts: Option<Duration>,
    /// Audit entries older than this are removed.
    pub audit: Option<Duration>,
    /// How often the sweep runs.
    pub every: Duration,
    /// At most this many records (and entries of each kind) per sweep.
    pub batch: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            transcripts: None,
            audit: None,
            every: Duration::from_secs(3600),
            batch: 500,
        }
    }
}

impl Retention {
    /// True when something is to be removed.
    pub fn is_on(&self) -> bool {
        self.transcripts.is_some() || self.audit.is_some()
    }
}

/// What one sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Transcript lines dropped from records.
    pub transcript_lines: usize,
    /// Records rewritten.
    pub records: usize,
    /// Dead letters removed.
    pub dead_letters: usize,
    /// Dead hook deliveries removed.
    pub dead_hooks: usize,
    /// Audit entries removed.
    pub audit: usize,
}

/// The retention sweep, which walks the conversations a page per run.
#[derive(Debug)]
pub struct Sweeper {
    store: Arc<dyn Store>,
    retention: Retention,
    /// Where the next page of conversations starts; `None` from the beginning.
    cursor: Option<ConversationId>,
}

impl Sweeper {
    /// A sweeper over `store`.
    pub fn new(store: Arc<dyn Store>, retention: Retention) -> Self {
        Self {
            store,
            retention,
            cursor: None,
        }
    }

    /// Runs one bounded sweep at `now`: one page of conversation records, and one batch of
    /// each purge.
    ///
    /// # Errors
    /// The store's error; what was removed before it stays removed.
    pub async fn sweep(&mut self, now: Timestamp) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let batch = self.retention.batch.max(1);
        if let Some(keep) = self.retention.transcripts {
            let cutoff = now.minus(keep);
            let page = self
                .store
                .list_conversations(&ListQuery {
                    mode: None,
                    after: self.cursor.clone(),
                    limit: batch,
                })
                .await?;
            self.cursor = if page.len() < batch {
                None
            } else {
                page.last().map(|c| c.id.clone())
            };
            for record in page {
                let old = record.transcript.iter().filter(|l| l.at < cutoff).count();
                if old == 0 {
                    continue;
                }
                let rev = record.rev;
                let mut trimmed = record;
                trimmed.transcript.retain(|l| l.at >= cutoff);
                // A record that changed meanwhile is trimmed on the next pass.
                if self.store.rewrite_conversation(trimmed, rev, now).await? {
                    report.records += 1;
                    report.transcript_lines += old;
                }
            }
            report.dead_letters = self
                .store
                .purge_older(Purge::DeadLetters, cutoff, batch)
                .await?;
            report.dead_hooks = self
                .store
                .purge_older(Purge::DeadHooks, cutoff, batch)
                .await?;
        }
        if let Some(keep) = self.retention.audit {
            report.audit = self
                .store
                .purge_older(Purge::Audit, now.minus(keep), batch)
                .await?;
        }
        for (what, n) in [
            ("transcript_lines", report.transcript_lines),
            ("dead_letters", report.dead_letters),
            ("dead_hooks", report.dead_hooks),
            ("audit", report.audit),
        ] {
            if n > 0 {
                ::metrics::counter!(metrics::RETENTION_REMOVED, "what" => what).increment(n as u64);
            }
        }
        Ok(report)
    }

    /// Sweeps every `retention.every` while this process leads the `retention` role (one
    /// process of those sharing the store sweeps), until `stopped`.
    pub async fn run(mut self, clock: Arc<dyn Clock>, mut stopped: watch::Receiver<bool>) {
        let holder = crate::router::leader_name("retention");
        let mut tick = tokio::time::interval(self.retention.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            let now = clock.now();
            let lead_for = self.retention.every.saturating_mul(3);
            match self.store.lead("retention", &holder, now, lead_for).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    tracing::warn!(%error, "retention: leadership check failed");
                    continue;
                }
            }
            match self.sweep(now).await {
                Ok(report) if report != SweepReport::default() => {
                    tracing::info!(?report, "retention sweep removed old data");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "retention sweep failed; next run retries"),
            }
        }
    }
}

/// Erases `customer` and queues `customer.erased` for every hook target that wants it.
/// `identifiers` (the customer's phone, BSUID, parent BSUID as the API showed them) go in the
/// hook, so the receiver can find its copy; nothing else about the customer does.
///
/// # Errors
/// The store's error; nothing was erased.
pub async fn erase_customer(
    store: &dyn Store,
    hooks: &Hooks,
    customer: CustomerId,
    identifiers: Value,
    now: Timestamp,
) -> Result<ErasureReport, StoreError> {
    let event = HookEvent::CustomerErased;
    let event_id = format!("evt_erased_{customer}_{}", now.as_millis());
    let body = json!({
        "id": event_id,
        "event": event.name(),
        "created_at": tandem_handoff::hooks::rfc3339(now),
        "customer": identifiers,
    })
    .to_string();
    let targets = hooks.targets_for(event, None);
    let jobs = crate::desk::deliveries(&targets, event, &event_id, &body, now);
    let report = store
        .erase_customer(Erasure {
            tenant: tandem_store::DEFAULT_TENANT.to_owned(),
            customer,
            now,
            hooks: jobs,
        })
        .await?;
    ::metrics::counter!(metrics::ERASURES).increment(1);
    Ok(report)
}
