//! When a person's activity pauses the bot, and when the bot resumes: the one definition.
//!
//! Ingress applies a pause before it answers the webhook or API call (a person's echo, an
//! agent's take-over or message); the lane applies the pause of recent history and the idle
//! check that resumes the bot; the sandbox does both the same way. All of them ask
//! [`PauseRules`] how long a pause holds.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::conversation::{Conversation, PausedBy};

/// How long a person's activity keeps the bot paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseRules {
    /// After a person's last message, unless the conversation's team says otherwise.
    pub human_idle: Duration,
    /// Teams with their own idle time.
    pub team_idle: BTreeMap<String, Duration>,
    /// At least this long after an agent's take-over or message through the API.
    pub takeover_cap: Duration,
}

impl PauseRules {
    /// Rules with one idle time for every team.
    pub fn new(human_idle: Duration, takeover_cap: Duration) -> Self {
        Self {
            human_idle,
            team_idle: BTreeMap::new(),
            takeover_cap,
        }
    }

    /// Gives `team`'s conversations their own idle time.
    #[must_use]
    pub fn with_team_idle(mut self, team: impl Into<String>, idle: Duration) -> Self {
        self.team_idle.insert(team.into(), idle);
        self
    }

    /// How long the bot stays paused after a person's last message in `c`: its team's idle
    /// time, else the default.
    pub fn idle_for(&self, c: &Conversation) -> Duration {
        c.assignment()
            .and_then(|a| a.team.as_deref())
            .and_then(|team| self.team_idle.get(team))
            .copied()
            .unwrap_or(self.human_idle)
    }

    /// How long activity of `by` holds the pause in `c`: an agent's action through the API
    /// for the take-over cap, anything else (a phone echo, recent history) for the idle time.
    pub fn hold(&self, by: PausedBy, c: &Conversation) -> Duration {
        match by {
            PausedBy::AgentApi => self.takeover_cap,
            PausedBy::Echo | PausedBy::Handoff | PausedBy::History => self.idle_for(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConversationId, Mode, Timestamp};

    #[test]
    fn the_team_idle_time_holds_the_pause_and_an_api_take_over_holds_the_cap() {
        let rules = PauseRules::new(Duration::from_secs(1800), Duration::from_secs(7200))
            .with_team_idle("support", Duration::from_secs(300));
        let mut c = Conversation::new(ConversationId::parse("1:2").unwrap(), Timestamp(0));
        assert_eq!(rules.idle_for(&c), Duration::from_secs(1800));
        c.request_handoff(crate::HandoffRequest {
            team: Some("support".into()),
            reason: crate::HandoffReason::CustomerRequest,
            priority: crate::Priority::Normal,
            at: Timestamp(0),
            answered_at: None,
            queue_noted: false,
            summary: None,
        });
        c.assign(Some("support".into()), None, Timestamp(0));
        c.record_human_activity(PausedBy::Echo, Timestamp(1_000), &rules);
        assert_eq!(c.mode(), Mode::Human);
        assert_eq!(
            c.resume_at(),
            Some(Timestamp(301_000)),
            "the team's 5 minutes"
        );
        c.record_human_activity(PausedBy::AgentApi, Timestamp(2_000), &rules);
        assert_eq!(
            c.resume_at(),
            Some(Timestamp(7_202_000)),
            "the take-over cap, counted from the latest activity"
        );
        c.record_human_activity(PausedBy::Echo, Timestamp(3_000), &rules);
        assert_eq!(
            c.resume_at(),
            Some(Timestamp(7_202_000)),
            "a later echo never shortens the pause"
        );
    }
}
