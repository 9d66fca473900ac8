//! Ingest on Redis: one round trip for plain deliveries, an optimistic plan for the rest
//! (echoes that pause, contacts, account facts). See the parent module's docs.

use std::collections::HashMap;

use redis::AsyncCommands;
use tandem_domain::{ContactUpdate, Conversation, ConversationId};

use super::{Attempt, RedisStore, decode, json, millis};
use crate::error::StoreError;
use crate::model::{
    AccountState, InboxItem, IngestBatch, IngestItem, IngestKind, IngestReport, ItemOutcome,
    apply_pause, contact_wins,
};

impl RedisStore {
    pub(super) async fn try_ingest(
        &self,
        batch: &IngestBatch,
    ) -> Result<Attempt<IngestReport>, StoreError> {
        let now = batch.received_at;
        let mut con = self.con.clone();
        let mut pipe = redis::pipe();
        for item in &batch.items {
            pipe.exists(self.keys.dedupe(&item.key));
        }
        let seen: Vec<bool> = pipe.query_async(&mut con).await?;

        let mut plan = self.plan(now);
        plan.epoch = batch
            .identity_epoch
            .map(|e| (self.keys.identity_epoch(), e));
        let mut report = IngestReport::default();
        let mut paused: HashMap<ConversationId, (u64, Conversation)> = HashMap::new();
        let mut keys_in_batch = std::collections::HashSet::new();
        // Several items of one batch may change the same record: fold them, write once.
        let mut contacts: HashMap<String, (Option<String>, Option<ContactUpdate>, bool)> =
            HashMap::new();
        let mut accounts: HashMap<String, (Option<String>, AccountState)> = HashMap::new();
        let ttl = millis(self.options.dedupe_ttl);
        for (item, seen) in batch.items.iter().zip(seen) {
            if seen || !keys_in_batch.insert(item.key.as_str()) {
                report.outcomes.push(ItemOutcome::Duplicate);
                continue;
            }
            let dedupe = self.keys.dedupe(&item.key);
            plan.absent.push(dedupe.clone());
            plan.set_px.push((dedupe, "1".to_owned(), ttl));
            let outcome = match &item.kind {
                IngestKind::Conversation {
                    conversation,
                    event,
                    pause,
                } => {
                    let mut outcome = ItemOutcome::Stored;
                    let mut own_echo = false;
                    if let Some(pause) = pause {
                        let outbound = pause
                            .echo_id
                            .as_ref()
                            .map(|id| self.keys.outbound(id.as_str()));
                        if let Some(outbound) = &outbound {
                            own_echo = con.exists(outbound).await?;
                        }
                        if own_echo {
                            outcome = ItemOutcome::OwnEcho;
                        } else {
                            plan.absent.extend(outbound);
                            if !paused.contains_key(conversation) {
                                let current = self.read_conversation(conversation).await?;
                                let rev = current.as_ref().map_or(0, |c| c.rev);
                                let record = current.unwrap_or_else(|| {
                                    Conversation::new(conversation.clone(), now)
                                });
                                paused.insert(conversation.clone(), (rev, record));
                            }
                            if let Some((_, record)) = paused.get_mut(conversation) {
                                apply_pause(record, event, pause, now, self.options.transcript_cap);
                            }
                            outcome = ItemOutcome::Paused;
                        }
                    }
                    let stored = InboxItem {
                        seq: 0,
                        received_at: now,
                        own_echo,
                        event: event.clone(),
                    };
                    let blob = plan.blob(json(&stored)?);
                    plan.enqueue.push((
                        self.keys.inbox(conversation),
                        conversation.to_string(),
                        blob,
                    ));
                    outcome
                }
                IngestKind::Contact(update) => {
                    let key = self.keys.contact(&crate::model::contact_key(
                        &update.phone_number_id,
                        update.wa_id.as_str(),
                    ));
                    if !contacts.contains_key(&key) {
                        let raw: Option<String> = con.get(&key).await?;
                        let stored: Option<ContactUpdate> =
                            raw.as_deref().map(|r| decode(&key, r)).transpose()?;
                        contacts.insert(key.clone(), (raw, stored, false));
                    }
                    if let Some((_, stored, changed)) = contacts.get_mut(&key)
                        && contact_wins(stored.as_ref(), update)
                    {
                        *stored = Some(update.clone());
                        *changed = true;
                    }
                    ItemOutcome::Stored
                }
                IngestKind::Account(update) => {
                    let key = self.keys.account(&update.account);
                    if !accounts.contains_key(&key) {
                        let raw: Option<String> = con.get(&key).await?;
                        let state: AccountState = match raw.as_deref() {
                            Some(r) => decode(&key, r)?,
                            None => AccountState {
                                account: update.account.clone(),
                                events: Vec::new(),
                            },
                        };
                        accounts.insert(key.clone(), (raw, state));
                    }
                    if let Some((_, state)) = accounts.get_mut(&key) {
                        state.record(update.clone());
                    }
                    ItemOutcome::Stored
                }
                IngestKind::DeadLetter(letter) => {
                    let blob = plan.blob(json(letter)?);
                    plan.dead_letters.push(blob);
                    ItemOutcome::Stored
                }
            };
            report.outcomes.push(outcome);
        }
        for (key, (raw, stored, changed)) in contacts {
            if let (true, Some(update)) = (changed, stored) {
                plan.equals.push((key.clone(), raw));
                let blob = plan.blob(json(&update)?);
                plan.set.push((key, blob));
            }
        }
        for (key, (raw, state)) in accounts {
            plan.equals.push((key.clone(), raw));
            let blob = plan.blob(json(&state)?);
            plan.set.push((key, blob));
        }
        for (id, (rev, record)) in paused {
            let resume_at = record.resume_at();
            self.write_conversation(&mut plan, rev, record, now)?;
            plan.timers
                .push((id.to_string(), resume_at.map(|t| t.to_string())));
        }
        let answer = self.run(&plan).await?;
        match answer.first().map(String::as_str) {
            Some("ok") => {
                if !plan.enqueue.is_empty() {
                    self.signal.notify_waiters();
                }
                Ok(Attempt::Done(report))
            }
            Some("conflict") => Ok(Attempt::Conflict),
            Some("stale") => Err(StoreError::StaleIdentities {
                stored: answer
                    .get(1)
                    .and_then(|e| e.parse().ok())
                    .unwrap_or_default(),
            }),
            _ => Err(StoreError::Protocol(format!("{answer:?}"))),
        }
    }

