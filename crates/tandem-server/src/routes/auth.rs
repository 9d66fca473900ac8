//! Bearer tokens of the `/v1` API, their scopes and their rate. Every `/v1` route names the
//! scope it needs ([`super::openapi::ROUTES`]); a missing or unknown token is a 401, a known
//! token without the scope a 403, a token past `api.rate_limit` requests a second a 429 with
//! `Retry-After`. In dev mode (no token configured) the API is open, and limited as one
//! token named `dev`.
//!
//! A token may be limited to tenants (every token in a tenant's file is limited to it). What
//! belongs to another tenant — a conversation, customer, number, agent, hook delivery or
//! audit entry — is answered 404, as if it did not exist, never 403.

use std::sync::{Arc, PoisonError, RwLock};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use tandem_engine::Tenant;

use super::{AppState, secret_matches};
use crate::config::{ApiToken, Scope};
use crate::error::ApiError;

/// The API tokens in force: the deployment's and every tenant's (replaced on reload).
#[derive(Debug, Clone, Default)]
pub struct TokenBook(Arc<RwLock<Arc<Vec<ApiToken>>>>);

impl TokenBook {
    /// A book holding `tokens`.
    pub fn new(tokens: Vec<ApiToken>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(tokens))))
    }

    /// The tokens in force.
    pub fn current(&self) -> Arc<Vec<ApiToken>> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `tokens` in force.
    pub fn replace(&self, tokens: Vec<ApiToken>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
    }
}

/// Who called, as later handlers see it (a request extension).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name (`dev` in dev mode).
    pub name: String,
    /// The agent the token belongs to, if it is one agent's.
    pub agent: Option<String>,
    /// The tenants the token is limited to; `None`: every tenant.
    pub tenants: Option<Vec<String>>,
}

impl Caller {
    /// True when the caller may see tenant `id`.
    pub fn sees(&self, id: &str) -> bool {
        self.tenants
            .as_ref()
            .is_none_or(|list| list.iter().any(|t| t == id))
    }

    /// True when the caller sees every tenant (a deployment's token).
    pub fn sees_all(&self) -> bool {
        self.tenants.is_none()
    }
}

/// The tenant a request acts in when it names no conversation or number: `?tenant=` when
/// given (404 when the caller may not see it), else the caller's only tenant, else the
/// deployment's single tenant.
///
/// # Errors
/// 404 for a tenant the caller may not see or that does not exist; 400 when the caller
/// sees several tenants and named none.
pub fn tenant_of_request(
    state: &AppState,
    caller: &Caller,
    named: Option<&str>,
) -> Result<Arc<Tenant>, ApiError> {
    let all = state.tenants.all();
    let id = match (named, &caller.tenants) {
        (Some(id), _) => id.to_owned(),
        (None, Some(list)) if list.len() == 1 => list[0].clone(),
        (None, _) if state.tenants.is_single() && all.len() == 1 => all[0].id.clone(),
        (None, _) => {
            return Err(ApiError::invalid(
                "this deployment serves several tenants: name one with ?tenant=",
            ));
        }
    };
    state
        .tenants
        .get(&id)
        .filter(|t| caller.sees(&t.id))
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))
}

/// Keeps the `items` whose number (`number_of`) belongs to a tenant `keep` accepts.
pub async fn owned<T>(
    state: &AppState,
    items: Vec<T>,
    number_of: impl Fn(&T) -> &tandem_domain::PhoneNumberId,
    keep: impl Fn(&Tenant) -> bool,
) -> Vec<T> {
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        if state
            .tenants
            .of_number(number_of(&item))
            .await
            .is_some_and(|t| keep(&t))
        {
            kept.push(item);
        }
    }
    kept
}

/// The tenant owning `number`, when the caller may see it.
///
/// # Errors
/// 404 (`what` names the thing not found) when no tenant owns the number or the caller may
/// not see its tenant.
pub async fn tenant_of_number(
    state: &AppState,
    caller: &Caller,
    number: &tandem_domain::PhoneNumberId,
    what: impl FnOnce() -> String,
) -> Result<Arc<Tenant>, ApiError> {
    state
        .tenants
        .of_number(number)
        .await
        .filter(|t| caller.sees(&t.id))
        .ok_or_else(|| ApiError::not_found(what()))
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
    let tokens = state.api_tokens.current();
    let caller = if tokens.is_empty() {
        Caller {
            name: "dev".into(),
            agent: None,
            tenants: None,
        }
    } else {
        let token = presented(&request);
        let found = tokens
            .iter()
            .find(|t| secret_matches(&t.token, token))
            .ok_or(ApiError::Unauthorized)?;
        if !found.scopes.contains(&scope) {
            return Err(ApiError::Forbidden(scope.as_str()));
        }
        Caller {
            name: found.name.clone(),
            agent: found.agent.clone(),
            tenants: found.tenants.clone(),
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
