//! The behaviour every store backend must have, run against the embedded store (a real redb
//! file in a temporary directory) and Redis (a real server, a fresh key prefix per test).
//!
//! Redis is taken from `TANDEM_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When it does
//! not answer, the Redis tests fail with instructions; they never pass by skipping.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use tandem_domain::{
    AccountUpdate, Alias, ContactUpdate, Conversation, ConversationEvent, ConversationId,
    CustomerId, CustomerLookup, DeadLetter, Echo, Identity, IdentityChange, InboundMessage,
    MessageContent, MessageId, Mode, PausedBy, Phone, PhoneNumberId, Role, Timestamp, UserId, WaId,
};
use tandem_store::{
    AgentState, Claim, CommitOutcome, HookJob, HookSettle, InboxItem, IngestBatch, IngestItem,
    IngestKind, ItemOutcome, Link, ListQuery, NumberTouch, PauseOnIngest, Presence, StepCommit,
    Store, StoreOptions, TimerChange,
};
use tandem_store::{AuditEntry, Erasure, Purge, StoreError};

const T0: Timestamp = Timestamp(1_768_041_000_000);
const LEASE: Duration = Duration::from_secs(30);
const IDLE: Duration = Duration::from_secs(60);

struct Fixture {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    /// The Redis key prefix to delete when the test ends.
    redis_prefix: Option<String>,
}

fn redis_url() -> String {
    std::env::var("TANDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

impl Drop for Fixture {
    /// Removes the test's Redis keys, so the shared server does not fill up run after run.
    fn drop(&mut self) {
        let Some(prefix) = &self.redis_prefix else {
            return;
        };
        let Ok(mut con) = ::redis::Client::open(redis_url()).and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = match ::redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut con)
        {
            Ok(keys) => keys,
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            if ::redis::cmd("DEL")
                .arg(chunk)
                .query::<i64>(&mut con)
                .is_err()
            {
                break;
            }
        }
    }
}

/// The dedupe window of the test that checks its expiry; the others keep the default.
const DEDUPE_TTL: Duration = Duration::from_secs(1);

fn options() -> StoreOptions {
    StoreOptions::default()
}

/// A fresh store of the same backend as `f`, with a short dedupe window.
async fn short_window(f: &Fixture) -> Fixture {
    let short = StoreOptions {
        dedupe_ttl: DEDUPE_TTL,
        ..options()
    };
    match f.store.backend() {
        "embedded" => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("short.redb");
            let store = tandem_store::open(path.to_str().unwrap(), short)
                .await
                .unwrap();
            Fixture {
                store,
                _dir: Some(dir),
                redis_prefix: None,
            }
        }
        _ => {
            let prefix = format!("tandem-test:{}", uuid::Uuid::new_v4());
            let options = StoreOptions {
                redis_prefix: prefix.clone(),
                ..short
            };
            let store = tandem_store::open(&redis_url(), options).await.unwrap();
            Fixture {
                store,
                _dir: None,
                redis_prefix: Some(prefix),
            }
        }
    }
}

async fn embedded() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tandem.redb");
    let store = tandem_store::open(path.to_str().unwrap(), options())
        .await
        .unwrap();
    Fixture {
        store,
        _dir: Some(dir),
        redis_prefix: None,
    }
}

async fn redis() -> Fixture {
    let url = redis_url();
    let prefix = format!("tandem-test:{}", uuid::Uuid::new_v4());
    let options = StoreOptions {
        redis_prefix: prefix.clone(),
        ..options()
    };
    match tandem_store::open(&url, options).await {
        Ok(store) => Fixture {
            store,
            _dir: None,
            redis_prefix: Some(prefix),
        },
        Err(e) => panic!(
            "Redis is required for these tests and did not answer at {url}: {e}\n\
             start one with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"
        ),
    }
}

fn conv(wa: &str) -> ConversationId {
    ConversationId::new(
        PhoneNumberId::parse("106").unwrap(),
        CustomerId::parse(wa).unwrap(),
    )
}

fn text(id: &str) -> ConversationEvent {
    ConversationEvent::Customer(InboundMessage {
        id: MessageId::parse(id).unwrap(),
        sent_at: T0,
        content: MessageContent::Text {
            body: id.to_owned(),
        },
        profile_name: None,
        from: Identity::default(),
        context_id: None,
        forwarded: false,
    })
}

fn message(wa: &str, id: &str) -> IngestItem {
    IngestItem {
        key: format!("msg:{wa}:{id}"),
        kind: IngestKind::Conversation {
            conversation: conv(wa),
            event: text(id),
            pause: None,
        },
    }
}

fn echo(wa: &str, id: &str) -> IngestItem {
    let event = ConversationEvent::Echo(Echo {
        id: MessageId::parse(id).unwrap(),
        sent_at: T0,
        content: MessageContent::Text {
            body: "from the phone".into(),
        },
        to: Identity::default(),
    });
    IngestItem {
        key: format!("echo:{wa}:{id}"),
        kind: IngestKind::Conversation {
            conversation: conv(wa),
            event,
            pause: Some(PauseOnIngest {
                by: PausedBy::Echo,
                echo_id: Some(MessageId::parse(id).unwrap()),
                rules: std::sync::Arc::new(tandem_domain::PauseRules::new(IDLE, IDLE)),
            }),
        },
    }
}

fn batch(at: Timestamp, items: Vec<IngestItem>) -> IngestBatch {
    IngestBatch {
        received_at: at,
        items,
        identity_epoch: None,
    }
}

/// A commit of `items` (the lane's oldest) with `record` as the result, based on the
/// revision `record` was read at (the store sets the new one).
fn commit_of(
    now: Timestamp,
    record: Conversation,
    items: &[InboxItem],
    timer: TimerChange,
) -> StepCommit {
    StepCommit {
        now,
        seqs: items.iter().map(|i| i.seq).collect(),
        expected_rev: record.rev,
        conversation: record,
        timer,
        outbound: Vec::new(),
        hooks: Vec::new(),
    }
}

/// Applies the lane's head event the way a worker would (the content of the change does not
/// matter to the store) and returns the commit outcome.
async fn step(
    store: &dyn Store,
    claim: &Claim,
    now: Timestamp,
) -> Option<(ConversationEvent, CommitOutcome)> {
    let (mut record, mut items) = store.head(claim, now, 1).await.unwrap()?;
    assert_eq!(items.len(), 1, "head returns at most the number asked for");
    let item = items.remove(0);
    record.events_applied += 1;
    let commit = commit_of(now, record, std::slice::from_ref(&item), TimerChange::Keep);
    let outcome = store.commit(claim, commit, LEASE).await.unwrap();
    Some((item.event, outcome))
}

async fn drain(store: &dyn Store, now: Timestamp) -> Vec<(ConversationId, ConversationEvent)> {
    let mut applied = Vec::new();
    while let Some(claim) = store.claim(now, LEASE).await.unwrap() {
        while let Some((event, outcome)) = step(store, &claim, now).await {
            assert_eq!(outcome, CommitOutcome::Applied);
            applied.push((claim.conversation.clone(), event));
        }
        store.release(claim, now).await.unwrap();
    }
    applied
}

