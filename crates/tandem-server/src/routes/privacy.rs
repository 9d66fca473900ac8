//! The customer's data and who touched it (scope `admin`): erasing a customer on request
//! (`DELETE /v1/customers/{id}`), the audit log (`GET /v1/audit`), and the middleware that
//! writes an audit entry for every action route.
//!
//! An audit entry says who (the token's name and the agent), when, what (the action, its
//! target and the answer's status) and from where (the client's address); never a message's
//! content. A handler names the target it resolved and safe facts about the action in an
//! [`AuditNote`] response extension; without one, the target is taken from the path, with a
//! phone or BSUID replaced by a digest.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tandem_domain::{ConversationId, Timestamp};
use tandem_store::AuditEntry;

use super::AppState;
use super::api::{customer_ref, numbers_of, refuse_unknown};
use super::auth::{Caller, tenant_of_request};
use super::openapi::Route;
use crate::error::ApiError;

/// What a handler tells the audit log about the action it answered.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// The target as resolved (a conversation id with Tandem's customer id, not a phone).
    pub target: Option<String>,
    /// The agent the action was taken as, when the request named one.
    pub agent: Option<String>,
    /// Facts without personal data.
    pub detail: Option<Value>,
    /// The tenant the action was taken in.
    pub tenant: Option<String>,
}

