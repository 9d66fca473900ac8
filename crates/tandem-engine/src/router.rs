//! The router: gives conversations waiting for a person to agents, and tells the ones nobody
//! can take yet where they stand.
//!
//! One router leads at a time across every process on the store ([`Store::lead`]). Each round
//! it reads the conversations that want or have a person, counts each agent's open ones,
//! orders the waiting ones (urgency, then the time left in their 24-hour window) and, for each,
//! asks [`Routing::pick`]. A choice becomes an event in the conversation's inbox (`routed`),
//! applied by its lane in order like any other — which is where the record changes and the
//! `conversation.assigned` hook is written. Events are deduplicated by a key naming the
//! handoff, so a round repeated after a crash assigns nothing twice.

use std::collections::HashMap;
use std::sync::Arc;

use tandem_domain::{
    AgentAction, AgentActionKind, AgentId, Clock, Conversation, ConversationEvent, ConversationId,
    Mode, TeamId, Timestamp,
};
use tandem_handoff::queue::rank;
use tandem_handoff::routing::{AgentLoad, Seeker};
use tandem_handoff::{Pick, Waiting, sort_queue};
use tandem_store::{
    AgentState, IngestBatch, IngestItem, IngestKind, ListQuery, Presence, Store, StoreError,
};
use tokio::sync::{Notify, watch};

use crate::config::EngineConfig;
use crate::metrics;
use crate::tenants::{Tenant, Tenants};

/// How long a choice counts against its agent before the lane has applied it.
const PENDING_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// The router of one process.
#[derive(Debug)]
pub struct Router {
    store: Arc<dyn Store>,
    tenants: Tenants,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    holder: String,
    /// Choices made but not yet applied by their lane: conversation → (agent, until).
    pending: HashMap<ConversationId, (AgentId, Timestamp)>,
}

/// What one tenant's part of a round reads.
struct RoundInput<'a> {
    tenant: &'a Tenant,
    open: &'a [Conversation],
    states: &'a HashMap<String, AgentState>,
}

/// One entry of the waiting queue, as the API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueEntry {
    /// The conversation.
    pub conversation: ConversationId,
    /// The team waited for.
    pub team: Option<TeamId>,
    /// Place in the team's queue, from 1.
    pub position: usize,
    /// The handoff's priority.
    pub priority: tandem_domain::Priority,
    /// The handoff's reason.
    pub reason: String,
    /// When the person was asked for (Unix ms).
    pub requested_at: Timestamp,
    /// Seconds waited so far.
    pub waited_seconds: u64,
    /// When the customer's 24-hour window closes (Unix ms), if open.
    pub window_closes_at: Option<Timestamp>,
    /// Seconds left in the window (0 when closed: only a template reaches the customer).
    pub window_seconds_left: u64,
}

/// Reads every conversation that wants or has a person.
///
/// # Errors
/// The store's error.
pub async fn open_conversations(store: &dyn Store) -> Result<Vec<Conversation>, StoreError> {
    let mut open = Vec::new();
    for mode in [Mode::Handoff, Mode::Human] {
        let mut after = None;
        loop {
            let page = store
                .list_conversations(&ListQuery {
                    mode: Some(mode),
                    after: after.clone(),
                    limit: 500,
                })
                .await?;
            let done = page.len() < 500;
            after = page.last().map(|c| c.id.clone());
            open.extend(page);
            if done {
                break;
            }
        }
    }
    Ok(open)
}

fn waiting(c: &Conversation) -> bool {
    c.mode() == Mode::Handoff && c.assignment().is_none_or(|a| a.agent.is_none())
}

/// The waiting conversations of `open` (one tenant's open conversations) in the order they
/// are served, with their place in their team.
pub fn queue(open: &[Conversation], now: Timestamp) -> Vec<QueueEntry> {
    ordered(open, now)
        .into_iter()
        .map(|(w, position, c)| {
            let handoff = c.handoff();
            QueueEntry {
                conversation: w.conversation.clone(),
                team: w.team.clone(),
                position,
                priority: handoff.map(|h| h.priority).unwrap_or_default(),
                reason: handoff.map_or_else(String::new, |h| h.reason.to_string()),
                requested_at: w.requested_at,
                waited_seconds: now.since(w.requested_at).as_secs(),
                window_closes_at: w.window_closes_at,
                window_seconds_left: w.window_closes_at.map_or(0, |at| at.since(now).as_secs()),
            }
        })
        .collect()
}