async fn events_apply_once_in_arrival_order(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(
        T0,
        vec![message("a", "m1"), message("b", "m2"), message("a", "m3")],
    ))
    .await
    .unwrap();
    s.ingest(batch(T0, vec![message("a", "m4")])).await.unwrap();
    assert_eq!(s.stats().await.unwrap().inbox_depth, 4);
    let applied = drain(s, T0).await;
    let of = |wa: &str| -> Vec<ConversationEvent> {
        applied
            .iter()
            .filter(|(c, _)| *c == conv(wa))
            .map(|(_, e)| e.clone())
            .collect()
    };
    assert_eq!(of("a"), vec![text("m1"), text("m3"), text("m4")]);
    assert_eq!(of("b"), vec![text("m2")]);
    assert_eq!(s.stats().await.unwrap().inbox_depth, 0);
    assert_eq!(
        s.conversation(&conv("a"))
            .await
            .unwrap()
            .unwrap()
            .events_applied,
        3
    );
    assert!(drain(s, T0).await.is_empty(), "nothing is applied twice");
}

async fn retries_are_deduplicated(f: Fixture) {
    let s = f.store.as_ref();
    let first = s
        .ingest(batch(T0, vec![message("a", "m1"), message("a", "m1")]))
        .await
        .unwrap();
    assert_eq!(
        first.outcomes,
        vec![ItemOutcome::Stored, ItemOutcome::Duplicate]
    );
    let retry = s
        .ingest(batch(T0, vec![message("a", "m1"), message("a", "m2")]))
        .await
        .unwrap();
    assert_eq!(
        retry.outcomes,
        vec![ItemOutcome::Duplicate, ItemOutcome::Stored]
    );
    assert_eq!(drain(s, T0).await.len(), 2);
}

async fn an_echo_pauses_in_the_same_write(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(T0, vec![message("a", "m1"), message("a", "m2")]))
        .await
        .unwrap();
    let report = s.ingest(batch(T0, vec![echo("a", "e1")])).await.unwrap();
    assert_eq!(report.outcomes, vec![ItemOutcome::Paused]);
    // Nothing of the lane has run yet: the pause did not wait behind the queued messages.
    let c = s.conversation(&conv("a")).await.unwrap().unwrap();
    assert_eq!(c.mode(), Mode::Human);
    assert_eq!(c.resume_at(), Some(T0.plus(IDLE)));
    let human: Vec<&str> = c
        .transcript
        .iter()
        .filter(|l| l.role == Role::Human)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(
        human,
        ["from the phone"],
        "the echo is in the transcript in the same write"
    );
    assert_eq!(s.stats().await.unwrap().inbox_depth, 3);
    let listed = s
        .list_conversations(&ListQuery {
            mode: Some(Mode::Human),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
        vec![conv("a")]
    );
}

async fn an_echo_of_our_own_send_is_not_a_person(f: Fixture) {
    let s = f.store.as_ref();
    s.record_outbound(&MessageId::parse("ours").unwrap(), T0)
        .await
        .unwrap();
    let report = s.ingest(batch(T0, vec![echo("a", "ours")])).await.unwrap();
    assert_eq!(report.outcomes, vec![ItemOutcome::OwnEcho]);
    assert!(
        s.conversation(&conv("a"))
            .await
            .unwrap()
            .is_none_or(|c| c.mode() == Mode::Bot)
    );
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (_, items) = s.head(&claim, T0, 10).await.unwrap().unwrap();
    assert!(items[0].own_echo);
}

async fn a_lane_step_never_overwrites_a_pause(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(T0, vec![message("a", "m1")])).await.unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (record, items) = s.head(&claim, T0, 1).await.unwrap().unwrap();
    assert_eq!(record.mode(), Mode::Bot);
    // A person writes from the phone while the lane works on m1.
    s.ingest(batch(T0, vec![echo("a", "e1")])).await.unwrap();
    let stale = commit_of(T0, record, &items, TimerChange::Keep);
    assert_eq!(
        s.commit(&claim, stale, LEASE).await.unwrap(),
        CommitOutcome::Conflict
    );
    let (event, outcome) = step(s, &claim, T0).await.unwrap();
    assert_eq!((event, outcome), (text("m1"), CommitOutcome::Applied));
    assert_eq!(
        s.conversation(&conv("a")).await.unwrap().unwrap().mode(),
        Mode::Human
    );
}

