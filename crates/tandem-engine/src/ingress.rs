//! Ingress: a verified webhook body becomes one atomic store write.
//!
//! The signature is checked by the caller, on the raw bytes, before this runs. Here the body
//! is parsed into events, each event is given to the tenant owning its business number (see
//! [`crate::tenants`]; an event of a number no tenant owns is kept as a dead letter instead),
//! the customer of each conversation event is resolved within its tenant from the
//! identifiers it carries (phone, BSUID, parent BSUID; see [`crate::identity`]), each human
//! echo gets its pause attached (so the store pauses the conversation in the same write that
//! stores the echo, before the webhook is answered), and the whole delivery is handed to
//! [`Store::ingest`]. Nothing here waits for a lane, an LLM or a send.

use std::sync::Arc;
use std::time::Duration;

use tandem_domain::{
    AgentAction, AgentActionKind, ConversationEvent, ConversationId, CustomerId, CustomerLookup,
    MessageContent, PauseRules, PausedBy, PhoneNumberId, Timestamp,
};
use tandem_store::{
    IngestBatch, IngestItem, IngestKind, ItemOutcome, NumberTouch, PauseOnIngest, Store, StoreError,
};
use tandem_whatsapp::{KeptReason, WebhookEvent, parse_webhook};

use crate::identity::{Identities, Resolution};
use crate::metrics;
use crate::tenants::{Tenant, Tenants};

/// Turns verified webhook bodies into stored events.
#[derive(Debug, Clone)]
pub struct Ingress {
    store: Arc<dyn Store>,
    tenants: Tenants,
    /// The pause rules of a conversation whose number no tenant owns.
    rules: Arc<PauseRules>,
    numbers: Arc<std::sync::Mutex<NumberBook>>,
    /// Each tenant's customer resolution, created on first use.
    identities: Arc<std::sync::Mutex<std::collections::HashMap<String, Identities>>>,
    /// Told of every account event once it is stored (not of Meta's retries of it).
    account_listener: Option<AccountListener>,
}

/// Something told of account events (`account_update`) once they are stored.
#[derive(Clone)]
pub struct AccountListener(pub Arc<dyn Fn(&tandem_domain::AccountUpdate) + Send + Sync>);

impl std::fmt::Debug for AccountListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccountListener")
    }
}

/// What this process already told the store about numbers, so a busy number costs one
/// extra write a minute at most.
#[derive(Debug, Default)]
struct NumberBook {
    /// Numbers whose WABA this process has recorded.
    known: std::collections::HashSet<PhoneNumberId>,
    /// When phone activity was last recorded, per number.
    phone: std::collections::HashMap<PhoneNumberId, Timestamp>,
}

/// How often a delivery is resolved again when erasures keep ending its identities.
const MAX_STALE_RETRIES: u32 = 3;

/// Phone activity is recorded at most this often per number (the heartbeat counts in days).
const PHONE_TOUCH_EVERY: Duration = Duration::from_secs(60);

/// What one delivery amounted to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IngressReport {
    /// Events stored.
    pub stored: usize,
    /// Events dropped as retries.
    pub duplicates: usize,
    /// Conversations paused by a human echo.
    pub paused: usize,
    /// Pieces kept raw in the dead-letter list.
    pub kept: usize,
}

impl Ingress {
    /// Builds the ingress over a store for `tenants`; each tenant's pause rules say how long
    /// a person's echo or an agent's take-over pauses its bot (`rules` where no tenant owns
    /// the number).
    pub fn new(store: Arc<dyn Store>, tenants: Tenants, rules: Arc<PauseRules>) -> Self {
        Self {
            store,
            tenants,
            rules,
            numbers: Arc::default(),
            identities: Arc::default(),
            account_listener: None,
        }
    }

