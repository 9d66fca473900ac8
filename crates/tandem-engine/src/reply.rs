//! The bot's answer to a customer message, decided without IO: the classifier cascade, the
//! flows, the `call`s they ask for, and the replies queued in the record's outbox.
//!
//! Part of [`crate::turn::decide`]: LLM and backend calls are asked through the turn's
//! journal ([`crate::turn::Io`]) and answered by the driver.

use serde_json::Value;
use tandem_classify::llm::{IntentInfo, Line};
use tandem_domain::{
    Conversation, InboundMessage, MessageContent, MessageId, Role, SendAction, SendOrigin,
    StatusUpdate, Timestamp, TranscriptEntry,
};
use tandem_flows::{Bot, CallOutcome, Effect, Intent, TurnContext};

use crate::turn::{Answer, Effects, Io, LlmUse, Note, Pending, Request};

/// Most `call` steps one turn may run.
const CALLS_PER_TURN: usize = 8;

/// What the bot's side of a decision reads besides the record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env<'a> {
    /// The flows in force, when the deployment runs a bot.
    pub bot: Option<&'a Bot>,
    /// The time of the decision.
    pub now: Timestamp,
    /// Transcript lines kept.
    pub cap: usize,
    /// The customer's name in the business's address book.
    pub contact_name: Option<&'a str>,
    /// Which LLM requests may be made.
    pub llm: LlmUse,
    /// When the semantic stage is on: the local model's confidence to answer alone.
    pub semantic: Option<f32>,
}

/// What a bot turn did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Replied {
    /// Messages queued.
    pub queued: usize,
    /// True when the turn handed the conversation to a person.
    pub handoff: bool,
    /// The intent the message was classified as, when a stage was sure.
    pub intent: Option<String>,
}