async fn one_owner_per_lane_and_stale_owners_are_fenced(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(T0, vec![message("a", "m1"), message("a", "m2")]))
        .await
        .unwrap();
    let short = Duration::from_millis(50);
    let first = s.claim(T0, short).await.unwrap().unwrap();
    assert_eq!(
        s.claim(T0, LEASE).await.unwrap(),
        None,
        "a held lane is not offered again"
    );
    // The first owner stalls past its lease; a second worker takes over.
    let later = T0.plus(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let second = loop {
        if let Some(c) = s.claim(later, LEASE).await.unwrap() {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an expired lease was never offered again"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(second.conversation, first.conversation);
    let (record, items) = s.head(&first, later, 1).await.unwrap().unwrap();
    let stale = commit_of(later, record, &items, TimerChange::Keep);
    assert_eq!(
        s.commit(&first, stale, LEASE).await.unwrap(),
        CommitOutcome::LeaseLost
    );
    assert_eq!(
        step(s, &second, later).await.unwrap().1,
        CommitOutcome::Applied
    );
    // Released with work left, the lane is offered again.
    s.release(second, later).await.unwrap();
    let third = s.claim(later, LEASE).await.unwrap().unwrap();
    assert_eq!(step(s, &third, later).await.unwrap().0, text("m2"));
    s.release(third, later).await.unwrap();
    assert_eq!(s.claim(later, LEASE).await.unwrap(), None);
}

async fn due_timers_become_idle_checks(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(T0, vec![echo("a", "e1")])).await.unwrap();
    drain(s, T0).await;
    assert_eq!(s.fire_due_timers(T0.plus(IDLE), 10).await.unwrap(), 1);
    assert_eq!(
        s.fire_due_timers(T0.plus(IDLE * 2), 10).await.unwrap(),
        0,
        "a timer fires once"
    );
    let applied = drain(s, T0.plus(IDLE)).await;
    assert_eq!(applied, vec![(conv("a"), ConversationEvent::IdleCheck)]);
    // A lane step can arm it again.
    s.ingest(batch(T0, vec![message("a", "m1")])).await.unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (record, items) = s.head(&claim, T0, 1).await.unwrap().unwrap();
    let due = T0.plus(Duration::from_secs(5));
    let commit = commit_of(T0, record, &items, TimerChange::Set(due));
    assert_eq!(
        s.commit(&claim, commit, LEASE).await.unwrap(),
        CommitOutcome::Applied
    );
    s.release(claim, T0).await.unwrap();
    assert_eq!(s.fire_due_timers(due, 10).await.unwrap(), 1);
}

async fn several_events_commit_together_and_only_as_the_head(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(
        T0,
        vec![message("a", "m1"), message("a", "m2"), message("a", "m3")],
    ))
    .await
    .unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (record, items) = s.head(&claim, T0, 2).await.unwrap().unwrap();
    assert_eq!(
        items.iter().map(|i| i.event.clone()).collect::<Vec<_>>(),
        vec![text("m1"), text("m2")]
    );
    let commit = |seqs: Vec<u64>| StepCommit {
        now: T0,
        seqs,
        expected_rev: record.rev,
        conversation: record.clone(),
        timer: TimerChange::Keep,
        outbound: Vec::new(),
        hooks: Vec::new(),
    };
    // Not the head of the inbox, or not a prefix of it: refused, nothing removed.
    assert_eq!(
        s.commit(&claim, commit(vec![items[1].seq]), LEASE)
            .await
            .unwrap(),
        CommitOutcome::Conflict
    );
    assert_eq!(
        s.commit(
            &claim,
            commit(vec![items[0].seq, items[1].seq + 100]),
            LEASE
        )
        .await
        .unwrap(),
        CommitOutcome::Conflict
    );
    assert_eq!(s.stats().await.unwrap().inbox_depth, 3);
    let both = items.iter().map(|i| i.seq).collect();
    assert_eq!(
        s.commit(&claim, commit(both), LEASE).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(s.stats().await.unwrap().inbox_depth, 1);
    let (_, rest) = s.head(&claim, T0, 10).await.unwrap().unwrap();
    assert_eq!(
        rest.iter().map(|i| i.event.clone()).collect::<Vec<_>>(),
        vec![text("m3")]
    );
}

async fn a_record_only_commit_keeps_the_inbox_and_is_guarded_by_the_revision(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(T0, vec![message("a", "m1")])).await.unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (mut record, _) = s.head(&claim, T0, 10).await.unwrap().unwrap();
    let rev = record.rev;
    record.opted_out = true;
    // No inbox items: a commit of the record alone, from the revision it carries.
    let commit = |conversation| commit_of(T0, conversation, &[], TimerChange::Keep);
    assert_eq!(
        s.commit(&claim, commit(record.clone()), LEASE)
            .await
            .unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(
        s.stats().await.unwrap().inbox_depth,
        1,
        "the event is still waiting"
    );
    let stored = s.conversation(&claim.conversation).await.unwrap().unwrap();
    assert!(stored.opted_out);
    assert_eq!(stored.rev, rev + 1);
    // Written from the old revision: refused.
    assert_eq!(
        s.commit(&claim, commit(record), LEASE).await.unwrap(),
        CommitOutcome::Conflict
    );
    // The wamids a commit names join the outbound registry in the same write.
    let mut sent = commit(stored);
    sent.outbound = vec![MessageId::parse("sent-by-us").unwrap()];
    assert_eq!(
        s.commit(&claim, sent, LEASE).await.unwrap(),
        CommitOutcome::Applied
    );
    let report = s
        .ingest(batch(T0, vec![echo("a", "sent-by-us")]))
        .await
        .unwrap();
    assert_eq!(report.outcomes, vec![ItemOutcome::OwnEcho]);
}

async fn a_retry_after_the_dedupe_window_is_stored_again(f: Fixture) {
    let f = short_window(&f).await;
    let s = f.store.as_ref();
    assert_eq!(
        s.ingest(batch(T0, vec![message("a", "m1")]))
            .await
            .unwrap()
            .outcomes,
        vec![ItemOutcome::Stored]
    );
    let later = T0.plus(DEDUPE_TTL * 2);
    // The embedded store compares expiry times with the delivery's time; Redis expires keys
    // on its own clock, so wait for that with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let outcome = s
            .ingest(batch(later, vec![message("a", "m1")]))
            .await
            .unwrap()
            .outcomes;
        if outcome == vec![ItemOutcome::Stored] {
            break;
        }
        assert_eq!(outcome, vec![ItemOutcome::Duplicate]);
        assert!(
            std::time::Instant::now() < deadline,
            "the dedupe window never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let much_later = later.plus(DEDUPE_TTL * 2);
    let purged = s.purge_expired(much_later).await.unwrap();
    match s.backend() {
        // Both keys (the first delivery's and the retry's) have expired by then.
        "embedded" => assert_eq!(purged, 1, "the first key was replaced by the retry's"),
        _ => assert_eq!(purged, 0, "Redis expires keys itself"),
    }
    assert_eq!(s.purge_expired(much_later).await.unwrap(), 0);
}

async fn send_slots_keep_each_numbers_rate_across_callers(f: Fixture) {
    let s = f.store.clone();
    let number = |id: &str| PhoneNumberId::parse(id).unwrap();
    let ms = Duration::from_millis;
    // One caller after another: 3 a second go at once, the 4th waits for the first to be a
    // second old, and so on.
    let mut slots = Vec::new();
    for _ in 0..7 {
        slots.push(s.reserve_send_slot(&number("1"), T0, 3).await.unwrap());
    }
    let s1 = T0.plus(ms(1000));
    let s2 = T0.plus(ms(2000));
    assert_eq!(slots, [T0, T0, T0, s1, s1, s1, s2]);
    // Another number has its own window; a number quiet for a while sends at once again.
    assert_eq!(s.reserve_send_slot(&number("2"), T0, 3).await.unwrap(), T0);
    let later = T0.plus(Duration::from_secs(10));
    assert_eq!(
        s.reserve_send_slot(&number("1"), later, 3).await.unwrap(),
        later
    );
    // Many callers at once (as several lanes or replicas would): no one-second window holds
    // more than the rate, and the 40 sends take 8 seconds at 5 a second.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.reserve_send_slot(&PhoneNumberId::parse("3").unwrap(), T0, 5)
                .await
                .unwrap()
        });
    }
    let mut slots = tasks.join_all().await;
    slots.sort();
    assert_eq!(slots.last().unwrap().since(T0), ms(7000), "{slots:?}");
    for start in &slots {
        let in_window = slots
            .iter()
            .filter(|t| **t >= *start && t.since(*start) < Duration::from_secs(1))
            .count();
        assert!(
            in_window <= 5,
            "{in_window} sends within one second at rate 5"
        );
    }
}

