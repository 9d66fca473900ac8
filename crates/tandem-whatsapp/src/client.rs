//! The Graph API client: sends messages and read receipts, and classifies every failure so
//! the sender knows whether to retry, fall back to a template, or stop.
//!
//! Every call has a timeout. A failure is one of: an error WhatsApp answered (with its code,
//! see [`GraphError::code`]), an HTTP error without a readable body, a network failure, a
//! timeout, or a success answer that cannot be read. The last two are *ambiguous*: the message
//! may have been accepted, so retrying could send it twice ([`SendError::may_have_sent`]).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tandem_domain::{ErrorKind, MessageId, PhoneNumberId};

use crate::outbound::{InvalidMessage, OutboundMessage, mark_read_wire};

/// A client for one Graph API base URL and access token. Cheap to clone.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base_url: String,
    token: SecretString,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// An error object WhatsApp answered (`{"error": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError {
    /// The error code to branch on (131047, 130429, …).
    pub code: i64,
    /// Meta's message, for logs.
    pub message: String,
    /// `error_data.details`, for logs.
    pub details: Option<String>,
    /// Meta's trace id, for support requests.
    pub fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GraphErrorWire,
}

#[derive(Deserialize)]
struct GraphErrorWire {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_data: Option<Value>,
    #[serde(default)]
    fbtrace_id: Option<String>,
}

/// What the sender should do about a [`GraphError`] code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remedy {
    /// A temporary problem (throughput, service): retry with backoff.
    RetryLater,
    /// More than 24 hours since the customer wrote: send an approved template instead.
    UseTemplate,
    /// The request itself is wrong (parameters, template, recipient): do not retry.
    Drop,
    /// The token, permissions or account are wrong: hold sends and alert.
    HoldAndAlert,
}

impl GraphError {
    /// Classifies the code (the table in the WhatsApp reference, section (e)).
    pub fn remedy(&self) -> Remedy {
        match self.code {
            131_047 => Remedy::UseTemplate,
            130_429 | 131_056 | 4 | 80_007 | 1 | 2 | 131_000 | 131_016 | 131_057 => {
                Remedy::RetryLater
            }
            190 | 0 | 3 | 10 | 200..=299 | 131_031 | 368 | 131_042 | 131_048 => {
                Remedy::HoldAndAlert
            }
            _ => Remedy::Drop,
        }
    }
}

/// Why a Graph API call failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The message breaks WhatsApp's limits; nothing was sent.
    #[error("message refused before sending: {0}")]
    Invalid(#[from] InvalidMessage),
    /// WhatsApp answered an error.
    #[error("graph api error {code} (http {status}): {message}", code = .error.code, message = .error.message)]
    Graph {
        /// The HTTP status.
        status: u16,
        /// The error WhatsApp gave.
        error: GraphError,
    },
    /// An HTTP error without a readable error body (a proxy's 502, for example).
    #[error("graph api answered http {status} without an error body")]
    Http {
        /// The HTTP status.
        status: u16,
    },
    /// The request did not complete: connection refused, reset, DNS, TLS.
    #[error("graph api unreachable: {0}")]
    Network(#[source] reqwest::Error),
    /// No answer within the timeout; the message may have been accepted.
    #[error("graph api did not answer in time")]
    Timeout,
    /// A success status with a body that cannot be read; the message may have been accepted.
    #[error("graph api answered success with an unreadable body: {0}")]
    BadResponse(String),
}

impl SendError {
    /// Returns true when the same call may succeed if repeated later and cannot cause a
    /// duplicate (the first attempt certainly did not send).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Graph { error, .. } => error.remedy() == Remedy::RetryLater,
            Self::Http { status } => *status >= 500 || *status == 429,
            Self::Network(e) => e.is_connect(),
            Self::Invalid(_) | Self::Timeout | Self::BadResponse(_) => false,
        }
    }

    /// Returns true when WhatsApp may have accepted the message despite the error.
    pub fn may_have_sent(&self) -> bool {
        match self {
            Self::Timeout | Self::BadResponse(_) => true,
            Self::Network(e) => !e.is_connect(),
            _ => false,
        }
    }

    /// Returns true for 131047: outside the 24-hour window, only a template may be sent.
    pub fn window_closed(&self) -> bool {
        matches!(self, Self::Graph { error, .. } if error.remedy() == Remedy::UseTemplate)
    }

    /// Returns the error's category.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Timeout => ErrorKind::Timeout,
            Self::Graph { error, .. } if error.remedy() == Remedy::Drop => ErrorKind::Invalid,
            Self::Graph { error, .. } if error.remedy() == Remedy::UseTemplate => {
                ErrorKind::Conflict
            }
            Self::BadResponse(_) => ErrorKind::Internal,
            Self::Graph { .. } | Self::Http { .. } | Self::Network(_) => ErrorKind::Unavailable,
        }
    }
}

