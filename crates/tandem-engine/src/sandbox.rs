//! A conversation with the flows and no WhatsApp account: what `tandem chat` and
//! `tandem test` run.
//!
//! It drives the same parts as the server — the lane's [`apply`] step, the [`Responder`]
//! (with real HTTP for `call` steps), the ingress pause for echoes and the sender's
//! [`prepare`] decision — over one in-memory record and a clock that only moves when told.
//! Only the store and the Graph API are left out: a message the sender would send is handed
//! back instead, and recorded in the transcript under a made-up wamid.

use std::time::Duration;

use tandem_domain::{
    Conversation, ConversationEvent, ConversationId, Echo, InboundMessage, MessageContent,
    MessageId, OutboundContent, Role, Timestamp, TranscriptEntry,
};
use tandem_store::InboxItem;

use crate::apply::{ApplyContext, apply};
use crate::responder::Responder;
use crate::sender::{Prepared, prepare};

/// What one turn of the sandbox produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The messages the bot sent, in order.
    pub replies: Vec<OutboundContent>,
    /// What the bot decided.
    pub decisions: Vec<String>,
    /// Messages the bot queued but that were not sent, with the reason.
    pub not_sent: Vec<String>,
}

/// One conversation against the flows.
#[derive(Debug)]
pub struct Sandbox {
    conversation: Conversation,
    responder: Responder,
    now: Timestamp,
    human_idle: Duration,
    cap: usize,
    contact_name: Option<String>,
    counter: u64,
    /// Used should a generated id ever fail to parse.
    fallback_id: MessageId,
}

impl Sandbox {
    /// Starts a conversation of customer `wa_id` at `start`.
    ///
    /// # Errors
    /// Fails when `wa_id` is not a WhatsApp id.
    pub fn new(
        responder: Responder,
        wa_id: &str,
        start: Timestamp,
        human_idle: Duration,
    ) -> Result<Self, tandem_domain::IdError> {
        let id = ConversationId::parse(&format!("100000000000001:{wa_id}"))?;
        Ok(Self {
            conversation: Conversation::new(id, start),
            responder,
            now: start,
            human_idle,
            cap: 200,
            contact_name: None,
            counter: 0,
            fallback_id: MessageId::parse("sandbox")?,
        })
    }

    /// Sets the customer's name as the business's address book has it.
    pub fn set_contact_name(&mut self, name: Option<String>) {
        self.contact_name = name;
    }

    /// Sets the conversation's language.
    pub fn set_language(&mut self, language: Option<String>) {
        self.conversation.language = language;
    }

    /// Returns the record.
    pub fn conversation(&self) -> &Conversation {
        &self.conversation
    }