/// Answers a customer message in a conversation the bot is in charge of: classifies it (rules,
/// local model, the semantic stage when on, then the LLM), runs the flows, makes their calls, and queues the replies
/// (after a mark-as-read with the typing indicator). Adds system lines for handoffs,
/// opt-outs and flow errors.
pub(crate) fn respond(
    bot: &Bot,
    c: &mut Conversation,
    message: &InboundMessage,
    env: &Env<'_>,
    io: &mut Io<'_>,
    out: &mut Effects,
) -> Result<Replied, Pending> {
    let (now, cap) = (env.now, env.cap);
    let ctx = TurnContext {
        now,
        contact_name: env.contact_name,
        extract: env.llm.extract,
    };
    let text = tandem_flows::validate::answer_text(&message.content);
    let lexical_threshold = env.semantic.map_or(bot.settings.classifier_threshold, |t| {
        t.max(bot.settings.classifier_threshold)
    });
    let classified = text
        .map(|text| bot.classify_at(text, lexical_threshold))
        .unwrap_or_default();
    let mut intent = classified.intent;
    let mut guess = classified.guess;
    let mut llm_decisions = Vec::new();
    let mut person = None;
    let answers_question =
        intent.is_none() && c.bot.position.is_some() && bot.accepts(c, &message.content, &ctx);
    if let Some(text) = text
        .filter(|_| env.semantic.is_some() && intent.is_none() && !c.opted_out && !answers_question)
    {
        match io.ask(Request::Semantic {
            text: text.to_owned(),
        })? {
            Answer::Semantic(Ok(m)) if m.sure && bot.flows.iter().any(|f| f.id == m.intent) => {
                intent = Some(Intent {
                    flow: m.intent,
                    stage: "semantic",
                    confidence: m.confidence,
                });
            }
            Answer::Semantic(Ok(m)) => {
                llm_decisions.push(format!(
                    "semantic: unsure, `{}` ({:.2})",
                    m.intent, m.confidence
                ));
                guess = Some((m.intent, m.confidence));
            }
            Answer::Semantic(Err(error)) => {
                llm_decisions.push(format!("semantic stage skipped: {error}"));
            }
            _ => {}
        }
    }
    // A message that is not a valid answer to the question waited on (or that comes outside
    // one) is worth an LLM call: its triage may hand off even mid-flow.
    let consult_llm = env.llm.triage && intent.is_none() && !c.opted_out && !answers_question;
    if let Some(text) = text.filter(|_| consult_llm)
        && let Some(triage) = triage(bot, c, message, text, io, &mut llm_decisions)?
    {
        person = bot.settings.handoff_on.reason(&triage);
        intent = (triage.intent != tandem_classify::eval::OUT_OF_SCOPE).then_some(Intent {
            flow: triage.intent,
            stage: "llm",
            confidence: triage.confidence,
        });
    }
    out.notes.push(Note::Classified(
        intent.as_ref().map_or("none", |i| i.stage),
    ));
    if text.is_some() {
        let understood = understood(intent.as_ref(), guess, answers_question);
        if let Some(line) = c
            .transcript
            .iter_mut()
            .rev()
            .find(|e| e.role == Role::Customer && e.message_id.as_ref() == Some(&message.id))
        {
            line.understood = Some(understood);
        }
    }
    let flow = intent.as_ref().map(|i| i.flow.clone());
    let mut turn = match person {
        // A triage rule (needs a person, urgent, upset) wins over any flow.
        Some(reason) => bot.hand_off_for(c, reason, &message.content, &ctx),
        None => bot.on_message(c, &message.content, flow.as_deref(), &ctx),
    };
    if let Some(request) = turn.extract.take() {
        // The validator refused the answer: the LLM may read the value out of it, then the
        // flow sees that value (or the original answer) once more, without this step.
        let mut earlier = std::mem::take(&mut turn.decisions);
        let slot = request.slot.clone();
        let value = match io.ask(Request::Extract(request))? {
            Answer::Extract(value) => value,
            _ => None,
        };
        let content = match &value {
            Some(value) => {
                earlier.push(format!("the LLM read `{slot}` = {value}"));
                MessageContent::Text {
                    body: value.clone(),
                }
            }
            None => message.content.clone(),
        };
        let again = TurnContext {
            extract: false,
            ..ctx
        };
        turn = bot.on_message(c, &content, flow.as_deref(), &again);
        earlier.append(&mut turn.decisions);
        turn.decisions = earlier;
    }
    let mut effects = std::mem::take(&mut turn.effects);
    if let Some(i) = &intent {
        out.decisions.push(format!(
            "classified `{}` by {} ({:.2})",
            i.flow, i.stage, i.confidence
        ));
    }
    out.decisions.append(&mut llm_decisions);
    out.decisions.append(&mut turn.decisions);
    let mut errors = std::mem::take(&mut turn.errors);
    let mut calls = 0;
    while let Some(request) = turn.call.take() {
        calls += 1;
        let outcome = if calls > CALLS_PER_TURN {
            CallOutcome::Failed(format!("more than {CALLS_PER_TURN} calls in one turn"))
        } else {
            // The same message makes the same calls in the same order, so a turn run again
            // (after a crash or a lost lane) sends the same keys.
            let key = idempotency_key(&c.id, &message.id, calls);
            match io.ask(Request::Call { request, key })? {
                Answer::Call(outcome) => outcome,
                _ => CallOutcome::Failed("no answer".into()),
            }
        };
        turn = bot.on_call_result(c, outcome, &ctx);
        effects.append(&mut turn.effects);
        out.decisions.append(&mut turn.decisions);
        errors.append(&mut turn.errors);
    }
    let mut replied = Replied {
        intent: flow,
        ..Replied::default()
    };
    for error in errors {
        c.push(
            TranscriptEntry::system(now, format!("flow error: {error}")),
            cap,
        );
        out.notes.push(Note::FlowError(error));
    }
    if effects
        .iter()
        .any(|e| matches!(e, Effect::Reply(_) | Effect::OptedOut(_)))
    {
        c.queue_send(
            SendOrigin::Bot,
            SendAction::MarkRead {
                message_id: message.id.clone(),
            },
            now,
        );
    }
    for effect in effects {
        match effect {
            Effect::Reply(content) => {
                c.queue_send(SendOrigin::Bot, SendAction::Message { content }, now);
                replied.queued += 1;
            }
            Effect::OptedOut(content) => {
                c.queue_send(
                    SendOrigin::OptOutNotice,
                    SendAction::Message { content },
                    now,
                );
                replied.queued += 1;
                c.push(TranscriptEntry::system(now, "customer opted out"), cap);
            }
            Effect::OptedIn => c.push(TranscriptEntry::system(now, "customer opted back in"), cap),
            Effect::Handoff(request) => {
                let team = request.team.as_deref().unwrap_or("any team");
                c.push(
                    TranscriptEntry::system(
                        now,
                        format!("handed to a person ({team}): {}", request.reason),
                    ),
                    cap,
                );
                replied.handoff = true;
            }
        }
    }
    Ok(replied)
}

