//! Acting on conversations through `/v1` (scope `agent`), the waiting queue and agents
//! (scope `read`), and the hook dead-letter list (scope `admin`).
//!
//! An action is stored as an event of the conversation's inbox and applied by its lane in
//! order, like a webhook; a take-over or a message also pauses the bot in that same write,
//! before the answer, so no bot message starts after a 202. A client's `Idempotency-Key`
//! header makes a repeated request harmless. Bad requests get a 400 that says what is wrong.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

use tandem_domain::{AgentAction, AgentActionKind, Conversation, ConversationId, OutboundContent};
use tandem_engine::{Tenant, Tenants};
use tandem_store::{AgentState, Presence};

use super::AppState;
use super::api::{find_id, parse_limit, refuse_unknown, rfc3339};
use super::auth::{Caller, owned, tenant_of_request};
use super::privacy::AuditNote;
use crate::error::ApiError;

/// The answer of an action: its status, what the audit log keeps of it, and the JSON.
type Acted = (StatusCode, Extension<AuditNote>, Json<Value>);

/// The longest text WhatsApp accepts in one message.
const MAX_TEXT: usize = 4096;
/// The longest agent or team id the API takes.
const MAX_NAME: usize = 64;

/// Refuses a name that is empty, longer than `max` characters or holds control characters.
fn limited(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    let Some(value) = value else { return Ok(()) };
    if value.trim().is_empty() || value.chars().count() > max || value.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "{field} must have 1 to {max} characters and no control characters"
        )));
    }
    Ok(())
}