/// Writes an audit entry for the action `route` once it is answered (after authentication,
/// so the caller is known). A failure to write is logged and counted, not answered: the
/// action already took effect.
pub async fn record(
    State((state, route)): State<(AppState, &'static Route)>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request.extensions().get::<Caller>().cloned();
    let from = crate::serve::peer(&request).map(|addr| addr.ip().to_string());
    let target = path_target(route.path, request.uri().path());
    let response = next.run(request).await;
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    // The tenant acted in: as the handler resolved it, else the token's only tenant.
    let tenant = note.tenant.clone().or_else(|| {
        caller
            .as_ref()
            .and_then(|c| c.tenants.as_ref())
            .filter(|list| list.len() == 1)
            .map(|list| list[0].clone())
    });
    let (actor, token_agent) = caller.map_or(("unknown".to_owned(), None), |c| (c.name, c.agent));
    let entry = AuditEntry {
        id: 0,
        tenant,
        at: state.clock.now(),
        actor,
        agent: note.agent.or(token_agent),
        action: route.audit.unwrap_or("unknown").to_owned(),
        // A resolved target keeps Tandem's ids; a customer id that is a phone (a store from
        // before customer ids) becomes a digest like one in the path.
        target: note
            .target
            .map(|t| hide_customer(route.path.split('/').nth(1).unwrap_or_default(), &t))
            .or(target),
        from,
        status: response.status().as_u16(),
        detail: note.detail,
    };
    if let Err(error) = state.store.append_audit(entry).await {
        ::metrics::counter!(crate::metrics::AUDIT_FAILURES).increment(1);
        tracing::error!(%error, action = route.audit, "the audit entry of an action could not be written");
    }
    response
}

/// The `{…}` segment of `path` under the route's template, with identifiers of a customer
/// (a phone or BSUID) replaced by a digest.
fn path_target(template: &str, path: &str) -> Option<String> {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let index = template.split('/').position(|s| s.starts_with('{'))?;
    let raw = percent_decode(path.split('/').nth(index)?);
    let parent = template.split('/').nth(index.checked_sub(1)?)?;
    Some(hide_customer(parent, &raw))
}

/// A path segment after `parent`, with a customer's phone or BSUID replaced by a digest.
fn hide_customer(parent: &str, raw: &str) -> String {
    match parent {
        "conversations" => match raw.split_once(':') {
            Some((number, who)) => format!("{number}:{}", pseudonym(who)),
            None => pseudonym(raw),
        },
        "customers" => pseudonym(raw),
        _ => raw.to_owned(),
    }
}

/// A request path as logs may show it: conversation and customer references with a
/// digest instead of a phone or BSUID, and no query string.
pub fn loggable_path(path: &str) -> String {
    let mut parent = "";
    let mut out = Vec::new();
    for segment in path.split('/') {
        out.push(hide_customer(parent, &percent_decode(segment)));
        parent = segment;
    }
    out.join("/")
}

/// Keeps Tandem's customer ids (`c_…`); anything else that may name a customer (a phone, a
/// BSUID) becomes `sha256:` and the first 16 hex digits of its digest.
pub(crate) fn pseudonym(value: &str) -> String {
    if value.starts_with("c_") {
        return value.to_owned();
    }
    let digest = Sha256::digest(value.as_bytes());
    format!("sha256:{}", hex::encode(&digest[..8]))
}

fn percent_decode(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// `DELETE /v1/customers/{id}`: erases a customer found by customer id, phone or BSUID — its
/// conversations, transcripts, queued messages, contact data, aliases, undelivered hook
/// payloads and the dead letters naming it — and queues `customer.erased` for the hooks.
/// Answers the counts of what was removed; 404 when no such customer is known.
pub async fn erase(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
    Path(raw): Path<String>,
) -> Result<(StatusCode, axum::Extension<AuditNote>, Json<Value>), ApiError> {
    refuse_unknown(&params, &["tenant"])?;
    let tenant = tenant_of_request(&state, &caller, params.get("tenant").map(String::as_str))?;
    let customer = customer_ref(&state, &tenant, &raw).await?;
    // What the API knows of the customer's identifiers, for the receivers to find their copy.
    let mut identity = tandem_domain::Identity::default();
    let mut found = false;
    for number in numbers_of(&state, &tenant).await? {
        let id = ConversationId::new(number.phone_number_id, customer.clone());
        if let Some(c) = state.store.conversation(&id).await? {
            found = true;
            let who = c.who();
            identity.phone = identity.phone.or(who.phone);
            identity.user_id = identity.user_id.or(who.user_id);
            identity.parent_user_id = identity.parent_user_id.or(who.parent_user_id);
        }
    }
    // Its identifiers as the alias table has them (also for a customer with no conversation).
    for alias in state.store.customer_aliases(&tenant.id, &customer).await? {
        found = true;
        let as_identity = tandem_domain::Identity::of(&alias.value).unwrap_or_default();
        identity.phone = identity.phone.or(as_identity.phone);
        identity.user_id = identity.user_id.or(as_identity.user_id);
        identity.parent_user_id = identity.parent_user_id.or(as_identity.parent_user_id);
    }
    if !found {
        return Err(ApiError::not_found(format!("no customer {raw}")));
    }
    let mut identifiers = serde_json::to_value(&identity).unwrap_or_else(|_| json!({}));
    identifiers["id"] = json!(customer.as_str());
    let report = tandem_engine::privacy::erase_customer(
        state.store.as_ref(),
        &tenant,
        customer.clone(),
        identifiers,
        state.clock.now(),
    )
    .await?;
    let counts = serde_json::to_value(&report).unwrap_or_else(|_| json!({}));
    tracing::info!(customer = %customer, conversations = report.conversations, "customer erased on request");
    let note = AuditNote {
        target: Some(customer.to_string()),
        agent: None,
        detail: Some(counts.clone()),
        tenant: Some(tenant.id.clone()),
    };
    Ok((
        StatusCode::OK,
        axum::Extension(note),
        Json(json!({"customer": customer.as_str(), "erased": counts})),
    ))
}

/// Parses `since`: RFC 3339 (`2026-11-29T10:00:00Z`) or Unix milliseconds.
fn parse_since(raw: &str) -> Result<Timestamp, ApiError> {
    if let Ok(ms) = raw.parse::<u64>() {
        return Ok(Timestamp(ms));
    }
    raw.parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| u64::try_from(t.as_millisecond()).ok())
        .map(Timestamp)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "since must be an RFC 3339 time such as 2026-11-29T10:00:00Z or Unix milliseconds, got {raw:?}"
            ))
        })
}

