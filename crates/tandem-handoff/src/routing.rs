//! Teams, agents and routing rules from the configuration (`[handoff]` in `tandem.toml`),
//! validated once at start-up, and the two decisions made with them: which team a handoff
//! goes to ([`Routing::team_for`]) and which agent the router gives a waiting conversation to
//! ([`Routing::pick`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::Deserialize;
use tandem_domain::{AgentId, TeamId, Timestamp};
use tandem_flows::hours::Hours;

/// How the router chooses among the agents of a team who can take a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The agent who last served this customer when they can take it; otherwise least busy.
    #[default]
    Sticky,
    /// The agent who was given a conversation longest ago.
    RoundRobin,
    /// The agent with the fewest open conversations (ties: round robin).
    LeastBusy,
}

/// `[handoff]` as written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// The team used when no rule matches and the flow named none.
    #[serde(default)]
    pub default_team: Option<TeamId>,
    /// An agent's take-over (or message through the API) keeps the bot paused this long
    /// after the last human activity, unless released or closed before.
    #[serde(default = "default_takeover_cap", with = "humantime_serde")]
    pub takeover_cap: Duration,
    /// The typical time one agent needs per conversation, for wait estimates.
    #[serde(default = "default_handle_time", with = "humantime_serde")]
    pub handle_time: Duration,
    /// The teams.
    #[serde(default)]
    pub teams: Vec<TeamConfig>,
    /// The agents.
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Rules choosing a team, first match wins.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_team: None,
            takeover_cap: default_takeover_cap(),
            handle_time: default_handle_time(),
            teams: Vec::new(),
            agents: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// How long an agent's take-over or message holds the pause at least, unless configured.
pub const DEFAULT_TAKEOVER_CAP: Duration = Duration::from_secs(24 * 3600);

fn default_takeover_cap() -> Duration {
    DEFAULT_TAKEOVER_CAP
}

fn default_handle_time() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_capacity() -> u32 {
    5
}

/// `[[handoff.teams]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    /// The team's id, as flows and rules name it.
    pub id: TeamId,
    /// How agents are chosen.
    #[serde(default)]
    pub strategy: Strategy,
    /// Overrides `engine.human_idle` for this team's conversations.
    #[serde(default, with = "humantime_serde")]
    pub human_idle: Option<Duration>,
    /// The team's time zone (IANA name), for its hours.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Weekly hours: `mon = ["09:00-18:00"]`; none means always.
    #[serde(default)]
    pub hours: BTreeMap<String, Vec<String>>,
    /// Holidays (`YYYY-MM-DD`).
    #[serde(default)]
    pub closed: Vec<String>,
}

/// `[[handoff.agents]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's id (used by the API and in hooks).
    pub id: AgentId,
    /// A display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The teams the agent works in.
    #[serde(default)]
    pub teams: Vec<TeamId>,
    /// Skills rules can ask for.
    #[serde(default)]
    pub skills: Vec<String>,
    /// Languages the agent writes; empty means any.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Open conversations the agent takes at most.
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// The agent's time zone; default: their first team's.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Weekly hours; none means the team's hours.
    #[serde(default)]
    pub hours: BTreeMap<String, Vec<String>>,
    /// Days off (`YYYY-MM-DD`).
    #[serde(default)]
    pub closed: Vec<String>,
}

/// `[[handoff.rules]]`: every condition given must hold (a list means any of its values).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The team to route to.
    pub team: TeamId,
    /// The flow or LLM intent.
    #[serde(default)]
    pub intent: Vec<String>,
    /// The conversation's language.
    #[serde(default)]
    pub language: Vec<String>,
    /// The LLM's urgency (`low`, `normal`, `high`).
    #[serde(default)]
    pub urgency: Vec<tandem_domain::Urgency>,
    /// The handoff reason (`customer_request`, `fallback`, `flow:returns`, `needs_human`…).
    #[serde(default)]
    pub reason: Vec<String>,
    /// The handoff priority (`low`, `normal`, `high`, `urgent`).
    #[serde(default)]
    pub priority: Vec<tandem_domain::Priority>,
    /// Contact tags (the flow variable `tags`, or `vip` when the variable `vip` is true).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Skills the agent must have.
    #[serde(default)]
    pub skills: Vec<String>,
}

