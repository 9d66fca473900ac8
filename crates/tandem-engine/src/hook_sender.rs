//! Delivers the hook outbox: takes due deliveries from the store (held for a lease, so a
//! crashed process's deliveries are offered again), POSTs each signed body to its target, and
//! settles it: delivered on 2xx, retried with exponential backoff and jitter otherwise, and
//! moved to the hook dead-letter list after `hook_attempts`. Deliveries run concurrently, so a
//! slow or dead receiver holds up only its own deliveries, never a conversation. A receiver
//! may answer a conversation hook with an action (`{"action": "release"}`), stored like an
//! agent API call and deduplicated by the event, so a redelivery acts once.

use std::sync::Arc;
use std::time::Duration;

use tandem_domain::Clock;
use tandem_handoff::sign;
use tandem_store::{HookJob, HookSettle, Store};
use tokio::sync::{Notify, Semaphore, watch};

use crate::config::EngineConfig;
use crate::metrics;

/// Deliveries taken per look.
const BATCH: usize = 64;
/// Deliveries in flight at once.
const IN_FLIGHT: usize = 32;
/// How often the outbox is looked at without a signal (retries come due, other replicas).
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// The longest delay between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// The longest answer read from a receiver (an action is a few bytes).
const MAX_REPLY: usize = 64 * 1024;

/// Reads an action a receiver answered a conversation hook with: `{"action": "release" |
/// "close" | "takeover" | "assign", "agent"?: "...", "team"?: "..."}`. Anything else (an
/// empty or other answer, a number event) is no action.
fn reply_action(
    hook_body: &str,
    answer: &[u8],
    now: tandem_domain::Timestamp,
) -> Option<(tandem_domain::ConversationId, tandem_domain::AgentAction)> {
    use tandem_domain::{AgentAction, AgentActionKind, ConversationId};
    let answer: serde_json::Value = serde_json::from_slice(answer).ok()?;
    let hook: serde_json::Value = serde_json::from_str(hook_body).ok()?;
    let conversation = ConversationId::parse(hook["conversation"]["id"].as_str()?).ok()?;
    let text = |key: &str| answer[key].as_str().map(str::to_owned);
    let kind = match answer["action"].as_str()? {
        "release" => AgentActionKind::Release,
        "close" => AgentActionKind::Close,
        "takeover" => AgentActionKind::Takeover,
        "assign" if text("agent").is_some() || text("team").is_some() => AgentActionKind::Assign {
            team: text("team").map(Into::into),
        },
        _ => return None,
    };
    Some((
        conversation,
        AgentAction {
            agent: text("agent").map(Into::into),
            at: now,
            kind,
        },
    ))
}

/// The hook deliverer of one process.
#[derive(Debug, Clone)]
pub struct HookSender {
    store: Arc<dyn Store>,
    tenants: crate::tenants::Tenants,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    ingress: Option<crate::ingress::Ingress>,
}

impl HookSender {
    /// Lets receivers act on a conversation in their answer (stored through `ingress`, like
    /// an agent API call).
    pub fn with_replies(mut self, ingress: crate::ingress::Ingress) -> Self {
        self.ingress = Some(ingress);
        self
    }