/// Parses an optional JSON body into `T`, refusing unknown fields with a readable reason.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("bad JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentBody {
    /// The agent acting; default: the token's agent.
    agent: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    agent: Option<String>,
    team: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    text: Option<String>,
    template: Option<TemplateBody>,
    agent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateBody {
    name: String,
    language: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AvailabilityBody {
    status: String,
}

/// The conversation `raw` names and its tenant; 404 when it does not exist or belongs to a
/// tenant the caller may not see.
async fn existing(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<(Conversation, Arc<Tenant>), ApiError> {
    let (id, tenant) = find_id(state, caller, raw).await?;
    Ok((read(state, &id).await?, tenant))
}

/// The conversation `id`; 404 when it does not exist.
async fn read(state: &AppState, id: &ConversationId) -> Result<Conversation, ApiError> {
    state
        .store
        .conversation(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no conversation {id}")))
}

fn check_agent(tenant: &Tenant, agent: Option<&str>) -> Result<(), ApiError> {
    limited("agent", agent, MAX_NAME)?;
    let routing = &tenant.desk.routing;
    if let Some(agent) = agent
        && routing.routes()
        && routing.agent(agent).is_none()
    {
        return Err(ApiError::invalid(format!(
            "unknown agent {agent:?}; agents are configured under [[handoff.agents]]"
        )));
    }
    Ok(())
}

/// How long an action's answer waits for the conversation's lane to apply it.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The mode an action leaves the conversation in, when it decides one.
fn mode_after(kind: &AgentActionKind) -> Option<tandem_domain::Mode> {
    use tandem_domain::Mode;
    match kind {
        AgentActionKind::Release | AgentActionKind::Close => Some(Mode::Bot),
        AgentActionKind::Takeover | AgentActionKind::Message { .. } => Some(Mode::Human),
        _ => None,
    }
}

/// Stores the action and answers 202 with the conversation's state after it: a take-over or
/// message pauses at once; a release or close is applied by the conversation's lane, which the
/// answer waits for (up to [`APPLY_WAIT`]; `"pending": true` when the lane is slower).
async fn act(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    (id, tenant): (ConversationId, &Tenant),
    agent: Option<String>,
    kind: AgentActionKind,
) -> Result<Acted, ApiError> {
    let label = kind.label();
    let key = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(key) if !key.trim().is_empty() => format!("api:{}:{}:{key}", caller.name, id),
        _ => format!("api:{}", uuid::Uuid::new_v4()),
    };
    let action = AgentAction {
        agent: agent.map(Into::into),
        at: state.clock.now(),
        kind,
    };
    let expected = mode_after(&action.kind);
    let acting = action.agent.as_ref().map(ToString::to_string);
    let stored = state.ingress.agent_action(id.clone(), action, key).await?;
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    let (record, pending) = loop {
        let record = state.store.conversation(&id).await?;
        let done = match (&record, expected) {
            (Some(c), Some(mode)) => c.mode() == mode,
            _ => true,
        };
        if done || tokio::time::Instant::now() >= deadline {
            break (record, !done);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let note = AuditNote {
        target: Some(id.to_string()),
        agent: acting,
        detail: Some(json!({"action": label, "duplicate": !stored})),
        tenant: Some(tenant.id.clone()),
    };
    Ok((
        StatusCode::ACCEPTED,
        Extension(note),
        Json(json!({
            "conversation": id.to_string(),
            "action": label,
            "duplicate": !stored,
            "mode": record.as_ref().map(|c| c.mode()),
            "pending": pending,
        })),
    ))
}

/// The request of an action whose body names at most the agent acting.
struct PersonAction {
    state: AppState,
    caller: Caller,
    headers: HeaderMap,
    raw: String,
    bytes: Bytes,
}

impl PersonAction {
    /// Stores `kind` for the conversation, acted by the body's agent or the token's.
    async fn store(self, kind: AgentActionKind) -> Result<Acted, ApiError> {
        let b: AgentBody = body(&self.bytes)?;
        let agent = b.agent.or_else(|| self.caller.agent.clone());
        limited("agent", agent.as_deref(), MAX_NAME)?;
        let (c, tenant) = existing(&self.state, &self.caller, &self.raw).await?;
        check_agent(&tenant, agent.as_deref())?;
        act(
            &self.state,
            &self.caller,
            &self.headers,
            (c.id, &tenant),
            agent,
            kind,
        )
        .await
    }
}

/// `POST /v1/conversations/{id}/takeover`: a person takes the conversation; the bot is
/// paused before the answer and its queued messages are cancelled.
pub async fn takeover(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    bytes: Bytes,
) -> Result<Acted, ApiError> {
    let request = PersonAction {
        state,
        caller,
        headers,
        raw,
        bytes,
    };
    request.store(AgentActionKind::Takeover).await
}

/// `POST /v1/conversations/{id}/release`: hand the conversation back to the bot.
pub async fn release(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    bytes: Bytes,
) -> Result<Acted, ApiError> {
    let request = PersonAction {
        state,
        caller,
        headers,
        raw,
        bytes,
    };
    request.store(AgentActionKind::Release).await
}

/// `POST /v1/conversations/{id}/close`: the matter is done; the bot starts afresh.
pub async fn close(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    bytes: Bytes,
) -> Result<Acted, ApiError> {
    let request = PersonAction {
        state,
        caller,
        headers,
        raw,
        bytes,
    };
    request.store(AgentActionKind::Close).await
}

/// `POST /v1/conversations/{id}/assign` with `{"agent": …}` or `{"team": …}`.
pub async fn assign(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    bytes: Bytes,
) -> Result<Acted, ApiError> {
    let b: AssignBody = body(&bytes)?;
    if b.agent.is_none() && b.team.is_none() {
        return Err(ApiError::invalid(
            r#"give {"agent": "<id>"} or {"team": "<id>"}"#,
        ));
    }
    let (id, tenant) = find_id(&state, &caller, &raw).await?;
    check_agent(&tenant, b.agent.as_deref())?;
    let routing = &tenant.desk.routing;
    // Assigning names someone the router knows: with no agents configured, nobody.
    if let Some(agent) = &b.agent
        && routing.agent(agent).is_none()
    {
        return Err(ApiError::invalid(format!(
            "unknown agent {agent:?}; agents are configured under [[handoff.agents]]"
        )));
    }
    limited("team", b.team.as_deref(), MAX_NAME)?;
    if let Some(team) = &b.team
        && routing.team(team).is_none()
    {
        // With no teams at all, a team would be a queue nobody serves.
        return Err(ApiError::invalid(format!(
            "unknown team {team:?}; teams are configured under [[handoff.teams]]"
        )));
    }
    let c = read(&state, &id).await?;
    act(
        &state,
        &caller,
        &headers,
        (c.id, &tenant),
        b.agent,
        AgentActionKind::Assign {
            team: b.team.map(Into::into),
        },
    )
    .await
}

/// `POST /v1/conversations/{id}/messages` with `{"text": …}` (inside the customer's 24-hour
/// window) or `{"template": {"name", "language"}}`: sent as a person through the Cloud API;
/// the conversation turns to `human`.
pub async fn message(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    bytes: Bytes,
) -> Result<Acted, ApiError> {
    let b: MessageBody = body(&bytes)?;
    let agent = b.agent.or_else(|| caller.agent.clone());
    limited("agent", agent.as_deref(), MAX_NAME)?;
    let (c, tenant) = existing(&state, &caller, &raw).await?;
    check_agent(&tenant, agent.as_deref())?;
    let content = match (b.text, b.template) {
        (Some(text), None) => {
            let text = text.trim().to_owned();
            if text.is_empty() || text.chars().count() > MAX_TEXT {
                return Err(ApiError::invalid(format!(
                    "text must have 1 to {MAX_TEXT} characters"
                )));
            }
            let now = state.clock.now();
            if !c.window_open(now) {
                let template = reengage_template(&tenant);
                return Err(ApiError::conflict(format!(
                    "the customer's 24-hour window is closed; only a template can reach them: send {{\"template\": {}}}",
                    template.unwrap_or_else(|| json!({"name": "…", "language": "…"}))
                )));
            }
            OutboundContent::Text {
                body: text,
                preview_url: false,
            }
        }
        (None, Some(t)) => {
            limited("template.name", Some(&t.name), 512)?;
            limited("template.language", Some(&t.language), 15)?;
            if state.authentication_templates.contains(&t.name) && c.who().phone.is_none() {
                return Err(ApiError::conflict(format!(
                    "{:?} is an authentication template, and WhatsApp cannot deliver those to a customer known only by username (BSUID), error 131062",
                    t.name
                )));
            }
            OutboundContent::Template {
                name: t.name,
                language: t.language,
                body_parameters: Vec::new(),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                r#"give either {"text": "…"} or {"template": {"name": "…", "language": "…"}}"#,
            ));
        }
    };
    act(
        &state,
        &caller,
        &headers,
        (c.id, &tenant),
        agent,
        AgentActionKind::Message { content },
    )
    .await
}

/// The template the tenant's flows configure for a closed window.
fn reengage_template(tenant: &Tenant) -> Option<Value> {
    let bot = tenant.responder.as_ref()?.flows().current();
    let (name, language) = bot.settings.window_template.clone()?;
    Some(json!({"name": name, "language": language}))
}

/// `GET /v1/queue`: conversations waiting for an agent, in the order they are served
/// (urgency, then the time left in their 24-hour window), with the re-engagement template
/// to use once a window has closed.
pub async fn queue(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&params, &["team", "tenant"])?;
    let tenant = tenant_of_request(&state, &caller, params.get("tenant").map(String::as_str))?;
    let now = state.clock.now();
    let open = open_of(&state, &tenant).await?;
    let entries = tandem_engine::router::queue(&open, now);
    let template = reengage_template(&tenant);
    let items: Vec<Value> = entries
        .iter()
        .filter(|e| {
            params
                .get("team")
                .is_none_or(|t| e.team.as_deref() == Some(t.as_str()))
        })
        .map(|e| {
            json!({
                "conversation": e.conversation.to_string(),
                "team": e.team,
                "position": e.position,
                "priority": e.priority,
                "reason": e.reason,
                "requested_at": rfc3339(e.requested_at),
                "waited_seconds": e.waited_seconds,
                "window_closes_at": e.window_closes_at.map(rfc3339),
                "window_seconds_left": e.window_seconds_left,
                "reengage_template": template,
            })
        })
        .collect();
    Ok(Json(json!({"queue": items})))
}

/// The open conversations (waiting for or with a person) of `tenant`.
async fn open_of(state: &AppState, tenant: &Tenant) -> Result<Vec<Conversation>, ApiError> {
    let open = tandem_engine::router::open_conversations(&*state.store).await?;
    Ok(owned(
        state,
        open,
        |c| c.id.phone_number_id(),
        |t| t.id == tenant.id,
    )
    .await)
}

/// `GET /v1/agents`: the tenant's agents with their availability and open conversations.
pub async fn agents(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&params, &["tenant"])?;
    let tenant = tenant_of_request(&state, &caller, params.get("tenant").map(String::as_str))?;
    let states: HashMap<String, AgentState> = state
        .store
        .agents()
        .await?
        .into_iter()
        .map(|s| (s.agent.clone(), s))
        .collect();
    let mut open: HashMap<String, u32> = HashMap::new();
    for c in open_of(&state, &tenant).await? {
        if let Some(agent) = c.assignment().and_then(|a| a.agent.as_deref()) {
            *open.entry(agent.to_owned()).or_default() += 1;
        }
    }
    let items: Vec<Value> = tenant
        .desk
        .routing
        .agents()
        .iter()
        .map(|a| {
            let s = states.get(&tenant.agent_key(a.id.as_str()));
            json!({
                "id": a.id,
                "name": a.name,
                "teams": a.teams,
                "skills": a.skills,
                "languages": a.languages,
                "capacity": a.capacity,
                "status": s.map_or(Presence::Online, |s| s.presence),
                "status_since": s.map(|s| rfc3339(s.since)),
                "open_conversations": open.get(a.id.as_str()).copied().unwrap_or(0),
                "last_assigned_at": s.and_then(|s| s.last_assigned_at).map(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({"agents": items})))
}

/// `PUT /v1/agents/{id}/availability` with `{"status": "online" | "away" | "offline"}`.
pub async fn availability(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
    Path(agent): Path<String>,
    bytes: Bytes,
) -> Result<(Extension<AuditNote>, Json<Value>), ApiError> {
    refuse_unknown(&params, &["tenant"])?;
    let tenant = tenant_of_request(&state, &caller, params.get("tenant").map(String::as_str))?;
    let b: AvailabilityBody = body(&bytes)?;
    let presence = Presence::parse(&b.status).ok_or_else(|| {
        ApiError::invalid(format!(
            "status must be online, away or offline, got {:?}",
            b.status
        ))
    })?;
    if tenant.desk.routing.agent(&agent).is_none() {
        return Err(ApiError::not_found(format!(
            "no agent {agent:?}; agents are configured under [[handoff.agents]]"
        )));
    }
    let key = tenant.agent_key(&agent);
    let previous = state
        .store
        .agents()
        .await?
        .into_iter()
        .find(|s| s.agent == key);
    let now = state.clock.now();
    state
        .store
        .set_agent(AgentState {
            agent: key,
            presence,
            since: now,
            last_assigned_at: previous.and_then(|p| p.last_assigned_at),
        })
        .await?;
    let note = AuditNote {
        target: Some(agent.clone()),
        agent: Some(agent.clone()),
        detail: Some(json!({"status": presence})),
        tenant: Some(tenant.id.clone()),
    };
    Ok((
        Extension(note),
        Json(json!({"agent": agent, "status": presence, "since": rfc3339(now)})),
    ))
}

/// `GET /v1/hooks/dead`: hook deliveries given up on, most recent first.
pub async fn dead_hooks(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    refuse_unknown(&params, &["limit"])?;
    let limit = parse_limit(params.get("limit"))?;
    let dead = state.store.dead_hooks(limit).await?;
    // A tenant's token sees its own targets' deliveries (the page may hold fewer).
    let items: Vec<Value> = dead
        .iter()
        .filter(|h| caller.sees(Tenants::tenant_of_hook(&h.target)))
        .map(|h| {
            json!({
                "id": h.id,
                "event_id": h.event_id,
                "event": h.event,
                "target": h.target,
                "attempts": h.attempts,
                "last_error": h.last_error,
                "created_at": rfc3339(h.created_at),
                "dead_at": rfc3339(h.due),
                "body": serde_json::from_str::<Value>(&h.body).unwrap_or(Value::String(h.body.clone())),
            })
        })
        .collect();
    Ok(Json(json!({"dead_hooks": items})))
}

/// `POST /v1/hooks/dead/{id}/redrive`: queue a dead delivery again, attempts reset.
pub async fn redrive(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // A delivery's id ends with its target's outbox name (`{event id}.{target}`).
    let target = id.split_once('.').map_or("", |(_, t)| t);
    if caller.sees(Tenants::tenant_of_hook(target))
        && state.store.redrive_hook(&id, state.clock.now()).await?
    {
        Ok((StatusCode::ACCEPTED, Json(json!({"redriven": id}))))
    } else {
        Err(ApiError::not_found(format!("no dead hook delivery {id:?}")))
    }
}