/// A schedule in a time zone.
#[derive(Debug, Clone)]
struct Schedule {
    tz: TimeZone,
    hours: Hours,
}

impl Schedule {
    fn parse(
        at: &str,
        tz: Option<&str>,
        hours: &BTreeMap<String, Vec<String>>,
        closed: &[String],
        errors: &mut Vec<String>,
    ) -> Option<Self> {
        if hours.is_empty() && closed.is_empty() {
            return None;
        }
        let tz = match tz {
            Some(name) => match TimeZone::get(name) {
                Ok(tz) => tz,
                Err(_) => {
                    errors.push(format!(
                        "{at}.timezone: unknown time zone `{name}` (use an IANA name such as Europe/Lisbon)"
                    ));
                    return None;
                }
            },
            None => {
                errors.push(format!(
                    "{at}.timezone: hours need a time zone (such as Europe/Lisbon)"
                ));
                return None;
            }
        };
        match Hours::from_spec(hours, closed) {
            Ok(hours) => Some(Self { tz, hours }),
            Err(problem) => {
                errors.push(format!("{at}.hours: {problem}"));
                None
            }
        }
    }

    fn is_open(&self, now: Timestamp) -> bool {
        self.hours.is_open(now, &self.tz)
    }

    fn next_opening(&self, now: Timestamp) -> Option<jiff::Zoned> {
        self.hours.next_opening(now, &self.tz)
    }
}

/// A validated team.
#[derive(Debug, Clone)]
pub struct Team {
    /// The id.
    pub id: TeamId,
    /// How agents are chosen.
    pub strategy: Strategy,
    /// The team's idle time before the bot resumes, when set.
    pub human_idle: Option<Duration>,
    schedule: Option<Schedule>,
}

/// A validated agent.
#[derive(Debug, Clone)]
pub struct Agent {
    /// The id.
    pub id: AgentId,
    /// The display name (the id when none was given).
    pub name: String,
    /// Teams.
    pub teams: Vec<TeamId>,
    /// Skills.
    pub skills: Vec<String>,
    /// Languages; empty means any.
    pub languages: Vec<String>,
    /// Open conversations at most.
    pub capacity: u32,
    schedule: Option<Schedule>,
}

/// The routing policy in force.
#[derive(Debug, Clone)]
pub struct Routing {
    /// The team used when nothing else names one.
    pub default_team: Option<TeamId>,
    /// How long an agent's take-over holds the pause after the last human activity.
    pub takeover_cap: Duration,
    /// Typical handling time per conversation, for wait estimates.
    pub handle_time: Duration,
    teams: Vec<Team>,
    agents: Vec<Agent>,
    rules: Vec<RuleConfig>,
}

impl Default for Routing {
    /// No teams, agents or rules, with the default take-over cap and handling time.
    fn default() -> Self {
        Self {
            default_team: None,
            takeover_cap: DEFAULT_TAKEOVER_CAP,
            handle_time: default_handle_time(),
            teams: Vec::new(),
            agents: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// What a routing rule looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The flow or LLM intent, when known.
    pub intent: Option<&'a str>,
    /// The conversation's language, when known.
    pub language: Option<&'a str>,
    /// The LLM's urgency, when triaged.
    pub urgency: Option<tandem_domain::Urgency>,
    /// The handoff reason.
    pub reason: &'a str,
    /// The handoff priority.
    pub priority: tandem_domain::Priority,
    /// The contact's tags.
    pub tags: &'a [String],
    /// The team the flow asked for.
    pub requested_team: Option<&'a str>,
}

/// The router's answer for one waiting conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Give it to this agent.
    Agent(AgentId),
    /// Nobody can take it now.
    Wait {
        /// Agents of the team on duty now (online and in hours), all at capacity.
        on_duty: usize,
        /// When someone is next on duty, when nobody is now ("Monday 09:00").
        next_opening: Option<String>,
    },
}

/// What the router knows about one agent besides the configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentLoad {
    /// False when the agent set themselves away or offline.
    pub available: bool,
    /// Open conversations assigned to the agent.
    pub open: u32,
    /// When the agent was last given a conversation.
    pub last_assigned_at: Option<Timestamp>,
}