    /// Tells `listener` of every account event once it is stored, once (a retry of it is a
    /// duplicate and not told). It runs on the webhook's path: it must not block.
    #[must_use]
    pub fn with_account_listener(mut self, listener: AccountListener) -> Self {
        self.account_listener = Some(listener);
        self
    }

    /// The tenants this ingress attributes events to.
    pub fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Tenant `tenant`'s customer resolution.
    fn identities(&self, tenant: &str) -> Identities {
        let mut all = self
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = all.get(tenant) {
            return found.clone();
        }
        let made = Identities::new(Arc::clone(&self.store), tenant);
        all.insert(tenant.to_owned(), made.clone());
        made
    }

    /// Applies `f` to every tenant's resolution made so far.
    fn each_identities(&self, f: impl Fn(&Identities)) {
        let all = self
            .identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        all.values().for_each(f);
    }

    /// The pause rules of `number`'s tenant.
    async fn rules_of(&self, number: &PhoneNumberId) -> Arc<PauseRules> {
        match self.tenants.of_number(number).await {
            Some(tenant) => Arc::clone(&tenant.settings.pause),
            None => Arc::clone(&self.rules),
        }
    }

    /// Stores an agent's action on a conversation as an event of its inbox, deduplicated by
    /// `key` (a client's idempotency key makes a repeated request harmless). A take-over or a
    /// message pauses the bot in the same write, before this returns, like a human echo.
    /// Returns false when `key` was seen before (nothing stored).
    ///
    /// # Errors
    /// The store's error; nothing was stored.
    pub async fn agent_action(
        &self,
        conversation: ConversationId,
        action: AgentAction,
        key: String,
    ) -> Result<bool, StoreError> {
        let received_at = action.at;
        let event = ConversationEvent::Agent(action);
        let rules = self.rules_of(conversation.phone_number_id()).await;
        let pause = pause_for(&event, &rules);
        let paused = pause.is_some();
        let report = self
            .store
            .ingest(IngestBatch {
                received_at,
                items: vec![IngestItem {
                    key,
                    kind: IngestKind::Conversation {
                        conversation,
                        event,
                        pause,
                    },
                }],
                identity_epoch: None,
            })
            .await?;
        let stored = report
            .outcomes
            .first()
            .is_some_and(|o| *o != ItemOutcome::Duplicate);
        if stored && paused {
            ::metrics::counter!(metrics::PAUSES, "by" => "agent_api").increment(1);
        }
        Ok(stored)
    }

    /// Stores one verified webhook body received at `received_at`.
    ///
    /// # Errors
    /// Returns the store's error when the delivery could not be made durable; the caller
    /// answers 503 so Meta retries, and nothing of the delivery was stored.
    pub async fn accept(
        &self,
        body: &[u8],
        received_at: Timestamp,
    ) -> Result<IngressReport, StoreError> {
        let mut attempt = 0;
        loop {
            match self.try_accept(body, received_at).await {
                // An erasure ended the identities the delivery was resolved with: resolve
                // again under the new epoch (a few times at most; erasures are rare).
                Err(StoreError::StaleIdentities { stored }) if attempt < MAX_STALE_RETRIES => {
                    attempt += 1;
                    self.each_identities(|i| i.refresh(stored));
                }
                Err(error) => {
                    self.each_identities(Identities::forget);
                    return Err(error);
                }
                Ok(report) => return Ok(report),
            }
        }
    }

    /// True when `event` is a late webhook of an erased customer: older than the erasure of
    /// one of its identifiers. WhatsApp's times are whole seconds, so a message of the
    /// erasure's own second counts as new. History is the past, always older.
    fn late(event: &ConversationEvent, erased_at: Timestamp) -> bool {
        let at = match event {
            ConversationEvent::Customer(m) => m.sent_at,
            ConversationEvent::Echo(e) => e.sent_at,
            ConversationEvent::Status(s) => s.at,
            ConversationEvent::History(_) => return true,
            // An identity change is news, whenever it comes.
            _ => return false,
        };
        at.as_millis() < erased_at.as_millis() / 1000 * 1000
    }