/// The LLM stage: a triage of a message no earlier stage was sure of. Keeps the triage on the
/// record and the detected language when the bot writes in it. A failure is noted in
/// `decisions` and gives `None`: the caller falls back.
fn triage(
    bot: &Bot,
    c: &mut Conversation,
    message: &InboundMessage,
    text: &str,
    io: &mut Io<'_>,
    decisions: &mut Vec<String>,
) -> Result<Option<tandem_classify::llm::Triage>, Pending> {
    let intents = bot
        .flows
        .iter()
        .map(|f| IntentInfo {
            id: f.id.clone(),
            description: f.description.clone(),
            examples: f.examples.iter().take(3).cloned().collect(),
        })
        .collect();
    let request = Request::Triage {
        intents,
        // The last ten lines before this message.
        transcript: recent_lines(c, 10, Some(&message.id)),
        text: text.to_owned(),
    };
    let answer = match io.ask(request)? {
        Answer::Triage(answer) => answer,
        _ => Err("no answer".into()),
    };
    match answer {
        Ok(triage) => {
            decisions.push(format!(
                "llm: {} ({:.2}), language {}, urgency {}, sentiment {}, needs_human {}",
                triage.intent,
                triage.confidence,
                triage.language,
                triage.urgency,
                triage.sentiment,
                triage.needs_human
            ));
            c.triage = Some(triage.clone());
            // The detected language picks text variants, when the bot writes in it.
            if bot.settings.languages.contains(&triage.language) {
                c.language = Some(triage.language.clone());
            }
            Ok(Some(triage))
        }
        Err(error) => {
            decisions.push(format!("llm failed ({error}): fallback"));
            Ok(None)
        }
    }
}

/// Asks the LLM (when it summarizes) for the lines the person taking over reads first and
/// keeps them on the handoff request; without an answer the handoff goes on without one.
pub(crate) fn summarize(
    c: &mut Conversation,
    env: &Env<'_>,
    io: &mut Io<'_>,
) -> Result<(), Pending> {
    let Some(reason) = c.handoff().map(|h| h.reason.to_string()) else {
        return Ok(());
    };
    if !env.llm.summarize {
        return Ok(());
    }
    let transcript = recent_lines(c, 30, None);
    if let Answer::Summary(Some(summary)) = io.ask(Request::Summary { reason, transcript })?
        && let Some(handoff) = c.handoff_mut()
    {
        handoff.summary = Some(summary);
    }
    Ok(())
}

