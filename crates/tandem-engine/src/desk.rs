//! The handoff side of a lane step: routing a handoff to a team, applying what agents and the
//! router did, the pause and resume bookkeeping that goes with it, and the hooks that tell the
//! business's CRM or helpdesk.
//!
//! Part of [`crate::turn::decide`], so pure: everything here changes the record handed in and
//! collects [`Happening`]s and metric notes in the turn's [`Effects`]; the lane turns the
//! happenings into hook deliveries ([`Desk::hook_jobs`]) written in the same atomic commit as
//! the record, so a hook fires exactly when its change took effect.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tandem_domain::{
    AgentAction, AgentActionKind, AgentId, Conversation, HandoffRequest, InboundMessage, Mode,
    SendAction, SendOrigin, Timestamp, TranscriptEntry,
};
use tandem_handoff::routing::Facts;
use tandem_handoff::{HookEvent, Hooks, Routing};
use tandem_store::HookJob;

use crate::reply::{Env, notice};
use crate::turn::{Effects, Note, Resumed};

/// The routing policy and hook targets in force.
#[derive(Debug, Clone, Default)]
pub struct Desk {
    /// Teams, agents and rules.
    pub routing: Arc<Routing>,
    /// Hook targets.
    pub hooks: Arc<Hooks>,
}

/// Something a step did that hooks announce.
#[derive(Debug, Clone, PartialEq)]
pub struct Happening {
    /// The event.
    pub event: HookEvent,
    /// What is particular to it, merged into the payload.
    pub detail: Value,
}

impl Happening {
    fn new(event: HookEvent, detail: Value) -> Self {
        Self { event, detail }
    }
}

/// Returns the contact tags routing rules match: the flow variable `tags` (a list or a
/// comma-separated text) and `vip` when the variable `vip` is true.
fn tags(c: &Conversation) -> Vec<String> {
    let mut tags: Vec<String> = match c.bot.vars.get("tags") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(text)) => text
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    let vip = matches!(c.bot.vars.get("vip"), Some(Value::Bool(true)))
        || matches!(c.bot.vars.get("vip"), Some(Value::String(s)) if s == "true");
    if vip {
        tags.push("vip".into());
    }
    tags
}

impl Desk {
    /// The bot handed the conversation to a person: choose the team (rules, then the flow's
    /// team, then the default) and announce the request.
    pub fn on_handoff(&self, c: &mut Conversation, intent: Option<&str>, out: &mut Effects) {
        let Some(request) = c.handoff().cloned() else {
            return;
        };
        let tags = tags(c);
        let facts = Facts {
            intent,
            language: c.language.as_deref(),
            urgency: c.triage.as_ref().map(|t| t.urgency),
            reason: &request.reason.as_text(),
            priority: request.priority,
            tags: &tags,
            requested_team: request.team.as_deref(),
        };
        let (team, skills) = self.routing.team_for(&facts);
        if let Some(handoff) = c.handoff_mut() {
            handoff.team.clone_from(&team);
        }
        c.assign(team, None, request.at);
        if !skills.is_empty() {
            c.bot.vars.insert("required_skills".into(), json!(skills));
        }
        out.notes.push(Note::Handoff(request.reason.label()));
        out.happenings
            .push(Happening::new(HookEvent::HandoffRequested, json!({})));
    }

    /// A person wrote from the phone (not an echo of our own send); the pause itself was
    /// set at ingress.
    pub fn on_echo(&self, c: &mut Conversation, now: Timestamp, out: &mut Effects) {
        first_human_reply(c, now, out);
        if c.announce_takeover() {
            out.happenings.push(Happening::new(
                HookEvent::HumanTakeover,
                json!({"by": "phone"}),
            ));
        }
    }