    /// Builds a deliverer for the hook targets of `tenants`.
    pub fn new(
        store: Arc<dyn Store>,
        tenants: crate::tenants::Tenants,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Self {
        Self {
            store,
            tenants,
            http,
            clock,
            config,
            ingress: None,
        }
    }

    /// Runs until `stopped` turns true, waking on `ready` and every [`LOOK_EVERY`].
    pub async fn run(self, ready: Arc<Notify>, mut stopped: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let lease = self.config.hook_timeout.saturating_mul(2) + Duration::from_secs(5);
        while !*stopped.borrow() {
            let notified = ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = self.clock.now();
            let room = slots.available_permits().min(BATCH);
            let jobs = if room == 0 {
                Vec::new()
            } else {
                match self.store.due_hooks(now, room, lease).await {
                    Ok(jobs) => jobs,
                    Err(error) => {
                        ::metrics::counter!(metrics::ERRORS, "stage" => "hooks", "error_kind" => error.kind().as_str()).increment(1);
                        tracing::warn!(%error, "reading the hook outbox failed");
                        Vec::new()
                    }
                }
            };
            let took = jobs.len();
            for job in jobs {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.deliver(job).await;
                    drop(permit);
                });
            }
            if took == room && room > 0 {
                continue;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(LOOK_EVERY) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Makes one attempt and settles it.
    async fn deliver(&self, job: HookJob) {
        let started = std::time::Instant::now();
        let result = self.attempt(&job).await;
        ::metrics::histogram!(metrics::HOOK_SECONDS).record(started.elapsed().as_secs_f64());
        let now = self.clock.now();
        let settle = match result {
            Ok(()) => HookSettle::Delivered,
            Err(error) if job.attempts + 1 >= self.config.hook_attempts => {
                tracing::warn!(hook = %job.id, target = %job.target, %error, "hook delivery given up: dead-lettered");
                HookSettle::Dead { error }
            }
            Err(error) => {
                let due = now.plus(self.backoff(job.attempts + 1));
                tracing::info!(hook = %job.id, target = %job.target, %error, "hook delivery will be retried");
                HookSettle::Retry { due, error }
            }
        };
        let outcome = match &settle {
            HookSettle::Delivered => "delivered",
            HookSettle::Retry { .. } => "retry",
            HookSettle::Dead { .. } => "dead",
        };
        let tenant = crate::tenants::Tenants::tenant_of_hook(&job.target).to_owned();
        ::metrics::counter!(metrics::HOOK_DELIVERIES, "event" => event_label(&job.event), "outcome" => outcome, "tenant" => tenant)
            .increment(1);
        if let Err(error) = self.store.settle_hook(&job, settle, now).await {
            // Offered again when its lease runs out: at least once.
            tracing::warn!(hook = %job.id, %error, "recording a hook delivery failed");
        }
    }

    async fn attempt(&self, job: &HookJob) -> Result<(), String> {
        let Some(target) = self.tenants.hook_target(&job.target) else {
            return Err(format!(
                "hook target `{}` is no longer configured",
                job.target
            ));
        };
        let timestamp = self.clock.now().as_millis() / 1000;
        let signature = sign(&target.secret, timestamp, job.body.as_bytes());
        let response = self
            .http
            .post(&target.url)
            .timeout(self.config.hook_timeout)
            .header("content-type", "application/json")
            .header("x-tandem-event", &job.event)
            .header("x-tandem-timestamp", timestamp.to_string())
            .header("x-tandem-signature", signature)
            .header("idempotency-key", &job.event_id)
            .header("x-tandem-attempt", (job.attempts + 1).to_string())
            .body(job.body.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.config.hook_timeout)
                    )
                } else {
                    format!("request failed: {e}")
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the receiver answered HTTP {}", status.as_u16()));
        }
        // A receiver may act on the conversation in its answer: {"action": "release"}.
        if let Some(ingress) = &self.ingress
            && let Ok(answer) = response.bytes().await
            && answer.len() <= MAX_REPLY
            && let Some((conversation, action)) = reply_action(&job.body, &answer, self.clock.now())
        {
            let key = format!("hookreply:{}:{}", job.event_id, action.kind.label());
            let label = action.kind.label();
            match ingress.agent_action(conversation, action, key).await {
                Ok(_) => {
                    tracing::info!(hook = %job.id, action = label, "the hook receiver acted on the conversation")
                }
                // The delivery stands; the action is lost only with the store down, and the
                // receiver can still act through the API.
                Err(error) => {
                    tracing::warn!(hook = %job.id, %error, "storing the hook receiver's action failed")
                }
            }
        }
        Ok(())
    }

    /// The wait before the next attempt: from `hook_backoff`, at most 10 minutes (see
    /// [`tandem_domain::Backoff`]).
    fn backoff(&self, attempts: u32) -> Duration {
        tandem_domain::Backoff {
            first: self.config.hook_backoff,
            max: MAX_BACKOFF,
        }
        .delay(attempts, rand::random())
    }
}

/// Builds the HTTP client of hook deliveries (each request sets its own timeout).
///
/// # Errors
/// Fails when the TLS set-up fails.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .user_agent(concat!("tandem-hooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A bounded label for a hook event name.
fn event_label(event: &str) -> &'static str {
    tandem_handoff::HookEvent::parse(event).map_or("other", |e| e.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_answer_becomes_an_action_on_the_hooked_conversation() {
        let hook = r#"{"conversation": {"id": "106:351"}}"#;
        let now = tandem_domain::Timestamp(1);
        let (id, action) = reply_action(hook, br#"{"action": "release"}"#, now).unwrap();
        assert_eq!(id.to_string(), "106:351");
        assert_eq!(action.kind, tandem_domain::AgentActionKind::Release);
        let (_, assign) =
            reply_action(hook, br#"{"action": "assign", "agent": "ana"}"#, now).unwrap();
        assert_eq!(assign.agent.as_deref(), Some("ana"));
        for answer in [
            &b""[..],
            b"ok",
            br#"{"action": "dance"}"#,
            br#"{"action": "assign"}"#,
            br#"{"received": true}"#,
        ] {
            assert!(reply_action(hook, answer, now).is_none());
        }
        assert!(reply_action(r#"{"number": {}}"#, br#"{"action": "release"}"#, now).is_none());
    }
}
