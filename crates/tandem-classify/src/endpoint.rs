//! Calls to OpenAI-compatible endpoints, shared by the LLM, embeddings and transcription
//! clients: the backoff async-openai applies to 429 and 5xx answers, and the timeout and
//! bounded retries of what it leaves to the caller (timeouts, refused connections).

use std::future::Future;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use secrecy::{ExposeSecret, SecretString};

/// Why a call gave no answer, after its retries.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No answer within the timeout.
    TimedOut,
    /// async-openai failed: an error status, an unreadable answer, no connection.
    Failed(OpenAIError),
}

/// Temporary failures of the HTTP call itself (async-openai leaves them to the caller).
pub(crate) fn connection_failed(error: &OpenAIError) -> bool {
    matches!(error, OpenAIError::Reqwest(e) if e.is_connect() || e.is_timeout())
}

/// A client of the OpenAI-compatible API at `base_url` with `api_key` (empty for servers that
/// need none), retrying 429 and 5xx answers `retries` times.
pub(crate) fn client(base_url: &str, api_key: &SecretString, retries: u32) -> Client<OpenAIConfig> {
    let config = OpenAIConfig::new()
        .with_api_base(base_url.trim_end_matches('/'))
        .with_api_key(api_key.expose_secret());
    Client::with_config(config).with_backoff(status_backoff(retries))
}

/// async-openai alone sees the HTTP status, so its backoff retries what is temporary (429
/// and 5xx; never 400 or 401). Its budget is time, not a count: the waits grow tenfold (100 ms,
/// 1 s, 10 s, ±10 %), and the budget holds exactly `retries` of them plus 500 ms for the
/// requests themselves, so the next wait never fits. The call's timeout bounds it all.
fn status_backoff(retries: u32) -> backoff::ExponentialBackoff {
    let first = Duration::from_millis(100);
    let waits: Duration = (0..retries.min(3))
        .map(|k| first * 10u32.pow(k))
        .sum::<Duration>()
        .mul_f64(1.1);
    backoff::ExponentialBackoff {
        initial_interval: first,
        current_interval: first,
        randomization_factor: 0.1,
        multiplier: 10.0,
        max_interval: Duration::from_secs(10),
        max_elapsed_time: Some(if retries == 0 {
            Duration::ZERO
        } else {
            waits + Duration::from_millis(500)
        }),
        ..backoff::ExponentialBackoff::default()
    }
}

/// Runs `call` with `timeout`, again after a short growing wait when it timed out or could
/// not connect, at most `retries` more times. Any other failure — a permanent status (400,
/// 401, 404…), an unreadable answer, or async-openai's own backoff for 429 and 5xx run out —
/// is returned at once: retrying here would only repeat it.
pub(crate) async fn retrying<T, Fut>(
    timeout: Duration,
    retries: u32,
    mut call: impl FnMut() -> Fut,
) -> Result<T, CallError>
where
    Fut: Future<Output = Result<T, OpenAIError>>,
{
    let mut attempt = 0;
    loop {
        let error = match tokio::time::timeout(timeout, call()).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) if connection_failed(&e) => CallError::Failed(e),
            Ok(Err(e)) => return Err(CallError::Failed(e)),
            Err(_) => CallError::TimedOut,
        };
        if attempt >= retries {
            return Err(error);
        }
        attempt += 1;
        let wait = tandem_domain::Backoff {
            first: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        tokio::time::sleep(wait.delay(attempt, rand::random())).await;
    }
}