/// A message WhatsApp accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The wamid: statuses and (defensively) echoes refer to it.
    pub message_id: MessageId,
    /// `message_status` of template sends (`accepted`, `held_for_quality_assessment`).
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct SendResponse {
    messages: Vec<SentWire>,
}

#[derive(Deserialize)]
struct SentWire {
    id: String,
    #[serde(default)]
    message_status: Option<String>,
}

/// A media file downloaded from WhatsApp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// Its MIME type, as WhatsApp gave it.
    pub mime_type: Option<String>,
}

/// Why a media file could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The id is not one WhatsApp gives (it would not name a Graph API node).
    #[error("{0:?} is not a media id")]
    BadId(String),
    /// Looking up the media's URL failed (an expired or unknown id, a token without access).
    #[error("looking the media up failed: {0}")]
    Lookup(#[from] SendError),
    /// The file is larger than the caller takes.
    #[error("the media is larger than {max} bytes")]
    TooLarge {
        /// The most bytes the caller takes.
        max: usize,
    },
    /// Downloading the file from its URL failed.
    #[error("downloading the media failed: {0}")]
    Download(String),
}

impl MediaError {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadId(_) => "bad_id",
            Self::Lookup(_) => "lookup",
            Self::TooLarge { .. } => "too_large",
            Self::Download(_) => "download",
        }
    }
}

/// `GET /{media-id}`: where to download the file (the URL lives five minutes).
#[derive(Deserialize)]
struct MediaInfo {
    url: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    file_size: Option<u64>,
}