/// Queues the built-in text `name` (`queue_wait`, `queue_closed`, `bot_back`, `handoff`) with
/// `queue` in scope, when the deployment runs a bot, the business left the text non-empty and
/// the customer's window is open (these messages are never worth a paid template).
pub(crate) fn notice(
    env: &Env<'_>,
    c: &mut Conversation,
    name: &str,
    queue: Value,
    out: &mut Effects,
) {
    let (now, cap) = (env.now, env.cap);
    let Some(bot) = env.bot.filter(|_| c.window_open(now)) else {
        return;
    };
    let ctx = TurnContext {
        now,
        contact_name: None,
        extract: false,
    };
    match bot.notice(c, name, queue, &ctx) {
        Ok(Some(content)) => {
            c.queue_send(SendOrigin::Bot, SendAction::Message { content }, now);
        }
        Ok(None) => {}
        Err(error) => {
            let error = format!("in texts.{name}: {error}");
            c.push(
                TranscriptEntry::system(now, format!("flow error {error}")),
                cap,
            );
            out.notes.push(Note::FlowError(error));
        }
    }
}

/// Handles a delivery failure WhatsApp reported for one of the bot's messages: for 131047
/// (the 24-hour window had closed) the configured window template is queued once, so the
/// customer still hears from the business; other failures are noted in the transcript.
pub(crate) fn on_failed_send(
    bot: &Bot,
    c: &mut Conversation,
    status: &StatusUpdate,
    now: Timestamp,
    cap: usize,
) {
    let ours = c.transcript.iter().any(|e| {
        e.role == Role::Bot
            && e.message_id.as_ref() == Some(&status.message_id)
            && e.kind != "template"
    });
    if !ours {
        return;
    }
    let codes: Vec<String> = status.error_codes.iter().map(i64::to_string).collect();
    let window_closed = status.error_codes.contains(&131_047);
    match bot.window_template_content() {
        Some(content) if window_closed && c.may_send(SendOrigin::Bot) => {
            c.push(
                TranscriptEntry::system(now, "a bot message failed: the 24-hour window had closed (131047); the window template is queued"),
                cap,
            );
            c.queue_send(SendOrigin::Bot, SendAction::Message { content }, now);
        }
        _ => c.push(
            TranscriptEntry::system(
                now,
                format!("a bot message failed (error {})", codes.join(", ")),
            ),
            cap,
        ),
    }
}

/// What the cascade made of a customer's text, for its transcript line: the stage and flow
/// that decided, or, when none did, the local model's unsure best guess.
fn understood(
    intent: Option<&Intent>,
    guess: Option<(String, f32)>,
    answers_question: bool,
) -> tandem_domain::Understood {
    match intent {
        Some(i) => tandem_domain::Understood {
            stage: i.stage.to_owned(),
            intent: Some(i.flow.clone()),
            guess: None,
            confidence: Some(i.confidence),
        },
        None => {
            let guess = guess.filter(|_| !answers_question);
            tandem_domain::Understood {
                stage: if answers_question { "answer" } else { "none" }.to_owned(),
                intent: None,
                confidence: guess.as_ref().map(|g| g.1),
                guess: guess.map(|g| g.0),
            }
        }
    }
}

/// The last `n` transcript lines (without the line of message `except`), oldest first, as
/// the LLM's prompts show them.
fn recent_lines(c: &Conversation, n: usize, except: Option<&MessageId>) -> Vec<Line> {
    let mut lines: Vec<Line> = c
        .transcript
        .iter()
        .rev()
        .filter(|e| except.is_none_or(|id| e.message_id.as_ref() != Some(id)))
        .take(n)
        .map(|e| Line {
            role: format!("{:?}", e.role).to_lowercase(),
            text: e.text.clone(),
        })
        .collect();
    lines.reverse();
    lines
}

/// The `Idempotency-Key` of the `n`-th call of the turn answering `message`: the same for
/// every run of that turn, and a valid header value whatever the ids hold.
fn idempotency_key(
    conversation: &tandem_domain::ConversationId,
    message: &MessageId,
    n: usize,
) -> String {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-:=+/".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "tandem-{}-{}-{n}",
        safe(&conversation.to_string()),
        safe(message.as_str())
    )
}
