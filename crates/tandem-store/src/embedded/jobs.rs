//! The write jobs of the embedded store, each run by the writer thread inside a group's
//! transaction (see [`super::write::Group`]). A job checks its preconditions before it
//! writes, so a refused job leaves nothing in the shared transaction.

use redb::ReadableTable;
use tandem_domain::{
    ContactUpdate, Conversation, ConversationEvent, ConversationId, MessageId, Timestamp,
};

use super::tables::{decode, encode, redb_err};
use super::write::Group;
use super::{LaneDelta, Shared};
use crate::error::StoreError;
use crate::model::{
    AccountState, Claim, CommitOutcome, InboxItem, IngestBatch, IngestKind, IngestReport,
    ItemOutcome, PauseOnIngest, StepCommit, TimerChange, apply_pause, contact_wins,
};

pub(super) fn outbound_key(id: &MessageId) -> String {
    format!("outbound:{id}")
}

pub(super) fn ingest(
    shared: &Shared,
    group: &mut Group<'_>,
    batch: IngestBatch,
    delta: &mut LaneDelta,
) -> Result<IngestReport, StoreError> {
    let now = batch.received_at;
    let expires = now.plus(shared.options.dedupe_ttl);
    let mut report = IngestReport::default();
    for item in batch.items {
        if group.seen(&item.key, now)? {
            report.outcomes.push(ItemOutcome::Duplicate);
            continue;
        }
        group.remember(&item.key, expires)?;
        let outcome = match item.kind {
            IngestKind::Conversation {
                conversation,
                event,
                pause,
            } => {
                let mut outcome = ItemOutcome::Stored;
                let mut own_echo = false;
                if let Some(pause) = pause {
                    if let Some(echo_id) = &pause.echo_id {
                        own_echo = group.seen(&outbound_key(echo_id), now)?;
                    }
                    if own_echo {
                        outcome = ItemOutcome::OwnEcho;
                    } else {
                        pause_conversation(shared, group, &conversation, &event, &pause, now)?;
                        outcome = ItemOutcome::Paused;
                    }
                }
                group.enqueue(
                    &conversation,
                    &InboxItem {
                        seq: 0,
                        received_at: now,
                        own_echo,
                        event,
                    },
                )?;
                delta.enqueued.push(conversation);
                outcome
            }
            IngestKind::Contact(update) => {
                let key = crate::model::contact_key(&update.phone_number_id, update.wa_id.as_str());
                let stored: Option<ContactUpdate> = group
                    .contacts
                    .get(key.as_str())
                    .map_err(redb_err("reading a contact"))?
                    .map(|v| decode(&key, v.value()))
                    .transpose()?;
                if contact_wins(stored.as_ref(), &update) {
                    let bytes = encode(&update)?;
                    group
                        .contacts
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(redb_err("writing a contact"))?;
                }
                ItemOutcome::Stored
            }
            IngestKind::Account(update) => {
                let key = update.account.clone();
                let stored: Option<AccountState> = group
                    .accounts
                    .get(key.as_str())
                    .map_err(redb_err("reading an account"))?
                    .map(|v| decode(&key, v.value()))
                    .transpose()?;
                let mut state = stored.unwrap_or_else(|| AccountState {
                    account: key.clone(),
                    events: Vec::new(),
                });
                state.record(update);
                let bytes = encode(&state)?;
                group
                    .accounts
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(redb_err("writing an account"))?;
                ItemOutcome::Stored
            }
            IngestKind::DeadLetter(letter) => {
                group.add_dead_letter(&encode(&letter)?)?;
                ItemOutcome::Stored
            }
        };
        report.outcomes.push(outcome);
    }
    Ok(report)
}

fn pause_conversation(
    shared: &Shared,
    group: &mut Group<'_>,
    id: &ConversationId,
    event: &ConversationEvent,
    pause: &PauseOnIngest,
    now: Timestamp,
) -> Result<(), StoreError> {
    let key = id.to_string();
    let previous = group.read_conversation(&key)?;
    let mut next = previous
        .clone()
        .unwrap_or_else(|| Conversation::new(id.clone(), now));
    apply_pause(&mut next, event, pause, now, shared.options.transcript_cap);
    let resume_at = next.resume_at();
    group.write_conversation(previous.as_ref(), next, now)?;
    group.set_timer(&key, resume_at)
}

pub(super) fn commit(
    shared: &Shared,
    group: &mut Group<'_>,
    claim: &Claim,
    step: StepCommit,
    delta: &mut LaneDelta,
) -> Result<CommitOutcome, StoreError> {
    if !shared.lanes().holds(&claim.conversation, &claim.token) {
        return Ok(CommitOutcome::LeaseLost);
    }
    let key = claim.conversation.to_string();
    let previous = group.read_conversation(&key)?;
    if (!step.seqs.is_empty() && group.head_seqs(&key, step.seqs.len())? != step.seqs)
        || previous.as_ref().map_or(0, |p| p.rev) != step.expected_rev
    {
        return Ok(CommitOutcome::Conflict);
    }
    group.write_conversation(previous.as_ref(), step.conversation, step.now)?;
    for id in &step.outbound {
        group.remember(&outbound_key(id), step.now.plus(shared.options.dedupe_ttl))?;
    }
    for hook in &step.hooks {
        group.put_hook(hook)?;
    }
    for seq in &step.seqs {
        group.consume(&key, *seq)?;
    }
    match step.timer {
        TimerChange::Keep => {}
        TimerChange::Set(due) => group.set_timer(&key, Some(due))?,
        TimerChange::Clear => group.set_timer(&key, None)?,
    }
    delta
        .consumed
        .push((claim.conversation.clone(), step.seqs.len() as u64));
    Ok(CommitOutcome::Applied)
}

pub(super) fn fire_timers(
    group: &mut Group<'_>,
    now: Timestamp,
    limit: usize,
    delta: &mut LaneDelta,
) -> Result<usize, StoreError> {
    let mut due = Vec::new();
    for row in group
        .timer_queue
        .range(..=(now.as_millis(), "\u{10FFFF}"))
        .map_err(redb_err("reading timers"))?
        .take(limit)
    {
        let (key, _) = row.map_err(redb_err("reading timers"))?;
        due.push(key.value().1.to_owned());
    }
    for id in &due {
        group.set_timer(id, None)?;
        let conversation =
            ConversationId::parse(id).map_err(|e| StoreError::corrupt("timer key", e))?;
        let item = InboxItem {
            seq: 0,
            received_at: now,
            own_echo: false,
            event: ConversationEvent::IdleCheck,
        };
        group.enqueue(&conversation, &item)?;
        delta.enqueued.push(conversation);
    }
    Ok(due.len())
}
