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
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": {"kind": "unauthorized", "message": "missing or wrong bearer token"}})),
            )
                .into_response(),
        }
    }
}
