//! Reading under `/v1` (scope `read`).
//!
//! - `GET /v1/conversations?mode=bot|handoff|human&limit=N&after=ID` — a page of summaries;
//! - `GET /v1/conversations/{id}` — state and transcript (`id` is
//!   `{phone_number_id}:{customer}`, the customer given by Tandem's customer id, a phone or a
//!   BSUID);
//! - `GET /v1/customers/{id}` — one customer (by customer id, phone or BSUID): identifiers,
//!   names and conversations;
//! - `GET /v1/dead-letters?limit=N` — signed input kept raw, newest first;
//! - `GET /v1/accounts/{id}` — recent account or number events;
//! - `GET /v1/classifier/review?stage=none|llm|all&limit=N&after=ID` — customer texts the
//!   classifier cascade was unsure of, from a page of conversations, to become examples.
//!
//! Bad parameters get a 400 that says which parameter and why.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use serde::Serialize;
use serde_json::{Value, json};
use tandem_domain::{
    ContactUpdate, Conversation, ConversationId, CustomerId, DeliveryStatus, Identity, Mode,
    PausedBy, PhoneNumberId, Role, Timestamp, TranscriptEntry, Understood,
};
use tandem_store::{ListQuery, contact_for};

use super::AppState;
use super::auth::{Caller, owned, tenant_of_number, tenant_of_request};
use crate::error::ApiError;
use tandem_engine::Tenant;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
const WINDOW: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.as_millis())).to_string()
}

fn rfc3339_opt(t: Option<Timestamp>) -> Option<String> {
    t.map(rfc3339)
}

#[derive(Serialize)]
struct Summary {
    id: String,
    customer: Value,
    mode: Mode,
    paused_by: Option<PausedBy>,
    contact_name: Option<String>,
    profile_name: Option<String>,
    human_last_at: Option<String>,
    resume_at: Option<String>,
    customer_last_at: Option<String>,
    window_open: bool,
    events_applied: u64,
    created_at: String,
    updated_at: String,
}

fn summary(c: &Conversation, contact: Option<&ContactUpdate>, now: Timestamp) -> Summary {
    let contact_name = contact
        .filter(|c| !c.removed)
        .and_then(|c| c.full_name.clone().or_else(|| c.first_name.clone()));
    Summary {
        id: c.id.to_string(),
        customer: c.customer_card(contact_name.as_deref()),
        mode: c.mode(),
        paused_by: c.paused_by(),
        contact_name,
        profile_name: c.profile_name.clone(),
        human_last_at: rfc3339_opt(c.human_last_at),
        resume_at: rfc3339_opt(c.resume_at()),
        customer_last_at: rfc3339_opt(c.customer_last_at),
        window_open: c.customer_last_at.is_some_and(|t| t.plus(WINDOW) > now),
        events_applied: c.events_applied,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

/// A transcript line as the API shows it: the stored line with a readable time.
#[derive(Serialize)]
struct Line<'a> {
    at: String,
    role: Role,
    text: &'a str,
    kind: &'a str,
    message_id: Option<&'a str>,
    historical: bool,
    status: Option<DeliveryStatus>,
    edited: bool,
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    understood: Option<&'a Understood>,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    transcription: Option<&'a str>,
}

impl<'a> From<&'a TranscriptEntry> for Line<'a> {
    fn from(e: &'a TranscriptEntry) -> Self {
        Line {
            at: rfc3339(e.at),
            role: e.role,
            text: &e.text,
            kind: &e.kind,
            message_id: e.message_id.as_ref().map(|id| id.as_str()),
            historical: e.historical,
            status: e.status,
            edited: e.edited,
            deleted: e.deleted,
            understood: e.understood.as_ref(),
            media_id: e.media_id.as_deref(),
            transcription: e.transcription.as_deref(),
        }
    }
}

pub(crate) fn parse_limit(raw: Option<&String>) -> Result<usize, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}, got {raw:?}"
            ))),
        },
    }
}

pub(crate) fn refuse_unknown(
    params: &HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::invalid(format!(
            "unknown query parameter {unknown:?}; expected one of {known:?}"
        ))),
        None => Ok(()),
    }
}

pub(crate) fn parse_id(raw: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(raw)
        .map_err(|e| ApiError::invalid(format!("bad conversation id {raw:?}: {e}")))
}

/// Finds the customer of `tenant` a reference names: a phone or BSUID through the tenant's
/// alias table, else Tandem's customer id as given.
pub(crate) async fn customer_ref(
    state: &AppState,
    tenant: &Tenant,
    raw: &str,
) -> Result<CustomerId, ApiError> {
    if let Some(alias) = Identity::of(raw).and_then(|i| i.aliases().into_iter().next())
        && let Some(customer) = state.store.customer_of(&tenant.id, &alias).await?
    {
        return Ok(customer);
    }
    CustomerId::parse(raw).map_err(|e| ApiError::invalid(format!("bad customer {raw:?}: {e}")))
}

