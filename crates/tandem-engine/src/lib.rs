//! The engine: what Tandem does with a webhook once its signature is checked, and how each
//! conversation's events take effect.
//!
//! Layout:
//! - [`ingress`]: body → typed events → one atomic store write (dedupe, inbox, pause on a
//!   human echo). The webhook handler calls only this.
//! - [`apply`]: the pure step function: conversation record + inbox event → new record and
//!   timer change. No IO.
//! - [`turn`]: the decision of a conversation turn — events, desk, burst, classifier cascade,
//!   flows, notices, timer, hooks and metrics — as one pure function with typed effects; what
//!   needs the network (LLM, backend calls) is a request the driver performs and feeds back.
//! - [`dispatcher`]: lane workers (one conversation at a time per lane, lanes in parallel,
//!   across processes when the store is shared), the idle-timer pump and store upkeep.
//! - [`responder`]: the flows in force and the driver of a turn: performs the decision's
//!   requests (LLM, flows' backend calls) and feeds the answers back.
//! - [`semantic`]: the semantic stage at run time: the embedder, the heads trained on the
//!   flows' examples, the cache of their vectors in the store.
//! - [`voice`]: voice notes downloaded from the Graph API and transcribed.
//! - [`sender`]: sends the outbox through the Graph API after the commit: pause re-read,
//!   24-hour window, per-number rate, retries with backoff.
//! - [`desk`]: the handoff side of a lane step: team choice, agent and router actions,
//!   pause/resume bookkeeping, and the hooks written with the step.
//! - [`router`]: gives waiting conversations to agents (one leader across processes) and
//!   tells the others where they stand.
//! - [`hook_sender`]: delivers the durable hook outbox, signed, with retries and a
//!   dead-letter list.
//! - [`health`]: Coexistence link health per number (off-boarding, reconnection, the
//!   heartbeat rule), its hooks and the owner's reminder.
//! - [`sandbox`]: one conversation against the flows with no store and no WhatsApp account
//!   (`tandem chat`, `tandem test`).
//! - [`onboarding`]: onboarding a number in one step (token, webhooks, the Coexistence syncs
//!   once each) and its view with the sync's progress.
//! - [`privacy`]: erasing a customer on request and the retention sweep.
//! - [`tenants`]: the businesses a deployment serves, their parts, and who owns a number.
//! - [`metrics`]: the metric names this crate records, and their descriptions.

pub mod apply;
pub mod config;
pub mod desk;
pub mod dispatcher;
pub mod health;
pub mod hook_sender;
mod identity;
pub mod ingress;
pub mod metrics;
pub mod onboarding;
pub mod privacy;
mod reply;
pub mod responder;
pub mod router;
pub mod sandbox;
pub mod semantic;
pub mod sender;
pub mod tenants;
pub mod turn;
pub mod voice;

pub use apply::{ApplyContext, Step, apply};
pub use config::EngineConfig;
pub use desk::Desk;
pub use dispatcher::{Dispatcher, LaneParts};
pub use hook_sender::HookSender;
pub use ingress::{Ingress, IngressReport};
pub use responder::{FlowsHandle, Responder};
pub use sandbox::Sandbox;
pub use sender::{SendPolicy, Sender};
pub use tenants::{Tenant, TenantParts, Tenants};
