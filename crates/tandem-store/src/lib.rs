//! Durable state of Tandem: the inbox of every conversation, conversation records, timers,
//! deduplication keys, the outbound-message registry, contacts, account facts, dead letters,
//! the hook outbox and agents' presence.
//!
//! One [`Store`] trait with two backends that pass the same behaviour suite
//! (`tests/contract.rs`):
//! - [`EmbeddedStore`]: a single redb file, zero set-up, one process. Writes from all callers
//!   are group-committed: one writer thread folds every write waiting at that moment into one
//!   transaction and one fsync.
//! - [`RedisStore`]: a Redis server shared by several replicas. Every write is one Lua script,
//!   so it is atomic; conversation records are guarded by their revision (optimistic
//!   concurrency) and lanes by a lease token (fencing).
//!
//! What the store guarantees, whichever backend:
//! - an ingested event is durable when [`Store::ingest`] returns, is deduplicated by its key
//!   for the configured time, and sits in its conversation's inbox in arrival order;
//! - a customer is found by any of its aliases (phone, BSUID, parent BSUID) within a tenant,
//!   created once, and never merged with another on Tandem's own ([`Store::resolve_customers`]);
//! - a human echo pauses its conversation in the same atomic write that stores it;
//! - a lane step ([`Store::commit`]) removes the event it applied and writes the new record in
//!   one atomic write, so every event takes effect exactly once;
//! - at most one worker holds a conversation's lane at a time ([`Store::claim`]);
//! - hook deliveries a step produced are written with it, handed to one deliverer at a time
//!   ([`Store::due_hooks`], a lease), and leave the outbox only when settled;
//! - a business number's send slots are spaced by its rate limit across every process
//!   ([`Store::reserve_send_slot`]), for the sender to wait on.
//!
//! It does not decide what events mean: that is the engine's job.

mod customers;
mod embedded;
mod error;
mod model;
mod privacy;
mod redis;
mod store;

pub use customers::DEFAULT_TENANT;
pub use embedded::EmbeddedStore;
pub use error::StoreError;
pub use model::{
    AccountState, AgentState, Claim, CommitOutcome, HookJob, HookSettle, InboxItem, IngestBatch,
    IngestItem, IngestKind, IngestReport, ItemOutcome, Link, ListQuery, NumberState, NumberTouch,
    Onboarding, PauseOnIngest, Presence, StepCommit, StoreOptions, StoreStats, SyncRequest,
    TimerChange, apply_pause,
};
pub use privacy::{AuditEntry, Erasure, ErasureReport, Purge, Tombstone, tombstone_key};
pub use redis::RedisStore;
pub use store::{Store, contact_for, open};