    /// The customer wrote while a person owns or is awaited in the conversation: the
    /// `message` hook, with the text of its transcript line in `c` (a voice note's words
    /// too, and then alone in `transcription`).
    pub fn on_customer_while_person(
        &self,
        c: &Conversation,
        message: &InboundMessage,
        out: &mut Effects,
    ) {
        let line = c
            .transcript
            .iter()
            .rev()
            .find(|e| e.message_id.as_ref() == Some(&message.id));
        let mut body = json!({
            "id": message.id.as_str(),
            "type": message.content.type_label(),
            "text": line.map_or_else(|| message.content.transcript_text(), |l| l.text.clone()),
            "sent_at": tandem_handoff::hooks::rfc3339(message.sent_at),
        });
        if let Some(words) = line.and_then(|l| l.transcription.as_deref()) {
            body["transcription"] = words.into();
        }
        out.happenings.push(Happening::new(
            HookEvent::Message,
            json!({ "message": body }),
        ));
    }

    /// The bot took the conversation back (`reason` for the hook and the metric): the
    /// one-time "the assistant is back" text, when the bot has one.
    pub(crate) fn on_resumed(
        &self,
        c: &mut Conversation,
        reason: Resumed,
        env: &Env<'_>,
        out: &mut Effects,
    ) {
        notice(env, c, "bot_back", Value::Null, out);
        out.notes.push(Note::Resumed(reason));
        out.happenings.push(Happening::new(
            HookEvent::Resumed,
            json!({"resumed_because": reason.label()}),
        ));
    }

    /// Applies what an agent (through the API) or the router did.
    pub(crate) fn on_agent(
        &self,
        c: &mut Conversation,
        action: &AgentAction,
        env: &Env<'_>,
        out: &mut Effects,
    ) {
        let now = env.now;
        let agent = action.agent.clone();
        let who = agent.as_deref().unwrap_or("an agent");
        out.notes.push(Note::AgentAction(action.kind.label()));
        match &action.kind {
            AgentActionKind::Takeover => {
                self.take(c, agent.clone(), now, out);
            }
            AgentActionKind::Message { content } => {
                self.take(c, agent.clone(), now, out);
                first_human_reply(c, now, out);
                c.queue_send(
                    SendOrigin::Agent,
                    SendAction::Message {
                        content: content.clone(),
                    },
                    now,
                );
            }
            AgentActionKind::Release => {
                if c.mode() == Mode::Bot {
                    return;
                }
                c.resume(now, &format!("released by {who}"), env.cap);
                self.on_resumed(c, Resumed::Released, env, out);
            }
            AgentActionKind::Close => {
                let was = c.mode();
                c.resume(now, &format!("closed by {who}"), env.cap);
                c.bot.slots.clear();
                if was != Mode::Bot {
                    notice(env, c, "bot_back", Value::Null, out);
                }
                out.happenings.push(Happening::new(
                    HookEvent::Closed,
                    json!({"closed_by": agent}),
                ));
            }
            AgentActionKind::Assign { team } => {
                if c.mode() == Mode::Bot {
                    c.request_handoff(HandoffRequest {
                        team: team.clone(),
                        reason: tandem_domain::HandoffReason::Assigned,
                        priority: tandem_domain::Priority::Normal,
                        at: now,
                        answered_at: None,
                        queue_noted: false,
                        summary: None,
                    });
                    out.happenings
                        .push(Happening::new(HookEvent::HandoffRequested, json!({})));
                }
                let team = team
                    .clone()
                    .or_else(|| c.assignment().and_then(|a| a.team.clone()));
                c.push(
                    TranscriptEntry::system(
                        now,
                        format!(
                            "routed by the API to {}",
                            agent.as_deref().or(team.as_deref()).unwrap_or("the queue")
                        ),
                    ),
                    env.cap,
                );
                let has_agent = agent.is_some();
                c.assign(team, agent, now);
                if has_agent {
                    out.happenings.push(Happening::new(
                        HookEvent::Assigned,
                        json!({"assigned_by": "api"}),
                    ));
                }
            }
            AgentActionKind::Routed { team } => {
                let waiting =
                    c.mode() != Mode::Bot && c.assignment().is_none_or(|a| a.agent.is_none());
                if !waiting || agent.is_none() {
                    return;
                }
                let waited = c.handoff().map(|h| now.since(h.at));
                if let Some(waited) = waited {
                    out.notes.push(Note::QueueWait {
                        team: team.as_deref().unwrap_or_default().to_owned(),
                        waited,
                    });
                }
                c.push(
                    TranscriptEntry::system(now, format!("assigned to {who}")),
                    env.cap,
                );
                c.assign(team.clone(), agent, now);
                // Outside opening hours the customer heard only the away notice; a person
                // took the conversation at once, so they are told a person is on it.
                if env.bot.is_some_and(|bot| bot.closed_at(now)) {
                    notice(env, c, "handoff", Value::Null, out);
                }
                out.happenings.push(Happening::new(
                    HookEvent::Assigned,
                    json!({"assigned_by": "router"}),
                ));
            }
            AgentActionKind::Queued {
                position,
                wait_seconds,
                next_opening,
                ..
            } => {
                let waiting =
                    c.mode() == Mode::Handoff && c.assignment().is_none_or(|a| a.agent.is_none());
                let noted = c.handoff().is_none_or(|h| h.queue_noted);
                if !waiting || noted {
                    return;
                }
                if let Some(h) = c.handoff_mut() {
                    h.queue_noted = true;
                }
                let (text, wait) = match wait_seconds {
                    Some(seconds) => (
                        "queue_wait",
                        humantime::format_duration(Duration::from_secs(*seconds)).to_string(),
                    ),
                    None => ("queue_closed", String::new()),
                };
                let queue = json!({
                    "position": position,
                    "wait": wait,
                    "next_opening": next_opening.clone().unwrap_or_default(),
                });
                notice(env, c, text, queue, out);
            }
        }
    }