/// The most entries one audit page holds.
const MAX_AUDIT_PAGE: usize = 10_000;

/// `GET /v1/audit?since=&after=&limit=`: audit entries from `since` (default: the
/// beginning), in time order, as JSON lines (`application/x-ndjson`). A full page carries
/// `X-Next-Since` and `X-Next-After`: pass them as `since` and `after` for the next page.
/// A tenant's token reads its tenant's entries (a page may then hold fewer than `limit`).
pub async fn audit(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    refuse_unknown(&params, &["since", "after", "limit"])?;
    let since = params
        .get("since")
        .map(|s| parse_since(s))
        .transpose()?
        .unwrap_or(Timestamp(0));
    let after = match params.get("after") {
        Some(raw) => raw.parse::<u64>().map_err(|_| {
            ApiError::invalid(format!("after must be an audit entry id, got {raw:?}"))
        })?,
        None => 0,
    };
    let limit = match params.get("limit") {
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_AUDIT_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::invalid(format!(
                    "limit must be 1 to {MAX_AUDIT_PAGE}, got {raw:?}"
                )));
            }
        },
        None => 1000,
    };
    let entries = state.store.audit(since, after, limit).await?;
    let mut body = String::new();
    let mine =
        |e: &&AuditEntry| caller.sees_all() || e.tenant.as_deref().is_some_and(|t| caller.sees(t));
    for entry in entries.iter().filter(mine) {
        let mut line = serde_json::to_value(entry).unwrap_or_else(|_| json!({}));
        line["at"] = json!(super::api::rfc3339(entry.at));
        body.push_str(&line.to_string());
        body.push('\n');
    }
    let mut response = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if entries.len() == limit
        && let Some(last) = entries.last()
    {
        let headers = response.headers_mut();
        for (name, value) in [
            ("x-next-since", last.at.as_millis().to_string()),
            ("x-next-after", last.id.to_string()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_targets_hide_customer_identifiers_but_keep_ids() {
        let t = "/conversations/{id}/takeover";
        assert_eq!(
            path_target(t, "/v1/conversations/106:c_0123/takeover").as_deref(),
            Some("106:c_0123")
        );
        let hidden = path_target(t, "/v1/conversations/106:15550001111/takeover").unwrap();
        assert!(hidden.starts_with("106:sha256:") && !hidden.contains("15550001111"));
        let bsuid = path_target("/customers/{id}", "/v1/customers/US.1234%2E5").unwrap();
        assert!(bsuid.starts_with("sha256:"));
        assert_eq!(bsuid, pseudonym("US.1234.5"));
        assert_eq!(
            path_target("/agents/{id}/availability", "/v1/agents/ana/availability").as_deref(),
            Some("ana")
        );
        assert_eq!(path_target("/audit", "/v1/audit"), None);
    }

    #[test]
    fn loggable_paths_hide_customers() {
        let path = loggable_path("/v1/conversations/106:15550001111/takeover");
        assert_eq!(
            path,
            format!(
                "/v1/conversations/106:{}/takeover",
                pseudonym("15550001111")
            )
        );
        assert_eq!(loggable_path("/v1/customers/c_01"), "/v1/customers/c_01");
        assert_eq!(loggable_path("/webhook"), "/webhook");
        assert!(!loggable_path("/v1/customers/US.12%2034").contains("US.12"));
    }

    #[test]
    fn since_takes_rfc3339_or_milliseconds() {
        assert_eq!(parse_since("1000").unwrap(), Timestamp(1000));
        assert_eq!(
            parse_since("1970-01-01T00:00:02Z").unwrap(),
            Timestamp(2000)
        );
        assert!(parse_since("yesterday").is_err());
    }
}