impl GraphClient {
    /// Builds a client for `base_url` (such as `https://graph.facebook.com/v23.0`).
    ///
    /// # Errors
    /// Fails when the HTTP client cannot be built (TLS set-up).
    pub fn new(base_url: &str, token: SecretString, timeout: Duration) -> Result<Self, SendError> {
        let http = reqwest::Client::builder()
            // Meta's media host answers a request without a User-Agent with an error page.
            .user_agent(concat!("tandem/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(SendError::Network)?;
        Ok(Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The token calls carry.
    pub fn token(&self) -> &SecretString {
        &self.token
    }

    /// The same client (connections shared) calling with another business's `token`.
    #[must_use]
    pub fn with_token(&self, token: SecretString) -> Self {
        Self {
            http: self.http.clone(),
            base_url: self.base_url.clone(),
            token,
        }
    }

    async fn post(
        &self,
        phone_number_id: &PhoneNumberId,
        body: &Value,
    ) -> Result<Value, SendError> {
        let path = format!("{phone_number_id}/messages");
        self.call(reqwest::Method::POST, &path, &[], Some(body), None)
            .await
    }

    /// Calls `{base_url}/{path}` with the client's token (or `token`), classifying failures
    /// as [`SendError`]s; answers the JSON of a success.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        token: Option<&SecretString>,
    ) -> Result<Value, SendError> {
        let url = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        let mut request = self.http.request(method, url).query(query);
        if let Some(token) = token.or(Some(&self.token)) {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let timed_out = |e: reqwest::Error| {
            if e.is_timeout() {
                SendError::Timeout
            } else {
                SendError::Network(e)
            }
        };
        let response = request.send().await.map_err(timed_out)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(timed_out)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| SendError::BadResponse(e.to_string()));
        }
        match serde_json::from_slice::<ErrorEnvelope>(&bytes) {
            Ok(envelope) => {
                let e = envelope.error;
                let details = e
                    .error_data
                    .as_ref()
                    .and_then(|d| d.get("details"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let error = GraphError {
                    code: e.code,
                    message: e.message,
                    details,
                    fbtrace_id: e.fbtrace_id,
                };
                Err(SendError::Graph {
                    status: status.as_u16(),
                    error,
                })
            }
            Err(_) => Err(SendError::Http {
                status: status.as_u16(),
            }),
        }
    }

    /// Sends a message from `phone_number_id`.
    ///
    /// # Errors
    /// See [`SendError`]; nothing is sent when the message is invalid.
    pub async fn send(
        &self,
        phone_number_id: &PhoneNumberId,
        message: &OutboundMessage,
    ) -> Result<Sent, SendError> {
        message.validate()?;
        let answer = self.post(phone_number_id, &message.to_wire()).await?;
        let parsed: SendResponse =
            serde_json::from_value(answer).map_err(|e| SendError::BadResponse(e.to_string()))?;
        let first = parsed
            .messages
            .into_iter()
            .next()
            .ok_or_else(|| SendError::BadResponse("no message id".into()))?;
        let message_id =
            MessageId::parse(first.id).map_err(|e| SendError::BadResponse(e.to_string()))?;
        Ok(Sent {
            message_id,
            status: first.message_status,
        })
    }

    /// Marks an inbound message read, optionally showing the typing indicator.
    ///
    /// # Errors
    /// See [`SendError`].
    pub async fn mark_read(
        &self,
        phone_number_id: &PhoneNumberId,
        message_id: &MessageId,
        typing: bool,
    ) -> Result<(), SendError> {
        let answer = self
            .post(phone_number_id, &mark_read_wire(message_id, typing))
            .await?;
        match answer.get("success").and_then(Value::as_bool) {
            Some(true) => Ok(()),
            _ => Err(SendError::BadResponse(format!(
                "expected {{\"success\":true}}, got {answer}"
            ))),
        }
    }

    /// Downloads the media `media_id` names, in WhatsApp's two steps: `GET /{media-id}`
    /// gives a short-lived URL, which is then fetched with the same token. Refuses a file of
    /// more than `max_bytes` (by its announced size, then while reading) and an answer that
    /// is an error page rather than the file.
    ///
    /// # Errors
    /// See [`MediaError`].
    pub async fn download_media(
        &self,
        media_id: &str,
        max_bytes: usize,
    ) -> Result<Media, MediaError> {
        let well_formed = !media_id.is_empty()
            && media_id.len() <= 128
            && media_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(MediaError::BadId(media_id.to_owned()));
        }
        let answer = self
            .call(reqwest::Method::GET, media_id, &[], None, None)
            .await?;
        let info: MediaInfo = serde_json::from_value(answer)
            .map_err(|e| MediaError::Lookup(SendError::BadResponse(e.to_string())))?;
        if info.file_size.is_some_and(|size| size > max_bytes as u64) {
            return Err(MediaError::TooLarge { max: max_bytes });
        }
        let failed = |e: reqwest::Error| MediaError::Download(e.to_string());
        let mut response = self
            .http
            .get(&info.url)
            .bearer_auth(self.token.expose_secret())
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(MediaError::Download(format!("http {}", status.as_u16())));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/html"))
        {
            return Err(MediaError::Download(
                "the media URL answered a web page, not the file".into(),
            ));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if bytes.len() + chunk.len() > max_bytes {
                return Err(MediaError::TooLarge { max: max_bytes });
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.is_empty() {
            return Err(MediaError::Download("the file is empty".into()));
        }
        Ok(Media {
            bytes,
            mime_type: info.mime_type.or(content_type),
        })
    }
}