/// Orders the waiting conversations of `open` and numbers them within their team.
fn ordered(open: &[Conversation], now: Timestamp) -> Vec<(Waiting, usize, &Conversation)> {
    let by_id: HashMap<&ConversationId, &Conversation> = open.iter().map(|c| (&c.id, c)).collect();
    let mut queue: Vec<Waiting> = open
        .iter()
        .filter(|c| waiting(c))
        .map(|c| Waiting {
            conversation: c.id.clone(),
            team: c.assignment().and_then(|a| a.team.clone()),
            rank: rank(
                c.handoff().map(|h| h.priority).unwrap_or_default(),
                c.triage.as_ref().map(|t| t.urgency),
            ),
            window_closes_at: c.window_closes_at(now),
            requested_at: c.handoff().map_or(c.updated_at, |h| h.at),
        })
        .collect();
    sort_queue(&mut queue);
    let mut positions: HashMap<Option<TeamId>, usize> = HashMap::new();
    queue
        .into_iter()
        .filter_map(|w| {
            let c = *by_id.get(&w.conversation)?;
            let position = positions.entry(w.team.clone()).or_default();
            *position += 1;
            let p = *position;
            Some((w, p, c))
        })
        .collect()
}

impl Router {
    /// Builds the router of this process.
    pub fn new(
        store: Arc<dyn Store>,
        tenants: Tenants,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Self {
        Self {
            store,
            tenants,
            clock,
            config,
            holder: leader_name("router"),
            pending: HashMap::new(),
        }
    }

    /// Runs rounds every `router_tick`, and at once when `ready` is raised (a handoff or a
    /// freed agent in this process), while this process leads, until `stopped`.
    pub async fn run(mut self, ready: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.router_tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lead_for = self
            .config
            .router_tick
            .saturating_mul(10)
            .max(std::time::Duration::from_secs(3));
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                () = ready.notified() => {}
                _ = stopped.changed() => break,
            }
            let now = self.clock.now();
            match self.store.lead("router", &self.holder, now, lead_for).await {
                Ok(true) => {
                    if let Err(error) = self.round(now).await {
                        ::metrics::counter!(metrics::ERRORS, "stage" => "routing", "error_kind" => error.kind().as_str()).increment(1);
                        tracing::warn!(%error, "routing round failed");
                    }
                }
                Ok(false) => self.pending.clear(),
                Err(error) => tracing::warn!(%error, "router leadership check failed"),
            }
        }
    }

    /// One round: assign whoever can be assigned, tell the others where they stand; each
    /// tenant's waiting conversations go to its own agents.
    pub async fn round(&mut self, now: Timestamp) -> Result<(), StoreError> {
        if !self.tenants.any_routing() {
            return Ok(());
        }
        let open = open_conversations(&*self.store).await?;
        // Choices not applied yet still count, so one round never overfills an agent.
        let applied = |id: &ConversationId| {
            open.iter().any(|c| &c.id == id && !waiting(c)) || !open.iter().any(|c| &c.id == id)
        };
        self.pending
            .retain(|id, (_, until)| *until > now && !applied(id));
        let states: HashMap<String, AgentState> = self
            .store
            .agents()
            .await?
            .into_iter()
            .map(|s| (s.agent.clone(), s))
            .collect();
        let mut groups: HashMap<String, (Arc<Tenant>, Vec<Conversation>)> = HashMap::new();
        for c in open {
            let Some(tenant) = self.tenants.of_number(c.id.phone_number_id()).await else {
                continue;
            };
            if tenant.desk.routing.routes() {
                groups
                    .entry(tenant.id.clone())
                    .or_insert_with(|| (tenant, Vec::new()))
                    .1
                    .push(c);
            }
        }
        for (tenant, open) in groups.values() {
            let input = RoundInput {
                tenant,
                open,
                states: &states,
            };
            self.tenant_round(&input, now).await?;
        }
        Ok(())
    }

    /// One tenant's part of a round.
    async fn tenant_round(
        &mut self,
        input: &RoundInput<'_>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let RoundInput {
            tenant,
            open,
            states,
        } = *input;
        let routing = &tenant.desk.routing;
        let state_of = |agent: &AgentId| states.get(&tenant.agent_key(agent.as_str()));
        let mut loads: HashMap<AgentId, AgentLoad> = routing
            .agents()
            .iter()
            .map(|a| {
                let state = state_of(&a.id);
                (
                    a.id.clone(),
                    AgentLoad {
                        available: state.is_none_or(|s| s.presence == Presence::Online),
                        open: 0,
                        last_assigned_at: state.and_then(|s| s.last_assigned_at),
                    },
                )
            })
            .collect();
        for c in open {
            if let Some(agent) = c.assignment().and_then(|a| a.agent.as_ref())
                && let Some(load) = loads.get_mut(agent)
            {
                load.open += 1;
            }
        }
        for (id, (agent, _)) in &self.pending {
            if open.iter().any(|c| &c.id == id)
                && let Some(load) = loads.get_mut(agent)
            {
                load.open += 1;
            }
        }
        let mut lengths: HashMap<String, (usize, u64)> = HashMap::new();
        for (w, position, c) in ordered(open, now) {
            if self.pending.contains_key(&w.conversation) {
                continue;
            }
            let team_label = w.team.as_deref().unwrap_or_default().to_owned();
            let skills: Vec<String> = c
                .bot
                .vars
                .get("required_skills")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let seeker = Seeker {
                team: w.team.as_deref(),
                skills: &skills,
                language: c.language.as_deref(),
                last_agent: c.last_agent.as_deref(),
            };
            let handoff_at = w.requested_at.as_millis();
            match routing.pick(&seeker, &loads, now) {
                Pick::Agent(agent) => {
                    let key = format!("routed:{}:{handoff_at}:{agent}", w.conversation);
                    let action = AgentAction {
                        agent: Some(agent.clone()),
                        at: now,
                        kind: AgentActionKind::Routed {
                            team: w.team.clone(),
                        },
                    };
                    self.send(&w.conversation, key, action, now).await?;
                    self.pending.insert(
                        w.conversation.clone(),
                        (agent.clone(), now.plus(PENDING_FOR)),
                    );
                    if let Some(load) = loads.get_mut(&agent) {
                        load.open += 1;
                        load.last_assigned_at = Some(now);
                    }
                    let presence = state_of(&agent).map_or(Presence::Online, |s| s.presence);
                    let since = state_of(&agent).map_or(now, |s| s.since);
                    self.store
                        .set_agent(AgentState {
                            agent: tenant.agent_key(agent.as_str()),
                            presence,
                            since,
                            last_assigned_at: Some(now),
                        })
                        .await?;
                    ::metrics::counter!(metrics::ASSIGNMENTS, "team" => team_label, "tenant" => tenant.label.clone()).increment(1);
                }
                Pick::Wait {
                    on_duty,
                    next_opening,
                } => {
                    let entry = lengths.entry(team_label).or_default();
                    entry.0 += 1;
                    entry.1 = entry.1.max(now.since(w.requested_at).as_secs());
                    if c.handoff().is_some_and(|h| h.queue_noted) {
                        continue;
                    }
                    let wait_seconds =
                        (on_duty > 0).then(|| routing.wait_estimate(position, on_duty).as_secs());
                    let key = format!("queued:{}:{handoff_at}", w.conversation);
                    let action = AgentAction {
                        agent: None,
                        at: now,
                        kind: AgentActionKind::Queued {
                            team: w.team.clone(),
                            position,
                            wait_seconds,
                            next_opening,
                        },
                    };
                    self.send(&w.conversation, key, action, now).await?;
                }
            }
        }
        for team in routing.team_ids() {
            let (length, oldest) = lengths.get(team).copied().unwrap_or_default();
            ::metrics::gauge!(metrics::QUEUE_LENGTH, "team" => team.to_owned(), "tenant" => tenant.label.clone()).set(length as f64);
            ::metrics::gauge!(metrics::QUEUE_OLDEST, "team" => team.to_owned(), "tenant" => tenant.label.clone()).set(oldest as f64);
        }
        Ok(())
    }

    async fn send(
        &self,
        conversation: &ConversationId,
        key: String,
        action: AgentAction,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.store
            .ingest(IngestBatch {
                identity_epoch: None,
                received_at: now,
                items: vec![IngestItem {
                    key,
                    kind: IngestKind::Conversation {
                        conversation: conversation.clone(),
                        event: ConversationEvent::Agent(action),
                        pause: None,
                    },
                }],
            })
            .await?;
        Ok(())
    }
}

/// A process-unique name under which this process holds the leadership of `role`.
pub(crate) fn leader_name(role: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{role}-{}-{nanos}", std::process::id())
}