    /// Stores a delivery of plain items (see [`is_plain`]) in one script call.
    pub(super) async fn ingest_plain(
        &self,
        batch: &IngestBatch,
    ) -> Result<IngestReport, StoreError> {
        let now = batch.received_at;
        let mut script = self.scripts.ingest.prepare_invoke();
        script
            .arg(self.keys.seq())
            .arg(self.keys.ready())
            .arg(self.keys.inbox_depth())
            .arg(self.keys.dead_letters())
            .arg(self.keys.dead_letter_seq())
            .arg(now.as_millis())
            .arg(millis(self.options.dedupe_ttl))
            .arg(self.keys.identity_epoch())
            .arg(
                batch
                    .identity_epoch
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            );
        let mut enqueued = false;
        for item in &batch.items {
            let dedupe = self.keys.dedupe(&item.key);
            match &item.kind {
                IngestKind::Conversation {
                    conversation,
                    event,
                    ..
                } => {
                    let stored = InboxItem {
                        seq: 0,
                        received_at: now,
                        own_echo: false,
                        event: event.clone(),
                    };
                    script
                        .arg("q")
                        .arg(dedupe)
                        .arg(self.keys.inbox(conversation))
                        .arg(conversation.to_string())
                        .arg(json(&stored)?);
                    enqueued = true;
                }
                IngestKind::DeadLetter(letter) => {
                    script
                        .arg("d")
                        .arg(dedupe)
                        .arg("")
                        .arg("")
                        .arg(json(letter)?);
                }
                IngestKind::Contact(_) | IngestKind::Account(_) => {
                    return Err(StoreError::Protocol(
                        "a non-plain item reached the plain ingest".into(),
                    ));
                }
            }
        }
        let mut con = self.con.clone();
        let stored: Vec<i64> = script.invoke_async(&mut con).await?;
        if let [-1, epoch] = stored[..] {
            return Err(StoreError::StaleIdentities {
                stored: u64::try_from(epoch).unwrap_or_default(),
            });
        }
        if stored.len() != batch.items.len() {
            return Err(StoreError::Protocol(format!(
                "ingest answered {} outcomes for {} items",
                stored.len(),
                batch.items.len()
            )));
        }
        if enqueued && stored.contains(&1) {
            self.signal.notify_waiters();
        }
        let outcomes = stored
            .into_iter()
            .map(|s| {
                if s == 1 {
                    ItemOutcome::Stored
                } else {
                    ItemOutcome::Duplicate
                }
            })
            .collect();
        Ok(IngestReport { outcomes })
    }
}

/// True for items the one-round-trip ingest can store: they need nothing read first.
pub(super) fn is_plain(item: &IngestItem) -> bool {
    matches!(
        item.kind,
        IngestKind::Conversation { pause: None, .. } | IngestKind::DeadLetter(_)
    )
}