    async fn try_accept(
        &self,
        body: &[u8],
        received_at: Timestamp,
    ) -> Result<IngressReport, StoreError> {
        let parsed = self
            .attribute(parse_webhook(body, received_at), body, received_at)
            .await?;
        // Customers first: resolving is idempotent, so a failure here (503, Meta retries)
        // or a crash before the delivery is stored loses nothing and duplicates nothing.
        let lookups: Vec<(&str, &CustomerLookup)> = parsed
            .iter()
            .filter_map(|(e, tenant)| match (e, tenant) {
                (WebhookEvent::Conversation { customer, .. }, Some(t)) => {
                    Some((t.id.as_str(), customer))
                }
                _ => None,
            })
            .collect();
        let resolution = self.resolve(&lookups).await?;
        let mut resolved = resolution.customers.into_iter().zip(resolution.erased_at);
        let mut events = Vec::with_capacity(parsed.len());
        let mut customers = Vec::new();
        let mut dropped = 0_u64;
        for (event, tenant) in parsed {
            if let WebhookEvent::Conversation { event: inner, .. } = &event {
                let (customer, erased_at) = resolved.next().ok_or_else(|| {
                    StoreError::Protocol("an event's customer was not resolved".into())
                })?;
                if erased_at.is_some_and(|t| Self::late(inner, t)) {
                    dropped += 1;
                    continue;
                }
                customers.push(customer);
            }
            events.push((event, tenant));
        }
        let mut customers = customers.into_iter();
        if events
            .iter()
            .any(|(e, _)| e.field_label() == "user_id_update")
        {
            tracing::info!(
                "a user_id_update webhook (withdrawn by Meta) was applied as an identity change"
            );
        }
        let labels: Vec<(&'static str, String)> = events
            .iter()
            .map(|(e, t)| {
                let tenant = t
                    .as_ref()
                    .map_or_else(|| "(none)".to_owned(), |t| t.id.clone());
                (e.field_label(), tenant)
            })
            .collect();
        let kept: Vec<Option<&'static str>> = events
            .iter()
            .map(|(e, _)| match e {
                WebhookEvent::Kept { reason, .. } => Some(reason.as_str()),
                _ => None,
            })
            .collect();
        let unknown_types = events.iter().filter(|(e, _)| has_unknown_type(e)).count();
        // Which numbers the delivery speaks of, and which show the phone is in use.
        let activity: Vec<Option<(PhoneNumberId, bool)>> = events
            .iter()
            .map(|(e, _)| match e {
                WebhookEvent::Conversation { number, event, .. } => Some((
                    number.clone(),
                    matches!(
                        event,
                        ConversationEvent::Echo(_) | ConversationEvent::History(_)
                    ),
                )),
                WebhookEvent::Contact { update, .. } => {
                    Some((update.phone_number_id.clone(), true))
                }
                _ => None,
            })
            .collect();
        let accounts: Vec<Option<tandem_domain::AccountUpdate>> = events
            .iter()
            .map(|(e, _)| match e {
                WebhookEvent::Account { update, .. } if self.account_listener.is_some() => {
                    Some(update.clone())
                }
                _ => None,
            })
            .collect();
        let items = events
            .into_iter()
            .map(|(e, tenant)| {
                let customer = match &e {
                    WebhookEvent::Conversation { .. } => customers.next(),
                    _ => None,
                };
                let rules = tenant.as_ref().map_or(&self.rules, |t| &t.settings.pause);
                item(e, customer, rules)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = self
            .store
            .ingest(IngestBatch {
                received_at,
                items,
                identity_epoch: resolution.epoch,
            })
            .await?;
        if dropped > 0 {
            ::metrics::counter!(metrics::ERASED_DROPPED).increment(dropped);
        }
        if let Some(listener) = &self.account_listener {
            for (update, outcome) in accounts.iter().zip(&outcome.outcomes) {
                if let Some(update) = update
                    && *outcome != ItemOutcome::Duplicate
                {
                    (listener.0)(update);
                }
            }
        }

        let mut report = IngressReport::default();
        for ((outcome, (field, tenant)), kept) in outcome.outcomes.iter().zip(labels).zip(kept) {
            match outcome {
                ItemOutcome::Duplicate => {
                    report.duplicates += 1;
                    ::metrics::counter!(metrics::DUPLICATES).increment(1);
                    continue;
                }
                ItemOutcome::Paused => {
                    report.paused += 1;
                    ::metrics::counter!(metrics::PAUSES, "by" => "echo").increment(1);
                }
                ItemOutcome::OwnEcho => ::metrics::counter!(metrics::OWN_ECHOES).increment(1),
                ItemOutcome::Stored => {}
            }
            report.stored += 1;
            ::metrics::counter!(metrics::EVENTS, "field" => field, "tenant" => tenant).increment(1);
            if let Some(reason) = kept {
                report.kept += 1;
                ::metrics::counter!(metrics::KEPT, "reason" => reason).increment(1);
                tracing::warn!(reason, "signed webhook input kept in the dead-letter list");
            }
        }
        if unknown_types > 0 {
            ::metrics::counter!(metrics::UNKNOWN_MESSAGE_TYPES).increment(unknown_types as u64);
            tracing::warn!(count = unknown_types, "messages of unknown type kept raw");
        }
        // An echo of our own send is not the phone; duplicates were seen already.
        let phone_seen = outcome.outcomes.iter().zip(activity).filter_map(|(o, a)| {
            let (pnid, phone) = a?;
            let phone = phone && !matches!(o, ItemOutcome::OwnEcho | ItemOutcome::Duplicate);
            Some((pnid, phone))
        });
        self.touch_numbers(body, phone_seen.collect(), received_at)
            .await;
        Ok(report)
    }

    /// Records the numbers a delivery spoke of (their WABA, the first time this process sees
    /// them) and activity from their phone. After the events are stored: a failure here only
    /// delays link-health bookkeeping, so it is logged and counted, not answered with a 503.
    async fn touch_numbers(&self, body: &[u8], seen: Vec<(PhoneNumberId, bool)>, now: Timestamp) {
        let mut touches: Vec<(PhoneNumberId, NumberTouch)> = Vec::new();
        {
            let book = self
                .numbers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut owners: Option<Vec<(PhoneNumberId, String)>> = None;
            for (pnid, phone) in seen {
                let new = !book.known.contains(&pnid);
                let phone_due = phone
                    && book
                        .phone
                        .get(&pnid)
                        .is_none_or(|last| now.since(*last) >= PHONE_TOUCH_EVERY);
                if !new && !phone_due {
                    continue;
                }
                let waba_id = if new {
                    owners
                        .get_or_insert_with(|| tandem_whatsapp::number_owners(body))
                        .iter()
                        .find(|(p, _)| p == &pnid)
                        .map(|(_, w)| w.clone())
                } else {
                    None
                };
                match touches.iter_mut().find(|(p, _)| p == &pnid) {
                    Some((_, touch)) => {
                        if phone_due {
                            touch.phone_at = Some(now);
                        }
                    }
                    None => touches.push((
                        pnid,
                        NumberTouch {
                            waba_id,
                            phone_at: phone_due.then_some(now),
                            ..NumberTouch::default()
                        },
                    )),
                }
            }
        }
        for (pnid, touch) in touches {
            let phone = touch.phone_at.is_some();
            match self.store.touch_number(&pnid, touch, now).await {
                Ok(()) => {
                    let mut book = self
                        .numbers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if phone {
                        book.phone.insert(pnid.clone(), now);
                    }
                    book.known.insert(pnid);
                }
                Err(error) => {
                    ::metrics::counter!(metrics::ERRORS, "stage" => "numbers", "error_kind" => error.kind().as_str()).increment(1);
                    tracing::warn!(number = %pnid, %error, "recording number activity failed");
                }
            }
        }
    }

    /// Pairs each event with the tenant owning its business number. Events of numbers no
    /// tenant owns become one dead letter (the whole body, so nothing is lost) naming them.
    /// A number placed by its WABA has that WABA recorded in the store before the delivery
    /// is, so every lane (of any replica) finds the same tenant.
    ///
    /// # Errors
    /// Recording a number's WABA failed (answered 503: Meta retries).
    async fn attribute(
        &self,
        events: Vec<WebhookEvent>,
        body: &[u8],
        received_at: Timestamp,
    ) -> Result<Vec<(WebhookEvent, Option<Arc<Tenant>>)>, StoreError> {
        let mut placed: Vec<(PhoneNumberId, String)> = Vec::new();
        let mut out = Vec::with_capacity(events.len());
        let mut owners: Option<Vec<(PhoneNumberId, String)>> = None;
        let mut unknown: Vec<PhoneNumberId> = Vec::new();
        for event in events {
            let number = match &event {
                WebhookEvent::Conversation { number, .. } => number,
                WebhookEvent::Contact { update, .. } => &update.phone_number_id,
                // Account facts and kept input belong to the deployment.
                WebhookEvent::Account { .. } | WebhookEvent::Kept { .. } => {
                    out.push((event, None));
                    continue;
                }
            };
            let mut tenant = self.tenants.owner(number, None);
            if tenant.is_none() {
                // The rare path: a number no tenant lists. Its WABA may be one a tenant lists,
                // or the store may know the tenant it was onboarded into.
                let waba = owners
                    .get_or_insert_with(|| tandem_whatsapp::number_owners(body))
                    .iter()
                    .find(|(p, _)| p == number)
                    .map(|(_, w)| w.clone());
                tenant = match self.tenants.owner(number, waba.as_deref()) {
                    Some(t) => {
                        if let Some(w) = waba
                            && !placed.iter().any(|(p, _)| p == number)
                        {
                            placed.push((number.clone(), w));
                        }
                        Some(t)
                    }
                    None => self.tenants.of_number(number).await,
                };
            }
            match tenant {
                Some(t) => out.push((event, Some(t))),
                None => unknown.push(number.clone()),
            }
        }
        if !unknown.is_empty() {
            let mut numbers: Vec<String> = unknown.iter().map(ToString::to_string).collect();
            numbers.sort();
            numbers.dedup();
            ::metrics::counter!(metrics::UNKNOWN_NUMBER_EVENTS).increment(unknown.len() as u64);
            tracing::warn!(numbers = ?numbers, events = unknown.len(), "webhook events of numbers no tenant owns kept as a dead letter");
            let detail = format!(
                "{} event(s) of number(s) {} that no tenant owns: add the number or its WABA to a tenant (or onboard it into one) and replay this body",
                unknown.len(),
                numbers.join(", ")
            );
            out.push((
                tandem_whatsapp::keep_body(body, received_at, KeptReason::UnknownNumber, detail),
                None,
            ));
        }
        for (number, waba) in placed {
            let known = self
                .numbers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .known
                .contains(&number);
            if !known {
                let touch = NumberTouch {
                    waba_id: Some(waba.clone()),
                    ..NumberTouch::default()
                };
                self.store.touch_number(&number, touch, received_at).await?;
                self.numbers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .known
                    .insert(number.clone());
            }
            self.tenants.note_waba(&number, &waba);
        }
        Ok(out)
    }

    /// Resolves each lookup within its tenant, in order; the answers hold under the oldest
    /// identity epoch any tenant's cache read them under.
    async fn resolve(&self, lookups: &[(&str, &CustomerLookup)]) -> Result<Resolution, StoreError> {
        let mut tenants: Vec<&str> = lookups.iter().map(|(t, _)| *t).collect();
        tenants.sort_unstable();
        tenants.dedup();
        if let [only] = tenants.as_slice() {
            let all: Vec<&CustomerLookup> = lookups.iter().map(|(_, l)| *l).collect();
            return self.identities(only).resolve(&all).await;
        }
        let mut slots: Vec<Option<(CustomerId, Option<Timestamp>)>> = vec![None; lookups.len()];
        let mut epoch: Option<u64> = None;
        for tenant in tenants {
            let (places, group): (Vec<usize>, Vec<&CustomerLookup>) = lookups
                .iter()
                .enumerate()
                .filter(|(_, (t, _))| *t == tenant)
                .map(|(i, (_, l))| (i, *l))
                .unzip();
            let got = self.identities(tenant).resolve(&group).await?;
            epoch = match (epoch, got.epoch) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for ((place, customer), erased) in
                places.into_iter().zip(got.customers).zip(got.erased_at)
            {
                slots[place] = Some((customer, erased));
            }
        }
        let (customers, erased_at) = slots
            .into_iter()
            .map(|s| s.ok_or_else(|| StoreError::Protocol("a lookup was left unresolved".into())))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        Ok(Resolution {
            customers,
            erased_at,
            epoch,
        })
    }
}

/// The store item of `event`; a conversation event's pause follows `rules`.
fn item(
    event: WebhookEvent,
    customer: Option<CustomerId>,
    rules: &Arc<PauseRules>,
) -> Result<IngestItem, StoreError> {
    Ok(match event {
        WebhookEvent::Conversation {
            key, number, event, ..
        } => {
            let customer = customer.ok_or_else(|| {
                StoreError::Protocol("an event's customer was not resolved".into())
            })?;
            let conversation = ConversationId::new(number, customer);
            let pause = pause_for(&event, rules);
            IngestItem {
                key,
                kind: IngestKind::Conversation {
                    conversation,
                    event,
                    pause,
                },
            }
        }
        WebhookEvent::Contact { key, update } => IngestItem {
            key,
            kind: IngestKind::Contact(update),
        },
        WebhookEvent::Account { key, update, .. } => IngestItem {
            key,
            kind: IngestKind::Account(update),
        },
        WebhookEvent::Kept { key, letter, .. } => IngestItem {
            key,
            kind: IngestKind::DeadLetter(letter),
        },
    })
}

/// The pause an event sets at ingress, before its webhook or API call is answered: a person's
/// echo, an agent's take-over or message (for as long as `rules` hold each); other events set
/// none (the lane decides them).
pub fn pause_for(event: &ConversationEvent, rules: &Arc<PauseRules>) -> Option<PauseOnIngest> {
    match event {
        ConversationEvent::Echo(echo) => Some(PauseOnIngest {
            by: PausedBy::Echo,
            echo_id: Some(echo.id.clone()),
            rules: Arc::clone(rules),
        }),
        ConversationEvent::Agent(action)
            if matches!(
                action.kind,
                AgentActionKind::Takeover | AgentActionKind::Message { .. }
            ) =>
        {
            Some(PauseOnIngest {
                by: PausedBy::AgentApi,
                echo_id: None,
                rules: Arc::clone(rules),
            })
        }
        _ => None,
    }
}

fn has_unknown_type(event: &WebhookEvent) -> bool {
    let WebhookEvent::Conversation { event, .. } = event else {
        return false;
    };
    let content = match event {
        ConversationEvent::Customer(m) => &m.content,
        ConversationEvent::Echo(e) => &e.content,
        ConversationEvent::History(h) => {
            return h
                .messages
                .iter()
                .any(|m| matches!(m.content, MessageContent::Unknown { .. }));
        }
        _ => return false,
    };
    matches!(content, MessageContent::Unknown { .. })
}
