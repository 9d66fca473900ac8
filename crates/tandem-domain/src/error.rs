//! The error categories shared by every crate, so HTTP status codes are chosen in one place.

use serde::Serialize;

/// What kind of failure an error is, independent of the crate that raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The caller sent something malformed or not allowed.
    Invalid,
    /// The thing asked for does not exist.
    NotFound,
    /// The request conflicts with the current state.
    Conflict,
    /// A dependency (store, remote API) cannot be reached now; retrying later may work.
    Unavailable,
    /// A dependency did not answer in time.
    Timeout,
    /// A bug or an unexpected state on our side.
    Internal,
}

impl ErrorKind {
    /// Returns the stable snake_case name used in logs, metrics labels and API errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }
}