    /// A person takes the conversation (the pause itself was set at ingress).
    fn take(
        &self,
        c: &mut Conversation,
        agent: Option<AgentId>,
        now: Timestamp,
        out: &mut Effects,
    ) {
        if let Some(agent) = agent {
            let current = c.assignment().and_then(|a| a.agent.as_deref());
            if current != Some(agent.as_str()) {
                let team = c.assignment().and_then(|a| a.team.clone());
                c.assign(team, Some(agent), now);
            }
        }
        if c.announce_takeover() {
            out.happenings.push(Happening::new(
                HookEvent::HumanTakeover,
                json!({"by": "agent_api"}),
            ));
        }
    }

    /// Turns a step's happenings into hook deliveries, one per happening and interested
    /// target. Ids are derived from the record's next revision, so a step computed again
    /// after a conflict gives the same ids.
    pub fn hook_jobs(
        &self,
        c: &Conversation,
        contact_name: Option<&str>,
        happenings: Vec<Happening>,
        now: Timestamp,
    ) -> Vec<HookJob> {
        let mut jobs = Vec::new();
        if self.hooks.is_empty() {
            return jobs;
        }
        let team = c
            .assignment()
            .as_ref()
            .and_then(|a| a.team.as_deref())
            .or_else(|| c.handoff().and_then(|h| h.team.as_deref()));
        for (i, happening) in happenings.into_iter().enumerate() {
            let targets = self.hooks.targets_for(happening.event, team);
            if targets.is_empty() {
                continue;
            }
            let event_id = format!("evt_{}_{}_{i}", c.id, c.rev + 1);
            let body = self
                .hooks
                .payload(
                    happening.event,
                    &event_id,
                    c,
                    contact_name,
                    happening.detail,
                    now,
                )
                .to_string();
            jobs.extend(deliveries(&targets, happening.event, &event_id, &body, now));
        }
        jobs
    }
}

