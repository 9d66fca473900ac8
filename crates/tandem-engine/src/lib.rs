//! The engine: what Tandem does with a webhook once its signature is checked, and how each
//! conversation's events take effect.
//!
//! Layout:
//! - [`ingress`]: body → typed events → one atomic store write (dedupe, inbox, pause on a
//!   human echo). The webhook handler calls only this.
//! - [`apply`]: the pure step function: conversation record + inbox event → new record and
//!   timer change. No IO.
//! - [`dispatcher`]: lane workers (one conversation at a time per lane, lanes in parallel,
//!   across processes when the store is shared), the idle-timer pump and store upkeep.
//! - [`metrics`]: the metric names this crate records, and their descriptions.
//!
//! It does not speak HTTP, and it decides nothing about bot replies yet.

pub mod apply;
pub mod config;
pub mod dispatcher;
pub mod ingress;
pub mod metrics;

pub use apply::{ApplyContext, Batch, Step, apply, apply_batch};
pub use config::EngineConfig;
pub use dispatcher::Dispatcher;
pub use ingress::{Ingress, IngressReport};
