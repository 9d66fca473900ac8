//! Coexistence link health: whether each business number is still linked to the WhatsApp
//! Business App on the phone, and what to do when it is at risk or gone.
//!
//! - [`advance`] (pure) decides a number's next state from its WABA's `account_update`
//!   events and the time since the phone was last seen: `ACCOUNT_OFFBOARDED` → off-boarded,
//!   `PARTNER_REMOVED` → disconnected (both hold the number's sends), `ACCOUNT_RECONNECTED` →
//!   linked; no phone activity for the heartbeat time → at risk (once), cleared by the next
//!   activity from the phone.
//! - [`Monitor`] runs it (one leader across processes), writes each change with its hooks
//!   (`number.disconnected`, `number.reconnected`, `number.at_risk`) in one guarded store
//!   write, sends the optional reminder template to the owner, and sets the gauges.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tandem_domain::{AccountUpdate, Clock, OutboundContent, Phone, Timestamp};
use tandem_handoff::{HookEvent, number_payload};
use tandem_store::{HookJob, Link, NumberState, Store, StoreError};
use tandem_whatsapp::{OutboundMessage, Recipient};
use tokio::sync::watch;

use crate::metrics;

/// A template sent to the business owner's own WhatsApp when a number turns at risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    /// The owner's WhatsApp number.
    pub to: Phone,
    /// The approved template's name.
    pub template: String,
    /// Its language code.
    pub language: String,
}

/// How link health is watched.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// No phone activity for this long turns a number at risk (default 11 days: the link
    /// drops after about 13 without the Business App being opened).
    pub heartbeat: Duration,
    /// How often numbers are looked at.
    pub tick: Duration,
    /// The reminder, when configured.
    pub reminder: Option<Reminder>,
    /// The send rate in force per number (`engine.send_rate`), shown with the state.
    pub send_rate: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(11 * 24 * 3600),
            tick: Duration::from_secs(5),
            reminder: None,
            send_rate: 20,
        }
    }
}

/// What [`advance`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Advance {
    /// The next state (equal to the input when nothing changed).
    pub state: NumberState,
    /// The hooks to fire, with their event-specific fields.
    pub events: Vec<(HookEvent, Value)>,
    /// True when the owner should be reminded now.
    pub remind: bool,
}

fn whole_days(d: Duration) -> u64 {
    d.as_secs() / 86_400
}

