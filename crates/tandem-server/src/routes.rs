//! HTTP routes. Each file owns one surface:
//! - [`webhook`]: Meta's subscription handshake and event delivery;
//! - [`api`]: reading conversations, dead letters and accounts under `/v1`;
//! - [`agent`]: acting on conversations (take over, assign, release, close, send), the
//!   queue, agents' availability and the hook dead-letter list;
//! - [`onboarding`]: onboarding a business number (`POST /v1/numbers`);
//! - [`privacy`]: erasing a customer, the audit log and the middleware that writes it;
//! - [`tenants`]: listing the deployment's tenants and removing one with its data;
//! - [`openapi`]: the table of `/v1` routes the router is built from, and the OpenAPI
//!   document generated from the same table;
//! - [`auth`]: bearer tokens and their scopes;
//! - [`health`]: liveness, readiness and Prometheus metrics.

pub mod agent;
pub mod api;
pub mod auth;
pub mod health;
pub mod onboarding;
pub mod openapi;
pub mod privacy;
pub mod tenants;
pub mod webhook;

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tandem_domain::Clock;
use tandem_engine::Ingress;
use tandem_store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Webhook ingestion.
    pub ingress: Ingress,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// App secret for `X-Hub-Signature-256`; `None` in dev mode (not checked).
    pub app_secret: Option<Arc<[u8]>>,
    /// Token of the subscription handshake; `None` in dev mode (any token accepted).
    pub verify_token: Option<Arc<SecretString>>,
    /// Bearer tokens of `/v1` (the deployment's and every tenant's); empty in dev mode
    /// (open).
    pub api_tokens: auth::TokenBook,
    /// Requests a second per token (by token name), when limited (`api.rate_limit`).
    pub api_limiter: Option<Arc<governor::DefaultKeyedRateLimiter<String>>>,
    /// The tenants in force: each one's flows, teams, agents, hooks and token.
    pub tenants: tandem_engine::Tenants,
    /// The declared tenants' directory, when the deployment has one.
    pub declared: Option<Arc<crate::tenants::Declared>>,
    /// Onboarding numbers: the Graph API and the app's credentials.
    pub onboarding: Arc<Onboarding>,
    /// Messages a second per number (`engine.send_rate`), shown with each number.
    pub send_rate: u32,
    /// Why nothing can be sent through the Cloud API, when that is so (no access token).
    pub sending_problem: Option<&'static str>,
    /// Authentication templates (`engine.authentication_templates`): never sent to a
    /// customer known only by BSUID.
    pub authentication_templates: Arc<Vec<String>>,
    /// Prometheus renderer, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// What onboarding a number needs besides the request.
#[derive(Debug)]
pub struct Onboarding {
    /// The Graph API (calls carry the business's token).
    pub graph: tandem_whatsapp::GraphClient,
    /// The app's id, to exchange Embedded Signup codes.
    pub app_id: Option<String>,
    /// The app's secret, to exchange Embedded Signup codes.
    pub app_secret: Option<SecretString>,
}

/// Compares a presented secret with the configured one in constant time.
pub(crate) fn secret_matches(expected: &SecretString, presented: &str) -> bool {
    expected
        .expose_secret()
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into()
}
