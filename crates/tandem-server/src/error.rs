//! The API's error answer: one JSON shape, with the HTTP status chosen from [`ErrorKind`] here
//! and nowhere else.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tandem_domain::ErrorKind;
use tandem_store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub enum ApiError {
    /// A categorised failure with a message safe to show the client.
    Kind(ErrorKind, String),
    /// The bearer token is missing or wrong.
    Unauthorized,
    /// The token is valid but lacks the scope the route needs.
    Forbidden(&'static str),
    /// The token made more requests than `api.rate_limit` allows; retry after this long.
    RateLimited(std::time::Duration),
}

impl ApiError {
    /// A 400 with a readable reason.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Kind(ErrorKind::Invalid, message.into())
    }

    /// A 409 with a readable reason.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Kind(ErrorKind::Conflict, message.into())
    }

    /// A 404 with a readable reason.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::Kind(ErrorKind::NotFound, message.into())
    }
}

/// Gives every error answer the API's JSON shape, whoever produced it: axum's own
/// rejections (a body over the size limit, a path that is not valid UTF-8, an unknown route
/// or method) answer plain text or nothing, which becomes
/// `{"error": {"kind", "message"}}` with the same status. JSON answers pass unchanged.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are short; anything longer is cut rather than buffered whole.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let kind = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "invalid",
    };
    let message = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => "no such route".to_owned(),
        (StatusCode::METHOD_NOT_ALLOWED, true) => "this route does not take that method".to_owned(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_lowercase(),
        (_, false) => text,
    };
    let mut answer = (
        status,
        Json(json!({"error": {"kind": kind, "message": message}})),
    )
        .into_response();
    // Keep what the original answer said besides its body (`WWW-Authenticate`, `Allow`).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Maps an error category to its HTTP status.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        // The details go to the log; the client gets the category only.
        tracing::error!(error = %error, "store error while answering an API request");
        let kind = error.kind();
        Self::Kind(
            kind,
            format!(
                "the store is {}",
                if error.is_retryable() {
                    "unavailable; retry later"
                } else {
                    "failing"
                }
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Kind(kind, message) => {
                (status_of(kind), Json(json!({"error": {"kind": kind.as_str(), "message": message}}))).into_response()
            }
            Self::Forbidden(scope) => (
                StatusCode::FORBIDDEN,
                Json(json!({"error": {"kind": "forbidden", "message": format!("this token lacks the `{scope}` scope")}})),
            )
                .into_response(),
            Self::RateLimited(wait) => {
                // Whole seconds, at least one: what `Retry-After` can say.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, seconds.max(1).to_string())],
                    Json(json!({"error": {"kind": "rate_limited", "message": "too many requests with this token; retry after the time in Retry-After"}})),
                )
                    .into_response()
            }
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": {"kind": "unauthorized", "message": "missing or wrong bearer token"}})),
            )
                .into_response(),
        }
    }
}
