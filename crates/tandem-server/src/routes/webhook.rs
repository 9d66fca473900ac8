//! `GET /webhook` (subscription handshake) and `POST /webhook` (event delivery).
//!
//! The POST handler is thin on purpose: check the signature on the raw bytes, hand the body
//! to [`tandem_engine::Ingress`], answer. 200 only once the events are durable; 401 for a bad
//! signature (nothing stored); 503 when the store cannot take the events (Meta retries).

use std::collections::HashMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, secret_matches};
use crate::metrics;

fn reject(reason: &'static str) {
    ::metrics::counter!(metrics::WEBHOOK_REJECTS, "reason" => reason).increment(1);
}

/// Answers Meta's handshake: the challenge when the verify token matches, else 403.
pub async fn handshake(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let mode = params.get("hub.mode").map(String::as_str);
    let token = params
        .get("hub.verify_token")
        .map(String::as_str)
        .unwrap_or("");
    let challenge = params.get("hub.challenge");
    let token_ok = state
        .verify_token
        .as_ref()
        .is_none_or(|expected| secret_matches(expected, token));
    match (mode, challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            tracing::info!("webhook subscription verified");
            (StatusCode::OK, challenge.clone()).into_response()
        }
        _ => {
            reject("handshake_refused");
            tracing::warn!("webhook handshake refused: wrong mode, token or missing challenge");
            (StatusCode::FORBIDDEN, "verification failed").into_response()
        }
    }
}

/// Receives an event delivery.
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = deliver(&state, &headers, body).await;
    ::metrics::histogram!(metrics::WEBHOOK_ACK).record(started.elapsed().as_secs_f64());
    response
}

async fn deliver(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            reject("body_too_large");
            ::metrics::counter!(metrics::WEBHOOK_REQUESTS, "outcome" => "rejected").increment(1);
            tracing::warn!(error = %rejection, "webhook body refused");
            return rejection.into_response();
        }
    };
    if let Some(secret) = &state.app_secret {
        let header = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
        if let Err(error) = tandem_whatsapp::verify(secret, &body, header) {
            reject(error.label());
            ::metrics::counter!(metrics::WEBHOOK_REQUESTS, "outcome" => "rejected").increment(1);
            tracing::warn!(reason = error.label(), "webhook signature refused");
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {"kind": "unauthorized", "message": error.to_string()}})),
            )
                .into_response();
        }
    }
    match state.ingress.accept(&body, state.clock.now()).await {
        Ok(report) => {
            ::metrics::counter!(metrics::WEBHOOK_REQUESTS, "outcome" => "accepted").increment(1);
            tracing::debug!(?report, "webhook stored");
            (StatusCode::OK, Json(report)).into_response()
        }
        Err(error) => {
            ::metrics::counter!(metrics::WEBHOOK_REQUESTS, "outcome" => "unavailable").increment(1);
            ::metrics::counter!(tandem_engine::metrics::ERRORS, "stage" => "receiving", "error_kind" => error.kind().as_str())
                .increment(1);
            tracing::error!(error = %error, "webhook could not be stored; answering 503 so Meta retries");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"kind": "unavailable", "message": "store unavailable; retry later"}})))
                .into_response()
        }
    }
}
