//! A conversation with the flows and no WhatsApp account: what `tandem chat` and
//! `tandem test` run.
//!
//! It runs the server's path with the store and the Graph API left out: the ingress pause
//! ([`crate::ingress::pause_for`], [`tandem_store::apply_pause`]), the lane's decision
//! ([`crate::turn::decide`], driven by the same [`crate::responder`] driver, with real HTTP
//! for `call` steps and the LLM when configured), the timer the decision sets, and the
//! sender's [`prepare`] decision. The record lives in memory and the clock only moves when
//! told. A message the sender would send is handed back instead, and recorded in the
//! transcript under a made-up wamid.
//!
//! Two things differ from a server on purpose: the customer is taken to stop typing after
//! each message (a held burst is answered at its due time at once), and the desk has no
//! teams or hooks (the routing of `tandem.toml` is not read).

use std::time::Duration;

use tandem_domain::{
    AgentAction, AgentActionKind, Conversation, ConversationEvent, ConversationId, Echo,
    InboundMessage, MessageContent, MessageId, OutboundContent, Role, Timestamp, TranscriptEntry,
};
use tandem_store::{InboxItem, TimerChange};

use crate::desk::Desk;
use crate::responder::{Responder, drive};
use crate::sender::{Prepared, prepare};
use crate::turn::{Decision, Input, Parts, Settings};

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
    desk: Desk,
    settings: Settings,
    now: Timestamp,
    /// When the conversation's timer fires, as the store would keep it.
    timer: Option<Timestamp>,
    contact_name: Option<String>,
    counter: u64,
    /// Used should a generated id ever fail to parse.
    fallback_id: MessageId,
}

impl Sandbox {
    /// Starts a conversation of customer `wa_id` at `start`; a person's message pauses the
    /// bot for `human_idle`.
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
        let config = crate::EngineConfig {
            human_idle,
            ..crate::EngineConfig::default()
        };
        let desk = Desk::default();
        let settings = Settings::new(&config, &desk, Some(&responder));
        Ok(Self {
            conversation: Conversation::new(id, start),
            responder,
            desk,
            settings,
            now: start,
            timer: None,
            contact_name: None,
            counter: 0,
            fallback_id: MessageId::parse("sandbox")?,
        })
    }

    /// Holds a customer's texts for `window` before answering them as one, as
    /// `engine.burst_window` does on the server.
    pub fn set_burst_window(&mut self, window: Duration) {
        self.settings.burst_window = window;
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
        let mut outcome = self.event(ConversationEvent::Customer(message)).await;
        if self.conversation.mode() != tandem_domain::Mode::Bot {
            outcome.decisions.push(format!(
                "mode {}: the bot stays silent",
                self.conversation.mode().as_str()
            ));
        }
        // The customer types nothing more: a held burst is answered when it falls due.
        if let Some(due) = self.conversation.bot.burst.as_ref().map(|b| b.due) {
            let later = self.wait(due.since(self.now)).await;
            outcome.replies.extend(later.replies);
            outcome.decisions.extend(later.decisions);
            outcome.not_sent.extend(later.not_sent);
        }
        outcome
    }

    /// A person on the business side writes from the phone: the conversation pauses as it
    /// does at ingress.
    pub async fn echo(&mut self, text: &str) -> Outcome {
        self.now = self.now.plus(Duration::from_secs(1));
        let echo = Echo {
            id: self.next_id("echo"),
            sent_at: self.now,
            content: MessageContent::Text {
                body: text.to_owned(),
            },
            to: self.conversation.who(),
        };
        let mut outcome = self.event(ConversationEvent::Echo(echo)).await;
        outcome
            .decisions
            .insert(0, "a person wrote from the phone: the bot is paused".into());
        outcome
    }

    /// An agent acts as through the agent API (take over, release, close): the pause at
    /// ingress, then the lane's decision; what the bot then sends (the `bot_back` text) is
    /// delivered.
    pub async fn agent(&mut self, kind: AgentActionKind) -> Outcome {
        self.now = self.now.plus(Duration::from_secs(1));
        let label = kind.label();
        let action = AgentAction {
            agent: Some("you".into()),
            at: self.now,
            kind,
        };
        let mut outcome = self.event(ConversationEvent::Agent(action)).await;
        outcome.decisions.insert(
            0,
            format!(
                "an agent's {label}: mode {}",
                self.conversation.mode().as_str()
            ),
        );
        outcome
    }

    /// Lets `duration` pass, firing the conversation's timer each time it falls due.
    pub async fn wait(&mut self, duration: Duration) -> Outcome {
        let until = self.now.plus(duration);
        let mut outcome = Outcome::default();
        while let Some(due) = self.timer.filter(|at| *at <= until) {
            self.now = due.max(self.now);
            self.timer = None;
            let fired = self.event(ConversationEvent::IdleCheck).await;
            outcome.replies.extend(fired.replies);
            outcome.decisions.extend(fired.decisions);
            outcome.not_sent.extend(fired.not_sent);
        }
        self.now = until;
        outcome
    }

    /// Takes `event` through ingress, the lane's decision and the sender, as the server does.
    async fn event(&mut self, event: ConversationEvent) -> Outcome {
        let cap = self.settings.transcript_cap;
        if let Some(pause) = crate::ingress::pause_for(&event, &self.settings.pause) {
            tandem_store::apply_pause(&mut self.conversation, &event, &pause, self.now, cap);
        }
        let items = [InboxItem {
            seq: 0,
            received_at: self.now,
            own_echo: false,
            event,
        }];
        let flows = self.responder.flows().current();
        let parts = Parts {
            flows: Some(&flows),
            desk: &self.desk,
        };
        let input = Input {
            items: &items,
            contact_name: self.contact_name.as_deref(),
            now: self.now,
        };
        let before = &self.conversation;
        let again = || std::future::ready(Ok::<_, std::convert::Infallible>(before.clone()));
        let decided = drive(
            before.clone(),
            &input,
            &parts,
            &self.settings,
            Some(&self.responder),
            again,
        )
        .await;
        let Ok(Decision {
            conversation,
            timer,
            effects,
        }) = decided;
        self.conversation = conversation;
        match timer {
            TimerChange::Set(at) => self.timer = Some(at),
            TimerChange::Clear => self.timer = None,
            TimerChange::Keep => {}
        }
        let mut outcome = Outcome {
            decisions: effects.decisions,
            ..Outcome::default()
        };
        outcome.decisions.extend(
            effects
                .happenings
                .iter()
                .map(|h| format!("hook {}", h.event.name())),
        );
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
                    self.conversation.push(
                        TranscriptEntry::system(self.now, reason.clone()),
                        self.settings.transcript_cap,
                    );
                    outcome.not_sent.push(reason);
                }
                Prepared::Send(content) => {
                    let id = self.next_id("out");
                    self.conversation.push(
                        TranscriptEntry::sent(self.now, Role::Bot, id, &content),
                        self.settings.transcript_cap,
                    );
                    outcome.replies.push(content);
                }
            }
        }
    }
}
