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
use tandem_handoff::HookEvent;
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
    /// Tenants keeping transcripts for their own period.
    tenants: Option<crate::tenants::Tenants>,
    /// Where the next page of conversations starts; `None` from the beginning.
    cursor: Option<ConversationId>,
}

impl Sweeper {
    /// A sweeper over `store`.
    pub fn new(store: Arc<dyn Store>, retention: Retention) -> Self {
        Self {
            store,
            retention,
            tenants: None,
            cursor: None,
        }
    }

    /// Trims each conversation's transcript after its tenant's period (`transcripts_kept`),
    /// where it has one, instead of the deployment's.
    #[must_use]
    pub fn with_tenants(mut self, tenants: crate::tenants::Tenants) -> Self {
        self.tenants = Some(tenants);
        self
    }

    /// How long `record`'s transcript lines are kept: its tenant's period, else the
    /// deployment's; `None`: for ever.
    async fn kept(&self, record: &tandem_domain::Conversation) -> Option<Duration> {
        let own = match &self.tenants {
            Some(tenants) => tenants
                .of_number(record.id.phone_number_id())
                .await
                .and_then(|t| t.transcripts_kept),
            None => None,
        };
        own.or(self.retention.transcripts)
    }

    /// True when some tenant keeps transcripts for its own period.
    fn tenants_trim(&self) -> bool {
        self.tenants
            .as_ref()
            .is_some_and(|t| t.all().iter().any(|t| t.transcripts_kept.is_some()))
    }

    /// Runs one bounded sweep at `now`: one page of conversation records, and one batch of
    /// each purge.
    ///
    /// # Errors
    /// The store's error; what was removed before it stays removed.
    pub async fn sweep(&mut self, now: Timestamp) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let batch = self.retention.batch.max(1);
        if self.retention.transcripts.is_some() || self.tenants_trim() {
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
                let Some(keep) = self.kept(&record).await else {
                    continue;
                };
                let cutoff = now.minus(keep);
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
        }
        if let Some(keep) = self.retention.transcripts {
            let cutoff = now.minus(keep);
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
    /// process of those sharing the store sweeps), until `stopped`. Each run is one whole
    /// pass: bounded sweeps back to back until the conversation pages wrap around and the
    /// purges find nothing more, so a large store is covered every period, in small writes.
    pub async fn run(mut self, clock: Arc<dyn Clock>, mut stopped: watch::Receiver<bool>) {
        let holder = crate::router::leader_name("retention");
        let mut tick = tokio::time::interval(self.retention.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lead_for = self.retention.every.saturating_mul(3);
        let batch = self.retention.batch.max(1);
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            let mut pass = SweepReport::default();
            loop {
                let now = clock.now();
                match self.store.lead("retention", &holder, now, lead_for).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(%error, "retention: leadership check failed");
                        break;
                    }
                }
                match self.sweep(now).await {
                    Ok(report) => {
                        pass.add(&report);
                        let purged_all = [report.dead_letters, report.dead_hooks, report.audit]
                            .iter()
                            .all(|n| *n < batch);
                        if self.cursor.is_none() && purged_all {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "retention sweep failed; the next run retries");
                        break;
                    }
                }
                if *stopped.borrow() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            if pass != SweepReport::default() {
                tracing::info!(report = ?pass, "retention pass removed old data");
            }
        }
    }
}

impl SweepReport {
    fn add(&mut self, other: &SweepReport) {
        self.transcript_lines += other.transcript_lines;
        self.records += other.records;
        self.dead_letters += other.dead_letters;
        self.dead_hooks += other.dead_hooks;
        self.audit += other.audit;
    }
}

/// Erases `customer` of `tenant` and queues `customer.erased` for every hook target of the
/// tenant that wants it.
/// `identifiers` (the customer's phone, BSUID, parent BSUID as the API showed them) go in the
/// hook, so the receiver can find its copy; nothing else about the customer does.
///
/// # Errors
/// The store's error; nothing was erased.
pub async fn erase_customer(
    store: &dyn Store,
    tenant: &crate::tenants::Tenant,
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
    let targets = tenant.desk.hooks.targets_for(event, None);
    let jobs = crate::desk::deliveries(&targets, event, &event_id, &body, now);
    let report = store
        .erase_customer(Erasure {
            tenant: tenant.id.clone(),
            customer,
            now,
            hooks: jobs,
        })
        .await?;
    ::metrics::counter!(metrics::ERASURES).increment(1);
    Ok(report)
}

/// What erasing a whole tenant removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TenantErasure {
    /// Customers erased.
    pub customers: u64,
    /// The sum of what each customer's erasure removed.
    pub erased: ErasureReport,
}