/// A conversation the router looks for an agent for.
#[derive(Debug, Clone, Copy)]
pub struct Seeker<'a> {
    /// The team it waits for (`None`: any agent).
    pub team: Option<&'a str>,
    /// Skills the agent must have.
    pub skills: &'a [String],
    /// The conversation's language, when known.
    pub language: Option<&'a str>,
    /// The agent who last served this customer.
    pub last_agent: Option<&'a str>,
}

fn matches<T: PartialEq<F>, F>(values: &[T], fact: Option<F>) -> bool {
    values.is_empty() || fact.is_some_and(|f| values.iter().any(|v| *v == f))
}

impl Routing {
    /// Validates the configuration.
    ///
    /// # Errors
    /// Returns every problem, each naming its key (`handoff.agents[1].timezone: …`).
    pub fn new(config: RoutingConfig) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut teams = Vec::new();
        for (i, t) in config.teams.iter().enumerate() {
            let at = format!("handoff.teams[{i}]");
            if t.id.trim().is_empty() {
                errors.push(format!("{at}.id: must not be empty"));
            }
            if teams.iter().any(|x: &Team| x.id == t.id) {
                errors.push(format!("{at}.id: `{}` is defined twice", t.id));
            }
            teams.push(Team {
                id: t.id.clone(),
                strategy: t.strategy,
                human_idle: t.human_idle,
                schedule: Schedule::parse(
                    &at,
                    t.timezone.as_deref(),
                    &t.hours,
                    &t.closed,
                    &mut errors,
                ),
            });
        }
        let known = |team: &str| teams.iter().any(|t| t.id == team);
        let mut agents: Vec<Agent> = Vec::new();
        for (i, a) in config.agents.iter().enumerate() {
            let at = format!("handoff.agents[{i}]");
            if a.id.trim().is_empty() {
                errors.push(format!("{at}.id: must not be empty"));
            }
            if agents.iter().any(|x| x.id == a.id) {
                errors.push(format!("{at}.id: `{}` is defined twice", a.id));
            }
            for team in &a.teams {
                if !known(team) {
                    errors.push(format!(
                        "{at}.teams: unknown team `{team}` (define it under [[handoff.teams]])"
                    ));
                }
            }
            if a.capacity == 0 {
                errors.push(format!("{at}.capacity: must be at least 1"));
            }
            let team_tz = a
                .teams
                .iter()
                .find_map(|id| config.teams.iter().find(|t| &t.id == id))
                .and_then(|t| t.timezone.as_deref());
            agents.push(Agent {
                id: a.id.clone(),
                name: a.name.clone().unwrap_or_else(|| a.id.to_string()),
                teams: a.teams.clone(),
                skills: a.skills.clone(),
                languages: a.languages.clone(),
                capacity: a.capacity,
                schedule: Schedule::parse(
                    &at,
                    a.timezone.as_deref().or(team_tz),
                    &a.hours,
                    &a.closed,
                    &mut errors,
                ),
            });
        }
        for (i, r) in config.rules.iter().enumerate() {
            if !known(&r.team) {
                errors.push(format!(
                    "handoff.rules[{i}].team: unknown team `{}` (define it under [[handoff.teams]])",
                    r.team
                ));
            }
        }
        if let Some(team) = &config.default_team
            && !known(team)
        {
            errors.push(format!(
                "handoff.default_team: unknown team `{team}` (define it under [[handoff.teams]])"
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            default_team: config.default_team,
            takeover_cap: config.takeover_cap,
            handle_time: config.handle_time,
            teams,
            agents,
            rules: config.rules,
        })
    }