    /// Returns the sandbox's clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    fn next_id(&mut self, kind: &str) -> MessageId {
        self.counter += 1;
        MessageId::parse(format!("sandbox.{kind}.{}", self.counter))
            .unwrap_or_else(|_| self.fallback_id.clone())
    }

    fn ctx(&self) -> ApplyContext {
        ApplyContext {
            now: self.now,
            human_idle: self.human_idle,
            transcript_cap: self.cap,
        }
    }

    fn item(&self, event: ConversationEvent) -> InboxItem {
        InboxItem {
            seq: 0,
            received_at: self.now,
            own_echo: false,
            event,
        }
    }

    /// The customer sends `content`; returns what the bot answered.
    pub async fn customer(&mut self, content: MessageContent) -> Outcome {
        self.now = self.now.plus(Duration::from_secs(1));
        let message = InboundMessage {
            id: self.next_id("in"),
            sent_at: self.now,
            content,
            profile_name: None,
            from: self.conversation.who(),
            context_id: None,
            forwarded: false,
        };
        let step = apply(
            self.conversation.clone(),
            &self.item(ConversationEvent::Customer(message.clone())),
            &self.ctx(),
        );
        self.conversation = step.conversation;
        let mut outcome = Outcome::default();
        if self.conversation.mode == tandem_domain::Mode::Bot {
            let summary = self
                .responder
                .respond(
                    &mut self.conversation,
                    &message,
                    self.contact_name.as_deref(),
                    self.now,
                    self.cap,
                )
                .await;
            outcome.decisions = summary.decisions;
        } else {
            outcome.decisions.push(format!(
                "mode {}: the bot stays silent",
                self.conversation.mode.as_str()
            ));
        }
        self.deliver(&mut outcome);
        outcome
    }

    /// A person on the business side writes from the phone: the conversation pauses as it
    /// does at ingress.
    pub fn echo(&mut self, text: &str) -> Outcome {
        self.now = self.now.plus(Duration::from_secs(1));
        let echo = Echo {
            id: self.next_id("echo"),
            sent_at: self.now,
            content: MessageContent::Text {
                body: text.to_owned(),
            },
            to: self.conversation.who(),
        };
        self.conversation
            .record_echo(&echo, self.now, self.human_idle, self.cap);
        let step = apply(
            self.conversation.clone(),
            &self.item(ConversationEvent::Echo(echo)),
            &self.ctx(),
        );
        self.conversation = step.conversation;
        Outcome {
            decisions: vec!["a person wrote from the phone: the bot is paused".into()],
            ..Outcome::default()
        }
    }

    /// An agent acts as through the agent API (take over, release, close), applied by the
    /// same desk rules the server's lanes use; what the bot then sends (the `bot_back` text)
    /// is delivered.
    pub fn agent(&mut self, kind: tandem_domain::AgentActionKind) -> Outcome {
        self.now = self.now.plus(Duration::from_secs(1));
        let label = kind.label();
        if matches!(
            kind,
            tandem_domain::AgentActionKind::Takeover
                | tandem_domain::AgentActionKind::Message { .. }
        ) {
            // As ingress does before the lane sees the action: the bot pauses at once, for
            // at least the take-over cap.
            self.conversation.record_human_activity(
                tandem_domain::PausedBy::AgentApi,
                self.now,
                tandem_handoff::DEFAULT_TAKEOVER_CAP,
            );
        }
        let action = tandem_domain::AgentAction {
            agent: Some("you".into()),
            at: self.now,
            kind,
        };
        let ctx = crate::desk::DeskContext {
            now: self.now,
            cap: self.cap,
            responder: Some(&self.responder),
        };
        let mut happenings = Vec::new();
        crate::desk::Desk::default().on_agent(
            &mut self.conversation,
            &action,
            &ctx,
            &mut happenings,
        );
        let mut outcome = Outcome {
            decisions: vec![format!(
                "an agent's {label}: mode {}",
                self.conversation.mode.as_str()
            )],
            ..Outcome::default()
        };
        outcome.decisions.extend(
            happenings
                .iter()
                .map(|h| format!("hook {}", h.event.name())),
        );
        self.deliver(&mut outcome);
        outcome
    }

    /// Lets `duration` pass, firing the conversation's timer when it falls due.
    pub fn wait(&mut self, duration: Duration) -> Outcome {
        self.now = self.now.plus(duration);
        let mut outcome = Outcome::default();
        let recovery = Duration::from_secs(30);
        if self
            .conversation
            .next_wake(self.now, recovery)
            .is_some_and(|at| at <= self.now)
        {
            let step = apply(
                self.conversation.clone(),
                &self.item(ConversationEvent::IdleCheck),
                &self.ctx(),
            );
            self.conversation = step.conversation;
            if let Some(reason) = step.resumed {
                outcome.decisions.push(format!("bot resumed ({reason})"));
                // As the lane does: the one-time "the assistant is back" text, when set.
                self.responder.notice(
                    &mut self.conversation,
                    "bot_back",
                    serde_json::Value::Null,
                    self.now,
                    self.cap,
                );
            }
        }
        self.deliver(&mut outcome);
        outcome
    }

    /// Sends what the outbox holds, as the sender would.
    fn deliver(&mut self, outcome: &mut Outcome) {
        let template = self.responder.flows().current().window_template_content();
        while !self.conversation.outbox.is_empty() {
            let head = self.conversation.outbox.remove(0);
            match prepare(&self.conversation, &head, self.now, template.clone(), &[]) {
                Prepared::MarkRead => {}
                Prepared::Drop(reason) => {
                    self.conversation
                        .push(TranscriptEntry::system(self.now, reason.clone()), self.cap);
                    outcome.not_sent.push(reason);
                }
                Prepared::Send(content) => {
                    let id = self.next_id("out");
                    self.conversation.push(
                        TranscriptEntry::sent(self.now, Role::Bot, id, &content),
                        self.cap,
                    );
                    outcome.replies.push(content);
                }
            }
        }
    }
}
