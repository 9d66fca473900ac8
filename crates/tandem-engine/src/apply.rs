//! The step function of a conversation lane: record + event → new record + timer change.
//!
//! Pure: no IO, no clock (the time comes in [`ApplyContext`]). Applying the same event to
//! the same record always gives the same result, which is what lets a lane retry a step after
//! a conflict or a crash without doing anything twice. The pause for a human echo is not set
//! here but at ingress (see [`crate::ingress`]); here the echo only joins the transcript.

use std::time::Duration;

use tandem_domain::conversation::IdleDecision;
use tandem_domain::{
    Conversation, ConversationEvent, HistoryThread, InboundMessage, MessageContent, PauseRules,
    PausedBy, Role, Timestamp, TranscriptEntry,
};
use tandem_store::{InboxItem, TimerChange};

/// What a step needs besides the record and the event.
#[derive(Debug, Clone, Copy)]
pub struct ApplyContext<'a> {
    /// The time the step runs at.
    pub now: Timestamp,
    /// How long a person's activity pauses the bot.
    pub rules: &'a PauseRules,
    /// How many transcript lines to keep.
    pub transcript_cap: usize,
}

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The new record.
    pub conversation: Conversation,
    /// What to do with the idle timer.
    pub timer: TimerChange,
    /// Set when the step handed the conversation back to the bot (a bounded reason label).
    pub resumed: Option<&'static str>,
}

/// Applies `item` to `conversation`.
pub fn apply(mut conversation: Conversation, item: &InboxItem, ctx: &ApplyContext<'_>) -> Step {
    let cap = ctx.transcript_cap;
    let mut timer = TimerChange::Keep;
    let mut resumed = None;
    let c = &mut conversation;
    c.events_applied += 1;
    match &item.event {
        ConversationEvent::Customer(message) => customer_message(c, message, cap),
        ConversationEvent::Echo(echo) => {
            c.note_identity(&echo.to);
            let role = if item.own_echo {
                Role::Bot
            } else {
                Role::Human
            };
            if !c.amend(&echo.content) && !c.has_message(&echo.id) {
                c.push(
                    TranscriptEntry::message(echo.sent_at, role, echo.id.clone(), &echo.content),
                    cap,
                );
            }
        }
        ConversationEvent::Status(status) => {
            c.note_identity(&status.recipient);
            c.record_status(&status.message_id, status.status);
        }
        ConversationEvent::History(thread) => {
            c.note_identity(&thread.customer);
            if let Some(due) = import_history(c, thread, ctx) {
                timer = TimerChange::Set(due);
            }
        }
        ConversationEvent::IdleCheck => match c.idle_decision(ctx.now) {
            IdleDecision::Resume => {
                let idle = humanize(ctx.rules.idle_for(c));
                c.resume(
                    ctx.now,
                    &format!("no message from a person for {idle}"),
                    cap,
                );
                timer = TimerChange::Clear;
                resumed = Some("human_idle");
            }
            IdleDecision::WaitUntil(at) => timer = TimerChange::Set(at),
            IdleDecision::NotPaused => {}
        },
        // Agent and router actions need the routing policy: the lane's desk applies them.
        ConversationEvent::Agent(_) => {}
        // New aliases are in the store already; the record only learns the new address.
        // Not a chat message: no transcript line, no bot turn, pause and window untouched.
        ConversationEvent::IdentityChanged(change) => c.note_identity(&change.current),
    }
    Step {
        conversation,
        timer,
        resumed,
    }
}

fn customer_message(c: &mut Conversation, message: &InboundMessage, cap: usize) {
    c.note_identity(&message.from);
    if let Some(name) = &message.profile_name {
        c.profile_name = Some(name.clone());
    }
    c.customer_last_at = Some(
        c.customer_last_at
            .map_or(message.sent_at, |t| t.max(message.sent_at)),
    );
    let amended = matches!(
        message.content,
        MessageContent::Edit { .. } | MessageContent::Revoke { .. }
    ) && c.amend(&message.content);
    if !amended && !c.has_message(&message.id) {
        c.push(
            TranscriptEntry::message(
                message.sent_at,
                Role::Customer,
                message.id.clone(),
                &message.content,
            ),
            cap,
        );
    }
}

/// Imports past messages. Never opens the 24-hour window and never replies; a conversation
/// whose latest business-side message is more recent than the idle time is handed to people.
/// Returns the idle timer to arm when it did that.
fn import_history(
    c: &mut Conversation,
    thread: &HistoryThread,
    ctx: &ApplyContext<'_>,
) -> Option<Timestamp> {
    let entries = thread
        .messages
        .iter()
        .map(|m| {
            let role = if m.from_business {
                Role::Human
            } else {
                Role::Customer
            };
            TranscriptEntry::message(m.sent_at, role, m.id.clone(), &m.content)
        })
        .collect();
    c.merge_historical(entries, ctx.transcript_cap);
    let latest_business = thread
        .messages
        .iter()
        .filter(|m| m.from_business)
        .map(|m| m.sent_at)
        .max()?;
    if latest_business.plus(ctx.rules.idle_for(c)) <= ctx.now {
        return None;
    }
    c.record_human_activity(PausedBy::History, latest_business, ctx.rules);
    c.resume_at()
}