async fn contacts_accounts_and_dead_letters_are_kept(f: Fixture) {
    let s = f.store.as_ref();
    let contact = |name: Option<&str>, at: u64, removed: bool| ContactUpdate {
        phone_number_id: PhoneNumberId::parse("106").unwrap(),
        wa_id: WaId::parse("a").unwrap(),
        full_name: name.map(str::to_owned),
        first_name: None,
        removed,
        at: Timestamp(at),
    };
    let item = |key: &str, kind| IngestItem {
        key: key.to_owned(),
        kind,
    };
    s.ingest(batch(
        T0,
        vec![
            item(
                "c2",
                IngestKind::Contact(contact(Some("Ana (VIP)"), 2000, false)),
            ),
            item("c1", IngestKind::Contact(contact(Some("Ana"), 1000, false))),
            item(
                "a1",
                IngestKind::Account(AccountUpdate {
                    account: "waba".into(),
                    event: "PARTNER_REMOVED".into(),
                    at: Timestamp(5),
                    raw: serde_json::json!({}),
                }),
            ),
            item(
                "a0",
                IngestKind::Account(AccountUpdate {
                    account: "waba".into(),
                    event: "PARTNER_ADDED".into(),
                    at: Timestamp(1),
                    raw: serde_json::json!({}),
                }),
            ),
            item(
                "d1",
                IngestKind::DeadLetter(DeadLetter {
                    received_at: T0,
                    reason: "unparseable_body".into(),
                    field: None,
                    detail: "x".into(),
                    body: "first".into(),
                    body_base64: false,
                }),
            ),
            item(
                "d2",
                IngestKind::DeadLetter(DeadLetter {
                    received_at: T0,
                    reason: "unknown_field".into(),
                    field: Some("f".into()),
                    detail: "y".into(),
                    body: "second".into(),
                    body_base64: false,
                }),
            ),
        ],
    ))
    .await
    .unwrap();
    let stored = s
        .contact(&PhoneNumberId::parse("106").unwrap(), "a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.full_name.as_deref(),
        Some("Ana (VIP)"),
        "an older change does not win"
    );
    let events: Vec<String> = s
        .account("waba")
        .await
        .unwrap()
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(events, ["PARTNER_ADDED", "PARTNER_REMOVED"]);
    let letters = s.dead_letters(10).await.unwrap();
    assert_eq!(
        letters
            .iter()
            .map(|(_, l)| l.body.as_str())
            .collect::<Vec<_>>(),
        ["second", "first"]
    );
    assert!(letters[0].0 > letters[1].0);
    assert_eq!(s.stats().await.unwrap().dead_letters, 2);
    assert!(s.account("nobody").await.unwrap().is_none());
}

async fn conversations_are_listed_by_mode_in_pages(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(
        T0,
        vec![
            echo("c", "e1"),
            echo("a", "e2"),
            echo("b", "e3"),
            message("d", "m1"),
        ],
    ))
    .await
    .unwrap();
    drain(s, T0).await;
    let page = |mode, after: Option<&str>| {
        let query = ListQuery {
            mode,
            after: after.map(conv),
            limit: 2,
        };
        async move {
            s.list_conversations(&query)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id.customer().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(Some(Mode::Human), None).await, ["a", "b"]);
    assert_eq!(page(Some(Mode::Human), Some("b")).await, ["c"]);
    assert_eq!(page(Some(Mode::Bot), None).await, ["d"]);
    assert_eq!(page(None, Some("b")).await, ["c", "d"]);
    assert!(page(Some(Mode::Handoff), None).await.is_empty());
    let record: Conversation = s.conversation(&conv("a")).await.unwrap().unwrap();
    assert_eq!(record.events_applied, 1);
    // A lane step that changes the mode moves the conversation between the lists.
    s.ingest(batch(T0, vec![message("a", "m9")])).await.unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (mut record, items) = s.head(&claim, T0, 10).await.unwrap().unwrap();
    record.control = tandem_domain::Control::Bot;
    let commit = commit_of(T0, record, &items, TimerChange::Clear);
    assert_eq!(
        s.commit(&claim, commit, LEASE).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(page(Some(Mode::Human), None).await, ["b", "c"]);
    assert_eq!(page(Some(Mode::Bot), None).await, ["a", "d"]);
    assert_eq!(s.stats().await.unwrap().conversations, 4);
}

fn hook(id: &str) -> HookJob {
    HookJob {
        id: format!("{id}/crm"),
        event_id: id.to_owned(),
        event: "conversation.handoff_requested".into(),
        target: "crm".into(),
        body: format!(r#"{{"id":"{id}"}}"#),
        created_at: T0,
        due: T0,
        attempts: 0,
        last_error: None,
    }
}

async fn hooks_are_written_with_the_step_leased_retried_and_dead_lettered(f: Fixture) {
    let s = &*f.store;
    s.ingest(batch(T0, vec![message("a", "m1")])).await.unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (record, items) = s.head(&claim, T0, 10).await.unwrap().unwrap();
    let mut commit = commit_of(T0, record.clone(), &items, TimerChange::Keep);
    commit.hooks = vec![hook("h1"), hook("h2")];
    // A refused commit writes no hook.
    let mut stale = commit.clone();
    stale.expected_rev += 7;
    assert_eq!(
        s.commit(&claim, stale, LEASE).await.unwrap(),
        CommitOutcome::Conflict
    );
    assert!(s.due_hooks(T0, 10, LEASE).await.unwrap().is_empty());
    assert_eq!(
        s.commit(&claim, commit, LEASE).await.unwrap(),
        CommitOutcome::Applied
    );
    assert_eq!(s.stats().await.unwrap().hooks_pending, 2);

    // Taken deliveries are held for the lease: nobody else gets them meanwhile.
    let taken = s.due_hooks(T0, 10, LEASE).await.unwrap();
    let ids: Vec<_> = taken.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["h1/crm", "h2/crm"]);
    assert!(
        s.due_hooks(T0.plus(Duration::from_secs(1)), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    // Not settled within the lease (a crashed deliverer): offered again.
    assert_eq!(
        s.due_hooks(T0.plus(LEASE), 10, LEASE).await.unwrap().len(),
        2
    );
    // Delivered leaves the outbox; a retry comes back at its time with the error kept.
    s.settle_hook(&taken[0], HookSettle::Delivered, T0)
        .await
        .unwrap();
    let later = T0.plus(Duration::from_secs(5));
    s.settle_hook(
        &taken[1],
        HookSettle::Retry {
            due: later,
            error: "HTTP 500".into(),
        },
        T0,
    )
    .await
    .unwrap();
    assert!(
        s.due_hooks(T0.plus(Duration::from_secs(4)), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let again = s.due_hooks(later, 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].last_error.as_deref(), Some("HTTP 500"));
    // Settling a delivery twice changes nothing the second time.
    s.settle_hook(&taken[0], HookSettle::Delivered, T0)
        .await
        .unwrap();

    // Dead: out of the outbox, listed, and re-driven once with its attempts reset.
    s.settle_hook(
        &again[0],
        HookSettle::Dead {
            error: "HTTP 500".into(),
        },
        later,
    )
    .await
    .unwrap();
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.hooks_pending, stats.hooks_dead), (0, 1));
    let dead = s.dead_hooks(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts), ("h2/crm", 2));
    assert!(!s.redrive_hook("nope", later).await.unwrap());
    assert!(s.redrive_hook("h2/crm", later).await.unwrap());
    assert!(!s.redrive_hook("h2/crm", later).await.unwrap());
    let redriven = s.due_hooks(later, 10, LEASE).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].attempts, 0);
    assert_eq!(redriven[0].body, r#"{"id":"h2"}"#);
    assert!(s.dead_hooks(10).await.unwrap().is_empty());
}

