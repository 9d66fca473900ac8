//! The handoff policy of Tandem: who a conversation that needs a person goes to, in what
//! order waiting conversations are served, and what the business's CRM or helpdesk is told.
//!
//! Pure: no IO and no clock (times come in as arguments). The engine calls it from the lanes
//! (team choice, hook payloads), from the router (agent choice, queue order) and from the hook
//! deliverer (signatures).
//!
//! Layout:
//! - [`routing`]: teams, agents, rules and strategies from the configuration, validated; the
//!   team a handoff goes to and the agent the router picks.
//! - [`queue`]: the order of conversations waiting for a person (urgency, then the time left
//!   in their 24-hour window).
//! - [`hooks`]: hook targets, event names (conversation and number events), payloads and the
//!   HMAC signature.

pub mod hooks;
pub mod queue;
pub mod routing;

pub use hooks::{HookEvent, HookTarget, Hooks, number_payload, sign, verify};
pub use queue::{Waiting, sort_queue};
pub use routing::{DEFAULT_TAKEOVER_CAP, Facts, Pick, Routing, RoutingConfig, Strategy};