/// Decides a number's next state at `now` from its WABA's account events (oldest first; those
/// already applied are skipped) and its activity.
pub fn advance(
    state: &NumberState,
    events: &[AccountUpdate],
    now: Timestamp,
    config: &HealthConfig,
) -> Advance {
    let mut next = state.clone();
    let mut out = Vec::new();
    let mut seen_at = state.account_seen_at;
    let mut seen_count = state.account_seen_count;
    let mut at_same = 0u32;
    let mut previous_at = None;
    for event in events {
        at_same = if previous_at == Some(event.at) {
            at_same + 1
        } else {
            1
        };
        previous_at = Some(event.at);
        let new = match seen_at {
            None => true,
            Some(seen) => event.at > seen || (event.at == seen && at_same > seen_count),
        };
        if !new {
            continue;
        }
        if seen_at == Some(event.at) {
            seen_count += 1;
        } else {
            seen_at = Some(event.at);
            seen_count = 1;
        }
        let (link, reason) = match event.event.as_str() {
            "ACCOUNT_OFFBOARDED" => (Link::Offboarded, "ACCOUNT_OFFBOARDED".to_owned()),
            "PARTNER_REMOVED" => {
                let why = event.raw["disconnection_info"]["reason"]
                    .as_str()
                    .map_or_else(
                        || "PARTNER_REMOVED".to_owned(),
                        |r| format!("PARTNER_REMOVED: {r}"),
                    );
                (Link::Disconnected, why)
            }
            "ACCOUNT_RECONNECTED" if next.link.holds_sends() => {
                (Link::Linked, "ACCOUNT_RECONNECTED".to_owned())
            }
            _ => continue,
        };
        if next.link == link {
            continue;
        }
        let was_held = next.link.holds_sends();
        next.link = link;
        next.reason = Some(reason.clone());
        next.changed_at = now;
        next.reminded_at = None;
        let detail = json!({"reason": reason, "meta_event": event.event, "meta_value": event.raw});
        if link.holds_sends() && !was_held {
            out.push((HookEvent::NumberDisconnected, detail));
        } else if link == Link::Linked {
            out.push((HookEvent::NumberReconnected, detail));
        }
    }
    next.account_seen_at = seen_at;
    next.account_seen_count = seen_count;
    let mut remind = false;
    match next.link {
        Link::Linked => {
            let since = next
                .last_phone_at
                .map_or(next.changed_at, |p| p.max(next.changed_at));
            let quiet = now.since(since);
            if quiet >= config.heartbeat {
                next.link = Link::AtRisk;
                next.reason = Some(format!(
                    "no activity from the phone for {} days",
                    whole_days(quiet)
                ));
                next.changed_at = now;
                out.push((
                    HookEvent::NumberAtRisk,
                    json!({"days_since_phone_activity": whole_days(quiet)}),
                ));
                if config.reminder.is_some() && next.reminded_at.is_none() {
                    next.reminded_at = Some(now);
                    remind = true;
                }
            }
        }
        Link::AtRisk => {
            if next.last_phone_at.is_some_and(|p| p > next.changed_at) {
                next.link = Link::Linked;
                next.reason = None;
                next.changed_at = now;
                next.reminded_at = None;
            }
        }
        Link::Disconnected | Link::Offboarded => {}
    }
    Advance {
        state: next,
        events: out,
        remind,
    }
}

/// A number's state as the API and hooks show it; `send_rate` is the throughput in force.
pub fn number_view(n: &NumberState, now: Timestamp, send_rate: u32) -> Value {
    let since = n.last_phone_at.unwrap_or(n.first_seen_at);
    json!({
        "phone_number_id": n.phone_number_id.as_str(),
        "waba_id": n.waba_id,
        "state": n.link.as_str(),
        "reason": n.reason,
        "since": tandem_handoff::hooks::rfc3339(n.changed_at),
        "last_phone_activity_at": n.last_phone_at.map(tandem_handoff::hooks::rfc3339),
        "last_api_activity_at": n.last_api_at.map(tandem_handoff::hooks::rfc3339),
        "days_since_phone_activity": whole_days(now.since(since)),
        "sends_held": n.held_sends,
        "reminded_at": n.reminded_at.map(tandem_handoff::hooks::rfc3339),
        "send_rate": send_rate,
    })
}

/// Watches every number's link (one leader across processes).
#[derive(Debug)]
pub struct Monitor {
    store: Arc<dyn Store>,
    tenants: crate::tenants::Tenants,
    clock: Arc<dyn Clock>,
    config: HealthConfig,
    holder: String,
    links: crate::sender::LinkCache,
}

impl Monitor {
    /// Builds the monitor; each number's hooks and reminder are its tenant's.
    pub fn new(
        store: Arc<dyn Store>,
        tenants: crate::tenants::Tenants,
        clock: Arc<dyn Clock>,
        config: HealthConfig,
    ) -> Self {
        Self {
            store,
            tenants,
            clock,
            config,
            holder: crate::router::leader_name("health"),
            links: crate::sender::LinkCache::default(),
        }
    }

    /// Tells this process's sender at once when a number's sends must be held or may go.
    pub fn with_links(mut self, links: crate::sender::LinkCache) -> Self {
        self.links = links;
        self
    }