/// Reads a conversation reference `{phone_number_id}:{customer}`, where the customer is
/// Tandem's customer id, a phone or a BSUID of the number's tenant; answers it with the
/// tenant.
///
/// # Errors
/// 400 when the reference is malformed; 404 when the number's tenant is not the caller's.
pub(crate) async fn find_id(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<(ConversationId, Arc<Tenant>), ApiError> {
    let (number, who) = raw.split_once(':').ok_or_else(|| {
        ApiError::invalid(format!(
            "bad conversation id {raw:?}: expected {{phone_number_id}}:{{customer id, phone or BSUID}}"
        ))
    })?;
    let number = PhoneNumberId::parse(number)
        .map_err(|e| ApiError::invalid(format!("bad conversation id {raw:?}: {e}")))?;
    let tenant = tenant_of_number(state, caller, &number, || {
        format!("no conversation {number}:…")
    })
    .await?;
    let customer = customer_ref(state, &tenant, who).await?;
    Ok((ConversationId::new(number, customer), tenant))
}

/// Returns one customer: the identifiers WhatsApp showed, the names, and a summary of each of
/// their conversations (one per business number).
pub async fn customer(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&params, &["tenant"])?;
    let tenant = tenant_of_request(&state, &caller, params.get("tenant").map(String::as_str))?;
    let customer = customer_ref(&state, &tenant, &raw).await?;
    let now = state.clock.now();
    let mut conversations = Vec::new();
    let mut card = None;
    for number in numbers_of(&state, &tenant).await? {
        let id = ConversationId::new(number.phone_number_id, customer.clone());
        if let Some(c) = state.store.conversation(&id).await? {
            let contact = contact_for(state.store.as_ref(), &c).await?;
            let s = summary(&c, contact.as_ref(), now);
            card.get_or_insert_with(|| s.customer.clone());
            conversations.push(s);
        }
    }
    let card = card.ok_or_else(|| ApiError::not_found(format!("no customer {raw}")))?;
    Ok(Json(
        json!({"customer": card, "conversations": conversations}),
    ))
}

/// The numbers of `tenant` the store knows.
pub(crate) async fn numbers_of(
    state: &AppState,
    tenant: &Tenant,
) -> Result<Vec<tandem_store::NumberState>, ApiError> {
    let numbers = state.store.numbers().await?;
    Ok(owned(
        state,
        numbers,
        |n| &n.phone_number_id,
        |t| t.id == tenant.id,
    )
    .await)
}

/// Keeps the conversations of `page` whose tenant the caller may see.
async fn visible(state: &AppState, caller: &Caller, page: Vec<Conversation>) -> Vec<Conversation> {
    if caller.sees_all() {
        return page;
    }
    owned(
        state,
        page,
        |c| c.id.phone_number_id(),
        |t| caller.sees(&t.id),
    )
    .await
}

/// Lists conversations, optionally by mode, in id order with `after` paging; a tenant's
/// token sees its tenant's (a page may then hold fewer than `limit`; follow `next`).
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&params, &["mode", "limit", "after"])?;
    let mode = match params.get("mode") {
        Some(raw) => Some(Mode::parse(raw).ok_or_else(|| {
            ApiError::invalid(format!("mode must be bot, handoff or human, got {raw:?}"))
        })?),
        None => None,
    };
    let limit = parse_limit(params.get("limit"))?;
    let after = params.get("after").map(|a| parse_id(a)).transpose()?;
    let page = state
        .store
        .list_conversations(&ListQuery { mode, after, limit })
        .await?;
    let next = if page.len() == limit {
        page.last().map(|c| c.id.to_string())
    } else {
        None
    };
    let page = visible(&state, &caller, page).await;
    let now = state.clock.now();
    let mut items = Vec::with_capacity(page.len());
    for c in &page {
        let contact = contact_for(state.store.as_ref(), c).await?;
        items.push(summary(c, contact.as_ref(), now));
    }
    Ok(Json(json!({"conversations": items, "next": next})))
}

/// Returns one conversation's state and transcript.
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (id, tenant) = find_id(&state, &caller, &raw).await?;
    let conversation = state
        .store
        .conversation(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no conversation {id}")))?;
    let contact = contact_for(state.store.as_ref(), &conversation).await?;
    let transcript: Vec<Line<'_>> = conversation.transcript.iter().map(Line::from).collect();
    let mut body =
        serde_json::to_value(summary(&conversation, contact.as_ref(), state.clock.now()))
            .map_err(|e| ApiError::Kind(tandem_domain::ErrorKind::Internal, e.to_string()))?;
    if let Some(object) = body.as_object_mut() {
        // The bot's side of the record; `outbox` and `handoff` only while there are some.
        object.insert("tenant".into(), json!(tenant.id));
        object.insert("language".into(), json!(conversation.language));
        object.insert("opted_out".into(), json!(conversation.opted_out));
        object.insert("bot".into(), json!(conversation.bot));
        if let Some(handoff) = &conversation.handoff() {
            object.insert("handoff".into(), json!(handoff));
        }
        if let Some(assignment) = &conversation.assignment() {
            object.insert("assignment".into(), json!(assignment));
        }
        object.insert("last_agent".into(), json!(conversation.last_agent));
        if let Some(triage) = &conversation.triage {
            object.insert("triage".into(), json!(triage));
        }
        if !conversation.outbox.is_empty() {
            object.insert("outbox".into(), json!(conversation.outbox));
        }
        object.insert("transcript".into(), json!(transcript));
    }
    Ok(Json(body))
}

