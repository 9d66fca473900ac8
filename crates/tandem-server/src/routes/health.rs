//! `GET /healthz` (the process answers), `GET /readyz` (the store answers) and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::metrics;

/// Liveness: 200 while the process serves requests.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: 200 when the store answers, 503 otherwise.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.ping().await {
        // Still ready without an access token: events are stored (Meta must keep delivering);
        // the answer says that nothing can be sent.
        Ok(()) => Json(json!({"status": "ready", "store": state.store.backend(), "sending": state.sending_problem.map_or("ok", |p| p)})).into_response(),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "store": state.store.backend()})),
            )
                .into_response()
        }
    }
}

/// Prometheus text exposition; store gauges are read at scrape time.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.metrics else {
        return (StatusCode::NOT_FOUND, "metrics are not enabled").into_response();
    };
    match state.store.stats().await {
        Ok(stats) => {
            ::metrics::gauge!(metrics::INBOX_DEPTH).set(stats.inbox_depth as f64);
            ::metrics::gauge!(metrics::DEAD_LETTERS).set(stats.dead_letters as f64);
            ::metrics::gauge!(metrics::CONVERSATIONS).set(stats.conversations as f64);
            ::metrics::gauge!(metrics::HOOKS_PENDING).set(stats.hooks_pending as f64);
            ::metrics::gauge!(metrics::HOOKS_DEAD).set(stats.hooks_dead as f64);
        }
        Err(error) => tracing::warn!(error = %error, "store stats unavailable for /metrics"),
    }
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
