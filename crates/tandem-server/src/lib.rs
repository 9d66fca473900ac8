//! The HTTP front of Tandem and its start-up: configuration, telemetry, routes and the
//! [`Application`] that ties the store, the engine and the listener together.
//!
//! Layout:
//! - [`config`]: layered, validated [`Settings`];
//! - [`telemetry`]: the tracing subscriber and the Prometheus recorder (the only globals);
//! - [`routes`]: webhook, agent API, health and metrics handlers;
//! - [`error`]: the API error shape and the one mapping from error kind to HTTP status;
//! - [`startup`]: [`Application::build`] and [`Application::run_until_stopped`];
//! - [`tenants`]: tenant files, building each tenant's parts, reloading them.

pub mod config;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod serve;
pub mod startup;
pub mod telemetry;
pub mod tenants;

pub use config::{CliOverrides, ConfigError, Settings, load};
pub use startup::Application;