    /// Runs a round every tick while this process leads, until `stopped`.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lead_for = self
            .config
            .tick
            .saturating_mul(6)
            .max(Duration::from_secs(5));
        while !*stopped.borrow() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => break,
            }
            let now = self.clock.now();
            match self.store.lead("health", &self.holder, now, lead_for).await {
                Ok(true) => {
                    if let Err(error) = self.round(now).await {
                        ::metrics::counter!(metrics::ERRORS, "stage" => "health", "error_kind" => error.kind().as_str()).increment(1);
                        tracing::warn!(%error, "link health round failed");
                    }
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "link health leadership check failed"),
            }
        }
    }

    /// Looks at every number once.
    ///
    /// # Errors
    /// A store error; the next round tries again.
    pub async fn round(&self, now: Timestamp) -> Result<(), StoreError> {
        for number in self.store.numbers().await? {
            let events = match &number.waba_id {
                Some(waba) => self
                    .store
                    .account(waba)
                    .await?
                    .map(|a| a.events)
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let tenant = self.tenants.of_number(&number.phone_number_id).await;
            // The reminder is the tenant's own (its owner's phone, its template).
            let reminder = tenant.as_ref().and_then(|t| t.reminder.clone());
            let step = if reminder == self.config.reminder {
                advance(&number, &events, now, &self.config)
            } else {
                let config = HealthConfig {
                    reminder,
                    ..self.config.clone()
                };
                advance(&number, &events, now, &config)
            };
            let label = number.phone_number_id.to_string();
            let shown = &step.state;
            for link in Link::ALL {
                ::metrics::gauge!(metrics::NUMBER_STATE, "phone_number_id" => label.clone(), "state" => link.as_str())
                    .set(if shown.link == link { 1.0 } else { 0.0 });
            }
            let since = shown.last_phone_at.unwrap_or(shown.first_seen_at);
            ::metrics::gauge!(metrics::DAYS_SINCE_PHONE, "phone_number_id" => label.clone())
                .set(now.since(since).as_secs_f64() / 86_400.0);
            if step.state == number {
                continue;
            }
            let jobs = tenant
                .as_ref()
                .map(|t| self.jobs(t, &step, now))
                .unwrap_or_default();
            if !self.store.update_number(step.state.clone(), jobs).await? {
                // Changed meanwhile (another writer): decided again next round.
                continue;
            }
            self.links
                .set(&step.state.phone_number_id, step.state.link.holds_sends());
            for (event, _) in &step.events {
                tracing::warn!(number = %label, event = event.name(), reason = ?step.state.reason, "number link changed");
            }
            if step.remind
                && let Some(tenant) = &tenant
            {
                self.remind(tenant, &step.state).await;
            }
        }
        Ok(())
    }

    fn jobs(
        &self,
        tenant: &crate::tenants::Tenant,
        step: &Advance,
        now: Timestamp,
    ) -> Vec<HookJob> {
        let mut jobs = Vec::new();
        let view = number_view(&step.state, now, self.config.send_rate);
        for (i, (event, detail)) in step.events.iter().enumerate() {
            let event_id = format!(
                "evt_number_{}_{}_{i}",
                step.state.phone_number_id,
                step.state.rev + 1
            );
            let body =
                number_payload(*event, &event_id, view.clone(), detail.clone(), now).to_string();
            let targets = tenant.desk.hooks.targets_for(*event, None);
            jobs.extend(crate::desk::deliveries(
                &targets, *event, &event_id, &body, now,
            ));
        }
        jobs
    }

    /// Sends the reminder template to the owner from the at-risk number. At most once per
    /// at-risk stretch (the reminder time was written before sending).
    async fn remind(&self, tenant: &crate::tenants::Tenant, state: &NumberState) {
        let (Some(reminder), Some(graph)) = (&tenant.reminder, &tenant.graph) else {
            return;
        };
        let message = OutboundMessage {
            to: Recipient::Phone(reminder.to.clone()),
            content: OutboundContent::Template {
                name: reminder.template.clone(),
                language: reminder.language.clone(),
                body_parameters: Vec::new(),
            },
            reply_to: None,
            callback_data: Some(format!("tandem:reminder:{}", state.phone_number_id)),
        };
        match graph.send(&state.phone_number_id, &message).await {
            Ok(_) => {
                tracing::info!(number = %state.phone_number_id, "reminder to open the Business App sent")
            }
            Err(error) => {
                tracing::warn!(number = %state.phone_number_id, %error, "the reminder could not be sent")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::PhoneNumberId;

    const DAY: Duration = Duration::from_secs(86_400);
    const T0: Timestamp = Timestamp(1_767_603_600_000);

    fn number() -> NumberState {
        let mut n = NumberState::new(PhoneNumberId::parse("106").unwrap(), T0);
        n.waba_id = Some("104".into());
        n
    }

    fn event(name: &str, at: Timestamp) -> AccountUpdate {
        AccountUpdate {
            account: "104".into(),
            event: name.into(),
            at,
            raw: json!({"event": name, "disconnection_info": {"reason": "PRIMARY_INACTIVITY"}}),
        }
    }

    fn config(remind: bool) -> HealthConfig {
        HealthConfig {
            reminder: remind.then(|| Reminder {
                to: Phone::parse("351910000000").unwrap(),
                template: "open_the_app".into(),
                language: "en".into(),
            }),
            ..HealthConfig::default()
        }
    }

    #[test]
    fn off_boarding_and_removal_hold_sends_and_reconnection_resumes_once_each() {
        let now = T0.plus(DAY);
        let events = [
            event("ACCOUNT_OFFBOARDED", T0.plus(DAY / 2)),
            event("PARTNER_ADDED", T0.plus(DAY / 2)),
        ];
        let step = advance(&number(), &events, now, &config(false));
        assert_eq!(step.state.link, Link::Offboarded);
        assert_eq!(step.events.len(), 1);
        assert_eq!(step.events[0].0, HookEvent::NumberDisconnected);
        // The same events again change nothing.
        let again = advance(&step.state, &events, now, &config(false));
        assert_eq!(again.state, step.state);
        assert!(again.events.is_empty());
        // Removal while off-boarded: still held, the reason is Meta's, no second hook.
        let mut more = events.to_vec();
        more.push(event("PARTNER_REMOVED", T0.plus(DAY / 2)));
        let removed = advance(&step.state, &more, now, &config(false));
        assert_eq!(removed.state.link, Link::Disconnected);
        assert_eq!(
            removed.state.reason.as_deref(),
            Some("PARTNER_REMOVED: PRIMARY_INACTIVITY")
        );
        assert!(
            removed.events.is_empty(),
            "already announced as disconnected"
        );
        more.push(event("ACCOUNT_RECONNECTED", T0.plus(DAY)));
        let back = advance(&removed.state, &more, now, &config(false));
        assert_eq!(back.state.link, Link::Linked);
        assert_eq!(back.events[0].0, HookEvent::NumberReconnected);
        assert!(
            advance(&back.state, &more, now, &config(false))
                .events
                .is_empty()
        );
    }

    #[test]
    fn the_heartbeat_turns_a_quiet_number_at_risk_once_and_phone_activity_clears_it() {
        let cfg = config(true);
        let mut n = number();
        n.last_phone_at = Some(T0);
        let early = advance(&n, &[], T0.plus(cfg.heartbeat - DAY), &cfg);
        assert_eq!(early.state, n);
        let due = T0.plus(cfg.heartbeat);
        let risk = advance(&n, &[], due, &cfg);
        assert_eq!(risk.state.link, Link::AtRisk);
        assert_eq!(risk.events.len(), 1);
        assert_eq!(risk.events[0].1["days_since_phone_activity"], 11);
        assert!(risk.remind);
        let later = advance(&risk.state, &[], due.plus(DAY), &cfg);
        assert_eq!(later.state, risk.state, "announced and reminded once");
        let mut seen = risk.state.clone();
        seen.last_phone_at = Some(due.plus(DAY));
        let cleared = advance(&seen, &[], due.plus(DAY * 2), &cfg);
        assert_eq!(cleared.state.link, Link::Linked);
        assert!(cleared.state.reminded_at.is_none());
        assert!(!advance(&number(), &[], T0.plus(cfg.heartbeat), &config(false)).remind);
    }
}
