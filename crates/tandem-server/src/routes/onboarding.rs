//! `POST /v1/numbers` (scope `admin`): onboarding a business number in one step — the token
//! checked against the number, the app subscribed to the account's webhooks, the Coexistence
//! syncs requested once each ([`tandem_engine::onboarding`]). The view of a number
//! (`GET /v1/numbers/{id}`) shows what onboarding did and the history sync's progress.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use tandem_domain::PhoneNumberId;
use tandem_engine::onboarding::{OnboardError, OnboardRequest};
use tandem_whatsapp::SendError;

use super::AppState;
use super::auth::{Caller, tenant_of_request};
use super::privacy::AuditNote;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnboardBody {
    phone_number_id: String,
    waba_id: String,
    /// Shared with the Business App; default: as Meta reports it.
    coexistence: Option<bool>,
    /// The business's token (a system user's, or the one Embedded Signup gave).
    access_token: Option<String>,
    /// An Embedded Signup code, exchanged for the business's token.
    code: Option<String>,
    /// The tenant the number joins; default: the token's only tenant, or the single one.
    tenant: Option<String>,
}

/// Maps a Graph API failure of onboarding to the API's answer: Meta's refusals (an expired
/// code, a token without permission) are the caller's to fix (400, Meta's message kept);
/// an unreachable Graph API is a 503.
fn graph_failure(step: &str, error: &SendError) -> ApiError {
    match error {
        SendError::Graph { error: e, .. } => ApiError::invalid(format!(
            "{step}: Meta refused it (code {}): {}",
            e.code, e.message
        )),
        SendError::Http { status } if *status < 500 => {
            ApiError::invalid(format!("{step}: the Graph API answered HTTP {status}"))
        }
        other => ApiError::Kind(
            tandem_domain::ErrorKind::Unavailable,
            format!("{step}: {other}"),
        ),
    }
}

/// The view of a number: its link state and, once onboarded, the onboarding.
pub(crate) async fn number_with_onboarding(
    state: &AppState,
    number: &tandem_store::NumberState,
) -> Result<Value, ApiError> {
    let now = state.clock.now();
    let mut view = tandem_engine::health::number_view(number, now, state.send_rate);
    if number.onboarding.is_some() {
        let account = state.store.account(number.phone_number_id.as_str()).await?;
        view["onboarding"] =
            tandem_engine::onboarding::onboarding_view(number, account.as_ref(), now)
                .unwrap_or(Value::Null);
    }
    Ok(view)
}

/// `POST /v1/numbers` with `{"phone_number_id", "waba_id", "coexistence"?, "access_token"? |
/// "code"?}`. Safe to repeat: a sync already requested is never requested again. Answers the
/// number's view (201 the first time, 200 after); with a `code`, also the token Meta gave
/// (`access_token`, shown once: Tandem does not keep it).
pub async fn onboard(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<Caller>,
    bytes: Bytes,
) -> Result<(StatusCode, axum::Extension<AuditNote>, Json<Value>), ApiError> {
    let body: OnboardBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))?;
    let tenant = tenant_of_request(&state, &caller, body.tenant.as_deref())?;
    let number = PhoneNumberId::parse(&body.phone_number_id).map_err(|e| {
        ApiError::invalid(format!(
            "bad phone_number_id {:?}: {e}",
            body.phone_number_id
        ))
    })?;
    if body.waba_id.is_empty() || !body.waba_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(ApiError::invalid(format!(
            "waba_id must be the account's numeric id, got {:?}",
            body.waba_id
        )));
    }
    // A number another tenant owns is not this tenant's to onboard.
    if let Some(owner) = state.tenants.owner(&number, Some(&body.waba_id))
        && owner.id != tenant.id
    {
        return Err(ApiError::conflict(format!(
            "number {number} (WABA {}) belongs to another tenant",
            body.waba_id
        )));
    }
    let onboarding = &state.onboarding;
    let (token, exchanged) = match (body.access_token, body.code) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give access_token or code, not both".to_owned(),
            ));
        }
        (Some(token), None) => (SecretString::from(token), false),
        (None, Some(code)) => {
            let (Some(app_id), Some(secret)) = (&onboarding.app_id, &onboarding.app_secret) else {
                return Err(ApiError::invalid(
                    "exchanging a code needs the app's id and secret: set TANDEM_APP_ID and TANDEM_APP_SECRET".to_owned(),
                ));
            };
            let token = onboarding
                .graph
                .exchange_code(app_id, secret, &code)
                .await
                .map_err(|e| graph_failure("exchange_code", &e))?;
            (token, true)
        }
        (None, None) => match &tenant.graph {
            Some(graph) => (graph.token().clone(), false),
            None => {
                return Err(ApiError::invalid(
                    "no token: give access_token or code, or configure the tenant's access token"
                        .to_owned(),
                ));
            }
        },
    };
    let known = state.store.number(&number).await?;
    let first = known.as_ref().is_none_or(|n| n.onboarding.is_none());
    let request = OnboardRequest {
        number: number.clone(),
        waba: body.waba_id.clone(),
        coexistence: body.coexistence,
        token: token.clone(),
        tenant: (!state.tenants.is_single()).then(|| tenant.id.clone()),
    };
    let clock = state.clock.clone();
    let onboarded = tandem_engine::onboarding::onboard(
        state.store.as_ref(),
        &onboarding.graph,
        &request,
        move || clock.now(),
    )
    .await
    .map_err(|e| match e {
        OnboardError::Graph { step, error } => graph_failure(step, &error),
        OnboardError::Store(error) => ApiError::from(error),
    })?;
    if !state.tenants.is_single() {
        state.tenants.remember(&number, &tenant.id);
    }
    let mut view = number_with_onboarding(&state, &onboarded).await?;
    view["tenant"] = json!(tenant.id);
    if exchanged {
        use secrecy::ExposeSecret;
        view["access_token"] = json!(token.expose_secret());
    }
    let note = AuditNote {
        target: Some(number.to_string()),
        agent: None,
        detail: Some(json!({"waba_id": body.waba_id, "first": first, "code_exchanged": exchanged})),
        tenant: Some(tenant.id.clone()),
    };
    let status = if first {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Extension(note), Json(view)))
}
