//! Errors of the store, with the shared [`ErrorKind`] they map to.

use tandem_domain::ErrorKind;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database file failed.
    #[error("embedded store: {context}")]
    Embedded {
        /// What was being done.
        context: &'static str,
        /// The redb error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// A stored record could not be read back.
    #[error("stored record {what} is corrupt: {detail}")]
    Corrupt {
        /// Which record.
        what: String,
        /// What was wrong.
        detail: String,
    },
    /// A Redis script answered something this version does not understand.
    #[error("unexpected answer from redis script: {0}")]
    Protocol(String),
    /// The store URL or options are not usable.
    #[error("store {0}")]
    Config(String),
    /// The store was closed (the writer thread stopped).
    #[error("store is closed")]
    Closed,
    /// A delivery was resolved to customers under an identity epoch an erasure has since
    /// ended: drop cached identities, resolve again and retry.
    #[error("customer identities changed (an erasure); resolve again (epoch now {stored})")]
    StaleIdentities {
        /// The epoch the store holds now.
        stored: u64,
    },
    /// A write kept conflicting with concurrent writers.
    #[error("write kept conflicting with other writers after {0} attempts")]
    Contention(u32),
}

impl StoreError {
    pub(crate) fn embedded(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Embedded {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    /// Returns the error's category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Redis(e) if e.is_timeout() => ErrorKind::Timeout,
            Self::Redis(_)
            | Self::Embedded { .. }
            | Self::Closed
            | Self::Contention(_)
            | Self::StaleIdentities { .. } => ErrorKind::Unavailable,
            Self::Config(_) => ErrorKind::Invalid,
            Self::Corrupt { .. } | Self::Protocol(_) => ErrorKind::Internal,
        }
    }

    /// Returns true when trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
    }
}