/// One hook delivery of an event to each of `targets`, due now.
pub(crate) fn deliveries(
    targets: &[&tandem_handoff::HookTarget],
    event: HookEvent,
    event_id: &str,
    body: &str,
    now: Timestamp,
) -> Vec<HookJob> {
    targets
        .iter()
        .map(|target| HookJob {
            id: format!("{event_id}.{}", target.name),
            event_id: event_id.to_owned(),
            event: event.name().to_owned(),
            target: target.name.clone(),
            body: body.to_owned(),
            created_at: now,
            due: now,
            attempts: 0,
            last_error: None,
        })
        .collect()
}

/// Records the first message of a person after a handoff request.
fn first_human_reply(c: &mut Conversation, now: Timestamp, out: &mut Effects) {
    if let Some(handoff) = c.handoff_mut()
        && handoff.answered_at.is_none()
    {
        handoff.answered_at = Some(now);
        out.notes.push(Note::FirstHumanReply(now.since(handoff.at)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::{ConversationId, Echo, MessageContent, MessageId};
    use tandem_handoff::routing::RoutingConfig;
    use tandem_handoff::{HookTarget, Hooks};

    const NOW: Timestamp = Timestamp(1_767_603_600_000);

    fn desk() -> Desk {
        let config: RoutingConfig = serde_json::from_value(json!({
            "default_team": "support",
            "teams": [{"id": "support", "human_idle": "5m"}],
            "agents": [{"id": "ana", "teams": ["support"]}]
        }))
        .unwrap();
        let target = |name: &str, events: Vec<HookEvent>| HookTarget {
            name: name.into(),
            url: "http://127.0.0.1:1/".into(),
            secret: "k".into(),
            teams: Vec::new(),
            events,
        };
        Desk {
            routing: Arc::new(Routing::new(config).unwrap()),
            hooks: Arc::new(Hooks::new(
                vec![
                    target("crm", Vec::new()),
                    target("audit", vec![HookEvent::HumanTakeover]),
                ],
                5,
            )),
        }
    }

    fn handed_off() -> Conversation {
        let mut c = Conversation::new(ConversationId::parse("106:351").unwrap(), NOW);
        c.customer_last_at = Some(NOW);
        c.request_handoff(HandoffRequest {
            team: None,
            reason: "customer_request".into(),
            priority: tandem_domain::Priority::Normal,
            at: NOW,
            answered_at: None,
            queue_noted: false,
            summary: None,
        });
        c
    }

    /// A one-flow bot, with `hours` (YAML) in its bot.yaml.
    fn bot(hours: &str) -> tandem_flows::Bot {
        let files = vec![
            ("bot.yaml".to_owned(), hours.to_owned()),
            (
                "hi.yaml".to_owned(),
                "id: hi\ntriggers: ['^hi$']\nsteps:\n  - say: hello\n".to_owned(),
            ),
        ];
        tandem_flows::load_sources(&files, &std::collections::BTreeMap::new())
            .unwrap()
            .bot
    }

    fn env(bot: Option<&tandem_flows::Bot>) -> Env<'_> {
        Env {
            bot,
            now: NOW,
            cap: 50,
            contact_name: None,
            llm: crate::turn::LlmUse::default(),
            semantic: None,
        }
    }

    #[test]
    fn an_agent_assigned_after_hours_is_announced_to_the_customer() {
        let d = desk();
        let routed = AgentAction {
            agent: Some("ana".into()),
            at: NOW,
            kind: AgentActionKind::Routed {
                team: Some("support".into()),
            },
        };
        let texts = |c: &Conversation| -> Vec<String> {
            c.outbox
                .iter()
                .filter_map(|s| match &s.action {
                    SendAction::Message {
                        content: tandem_domain::OutboundContent::Text { body, .. },
                    } => Some(body.clone()),
                    _ => None,
                })
                .collect()
        };
        // Never open: the customer heard the away notice, so the assignment is said.
        let closed = bot("hours: {weekly: {}}\n");
        let mut c = handed_off();
        d.on_agent(
            &mut c,
            &routed,
            &env(Some(&closed)),
            &mut Effects::default(),
        );
        let said = texts(&c);
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("passing you to a person"), "{said:?}");
        // Without opening hours the handoff text was said at the handoff: nothing more.
        let open = bot("languages: [en]\n");
        let mut c = handed_off();
        d.on_agent(&mut c, &routed, &env(Some(&open)), &mut Effects::default());
        assert!(texts(&c).is_empty());
    }

    #[test]
    fn a_handoff_goes_to_the_default_team_and_a_phone_reply_uses_its_idle_time() {
        let d = desk();
        let mut c = handed_off();
        let mut out = Effects::default();
        d.on_handoff(&mut c, None, &mut out);
        assert_eq!(c.assignment().unwrap().team.as_deref(), Some("support"));
        assert_eq!(out.happenings[0].event, HookEvent::HandoffRequested);
        assert_eq!(out.notes, [Note::Handoff("customer_request")]);
        let echo = Echo {
            to: tandem_domain::Identity::default(),
            id: MessageId::parse("e1").unwrap(),
            sent_at: NOW,
            content: MessageContent::Text { body: "hi".into() },
        };
        // Ingress pauses by the rules the routing gives: the team's idle time.
        let rules = d.routing.pause_rules(Duration::from_secs(1800));
        c.record_echo(&echo, NOW, &rules, 50);
        d.on_echo(&mut c, NOW, &mut out);
        assert_eq!(
            c.resume_at(),
            Some(NOW.plus(Duration::from_secs(300))),
            "the team's 5m"
        );
        assert_eq!(c.handoff().unwrap().answered_at, Some(NOW));
        d.on_echo(&mut c, NOW, &mut out);
        let takeovers = out
            .happenings
            .iter()
            .filter(|h| h.event == HookEvent::HumanTakeover)
            .count();
        assert_eq!(takeovers, 1, "announced once per human stretch");
    }

    #[test]
    fn hook_jobs_go_to_interested_targets_with_ids_stable_across_recomputation() {
        let d = desk();
        let c = handed_off();
        let happenings = vec![
            Happening::new(HookEvent::HandoffRequested, json!({})),
            Happening::new(HookEvent::HumanTakeover, json!({"by": "phone"})),
        ];
        let jobs = d.hook_jobs(&c, None, happenings.clone(), NOW);
        let ids: Vec<_> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "evt_106:351_1_0.crm",
                "evt_106:351_1_1.crm",
                "evt_106:351_1_1.audit"
            ]
        );
        assert_eq!(jobs, d.hook_jobs(&c, None, happenings, NOW));
        let body: Value = serde_json::from_str(&jobs[2].body).unwrap();
        assert_eq!(body["by"], "phone");
        assert_eq!(body["id"], jobs[2].event_id);
    }

    #[test]
    fn the_router_late_choice_and_a_second_queue_notice_change_nothing() {
        let d = desk();
        let ctx = env(None);
        let mut c = handed_off();
        let mut out = Effects::default();
        let routed = |agent: &str| AgentAction {
            agent: Some(agent.into()),
            at: NOW,
            kind: AgentActionKind::Routed {
                team: Some("support".into()),
            },
        };
        d.on_agent(&mut c, &routed("ana"), &ctx, &mut out);
        assert_eq!(c.assignment().unwrap().agent.as_deref(), Some("ana"));
        let before = c.clone();
        d.on_agent(&mut c, &routed("rui"), &ctx, &mut out);
        assert_eq!(c, before, "already assigned: a stale choice is ignored");
        let queued = AgentAction {
            agent: None,
            at: NOW,
            kind: AgentActionKind::Queued {
                team: None,
                position: 1,
                wait_seconds: Some(60),
                next_opening: None,
            },
        };
        let mut waiting = handed_off();
        d.on_agent(&mut waiting, &queued, &ctx, &mut out);
        assert!(waiting.handoff().unwrap().queue_noted);
        let noted = waiting.clone();
        d.on_agent(&mut waiting, &queued, &ctx, &mut out);
        assert_eq!(waiting, noted);
    }
}
