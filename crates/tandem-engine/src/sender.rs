//! The outbound side: sends what a conversation's outbox holds through the Cloud API, in
//! order, one message at a time.
//!
//! Before every send the sender re-reads the record from the store — so a person who
//! replied from the phone a moment ago stops the bot's next message — and checks the
//! 24-hour window (outside it only the configured template goes, or the send is recorded as
//! failed) and the number's send rate (a slot reserved in the store, so replicas share the
//! limit). After a send it removes the message from the outbox, records the wamid in the
//! outbound registry and the transcript, in one guarded write.
//!
//! Temporary failures (5xx, 130429 throttling, network errors, timeouts) are retried with
//! exponential backoff and jitter by the conversation's timer; later messages wait behind
//! them so the customer reads them in order. A send whose outcome is unknown (a timeout
//! after the request left) is retried too: a rare duplicate is preferred over a lost reply.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;
use tandem_domain::{
    Clock, Conversation, ConversationId, OutboundContent, PendingSend, Role, SendAction,
    SendOrigin, Timestamp, TranscriptEntry,
};

use tandem_domain::PhoneNumberId;
use tandem_store::{Claim, CommitOutcome, NumberTouch, StepCommit, Store, StoreError, TimerChange};
use tandem_whatsapp::{GraphClient, OutboundMessage, Recipient, SendError};

use crate::metrics;
use crate::responder::FlowsHandle;

/// How the sender behaves; part of `[engine]`.
#[derive(Debug, Clone)]
pub struct SendPolicy {
    /// Messages a second per business number.
    pub per_second: u32,
    /// Attempts before a message is given up.
    pub max_attempts: u32,
    /// The first retry delay; doubled each attempt, up to `max_backoff`.
    pub base_backoff: Duration,
    /// The longest retry delay.
    pub max_backoff: Duration,
    /// How long waiting sends may sit before the conversation's timer picks them up again
    /// (after a crash).
    pub recovery: Duration,
    /// How many transcript lines a conversation keeps.
    pub transcript_cap: usize,
    /// While a number is disconnected, its sends are held and looked at again this often.
    pub hold_retry: Duration,
    /// Authentication templates: refused for a customer reachable only by BSUID (131062).
    pub authentication_templates: Vec<String>,
}

/// How long a number's link state is trusted before it is read again.
const LINK_FRESH: Duration = Duration::from_secs(1);
/// API activity is recorded at most this often per number.
const API_TOUCH_EVERY: Duration = Duration::from_secs(30);

/// What this process knows of numbers' links: whether their sends are held (read from the
/// store at most every [`LINK_FRESH`], and set at once by this process's health monitor) and
/// when API activity was last recorded. Shared by the sender and the monitor.
#[derive(Debug, Clone, Default)]
pub struct LinkCache(Arc<Mutex<Links>>);

#[derive(Debug, Default)]
struct Links {
    state: HashMap<PhoneNumberId, (bool, std::time::Instant)>,
    touched: HashMap<PhoneNumberId, Timestamp>,
}