async fn embeddings_are_cached_per_model_and_key(f: Fixture) {
    let s = &*f.store;
    let keys = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
    assert_eq!(
        s.embeddings("mini", &keys).await.unwrap(),
        vec![None, None, None]
    );
    assert!(s.embeddings("mini", &[]).await.unwrap().is_empty());
    let one: Vec<u8> = [0.5f32, -1.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    s.put_embeddings(
        "mini",
        vec![("a".into(), one.clone()), ("c".into(), vec![1, 2, 3, 4])],
    )
    .await
    .unwrap();
    assert_eq!(
        s.embeddings("mini", &keys).await.unwrap(),
        vec![Some(one.clone()), None, Some(vec![1, 2, 3, 4])]
    );
    // Another model's vectors are its own.
    assert_eq!(s.embeddings("e5", &keys[..1]).await.unwrap(), vec![None]);
    s.put_embeddings("mini", vec![("a".into(), vec![9; 8])])
        .await
        .unwrap();
    assert_eq!(
        s.embeddings("mini", &keys[..1]).await.unwrap(),
        vec![Some(vec![9; 8])]
    );
}

async fn agents_presence_is_kept_and_one_process_leads(f: Fixture) {
    let s = &*f.store;
    assert!(s.agents().await.unwrap().is_empty());
    let ana = AgentState {
        agent: "ana".into(),
        presence: Presence::Online,
        since: T0,
        last_assigned_at: None,
    };
    s.set_agent(ana.clone()).await.unwrap();
    let away = AgentState {
        presence: Presence::Away,
        last_assigned_at: Some(T0),
        ..ana
    };
    s.set_agent(away.clone()).await.unwrap();
    assert_eq!(s.agents().await.unwrap(), [away]);
    let ttl = Duration::from_millis(300);
    assert!(s.lead("router", "one", T0, ttl).await.unwrap());
    assert!(s.lead("router", "one", T0, ttl).await.unwrap(), "renewal");
    if s.backend() == "redis" {
        assert!(!s.lead("router", "two", T0, ttl).await.unwrap());
        // Redis expires the leadership on its own clock: poll until it is taken over.
        let started = std::time::Instant::now();
        while !s.lead("router", "two", T0, ttl).await.unwrap() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the leadership never expired"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            started.elapsed() >= ttl.saturating_sub(Duration::from_millis(50)),
            "not taken over before the lease ran out"
        );
    }
}

async fn numbers_merge_activity_and_guard_their_lifecycle(f: Fixture) {
    let s = &*f.store;
    let pnid = PhoneNumberId::parse("106").unwrap();
    assert!(s.number(&pnid).await.unwrap().is_none());
    let at = |secs: u64| T0.plus(Duration::from_secs(secs));
    s.touch_number(
        &pnid,
        NumberTouch {
            waba_id: Some("104".into()),
            phone_at: Some(at(10)),
            ..NumberTouch::default()
        },
        T0,
    )
    .await
    .unwrap();
    // An older touch never moves a time back; held counts add.
    s.touch_number(
        &pnid,
        NumberTouch {
            phone_at: Some(at(5)),
            api_at: Some(at(7)),
            held: 2,
            ..NumberTouch::default()
        },
        T0,
    )
    .await
    .unwrap();
    s.touch_number(
        &pnid,
        NumberTouch {
            held: 1,
            ..NumberTouch::default()
        },
        T0,
    )
    .await
    .unwrap();
    let state = s.number(&pnid).await.unwrap().unwrap();
    assert_eq!(state.link, Link::Linked);
    assert_eq!(state.waba_id.as_deref(), Some("104"));
    assert_eq!(
        (state.last_phone_at, state.last_api_at),
        (Some(at(10)), Some(at(7)))
    );
    assert_eq!(state.held_sends, 3);
    assert_eq!(state.first_seen_at, T0);

    // A lifecycle write with its hooks, guarded by the revision; activity is kept.
    let mut next = state.clone();
    next.link = Link::Offboarded;
    next.reason = Some("ACCOUNT_OFFBOARDED".into());
    next.changed_at = at(20);
    next.last_phone_at = None;
    assert!(
        s.update_number(next.clone(), vec![hook("n1")])
            .await
            .unwrap()
    );
    assert!(
        !s.update_number(next, vec![hook("n2")]).await.unwrap(),
        "stale revision"
    );
    let stored = s.number(&pnid).await.unwrap().unwrap();
    assert_eq!(stored.link, Link::Offboarded);
    assert_eq!(stored.rev, state.rev + 1);
    assert_eq!(
        stored.last_phone_at,
        Some(at(10)),
        "touches win over a lifecycle write"
    );
    let hooks = s.due_hooks(at(30), 10, LEASE).await.unwrap();
    assert_eq!(hooks.len(), 1, "only the applied write's hook");
    s.touch_number(
        &PhoneNumberId::parse("107").unwrap(),
        NumberTouch::default(),
        T0,
    )
    .await
    .unwrap();
    let all: Vec<String> = s
        .numbers()
        .await
        .unwrap()
        .iter()
        .map(|n| n.phone_number_id.to_string())
        .collect();
    assert_eq!(all, ["106", "107"]);
}