/// Lists dead letters, newest first. They are the deployment's (raw webhook input, some of
/// numbers no tenant owns): a tenant's token is answered 404.
pub async fn dead_letters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&params, &["limit"])?;
    if !caller.sees_all() {
        return Err(ApiError::not_found("no dead letters"));
    }
    let limit = parse_limit(params.get("limit"))?;
    let letters = state.store.dead_letters(limit).await?;
    let items: Vec<Value> = letters
        .into_iter()
        .map(|(id, letter)| {
            json!({
                "id": id,
                "received_at": rfc3339(letter.received_at),
                "reason": letter.reason,
                "field": letter.field,
                "detail": letter.detail,
                "body": letter.body,
                "body_base64": letter.body_base64,
            })
        })
        .collect();
    Ok(Json(json!({"dead_letters": items})))
}

/// Lists, from one page of conversations (id order, `after` paging), the customer texts the
/// classifier cascade was unsure of: `none` (no stage chose a flow), `llm` (only the LLM
/// did) or `all` (both; the default), oldest first per conversation.
pub async fn review(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&params, &["stage", "limit", "after"])?;
    let stages: &[&str] = match params.get("stage").map(String::as_str) {
        None | Some("all") => &["none", "llm"],
        Some("none") => &["none"],
        Some("llm") => &["llm"],
        Some(raw) => {
            return Err(ApiError::invalid(format!(
                "stage must be none, llm or all, got {raw:?}"
            )));
        }
    };
    let limit = parse_limit(params.get("limit"))?;
    let after = params.get("after").map(|a| parse_id(a)).transpose()?;
    let page = state
        .store
        .list_conversations(&ListQuery {
            mode: None,
            after,
            limit,
        })
        .await?;
    let next = if page.len() == limit {
        page.last().map(|c| c.id.to_string())
    } else {
        None
    };
    let page = visible(&state, &caller, page).await;
    let mut messages = Vec::new();
    for c in &page {
        for e in &c.transcript {
            let Some(u) = e
                .understood
                .as_ref()
                .filter(|u| stages.contains(&u.stage.as_str()))
            else {
                continue;
            };
            messages.push(json!({
                "conversation": c.id.to_string(),
                "at": rfc3339(e.at),
                "message_id": e.message_id.as_ref().map(|id| id.as_str()),
                // A voice note's words, without the `[audio]` label.
                "text": e.transcription.as_ref().unwrap_or(&e.text),
                "stage": u.stage,
                "intent": u.intent,
                "guess": u.guess,
                "confidence": u.confidence,
            }));
        }
    }
    Ok(Json(json!({"messages": messages, "next": next})))
}

/// Returns the recent events of an account (WABA id) or number (phone number id).
pub async fn account(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !caller.sees_all() {
        // A tenant's token reads its own numbers' and WABAs' events.
        let number = PhoneNumberId::parse(&id).ok();
        let owner = match number {
            Some(n) => state.tenants.of_number(&n).await,
            None => None,
        };
        let mine = owner.is_some_and(|t| caller.sees(&t.id))
            || state
                .tenants
                .all()
                .iter()
                .any(|t| caller.sees(&t.id) && t.wabas.contains(&id));
        if !mine {
            return Err(ApiError::not_found(format!("no events for account {id:?}")));
        }
    }
    let found = state
        .store
        .account(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no events for account {id:?}")))?;
    let events: Vec<Value> = found
        .events
        .iter()
        .map(|e| json!({"event": e.event, "at": rfc3339(e.at), "value": e.raw}))
        .collect();
    Ok(Json(json!({"account": found.account, "events": events})))
}

/// `GET /v1/numbers`: every business number's link state, phone and API activity and sends
/// held back.
pub async fn numbers(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let mut items: Vec<Value> = Vec::new();
    for n in state.store.numbers().await? {
        let tenant = state.tenants.of_number(&n.phone_number_id).await;
        if !caller.sees_all() && !tenant.as_ref().is_some_and(|t| caller.sees(&t.id)) {
            continue;
        }
        let mut view = tandem_engine::health::number_view(&n, now, state.send_rate);
        view["tenant"] = json!(tenant.map(|t| t.id.clone()));
        items.push(view);
    }
    Ok(Json(
        json!({"numbers": items, "sending": state.sending_problem.map_or("ok", |p| p)}),
    ))
}

/// `GET /v1/numbers/{phone_number_id}`: one number's link state.
pub async fn number(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = tandem_domain::PhoneNumberId::parse(&raw)
        .map_err(|e| ApiError::invalid(format!("bad phone number id {raw:?}: {e}")))?;
    if !caller.sees_all() {
        tenant_of_number(&state, &caller, &id, || format!("no number {id} seen yet")).await?;
    }
    let found = state
        .store
        .number(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no number {id} seen yet")))?;
    Ok(Json(
        super::onboarding::number_with_onboarding(&state, &found).await?,
    ))
}