/// Erases every customer of `tenant` through [`erase_customer`] (each one's
/// `customer.erased` hook goes to the tenant's receivers), in customer id order. Safe to
/// repeat after a failure: erased customers are no longer listed.
///
/// # Errors
/// The store's error; the customers before the failing one are erased.
pub async fn erase_tenant(
    store: &dyn Store,
    tenant: &crate::tenants::Tenant,
    now: Timestamp,
) -> Result<TenantErasure, StoreError> {
    let mut out = TenantErasure::default();
    for customer in store.tenant_customers(&tenant.id).await? {
        let mut identifiers = json!({"id": customer.as_str()});
        for alias in store.customer_aliases(&tenant.id, &customer).await? {
            identifiers[alias.kind.as_str()] = json!(alias.value);
        }
        let report = erase_customer(store, tenant, customer, identifiers, now).await?;
        out.customers += 1;
        let sum = &mut out.erased;
        sum.conversations += report.conversations;
        sum.transcript_lines += report.transcript_lines;
        sum.queued_events += report.queued_events;
        sum.contacts += report.contacts;
        sum.aliases += report.aliases;
        sum.hooks += report.hooks;
        sum.dead_letters += report.dead_letters;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::{Conversation, TranscriptEntry};
    use tandem_store::{
        CommitOutcome, IngestBatch, IngestItem, IngestKind, StepCommit, StoreOptions, TimerChange,
    };

    const T0: Timestamp = Timestamp(1_795_428_000_000);
    const HOUR: Duration = Duration::from_secs(3600);

    /// Conversations whose transcripts hold a line two hours old and one just now.
    async fn store_with(conversations: usize) -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.redb");
        let store = tandem_store::open(path.to_str().unwrap_or_default(), StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for n in 0..conversations {
            let id =
                ConversationId::parse(&format!("106:c_{n:032x}")).unwrap_or_else(|e| panic!("{e}"));
            let item = IngestItem {
                key: format!("k{n}"),
                kind: IngestKind::Conversation {
                    conversation: id.clone(),
                    event: tandem_domain::ConversationEvent::IdleCheck,
                    pause: None,
                },
            };
            let batch = IngestBatch {
                received_at: T0,
                items: vec![item],
                identity_epoch: None,
            };
            store.ingest(batch).await.unwrap_or_else(|e| panic!("{e}"));
        }
        while let Some(claim) = store
            .claim(T0, HOUR)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        {
            let (record, items): (Conversation, _) = store
                .head(&claim, T0, 10)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("a waiting event"));
            let mut next = record.clone();
            next.push(TranscriptEntry::system(T0.minus(HOUR * 2), "old"), 10);
            next.push(TranscriptEntry::system(T0, "new"), 10);
            let commit = StepCommit {
                now: T0,
                seqs: items.iter().map(|i| i.seq).collect(),
                expected_rev: record.rev,
                conversation: next,
                timer: TimerChange::Keep,
                outbound: Vec::new(),
                hooks: Vec::new(),
            };
            let outcome = store
                .commit(&claim, commit, HOUR)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(outcome, CommitOutcome::Applied);
            store
                .release(claim, T0)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        (dir, store)
    }

    #[tokio::test]
    async fn sweeps_page_through_every_conversation_and_keep_recent_lines() {
        let (_dir, store) = store_with(5).await;
        let retention = Retention {
            transcripts: Some(HOUR),
            batch: 2,
            ..Retention::default()
        };
        let mut sweeper = Sweeper::new(Arc::clone(&store), retention);
        let mut trimmed = 0;
        let mut sweeps = 0;
        loop {
            let report = sweeper.sweep(T0).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(report.records <= 2, "at most a page a sweep");
            trimmed += report.records;
            sweeps += 1;
            if sweeper.cursor.is_none() {
                break;
            }
        }
        assert_eq!((trimmed, sweeps), (5, 3), "three pages of two cover five");
        let page = store
            .list_conversations(&ListQuery {
                mode: None,
                after: None,
                limit: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        for c in &page {
            let texts: Vec<&str> = c.transcript.iter().map(|l| l.text.as_str()).collect();
            assert_eq!(texts, ["new"], "{}", c.id);
            assert_eq!(c.events_applied, 0, "the record is otherwise as it was");
        }
        // A second pass finds nothing more to remove.
        let again = sweeper.sweep(T0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.records, 0);
    }

    #[tokio::test]
    async fn a_tenant_keeps_transcripts_for_its_own_period() {
        let (_dir, store) = store_with(3).await;
        let tenant = |id: &str, kept: Option<Duration>| {
            Arc::new(crate::tenants::Tenant::new(
                id,
                crate::tenants::TenantParts {
                    numbers: vec![
                        tandem_domain::PhoneNumberId::parse("106")
                            .unwrap_or_else(|e| panic!("{e}")),
                    ],
                    transcripts_kept: kept,
                    ..crate::tenants::TenantParts::default()
                },
                &crate::EngineConfig::default(),
            ))
        };
        // The deployment keeps transcripts for ever; the tenant owning number 106, an hour.
        let tenants = crate::tenants::Tenants::declared(vec![tenant("brief", Some(HOUR))])
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sweeper =
            Sweeper::new(Arc::clone(&store), Retention::default()).with_tenants(tenants.clone());
        let report = sweeper.sweep(T0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.records, report.transcript_lines), (3, 3));
        // A tenant without its own period follows the deployment: nothing removed.
        let (_dir2, other) = store_with(3).await;
        tenants
            .replace(vec![tenant("plain", None)])
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sweeper = Sweeper::new(other, Retention::default()).with_tenants(tenants);
        let report = sweeper.sweep(T0).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.records, 0);
    }
}