async fn a_renewed_lease_keeps_the_lane_and_only_its_owner_renews(f: Fixture) {
    let s = f.store.as_ref();
    s.ingest(batch(T0, vec![message("r", "m1")])).await.unwrap();
    let first = s
        .claim(T0, Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert!(s.renew(&first, T0, LEASE).await.unwrap());
    // Well past the first lease in the store's time, the renewed lane is still held (without
    // the renewal a second claim at this time takes it: see the fencing test above).
    let later = T0.plus(Duration::from_secs(1));
    assert_eq!(s.claim(later, LEASE).await.unwrap(), None);
    let stranger = Claim {
        conversation: first.conversation.clone(),
        token: "not-the-owner".into(),
    };
    assert!(!s.renew(&stranger, later, LEASE).await.unwrap());
    assert_eq!(
        step(s, &first, later).await.unwrap().1,
        CommitOutcome::Applied
    );
    s.release(first, later).await.unwrap();
}

fn who(phone: Option<&str>, user: Option<&str>) -> Identity {
    Identity {
        phone: phone.map(|p| Phone::parse(p).unwrap()),
        user_id: user.map(|u| UserId::parse(u).unwrap()),
        ..Identity::default()
    }
}

async fn customers_are_found_by_any_alias_and_never_merged(f: Fixture) {
    let s = &f.store;
    let t = tandem_store::DEFAULT_TENANT;
    let resolve = |identity: Identity| async move {
        s.resolve_customers(t, &[CustomerLookup::of(&identity)])
            .await
            .unwrap()
            .remove(0)
    };
    // Known by phone first; the first payload with phone and BSUID links them.
    let ana = resolve(who(Some("155"), None)).await;
    assert!(ana.created && ana.customer.as_str().starts_with("c_"));
    let linked = resolve(who(Some("155"), Some("US.1"))).await;
    assert_eq!(linked.customer, ana.customer);
    assert!(!linked.created);
    assert_eq!(
        linked.linked,
        vec![Alias::user(&UserId::parse("US.1").unwrap())]
    );
    // Later payloads with the BSUID alone find the same customer; nothing more is written.
    let bsuid_only = resolve(who(None, Some("US.1"))).await;
    assert_eq!(bsuid_only.customer, ana.customer);
    assert!(bsuid_only.linked.is_empty() && !bsuid_only.created);
    // A username customer with no phone is created from the BSUID.
    let dario = resolve(who(None, Some("US.4"))).await;
    assert!(dario.created);
    assert_ne!(dario.customer, ana.customer);
    // A conflict: Ana's phone next to Dario's BSUID. Routed by the BSUID, never merged.
    let conflict = resolve(who(Some("155"), Some("US.4"))).await;
    assert_eq!(conflict.customer, dario.customer);
    assert_eq!(
        conflict.conflicts,
        vec![(
            Alias::phone(&Phone::parse("155").unwrap()),
            ana.customer.clone()
        )]
    );
    assert_eq!(
        s.customer_of(t, &Alias::phone(&Phone::parse("155").unwrap()))
            .await
            .unwrap(),
        Some(ana.customer.clone()),
        "the phone stays with its customer"
    );
    // BSUIDs are scoped to a portfolio: another tenant never matches them.
    let other = s
        .resolve_customers(
            "other",
            &[CustomerLookup::of(&who(Some("155"), Some("US.1")))],
        )
        .await
        .unwrap()
        .remove(0);
    assert!(other.created);
    assert_ne!(other.customer, ana.customer);
    // Each tenant lists its own customers, each once.
    assert_eq!(
        s.tenant_customers("other").await.unwrap(),
        std::slice::from_ref(&other.customer)
    );
    let mine = s.tenant_customers(t).await.unwrap();
    assert!(
        mine.contains(&ana.customer) && !mine.contains(&other.customer),
        "{mine:?}"
    );
    let mut unique = mine.clone();
    unique.dedup();
    assert_eq!(unique, mine);
    // A BSUID change: found by the old one, the new one linked, the old one kept.
    let change = IdentityChange {
        kind: "user_changed_user_id".into(),
        previous: who(None, Some("US.4")),
        current: who(None, Some("US.24")),
    };
    for _ in 0..2 {
        let changed = s
            .resolve_customers(t, &[CustomerLookup::of_change(&change)])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(changed.customer, dario.customer);
    }
    assert_eq!(
        resolve(who(None, Some("US.24"))).await.customer,
        dario.customer
    );
    assert_eq!(
        resolve(who(None, Some("US.4"))).await.customer,
        dario.customer
    );
    // One call sees its own writes: two messages of a new customer in one delivery.
    let pair = s
        .resolve_customers(
            t,
            &[
                CustomerLookup::of(&who(Some("177"), None)),
                CustomerLookup::of(&who(Some("177"), Some("US.7"))),
            ],
        )
        .await
        .unwrap();
    assert_eq!(pair[0].customer, pair[1].customer);
    assert!(pair[0].created && !pair[1].created);
}

async fn concurrent_first_messages_make_one_customer(f: Fixture) {
    let t = tandem_store::DEFAULT_TENANT;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = Arc::clone(&f.store);
            // Half the callers also carry the BSUID.
            let identity = who(Some("199"), (i % 2 == 0).then_some("US.9"));
            tokio::spawn(async move {
                s.resolve_customers(t, &[CustomerLookup::of(&identity)])
                    .await
                    .unwrap()
                    .remove(0)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(answers.iter().filter(|a| a.created).count(), 1);
    assert!(answers.iter().all(|a| a.customer == answers[0].customer));
    assert!(answers.iter().all(|a| a.conflicts.is_empty()));
}

fn audit_entry(at: Timestamp, action: &str) -> AuditEntry {
    AuditEntry {
        id: 0,
        tenant: Some("acme".into()),
        at,
        actor: "ops".into(),
        agent: None,
        action: action.into(),
        target: Some("106:c_1".into()),
        from: Some("127.0.0.1:5000".into()),
        status: 202,
        detail: None,
    }
}

async fn the_audit_log_appends_pages_in_time_order_and_purges(f: Fixture) {
    let s = &*f.store;
    let sec = |n: u64| T0.plus(Duration::from_secs(n));
    // Two entries in one millisecond, and one appended late with an earlier time.
    for (at, action) in [(sec(0), "a"), (sec(0), "b"), (sec(2), "c"), (sec(1), "d")] {
        s.append_audit(audit_entry(at, action)).await.unwrap();
    }
    let all = s.audit(T0, 0, 10).await.unwrap();
    let order: Vec<_> = all.iter().map(|e| (e.action.as_str(), e.id)).collect();
    assert_eq!(order, [("a", 1), ("b", 2), ("d", 4), ("c", 3)]);
    assert_eq!(
        all[0],
        AuditEntry {
            id: 1,
            ..audit_entry(sec(0), "a")
        }
    );
    // Pages resume after the last entry seen, even inside one millisecond.
    let first = s.audit(T0, 0, 1).await.unwrap();
    let next = s.audit(first[0].at, first[0].id, 2).await.unwrap();
    let next: Vec<_> = next.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(next, ["b", "d"]);
    assert!(s.audit(sec(3), 0, 10).await.unwrap().is_empty());
    // Retention removes the oldest, at most `limit` at a time.
    assert_eq!(s.purge_older(Purge::Audit, sec(2), 2).await.unwrap(), 2);
    assert_eq!(s.purge_older(Purge::Audit, sec(2), 2).await.unwrap(), 1);
    assert_eq!(s.purge_older(Purge::Audit, sec(2), 2).await.unwrap(), 0);
    let left: Vec<_> = s
        .audit(T0, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(left, ["c"]);
    // Ids keep growing after a purge.
    assert_eq!(s.append_audit(audit_entry(sec(5), "e")).await.unwrap(), 5);
}

async fn retention_purges_old_dead_letters_and_dead_hooks(f: Fixture) {
    let s = &*f.store;
    let hour = |n: u64| T0.plus(Duration::from_secs(3600 * n));
    for n in 0..3 {
        let letter = DeadLetter {
            received_at: hour(n),
            reason: "unparseable_body".into(),
            field: None,
            detail: "test".into(),
            body: format!("letter {n}"),
            body_base64: false,
        };
        s.ingest(batch(
            hour(n),
            vec![IngestItem {
                key: format!("dl{n}"),
                kind: IngestKind::DeadLetter(letter),
            }],
        ))
        .await
        .unwrap();
    }
    // Two hooks die, an hour apart.
    s.ingest(batch(T0, vec![message("a", "m1")])).await.unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    let (record, items) = s.head(&claim, T0, 10).await.unwrap().unwrap();
    let mut commit = commit_of(T0, record, &items, TimerChange::Keep);
    commit.hooks = vec![hook("h1"), hook("h2")];
    s.commit(&claim, commit, LEASE).await.unwrap();
    for (n, job) in s.due_hooks(T0, 10, LEASE).await.unwrap().iter().enumerate() {
        let settle = HookSettle::Dead {
            error: "gone".into(),
        };
        s.settle_hook(job, settle, hour(n as u64)).await.unwrap();
    }
    assert_eq!(s.dead_hooks(10).await.unwrap().len(), 2);

    let cutoff = hour(1).plus(Duration::from_secs(1800));
    assert_eq!(
        s.purge_older(Purge::DeadLetters, cutoff, 1).await.unwrap(),
        1
    );
    assert_eq!(
        s.purge_older(Purge::DeadLetters, cutoff, 10).await.unwrap(),
        1
    );
    assert_eq!(
        s.purge_older(Purge::DeadLetters, cutoff, 10).await.unwrap(),
        0
    );
    let left: Vec<_> = s
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| l.body)
        .collect();
    assert_eq!(left, ["letter 2"]);
    assert_eq!(
        s.purge_older(Purge::DeadHooks, cutoff, 10).await.unwrap(),
        2
    );
    assert!(s.dead_hooks(10).await.unwrap().is_empty());
}

async fn a_rewrite_is_guarded_by_the_revision(f: Fixture) {
    let s = &*f.store;
    s.ingest(batch(T0, vec![message("a", "m1")])).await.unwrap();
    drain(s, T0).await;
    let record = s.conversation(&conv("a")).await.unwrap().unwrap();
    let mut trimmed = record.clone();
    trimmed.transcript.clear();
    assert!(
        s.rewrite_conversation(trimmed.clone(), record.rev, T0)
            .await
            .unwrap()
    );
    let stored = s.conversation(&conv("a")).await.unwrap().unwrap();
    assert_eq!(stored.rev, record.rev + 1);
    assert!(stored.transcript.is_empty());
    assert_eq!(stored.events_applied, record.events_applied);
    // Written from a stale read: refused, nothing changes.
    assert!(
        !s.rewrite_conversation(record.clone(), record.rev, T0)
            .await
            .unwrap()
    );
    assert!(
        s.conversation(&conv("a"))
            .await
            .unwrap()
            .unwrap()
            .transcript
            .is_empty()
    );
    // A record that does not exist is not created.
    let mut ghost = record;
    ghost.id = conv("ghost");
    assert!(!s.rewrite_conversation(ghost, 1, T0).await.unwrap());
    assert!(s.conversation(&conv("ghost")).await.unwrap().is_none());
}

async fn erasing_a_customer_removes_its_data_and_leaves_tombstones(f: Fixture) {
    let s = &*f.store;
    let t = tandem_store::DEFAULT_TENANT;
    let lookup = |phone: &str, user: Option<&str>| CustomerLookup::of(&who(Some(phone), user));
    let resolved = s
        .resolve_customers(
            t,
            &[
                lookup("15550001111", Some("US.1111")),
                lookup("15550002222", None),
            ],
        )
        .await
        .unwrap();
    let (ana, bob) = (resolved[0].customer.clone(), resolved[1].customer.clone());
    let conv_of =
        |c: &CustomerId| ConversationId::new(PhoneNumberId::parse("106").unwrap(), c.clone());
    let msg = |c: &CustomerId, id: &str| IngestItem {
        key: format!("msg:{c}:{id}"),
        kind: IngestKind::Conversation {
            conversation: conv_of(c),
            event: text(id),
            pause: None,
        },
    };
    let contact = |wa: &str| IngestItem {
        key: format!("contact:{wa}"),
        kind: IngestKind::Contact(ContactUpdate {
            phone_number_id: PhoneNumberId::parse("106").unwrap(),
            wa_id: WaId::parse(wa).unwrap(),
            full_name: Some("Someone".into()),
            first_name: None,
            removed: false,
            at: T0,
        }),
    };
    let letter = |key: &str, body: &str| IngestItem {
        key: key.into(),
        kind: IngestKind::DeadLetter(DeadLetter {
            received_at: T0,
            reason: "unparseable_change".into(),
            field: Some("messages".into()),
            detail: "test".into(),
            body: body.into(),
            body_base64: false,
        }),
    };
    s.ingest(batch(
        T0,
        vec![
            msg(&ana, "a1"),
            msg(&bob, "b1"),
            contact("15550001111"),
            contact("15550002222"),
        ],
    ))
    .await
    .unwrap();
    // The lane applies the first messages; the record learns Ana's phone and BSUID.
    while let Some(claim) = s.claim(T0, LEASE).await.unwrap() {
        let (mut record, items) = s.head(&claim, T0, 10).await.unwrap().unwrap();
        if claim.conversation == conv_of(&ana) {
            record.note_identity(&who(Some("15550001111"), Some("US.1111")));
        }
        record.push(tandem_domain::TranscriptEntry::system(T0, "hello"), 10);
        let commit = commit_of(T0, record, &items, TimerChange::Set(T0.plus(IDLE)));
        assert_eq!(
            s.commit(&claim, commit, LEASE).await.unwrap(),
            CommitOutcome::Applied
        );
        s.release(claim, T0).await.unwrap();
    }
    // More of Ana waits in the inbox; hooks about both are pending; letters name both.
    s.ingest(batch(
        T0,
        vec![
            msg(&ana, "a2"),
            letter("l1", r#"{"from":"15550001111"}"#),
            letter("l2", r#"{"from":"15550002222"}"#),
        ],
    ))
    .await
    .unwrap();
    let claim = s.claim(T0, LEASE).await.unwrap().unwrap();
    assert_eq!(claim.conversation, conv_of(&ana));
    let (record, _) = s.head(&claim, T0, 10).await.unwrap().unwrap();
    let mut hooks_commit = commit_of(T0, record, &[], TimerChange::Keep);
    let about = |id: &str, c: &CustomerId| {
        let mut job = hook(id);
        job.body = format!(r#"{{"customer":{{"id":"{c}"}}}}"#);
        job
    };
    hooks_commit.hooks = vec![about("ha", &ana), about("hb", &bob)];
    assert_eq!(
        s.commit(&claim, hooks_commit.clone(), LEASE).await.unwrap(),
        CommitOutcome::Applied
    );
    let before = s.stats().await.unwrap();
    assert_eq!(s.identity_epoch().await.unwrap(), 0);
    let mut known = s.customer_aliases(t, &ana).await.unwrap();
    known.sort();
    assert_eq!(
        known,
        [
            Alias::user(&UserId::parse("US.1111").unwrap()),
            Alias::phone(&Phone::parse("15550001111").unwrap()),
        ]
    );

    let later = T0.plus(Duration::from_secs(60));
    let mut erased_hook = hook("erased");
    erased_hook.event = "customer.erased".into();
    let report = s
        .erase_customer(Erasure {
            tenant: t.into(),
            customer: ana.clone(),
            now: later,
            hooks: vec![erased_hook],
        })
        .await
        .unwrap();
    assert_eq!(report.conversations, 1);
    assert_eq!(report.transcript_lines, 1);
    assert_eq!(report.queued_events, 1);
    assert_eq!(report.contacts, 1);
    assert_eq!(report.aliases, 2);
    assert_eq!(report.hooks, 1);
    assert_eq!(report.dead_letters, 1);
    assert_eq!(report.conversation_ids, vec![conv_of(&ana)]);

    // Ana's data is gone.
    assert!(s.conversation(&conv_of(&ana)).await.unwrap().is_none());
    let phone = Alias::phone(&Phone::parse("15550001111").unwrap());
    let bsuid = Alias::user(&UserId::parse("US.1111").unwrap());
    assert_eq!(s.customer_of(t, &phone).await.unwrap(), None);
    assert_eq!(s.customer_of(t, &bsuid).await.unwrap(), None);
    assert!(s.customer_aliases(t, &ana).await.unwrap().is_empty());
    assert_eq!(s.customer_aliases(t, &bob).await.unwrap().len(), 1);
    let number = PhoneNumberId::parse("106").unwrap();
    assert!(s.contact(&number, "15550001111").await.unwrap().is_none());
    let after = s.stats().await.unwrap();
    assert_eq!(after.inbox_depth, before.inbox_depth - 1);
    // Her lane's commit, computed before the erasure, is refused.
    assert_eq!(
        s.commit(&claim, hooks_commit, LEASE).await.unwrap(),
        CommitOutcome::Conflict
    );
    let pending: Vec<_> = s
        .due_hooks(later, 10, LEASE)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.event_id)
        .collect();
    assert_eq!(pending, ["erased", "hb"]);
    let letters: Vec<_> = s
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, l)| l.body)
        .collect();
    assert_eq!(letters, [r#"{"from":"15550002222"}"#]);

    // Bob is untouched.
    assert!(s.conversation(&conv_of(&bob)).await.unwrap().is_some());
    assert!(s.contact(&number, "15550002222").await.unwrap().is_some());
    assert_eq!(
        s.customer_of(t, &Alias::phone(&Phone::parse("15550002222").unwrap()))
            .await
            .unwrap(),
        Some(bob.clone())
    );

    // Tombstones remember when, under a digest; the epoch moved on.
    assert_eq!(
        s.tombstone(t, &phone).await.unwrap().unwrap().erased_at,
        later
    );
    assert_eq!(
        s.tombstone(t, &bsuid).await.unwrap().unwrap().erased_at,
        later
    );
    assert!(s.tombstone("other", &phone).await.unwrap().is_none());
    assert_eq!(s.identity_epoch().await.unwrap(), 1);

    // A delivery resolved before the erasure is refused, plain or not; nothing is written.
    for item in [msg(&ana, "a3"), echo("x", "e1")] {
        let stale = IngestBatch {
            identity_epoch: Some(0),
            ..batch(later, vec![item])
        };
        match s.ingest(stale).await {
            Err(StoreError::StaleIdentities { stored: 1 }) => {}
            other => panic!("a stale delivery was not refused: {other:?}"),
        }
    }
    assert!(s.conversation(&conv_of(&ana)).await.unwrap().is_none());
    assert_eq!(s.stats().await.unwrap().inbox_depth, after.inbox_depth);
    // Resolved again: a new customer, and its delivery is stored.
    let again = s
        .resolve_customers(t, &[lookup("15550001111", None)])
        .await
        .unwrap()
        .remove(0);
    assert!(again.created);
    assert_ne!(again.customer, ana);
    let fresh = IngestBatch {
        identity_epoch: Some(1),
        ..batch(later, vec![msg(&again.customer, "a4")])
    };
    assert_eq!(
        s.ingest(fresh).await.unwrap().outcomes,
        vec![ItemOutcome::Stored]
    );
    // Ana's idle timer went with her record: only Bob's fires.
    assert_eq!(s.fire_due_timers(T0.plus(IDLE), 10).await.unwrap(), 1);
}

macro_rules! contract {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::$backend().await).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($backend:ident),*) => {
        $(contract!($backend:
            events_apply_once_in_arrival_order,
            retries_are_deduplicated,
            an_echo_pauses_in_the_same_write,
            an_echo_of_our_own_send_is_not_a_person,
            a_lane_step_never_overwrites_a_pause,
            one_owner_per_lane_and_stale_owners_are_fenced,
            due_timers_become_idle_checks,
            several_events_commit_together_and_only_as_the_head,
            a_record_only_commit_keeps_the_inbox_and_is_guarded_by_the_revision,
            a_retry_after_the_dedupe_window_is_stored_again,
            send_slots_keep_each_numbers_rate_across_callers,
            contacts_accounts_and_dead_letters_are_kept,
            conversations_are_listed_by_mode_in_pages,
            hooks_are_written_with_the_step_leased_retried_and_dead_lettered,
            agents_presence_is_kept_and_one_process_leads,
            embeddings_are_cached_per_model_and_key,
            numbers_merge_activity_and_guard_their_lifecycle,
            a_renewed_lease_keeps_the_lane_and_only_its_owner_renews,
            customers_are_found_by_any_alias_and_never_merged,
            concurrent_first_messages_make_one_customer,
            the_audit_log_appends_pages_in_time_order_and_purges,
            retention_purges_old_dead_letters_and_dead_hooks,
            a_rewrite_is_guarded_by_the_revision,
            erasing_a_customer_removes_its_data_and_leaves_tombstones,
        );)*
    };
}

suite!(embedded, redis);

/// A Redis keyspace written before the per-customer alias sets existed is indexed when a
/// store connects, so an erasure finds every alias of a customer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_keyspace_without_the_alias_index_is_indexed_on_connect() {
    let f = redis().await;
    let t = tandem_store::DEFAULT_TENANT;
    let prefix = f.redis_prefix.clone().unwrap();
    let ana = f
        .store
        .resolve_customers(
            t,
            &[CustomerLookup::of(&who(
                Some("15550001111"),
                Some("US.1111"),
            ))],
        )
        .await
        .unwrap()
        .remove(0)
        .customer;
    // As an earlier version left it: aliases, no sets, no marker.
    let client = ::redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let sets: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}:customer_aliases:*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(sets.len(), 1, "resolution writes the customer's alias set");
    let _: () = ::redis::cmd("DEL")
        .arg(&sets)
        .arg(format!("{prefix}:alias_index"))
        .query_async(&mut con)
        .await
        .unwrap();
    let options = StoreOptions {
        redis_prefix: prefix.clone(),
        ..options()
    };
    let reopened = tandem_store::open(&redis_url(), options).await.unwrap();
    let report = reopened
        .erase_customer(Erasure {
            tenant: t.into(),
            customer: ana,
            now: T0,
            hooks: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(report.aliases, 2);
    let phone = Alias::phone(&Phone::parse("15550001111").unwrap());
    assert_eq!(reopened.customer_of(t, &phone).await.unwrap(), None);
}
