//! Bearer tokens of the `/v1` API, their scopes and their rate. Every `/v1` route names the
//! scope it needs ([`super::openapi::ROUTES`]); a missing or unknown token is a 401, a known
//! token without the scope a 403, a token past `api.rate_limit` requests a second a 429 with
//! `Retry-After`. In dev mode (no token configured) the API is open, and limited as one
//! token named `dev`.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use super::{AppState, secret_matches};
use crate::config::Scope;
use crate::error::ApiError;

/// Who called, as later handlers see it (a request extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`dev` in dev mode).
    pub name: String,
    /// The agent the token belongs to, if it is one agent's.
    pub agent: Option<String>,
}

fn presented(request: &Request) -> &str {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map_or("", |(_, token)| token.trim())
}

async fn require(
    state: &AppState,
    scope: Scope,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = if state.api_tokens.is_empty() {
        Caller {
            name: "dev".into(),
            agent: None,
        }
    } else {
        let token = presented(&request);
        let found = state
            .api_tokens
            .iter()
            .find(|t| secret_matches(&t.token, token))
            .ok_or(ApiError::Unauthorized)?;
        if !found.scopes.contains(&scope) {
            return Err(ApiError::Forbidden(scope.as_str()));
        }
        Caller {
            name: found.name.clone(),
            agent: found.agent.clone(),
        }
    };
    if let Some(limiter) = &state.api_limiter
        && let Err(not_until) = limiter.check_key(&caller.name)
    {
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        return Err(ApiError::RateLimited(not_until.wait_time_from(now)));
    }
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Lets a request through with a token of scope `read`.
pub async fn read(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(&state, Scope::Read, request, next).await
}

/// Lets a request through with a token of scope `agent`.
pub async fn agent(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(&state, Scope::Agent, request, next).await
}

/// Lets a request through with a token of scope `admin`.
pub async fn admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    require(&state, Scope::Admin, request, next).await
}
