//! The deployment's tenants (scope `admin`, deployment tokens only): listing them
//! (`GET /v1/tenants`) and removing one with all its customers' data
//! (`DELETE /v1/tenants/{id}`). A tenant's own token is answered 404 here, as for anything
//! outside its tenant.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::privacy::AuditNote;
use crate::error::ApiError;

/// `GET /v1/tenants`: every tenant in force with its numbers, WABAs, flows, teams and hooks.
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    if !caller.sees_all() {
        return Err(ApiError::not_found("no tenants"));
    }
    let items: Vec<Value> = state
        .tenants
        .all()
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "numbers": t.numbers,
                "wabas": t.wabas,
                "flows": t.responder.as_ref().map_or(0, |r| r.flows().current().flows.len()),
                "can_send": t.graph.is_some(),
                "teams": t.desk.routing.team_ids().collect::<Vec<_>>(),
                "agents": t.desk.routing.agents().len(),
            })
        })
        .collect();
    Ok(Json(json!({"tenants": items})))
}

/// `DELETE /v1/tenants/{id}`: removes a declared tenant and erases its data. First the
/// tenant stops owning anything (its webhooks are kept as `unknown_number` dead letters from
/// then on, and its directory is moved to `.removed/` so no reload brings it back); then each
/// of its customers is erased as `DELETE /v1/customers/{id}` does, with the `customer.erased`
/// hook to the tenant's receivers. Answers the counts.
pub async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Extension<AuditNote>, Json<Value>), ApiError> {
    let not_found = || ApiError::not_found(format!("no tenant {id}"));
    if !caller.sees_all() {
        return Err(not_found());
    }
    let declared = state.declared.as_ref().ok_or_else(not_found)?;
    let tenant = declared.remove(&id).map_err(|e| match e {
        crate::tenants::RemoveError::Unknown => not_found(),
        crate::tenants::RemoveError::Io(error) => ApiError::Kind(
            tandem_domain::ErrorKind::Internal,
            format!("removing tenant {id}: {error:#}"),
        ),
    })?;
    // In its own task: a client that stops waiting (or the request timeout) does not stop
    // the erasure halfway.
    let (store, now) = (std::sync::Arc::clone(&state.store), state.clock.now());
    let erased = tokio::spawn(async move {
        tandem_engine::privacy::erase_tenant(store.as_ref(), &tenant, now).await
    })
    .await
    .map_err(|e| {
        ApiError::Kind(
            tandem_domain::ErrorKind::Internal,
            format!("erasing tenant {id}: {e}"),
        )
    })??;
    let counts = serde_json::to_value(&erased).unwrap_or_else(|_| json!({}));
    tracing::info!(tenant = %id, customers = erased.customers, "tenant removed and its data erased");
    let note = AuditNote {
        target: Some(id.clone()),
        agent: None,
        detail: Some(counts.clone()),
        tenant: Some(id.clone()),
    };
    Ok((
        StatusCode::OK,
        Extension(note),
        Json(json!({"tenant": id, "removed": counts})),
    ))
}