fn humanize(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::{
        ConversationId, DeliveryStatus, Echo, HistoryMessage, MessageId, Mode, StatusUpdate,
    };

    const NOW: Timestamp = Timestamp(10_000_000);
    const IDLE: Duration = Duration::from_secs(60);
    const RULES: PauseRules = PauseRules {
        human_idle: IDLE,
        team_idle: std::collections::BTreeMap::new(),
        takeover_cap: IDLE,
    };
    const CTX: ApplyContext<'static> = ApplyContext {
        now: NOW,
        rules: &RULES,
        transcript_cap: 50,
    };

    fn record() -> Conversation {
        Conversation::new(ConversationId::parse("1:2").unwrap(), Timestamp(0))
    }

    fn item(event: ConversationEvent) -> InboxItem {
        InboxItem {
            seq: 1,
            received_at: NOW,
            own_echo: false,
            event,
        }
    }

    fn text(id: &str, body: &str, at: u64) -> InboundMessage {
        InboundMessage {
            from: tandem_domain::Identity::default(),
            id: MessageId::parse(id).unwrap(),
            sent_at: Timestamp(at),
            content: MessageContent::Text { body: body.into() },
            profile_name: Some("Ana".into()),
            context_id: None,
            forwarded: false,
        }
    }

    #[test]
    fn a_customer_message_joins_the_transcript_and_opens_the_window_once() {
        let event = item(ConversationEvent::Customer(text("m1", "hi", 5_000)));
        let once = apply(record(), &event, &CTX);
        let twice = apply(once.conversation.clone(), &event, &CTX);
        assert_eq!(once.conversation.transcript.len(), 1);
        assert_eq!(
            twice.conversation.transcript.len(),
            1,
            "a replayed event adds nothing"
        );
        assert_eq!(once.conversation.customer_last_at, Some(Timestamp(5_000)));
        assert_eq!(once.conversation.profile_name.as_deref(), Some("Ana"));
    }

    #[test]
    fn echoes_are_human_lines_unless_they_are_our_own_sends() {
        let echo = Echo {
            to: tandem_domain::Identity::default(),
            id: MessageId::parse("e1").unwrap(),
            sent_at: NOW,
            content: MessageContent::Text {
                body: "hello".into(),
            },
        };
        let human = apply(record(), &item(ConversationEvent::Echo(echo.clone())), &CTX);
        assert_eq!(human.conversation.transcript[0].role, Role::Human);
        let mut own = item(ConversationEvent::Echo(echo));
        own.own_echo = true;
        assert_eq!(
            apply(record(), &own, &CTX).conversation.transcript[0].role,
            Role::Bot
        );
    }

    #[test]
    fn the_idle_check_resumes_only_after_the_person_went_quiet() {
        let mut c = record();
        c.record_human_activity(PausedBy::Echo, NOW, &RULES);
        let early = apply(c.clone(), &item(ConversationEvent::IdleCheck), &CTX);
        assert_eq!(early.conversation.mode(), Mode::Human);
        assert_eq!(early.timer, TimerChange::Set(NOW.plus(IDLE)));
        let late_ctx = ApplyContext {
            now: NOW.plus(IDLE),
            ..CTX
        };
        let late = apply(c, &item(ConversationEvent::IdleCheck), &late_ctx);
        assert_eq!(late.conversation.mode(), Mode::Bot);
        assert_eq!(late.timer, TimerChange::Clear);
        assert_eq!(late.resumed, Some("human_idle"));
        assert_eq!(
            late.conversation.transcript.last().unwrap().text,
            "bot resumed: no message from a person for 1m"
        );
    }

    #[test]
    fn history_never_opens_the_window_and_pauses_only_when_recent() {
        let thread = |business_at: u64| HistoryThread {
            customer: tandem_domain::Identity::default(),
            phase: Some(0),
            chunk_order: Some(1),
            progress: Some(100),
            messages: vec![
                HistoryMessage {
                    id: MessageId::parse("h1").unwrap(),
                    sent_at: Timestamp(1_000),
                    from_business: false,
                    content: MessageContent::Text { body: "q".into() },
                    status: None,
                },
                HistoryMessage {
                    id: MessageId::parse("h2").unwrap(),
                    sent_at: Timestamp(business_at),
                    from_business: true,
                    content: MessageContent::Text { body: "a".into() },
                    status: None,
                },
            ],
        };
        let old = apply(
            record(),
            &item(ConversationEvent::History(thread(2_000))),
            &CTX,
        );
        assert_eq!(old.conversation.mode(), Mode::Bot);
        assert_eq!(old.conversation.customer_last_at, None);
        assert_eq!(old.timer, TimerChange::Keep);
        assert!(old.conversation.transcript.iter().all(|e| e.historical));
        let recent_at = NOW.as_millis() - 10_000;
        let recent = apply(
            record(),
            &item(ConversationEvent::History(thread(recent_at))),
            &CTX,
        );
        assert_eq!(recent.conversation.mode(), Mode::Human);
        assert_eq!(recent.conversation.paused_by(), Some(PausedBy::History));
        assert_eq!(
            recent.timer,
            TimerChange::Set(Timestamp(recent_at).plus(IDLE))
        );
    }

    #[test]
    fn statuses_update_our_message_and_never_move_backwards() {
        let mut c = record();
        let id = MessageId::parse("ours").unwrap();
        c.push(
            TranscriptEntry::message(
                NOW,
                Role::Bot,
                id.clone(),
                &MessageContent::Text { body: "x".into() },
            ),
            10,
        );
        let status = |s: DeliveryStatus| {
            item(ConversationEvent::Status(StatusUpdate {
                recipient: tandem_domain::Identity::default(),
                message_id: id.clone(),
                status: s,
                status_raw: String::new(),
                at: NOW,
                error_codes: vec![],
                callback_data: None,
            }))
        };
        let read = apply(c, &status(DeliveryStatus::Read), &CTX).conversation;
        let after = apply(read, &status(DeliveryStatus::Delivered), &CTX).conversation;
        assert_eq!(after.transcript[0].status, Some(DeliveryStatus::Read));
    }
}