    /// Returns how long a person's silence pauses the bot: `human_idle` for every team
    /// without an idle time of its own, and `takeover_cap` after an API take-over.
    pub fn pause_rules(&self, human_idle: Duration) -> tandem_domain::PauseRules {
        self.teams.iter().fold(
            tandem_domain::PauseRules::new(human_idle, self.takeover_cap),
            |rules, team| match team.human_idle {
                Some(idle) => rules.with_team_idle(team.id.clone(), idle),
                None => rules,
            },
        )
    }

    /// Returns the configured team with this id.
    pub fn team(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    /// Returns the configured agent with this id.
    pub fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// Returns the ids of the configured teams.
    pub fn team_ids(&self) -> impl Iterator<Item = &str> {
        self.teams.iter().map(|t| t.id.as_str())
    }

    /// Returns every configured agent.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// Returns true when agents are configured, so the router has work.
    pub fn routes(&self) -> bool {
        !self.agents.is_empty()
    }

    /// Chooses the team of a handoff and the skills its agent needs: the first rule that
    /// matches, else the team the flow asked for, else the default team.
    pub fn team_for(&self, facts: &Facts<'_>) -> (Option<TeamId>, Vec<String>) {
        for rule in &self.rules {
            let tagged = rule.tags.is_empty() || rule.tags.iter().any(|t| facts.tags.contains(t));
            if matches(&rule.intent, facts.intent)
                && matches(&rule.language, facts.language)
                && matches(&rule.urgency, facts.urgency)
                && matches(&rule.reason, Some(facts.reason))
                && matches(&rule.priority, Some(facts.priority))
                && tagged
            {
                return (Some(rule.team.clone()), rule.skills.clone());
            }
        }
        let team = facts
            .requested_team
            .map(TeamId::from)
            .or_else(|| self.default_team.clone());
        (team, Vec::new())
    }

    fn on_duty(&self, agent: &Agent, team: Option<&Team>, now: Timestamp) -> bool {
        match (&agent.schedule, team.and_then(|t| t.schedule.as_ref())) {
            (Some(own), _) => own.is_open(now),
            (None, Some(team)) => team.is_open(now),
            (None, None) => true,
        }
    }

    /// Picks the agent for a waiting conversation, or says why nobody can take it.
    /// Eligible agents work in the team, are available (online), on duty by their schedule
    /// (or the team's), write the conversation's language, have the skills, and are below
    /// capacity.
    pub fn pick(
        &self,
        seeker: &Seeker<'_>,
        loads: &HashMap<AgentId, AgentLoad>,
        now: Timestamp,
    ) -> Pick {
        let team = seeker.team.and_then(|t| self.team(t));
        let members: Vec<&Agent> = self
            .agents
            .iter()
            .filter(|a| seeker.team.is_none_or(|t| a.teams.iter().any(|x| x == t)))
            .filter(|a| seeker.skills.iter().all(|s| a.skills.contains(s)))
            .filter(|a| {
                a.languages.is_empty()
                    || seeker
                        .language
                        .is_none_or(|l| a.languages.iter().any(|x| x == l))
            })
            .collect();
        let load = |a: &Agent| {
            loads.get(&a.id).copied().unwrap_or(AgentLoad {
                available: true,
                ..AgentLoad::default()
            })
        };
        let on_duty: Vec<&Agent> = members
            .iter()
            .copied()
            .filter(|a| load(a).available && self.on_duty(a, team, now))
            .collect();
        let free: Vec<&Agent> = on_duty
            .iter()
            .copied()
            .filter(|a| load(a).open < a.capacity)
            .collect();
        if free.is_empty() {
            let next_opening = if on_duty.is_empty() {
                members
                    .iter()
                    .filter(|a| load(a).available)
                    .filter_map(|a| {
                        a.schedule
                            .as_ref()
                            .or(team.and_then(|t| t.schedule.as_ref()))
                            .and_then(|s| s.next_opening(now))
                    })
                    .min_by_key(jiff::Zoned::timestamp)
                    .map(|z| z.strftime("%A %H:%M").to_string())
            } else {
                None
            };
            return Pick::Wait {
                on_duty: on_duty.len(),
                next_opening,
            };
        }
        let strategy = team.map_or(Strategy::Sticky, |t| t.strategy);
        if strategy == Strategy::Sticky
            && let Some(last) = seeker.last_agent
            && let Some(agent) = free.iter().find(|a| a.id == last)
        {
            return Pick::Agent(agent.id.clone());
        }
        let by_turn = |a: &Agent| {
            (
                load(a).last_assigned_at.map_or(0, Timestamp::as_millis),
                a.id.clone(),
            )
        };
        let chosen = match strategy {
            Strategy::RoundRobin => free.iter().min_by_key(|a| by_turn(a)),
            Strategy::LeastBusy | Strategy::Sticky => {
                free.iter().min_by_key(|a| (load(a).open, by_turn(a)))
            }
        };
        chosen.map_or(
            Pick::Wait {
                on_duty: on_duty.len(),
                next_opening: None,
            },
            |a| Pick::Agent(a.id.clone()),
        )
    }

    /// Estimates how long the conversation at `position` (from 1) of a queue waits when
    /// `on_duty` agents serve it.
    pub fn wait_estimate(&self, position: usize, on_duty: usize) -> Duration {
        let rounds = position.div_ceil(on_duty.max(1));
        self.handle_time
            .saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONDAY_9H_LISBON: Timestamp = Timestamp(1_767_603_600_000); // 2026-01-05 09:00 UTC

    fn config(toml_like: serde_json::Value) -> Routing {
        let config: RoutingConfig = serde_json::from_value(toml_like).unwrap();
        Routing::new(config).unwrap()
    }

    fn shop() -> Routing {
        config(serde_json::json!({
            "default_team": "support",
            "teams": [
                {"id": "support", "strategy": "least_busy", "timezone": "Europe/Lisbon",
                 "hours": {"mon": ["09:00-18:00"]}},
                {"id": "vip", "strategy": "round_robin"},
                {"id": "sales", "strategy": "sticky"}
            ],
            "agents": [
                {"id": "ana", "teams": ["support", "sales"], "languages": ["en", "pt"], "capacity": 2},
                {"id": "rui", "teams": ["support", "sales"], "languages": ["pt"], "capacity": 1, "skills": ["returns"]},
                {"id": "eva", "teams": ["vip"]},
                {"id": "joe", "teams": ["vip"]}
            ],
            "rules": [
                {"team": "vip", "tags": ["vip"]},
                {"team": "support", "intent": ["returns"], "skills": ["returns"]}
            ]
        }))
    }

    fn loads(entries: &[(&str, bool, u32, Option<u64>)]) -> HashMap<AgentId, AgentLoad> {
        entries
            .iter()
            .map(|(id, available, open, last)| {
                (
                    AgentId::from(*id),
                    AgentLoad {
                        available: *available,
                        open: *open,
                        last_assigned_at: last.map(Timestamp),
                    },
                )
            })
            .collect()
    }

    fn seeker<'a>(team: &'a str, language: Option<&'a str>) -> Seeker<'a> {
        Seeker {
            team: Some(team),
            skills: &[],
            language,
            last_agent: None,
        }
    }

    #[test]
    fn rules_pick_the_team_before_the_flow_and_the_default() {
        let r = shop();
        let vip = ["vip".to_owned()];
        let facts = Facts {
            reason: "customer_request",
            priority: tandem_domain::Priority::Normal,
            tags: &vip,
            requested_team: Some("sales"),
            ..Facts::default()
        };
        assert_eq!(r.team_for(&facts).0.as_deref(), Some("vip"));
        let plain = Facts { tags: &[], ..facts };
        assert_eq!(r.team_for(&plain).0.as_deref(), Some("sales"));
        let none = Facts {
            requested_team: None,
            ..plain
        };
        assert_eq!(r.team_for(&none).0.as_deref(), Some("support"));
        let returns = Facts {
            intent: Some("returns"),
            ..none
        };
        assert_eq!(
            r.team_for(&returns),
            (Some("support".into()), vec!["returns".into()])
        );
    }

    #[test]
    fn least_busy_within_capacity_language_and_hours() {
        let r = shop();
        let now = MONDAY_9H_LISBON;
        // Ana has one of two, Rui none of one: Rui is least busy, but writes only Portuguese.
        let l = loads(&[("ana", true, 1, None), ("rui", true, 0, None)]);
        assert_eq!(
            r.pick(&seeker("support", Some("pt")), &l, now),
            Pick::Agent("rui".into())
        );
        assert_eq!(
            r.pick(&seeker("support", Some("en")), &l, now),
            Pick::Agent("ana".into())
        );
        // Both full: wait, with both on duty.
        let full = loads(&[("ana", true, 2, None), ("rui", true, 1, None)]);
        assert_eq!(
            r.pick(&seeker("support", None), &full, now),
            Pick::Wait {
                on_duty: 2,
                next_opening: None
            }
        );
        // Out of the team's hours: nobody on duty, and the next opening is said.
        let evening = now.plus(Duration::from_secs(10 * 3600));
        assert_eq!(
            r.pick(&seeker("support", None), &l, evening),
            Pick::Wait {
                on_duty: 0,
                next_opening: Some("Monday 09:00".into())
            }
        );
        // Away agents take nothing.
        let away = loads(&[("ana", false, 0, None), ("rui", false, 0, None)]);
        assert!(matches!(
            r.pick(&seeker("support", None), &away, now),
            Pick::Wait { on_duty: 0, .. }
        ));
    }

    #[test]
    fn round_robin_takes_turns_and_sticky_returns_to_the_last_agent() {
        let r = shop();
        let now = MONDAY_9H_LISBON;
        let l = loads(&[("eva", true, 0, Some(5)), ("joe", true, 3, Some(2))]);
        assert_eq!(
            r.pick(&seeker("vip", None), &l, now),
            Pick::Agent("joe".into())
        );
        let l = loads(&[("ana", true, 1, None), ("rui", true, 0, None)]);
        let sticky = Seeker {
            last_agent: Some("ana"),
            ..seeker("sales", None)
        };
        assert_eq!(r.pick(&sticky, &l, now), Pick::Agent("ana".into()));
        // The last agent is full: the least busy one instead.
        let l = loads(&[("ana", true, 2, None), ("rui", true, 0, None)]);
        assert_eq!(r.pick(&sticky, &l, now), Pick::Agent("rui".into()));
    }

    #[test]
    fn skills_narrow_the_agents() {
        let r = shop();
        let returns = ["returns".to_owned()];
        let s = Seeker {
            skills: &returns,
            ..seeker("support", None)
        };
        let l = loads(&[("ana", true, 0, None), ("rui", true, 0, Some(9))]);
        assert_eq!(r.pick(&s, &l, MONDAY_9H_LISBON), Pick::Agent("rui".into()));
    }

    #[test]
    fn configuration_errors_name_their_key() {
        let config: RoutingConfig = serde_json::from_value(serde_json::json!({
            "default_team": "nope",
            "teams": [{"id": "a", "hours": {"mon": ["9-5"]}}],
            "agents": [{"id": "x", "teams": ["b"], "capacity": 0}],
            "rules": [{"team": "c"}]
        }))
        .unwrap();
        let errors = Routing::new(config).unwrap_err();
        let text = errors.join("\n");
        for expected in [
            "handoff.teams[0].timezone: hours need a time zone",
            "handoff.agents[0].teams: unknown team `b`",
            "handoff.agents[0].capacity: must be at least 1",
            "handoff.rules[0].team: unknown team `c`",
            "handoff.default_team: unknown team `nope`",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn wait_estimates_grow_with_the_position_and_shrink_with_agents() {
        let r = shop();
        let five = Duration::from_secs(300);
        assert_eq!(r.wait_estimate(1, 2), five);
        assert_eq!(r.wait_estimate(3, 2), five * 2);
        assert_eq!(r.wait_estimate(3, 0), five * 3);
    }
}