impl LinkCache {
    /// Records that `number`'s sends are (or are no longer) held, as of now.
    pub fn set(&self, number: &PhoneNumberId, held: bool) {
        self.lock()
            .state
            .insert(number.clone(), (held, std::time::Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Links> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What to do with the message at the head of an outbox, decided from the freshly read
/// record: the pause and opt-out, then the 24-hour window.
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// Send this content (the queued one, or the window template in its place).
    Send(OutboundContent),
    /// Mark the customer's message read.
    MarkRead,
    /// Do not send; the reason goes in the transcript.
    Drop(String),
}

/// Decides what becomes of `head` at `now`: dropped when a person is talking or the
/// customer opted out, replaced by `window_template` (or dropped without one) when it is
/// free text and the customer's 24-hour window has closed, dropped when the customer cannot
/// be addressed (no phone and no BSUID) or when it is one of `authentication_templates` and
/// the customer is known only by BSUID (WhatsApp refuses those with 131062), sent otherwise.
pub fn prepare(
    record: &Conversation,
    head: &PendingSend,
    now: Timestamp,
    window_template: Option<OutboundContent>,
    authentication_templates: &[String],
) -> Prepared {
    match prepare_content(record, head, now, window_template) {
        Prepared::Send(content) => addressable(record, content, authentication_templates),
        other => other,
    }
}

/// Checks that `content` can reach the conversation's customer.
fn addressable(
    record: &Conversation,
    content: OutboundContent,
    authentication_templates: &[String],
) -> Prepared {
    match Recipient::of(&record.who()) {
        None => {
            Prepared::Drop("not sent: WhatsApp gave no phone or BSUID for this customer".into())
        }
        Some(to) if to.is_user_id() => match &content {
            OutboundContent::Template { name, .. } if authentication_templates.contains(name) => {
                Prepared::Drop(format!(
                    "not sent: authentication template {name:?} cannot go to a customer known only by username (BSUID); WhatsApp refuses it with 131062"
                ))
            }
            _ => Prepared::Send(content),
        },
        Some(_) => Prepared::Send(content),
    }
}

fn prepare_content(
    record: &Conversation,
    head: &PendingSend,
    now: Timestamp,
    window_template: Option<OutboundContent>,
) -> Prepared {
    if !record.may_send(head.origin) {
        return Prepared::Drop("not sent: a person is talking or the customer opted out".into());
    }
    let content = match &head.action {
        SendAction::MarkRead { .. } => return Prepared::MarkRead,
        SendAction::Message { content } => content,
    };
    if content.is_template() || record.window_open(now) {
        return Prepared::Send(content.clone());
    }
    if head.origin == SendOrigin::Agent {
        return Prepared::Drop(
            "not sent: more than 24 hours since the customer wrote; only a template can reach them now".into(),
        );
    }
    match window_template {
        Some(template) => Prepared::Send(template),
        None => Prepared::Drop(
            "not sent: more than 24 hours since the customer wrote, and no window_template is configured".into(),
        ),
    }
}

/// Sends outboxes through the Graph API.
#[derive(Debug, Clone)]
pub struct Sender {
    /// The tenant whose messages it sends (a metrics label).
    tenant: ::metrics::SharedString,
    store: Arc<dyn Store>,
    graph: GraphClient,
    flows: Option<FlowsHandle>,
    policy: SendPolicy,
    clock: Arc<dyn Clock>,
    links: LinkCache,
}

/// What happened to the message at the head of the outbox.
enum Outcome {
    /// Accepted by WhatsApp with this wamid (none for a mark-as-read).
    Sent(Option<tandem_domain::MessageId>, Option<OutboundContent>),
    /// Not sent and never will be; the reason goes in the transcript.
    Dropped(String),
    /// Try again at this time.
    Retry(Timestamp, String),
    /// The number is disconnected: kept, looked at again at this time (not an attempt).
    Held(Timestamp),
}

impl Sender {
    /// Builds a sender.
    pub fn new(
        store: Arc<dyn Store>,
        graph: GraphClient,
        flows: Option<FlowsHandle>,
        policy: SendPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            tenant: ::metrics::SharedString::const_str(crate::tenants::DEFAULT_TENANT),
            store,
            graph,
            flows,
            policy,
            clock,
            links: LinkCache::default(),
        }
    }

    /// Counts its sends under tenant `id`.
    #[must_use]
    pub fn for_tenant(mut self, id: &str) -> Self {
        self.tenant = ::metrics::SharedString::from(Arc::<str>::from(id));
        self
    }

    /// Shares `links` with the health monitor, so a disconnection it records holds sends at
    /// once in this process.
    pub fn with_links(mut self, links: LinkCache) -> Self {
        self.links = links;
        self
    }

    /// Returns true while the number's sends must be held (disconnected or off-boarded).
    /// A store failure does not hold: the send itself will say what is wrong.
    async fn held(&self, phone: &PhoneNumberId) -> bool {
        if let Some((held, read)) = self.lock_links().state.get(phone)
            && read.elapsed() < LINK_FRESH
        {
            return *held;
        }
        let held = match self.store.number(phone).await {
            Ok(state) => state.is_some_and(|n| n.link.holds_sends()),
            Err(error) => {
                tracing::warn!(number = %phone, %error, "reading the number's link failed");
                false
            }
        };
        self.lock_links()
            .state
            .insert(phone.clone(), (held, std::time::Instant::now()));
        held
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, Links> {
        self.links.lock()
    }

    /// Sends the due messages of the claimed conversation's outbox, oldest first, re-reading
    /// the record before each one, and stops at the first one that must wait. Then records
    /// every outcome in one guarded write. The claim must be held.
    ///
    /// # Errors
    /// A store error; messages already sent are sent again after recovery (at least once).
    pub async fn drain(&self, claim: &Claim, lease: Duration) -> Result<(), StoreError> {
        let id = &claim.conversation;
        let mut outcomes: Vec<(PendingSend, Outcome)> = Vec::new();
        loop {
            let now = self.clock.now();
            // Re-read: a person may have paused the conversation since the last send.
            let Some(record) = self.store.conversation(id).await? else {
                break;
            };
            let next = record
                .outbox
                .iter()
                .find(|s| !outcomes.iter().any(|(done, _)| done.id == s.id))
                .cloned();
            let Some(head) = next else { break };
            if head.not_before.is_some_and(|t| t > now) {
                break;
            }
            let outcome = if self.held(record.id.phone_number_id()).await {
                Outcome::Held(now.plus(self.policy.hold_retry))
            } else {
                self.attempt(&record, &head).await
            };
            let stop = matches!(outcome, Outcome::Retry(..) | Outcome::Held(_));
            outcomes.push((head, outcome));
            if stop {
                break;
            }
        }
        if outcomes.is_empty() {
            return Ok(());
        }
        self.settle(claim, id, outcomes, lease).await
    }

    /// Sends one message, after waiting for the number's next send slot.
    async fn attempt(&self, record: &Conversation, head: &PendingSend) -> Outcome {
        let phone = record.id.phone_number_id();
        let now = self.clock.now();
        let content = match prepare(
            record,
            head,
            now,
            self.window_template(),
            &self.policy.authentication_templates,
        ) {
            Prepared::Drop(reason) => return Outcome::Dropped(reason),
            Prepared::MarkRead => None,
            Prepared::Send(content) => Some(content),
        };
        let recipient = Recipient::of(&record.who());
        if head.origin.is_bot()
            && content.is_some()
            && record.human_last_at.is_some_and(|h| h > head.queued_at)
        {
            // Must never happen: a pause cancels the bot's queue before anything else.
            ::metrics::counter!(metrics::COLLISIONS).increment(1);
            tracing::error!(conversation = %record.id, "a bot message goes out after a person wrote");
        }
        // Only messages count against the number's throughput; a mark-as-read does not.
        if content.is_some() {
            match self
                .store
                .reserve_send_slot(phone, now, self.policy.per_second)
                .await
            {
                Ok(slot) => {
                    let wait = slot.since(now);
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(e) => return self.retry(head, &format!("rate limiter unavailable: {e}")),
            }
        }
        let result = match (&head.action, content) {
            (SendAction::MarkRead { message_id }, _) => {
                self.graph.mark_read(phone, message_id, true).await
            }
            (SendAction::Message { .. }, Some(content)) => {
                let Some(to) = recipient else {
                    return Outcome::Dropped("nothing to send".into());
                };
                let message = OutboundMessage {
                    to,
                    content: content.clone(),
                    reply_to: None,
                    // Statuses carry it back: which conversation and which queued send.
                    callback_data: Some(format!("tandem:{}:{}", record.id, head.id)),
                };
                let sent = self.graph.send(phone, &message).await;
                if let Err(e) = &sent
                    && e.window_closed()
                    && !content.is_template()
                    && let Some(template) = self.window_template()
                {
                    // 131047: the window closed by WhatsApp's clock; the template may go.
                    let message = OutboundMessage {
                        content: template.clone(),
                        ..message
                    };
                    return match self.graph.send(phone, &message).await {
                        Ok(sent) => Outcome::Sent(Some(sent.message_id), Some(template)),
                        Err(e) => self.classify(head, &e),
                    };
                }
                return match sent {
                    Ok(sent) => Outcome::Sent(Some(sent.message_id), Some(content)),
                    Err(e) => self.classify(head, &e),
                };
            }
            (SendAction::Message { .. }, None) => {
                return Outcome::Dropped("nothing to send".into());
            }
        };
        match result {
            Ok(_) => Outcome::Sent(None, None),
            // A mark-as-read that fails is not worth holding the replies behind it.
            Err(e) => Outcome::Dropped(format!("mark as read failed: {e}")),
        }
    }

    fn classify(&self, head: &PendingSend, error: &SendError) -> Outcome {
        if let SendError::Graph { error: graph, .. } = error
            && graph.code == 131_062
        {
            return Outcome::Dropped(
                "not sent: WhatsApp cannot deliver this template to a customer known only by username (BSUID) (131062); list it in engine.authentication_templates to refuse it before sending".into(),
            );
        }
        if error.window_closed() && self.window_template().is_some() {
            return Outcome::Dropped(
                "not sent: WhatsApp refused even the window template (131047)".into(),
            );
        }
        if error.window_closed() {
            return Outcome::Dropped(
                "not sent: WhatsApp says the 24-hour window is closed (131047) and no window_template is configured".into(),
            );
        }
        if error.is_retryable() || error.may_have_sent() {
            return self.retry(head, &error.to_string());
        }
        Outcome::Dropped(format!("not sent: {error}"))
    }

    fn retry(&self, head: &PendingSend, reason: &str) -> Outcome {
        let attempts = head.attempts + 1;
        if attempts >= self.policy.max_attempts {
            return Outcome::Dropped(format!("not sent after {attempts} attempts: {reason}"));
        }
        let now = self.clock.now();
        Outcome::Retry(now.plus(self.backoff(attempts)), reason.to_owned())
    }

    /// The wait before the next attempt (see [`tandem_domain::Backoff`]), so a throttled
    /// number's conversations do not all come back at once.
    fn backoff(&self, attempts: u32) -> Duration {
        tandem_domain::Backoff {
            first: self.policy.base_backoff,
            max: self.policy.max_backoff,
        }
        .delay(attempts, rand::random())
    }

    fn window_template(&self) -> Option<OutboundContent> {
        self.flows.as_ref()?.current().window_template_content()
    }

    /// Records the outcomes: removes each message sent or dropped (with its transcript line)
    /// or schedules its retry, and adds the wamids to the outbound registry, in one guarded
    /// write. A lost lane is not an error: its new owner sees the messages still queued.
    async fn settle(
        &self,
        claim: &Claim,
        id: &ConversationId,
        outcomes: Vec<(PendingSend, Outcome)>,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut outbound = Vec::new();
        for (head, outcome) in &outcomes {
            let action = match head.action {
                SendAction::Message { .. } => "message",
                SendAction::MarkRead { .. } => "mark_read",
            };
            let label = match outcome {
                Outcome::Sent(..) => "sent",
                Outcome::Dropped(_) => "failed",
                Outcome::Retry(..) => "retry",
                Outcome::Held(_) => "held",
            };
            ::metrics::counter!(metrics::SENDS, "action" => action, "outcome" => label, "tenant" => self.tenant.clone())
                .increment(1);
            match outcome {
                Outcome::Sent(Some(wamid), _) => {
                    outbound.push(wamid.clone());
                    ::metrics::histogram!(metrics::ACK_TO_SEND)
                        .record(now.since(head.queued_at).as_secs_f64());
                }
                Outcome::Dropped(reason) if action == "message" => {
                    tracing::warn!(conversation = %id, reason, "bot message not sent");
                }
                Outcome::Retry(at, reason) => tracing::info!(
                    conversation = %id,
                    %reason,
                    retry_at = at.as_millis(),
                    "send will be retried"
                ),
                _ => {}
            }
        }
        self.touch_number(id.phone_number_id(), &outcomes, now)
            .await;
        let cap = self.policy.transcript_cap;
        for _ in 0..8 {
            let Some(mut record) = self.store.conversation(id).await? else {
                return Ok(());
            };
            let expected_rev = record.rev;
            for (head, outcome) in &outcomes {
                let position = record.outbox.iter().position(|s| s.id == head.id);
                match outcome {
                    Outcome::Sent(wamid, content) => {
                        if let Some(i) = position {
                            record.outbox.remove(i);
                        }
                        // Recorded even when a pause cancelled the queue meanwhile: it was sent.
                        if let (Some(wamid), Some(content)) = (wamid, content)
                            && !record.has_message(wamid)
                        {
                            let role = if head.origin == SendOrigin::Agent {
                                Role::Human
                            } else {
                                Role::Bot
                            };
                            record.push(
                                TranscriptEntry::sent(now, role, wamid.clone(), content),
                                cap,
                            );
                        }
                    }
                    Outcome::Dropped(reason) => {
                        if let Some(i) = position {
                            record.outbox.remove(i);
                            if matches!(head.action, SendAction::Message { .. }) {
                                record.push(TranscriptEntry::system(now, reason.clone()), cap);
                            }
                        }
                    }
                    Outcome::Retry(at, _) => {
                        if let Some(i) = position {
                            record.outbox[i].attempts += 1;
                            record.outbox[i].not_before = Some(*at);
                        }
                    }
                    Outcome::Held(at) => {
                        if let Some(i) = position {
                            record.outbox[i].not_before = Some(*at);
                        }
                    }
                }
            }
            let timer = match record.next_wake(now, self.policy.recovery) {
                Some(at) => TimerChange::Set(at),
                None => TimerChange::Clear,
            };
            let commit = StepCommit {
                now,
                seqs: Vec::new(),
                expected_rev,
                conversation: record,
                timer,
                outbound: outbound.clone(),
                hooks: Vec::new(),
            };
            match self.store.commit(claim, commit, lease).await? {
                CommitOutcome::Applied | CommitOutcome::LeaseLost => return Ok(()),
                CommitOutcome::Conflict => {}
            }
        }
        Err(StoreError::Protocol(
            "the record kept changing while sends were recorded".into(),
        ))
    }
}

impl Sender {
    /// Records held sends and (at most every [`API_TOUCH_EVERY`]) API activity for the
    /// number, for link health. A failure only delays that bookkeeping.
    async fn touch_number(
        &self,
        phone: &PhoneNumberId,
        outcomes: &[(PendingSend, Outcome)],
        now: Timestamp,
    ) {
        let held = outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Held(_)))
            .count() as u64;
        let sent = outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Sent(Some(_), _)));
        if held > 0 {
            ::metrics::counter!(metrics::SENDS_HELD).increment(held);
        }
        let api_due = sent
            && self
                .lock_links()
                .touched
                .get(phone)
                .is_none_or(|last| now.since(*last) >= API_TOUCH_EVERY);
        if held == 0 && !api_due {
            return;
        }
        let touch = NumberTouch {
            api_at: api_due.then_some(now),
            held,
            ..NumberTouch::default()
        };
        match self.store.touch_number(phone, touch, now).await {
            Ok(()) if api_due => {
                self.lock_links().touched.insert(phone.clone(), now);
            }
            Ok(()) => {}
            Err(error) => tracing::warn!(number = %phone, %error, "recording send activity failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::{Identity, Phone, PhoneNumberId, UserId};

    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn record(who: Identity) -> Conversation {
        let id = ConversationId::new(
            PhoneNumberId::parse("106").unwrap(),
            tandem_domain::CustomerId::parse("c_1").unwrap(),
        );
        let mut c = Conversation::new(id, NOW);
        c.customer = who;
        c.customer_last_at = Some(NOW);
        c
    }

    fn send(content: OutboundContent) -> PendingSend {
        PendingSend {
            id: 0,
            origin: SendOrigin::Agent,
            action: SendAction::Message { content },
            queued_at: NOW,
            attempts: 0,
            not_before: None,
        }
    }

    fn template(name: &str) -> OutboundContent {
        OutboundContent::Template {
            name: name.into(),
            language: "en".into(),
            body_parameters: Vec::new(),
        }
    }

    #[test]
    fn authentication_templates_never_go_to_a_bsuid_only_customer() {
        let auth = ["login_code".to_owned()];
        let bsuid_only = record(Identity {
            user_id: Some(UserId::parse("US.4").unwrap()),
            ..Identity::default()
        });
        let refused = prepare(&bsuid_only, &send(template("login_code")), NOW, None, &auth);
        assert!(
            matches!(&refused, Prepared::Drop(reason) if reason.contains("131062")),
            "{refused:?}"
        );
        // Other templates and text go; so does the same template to a customer with a phone.
        let other = prepare(
            &bsuid_only,
            &send(template("order_update")),
            NOW,
            None,
            &auth,
        );
        assert!(matches!(other, Prepared::Send(_)));
        let with_phone = record(Identity::from_phone(Phone::parse("155").unwrap()));
        let sent = prepare(&with_phone, &send(template("login_code")), NOW, None, &auth);
        assert!(matches!(sent, Prepared::Send(_)));
    }

    #[test]
    fn a_customer_with_no_address_is_not_sent_to() {
        let nobody = record(Identity::default());
        let text = OutboundContent::Text {
            body: "hi".into(),
            preview_url: false,
        };
        assert!(matches!(
            prepare(&nobody, &send(text), NOW, None, &[]),
            Prepared::Drop(_)
        ));
    }
}
