//! The flow runtime: given a conversation record and what the customer sent, decide what the
//! bot says and where the conversation stands next.
//!
//! Pure decision logic: no IO and no clock. The record's [`BotState`] holds the position,
//! slots and variables; replies and handoffs come back as [`Effect`]s for the engine to queue
//! in the same atomic write. A `call` step is the one thing the runtime cannot do itself: the
//! turn stops with a [`CallRequest`], the engine performs it, and
//! [`Bot::on_call_result`] carries on from there.
//!
//! The entry point takes the intent already decided by the caller (today the flows' regex
//! triggers through [`Bot::match_trigger`]; the classifier cascade plugs in there).
//!
//! [`BotState`]: tandem_domain::BotState

use std::time::Duration;

use minijinja::Value;
use serde_json::json;
use tandem_domain::{
    Conversation, FlowPosition, HandoffReason, HandoffRequest, ListRow, ListSection,
    MessageContent, OutboundContent, Role, Timestamp,
};

use crate::hours::zoned;
use crate::model::{Bot, Choice, Handoff, Route, StepKind};
use crate::template::{RenderError, Text};
use crate::validate::answer_text;

/// How many steps one turn may run before the runtime decides the flows loop.
const STEP_BUDGET: usize = 64;
/// The after-hours notice is sent at most once in this time.
const AFTER_HOURS_EVERY: Duration = Duration::from_secs(12 * 3600);

/// What the bot does as a result of a turn, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this message.
    Reply(OutboundContent),
    /// The customer opted out; this confirmation is the last message they get.
    OptedOut(OutboundContent),
    /// The customer opted back in.
    OptedIn,
    /// The conversation was handed to a person.
    Handoff(HandoffRequest),
}

/// The flow a message was classified as, by which stage, how surely.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// The flow's id.
    pub flow: String,
    /// `rules` (a trigger matched) or `local` (the local model).
    pub stage: &'static str,
    /// 1 for rules; the model's probability otherwise.
    pub confidence: f32,
}

/// What the rules and the local model made of a message ([`Bot::classify`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classified {
    /// The flow a stage was sure of.
    pub intent: Option<Intent>,
    /// Without one: the local model's best flow and its confidence, below the threshold
    /// (`None` without a model, or when the text shares no feature with any example).
    pub guess: Option<(String, f32)>,
}

/// An HTTP request a `call` step needs before the flow can go on.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRequest {
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// The rendered URL.
    pub url: String,
    /// Rendered headers.
    pub headers: Vec<(String, String)>,
    /// The rendered JSON body.
    pub body: Option<serde_json::Value>,
    /// How long to wait.
    pub timeout: Duration,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CallOutcome {
    /// The backend answered (any status); the body parsed as JSON, or as a string.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The body.
        body: serde_json::Value,
    },
    /// No answer: connection refused, timeout, unreadable body.
    Failed(String),
}

/// The result of one turn.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    /// What to send or do, in order.
    pub effects: Vec<Effect>,
    /// Set when the flow waits for the backend: perform it and call [`Bot::on_call_result`].
    pub call: Option<CallRequest>,
    /// What the bot decided, step by step, for logs, `tandem chat` and the transcript.
    pub decisions: Vec<String>,
    /// Templates that failed to render (the flow was left, the fallback said).
    pub errors: Vec<String>,
    /// Set when an answer to an `ask` step was refused and the turn may ask the LLM to read
    /// the value out of it: nothing else happened; perform it and call
    /// [`Bot::on_message`] again with the value (or the original answer) and `extract` off.
    pub extract: Option<ExtractRequest>,
}

/// An answer the validator refused, to be read by the LLM's slot extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractRequest {
    /// The slot asked for.
    pub slot: String,
    /// What the step expects, in words (`a number between 1 and 9`, `an e-mail address`…).
    pub expects: String,
    /// The question as the customer saw it.
    pub question: String,
    /// The customer's answer.
    pub answer: String,
}

impl Turn {
    fn decide(&mut self, decision: impl Into<String>) {
        self.decisions.push(decision.into());
    }
}

/// What a turn reads besides the record.
#[derive(Debug, Clone, Copy)]
pub struct TurnContext<'a> {
    /// The time of the turn.
    pub now: Timestamp,
    /// The customer's name from the business's address book, when known.
    pub contact_name: Option<&'a str>,
    /// True when a refused text answer may go to the LLM's slot extraction first
    /// ([`Turn::extract`]).
    pub extract: bool,
}

impl Bot {
    /// Decides which flow a message asks for: a flow's trigger first (`rules`), then the
    /// local model when its confidence reaches `classifier_threshold` (`local`). No intent
    /// when neither is sure (the model's guess is kept): the message goes on to the LLM, the
    /// menu or the fallback.
    ///
    /// A text of several lines (a burst of messages taken as one turn) is read from its last
    /// line back, the first sure answer winning; then as a whole.
    pub fn classify(&self, text: &str) -> Classified {
        self.classify_at(text, self.settings.classifier_threshold)
    }

    /// [`Bot::classify`] with the local model answering at `threshold` (raised while the
    /// semantic stage is on, which takes the model's unsure answers into its own).
    pub fn classify_at(&self, text: &str, threshold: f32) -> Classified {
        if text.contains('\n') {
            let lines = text.lines().rev().filter(|l| !l.trim().is_empty());
            if let Some(intent) = lines
                .filter_map(|line| self.classify_one(line, threshold).intent)
                .next()
            {
                return Classified {
                    intent: Some(intent),
                    guess: None,
                };
            }
        }
        self.classify_one(text, threshold)
    }

    fn classify_one(&self, text: &str, threshold: f32) -> Classified {
        if let Some(flow) = self.match_trigger(text) {
            return Classified {
                intent: Some(Intent {
                    flow: flow.to_owned(),
                    stage: "rules",
                    confidence: 1.0,
                }),
                guess: None,
            };
        }
        let Some(prediction) = self.classifier.as_ref().map(|m| m.predict(text)) else {
            return Classified::default();
        };
        if prediction.unknown_words_only {
            return Classified::default();
        }
        if prediction.confidence >= threshold {
            Classified {
                intent: Some(Intent {
                    flow: prediction.intent,
                    stage: "local",
                    confidence: prediction.confidence,
                }),
                guess: None,
            }
        } else {
            Classified {
                intent: None,
                guess: Some((prediction.intent, prediction.confidence)),
            }
        }
    }

    /// Returns the flow whose trigger matches `text` first (flows in file order).
    pub fn match_trigger(&self, text: &str) -> Option<&str> {
        self.flows
            .iter()
            .find(|f| f.triggers.iter().any(|t| t.is_match(text)))
            .map(|f| f.id.as_str())
    }

    /// Handles a customer message in a conversation where the bot may answer. `intent` is
    /// the flow the caller classified the message as, if any.
    pub fn on_message(
        &self,
        c: &mut Conversation,
        content: &MessageContent,
        intent: Option<&str>,
        ctx: &TurnContext<'_>,
    ) -> Turn {
        let mut turn = Turn::default();
        let text = answer_text(content).map(str::trim);
        let lower = text.map(str::to_lowercase);
        if c.opted_out {
            if lower
                .as_deref()
                .is_some_and(|t| self.settings.opt_in.iter().any(|k| k == t))
            {
                c.opted_out = false;
                turn.decide("opt-in");
                turn.effects.push(Effect::OptedIn);
                self.say_builtin(c, "opted_in", content, ctx, &mut turn);
            } else {
                turn.decide("opted out: no reply");
            }
            return turn;
        }
        if lower
            .as_deref()
            .is_some_and(|t| self.settings.opt_out.iter().any(|k| k == t))
        {
            turn.decide("opt-out");
            c.opted_out = true;
            c.bot.position = None;
            match self.builtin(c, "opted_out", Some(content), ctx) {
                Ok(body) => turn.effects.push(Effect::OptedOut(text_message(body))),
                Err(e) => turn.errors.push(e.to_string()),
            }
            return turn;
        }
        if text.is_some_and(|t| self.settings.human_patterns.iter().any(|p| p.is_match(t))) {
            turn.decide("asked for a person");
            self.hand_off(
                c,
                &Handoff::asked(HandoffReason::CustomerRequest),
                content,
                ctx,
                &mut turn,
            );
            return turn;
        }
        if let Some(position) = c.bot.position.clone()
            && self.answer(c, &position, content, intent, ctx, &mut turn)
        {
            return turn;
        }
        self.start(c, content, intent, ctx, &mut turn);
        turn
    }

    /// Hands the conversation to a person for `reason` (a triage rule), saying the built-in
    /// handoff text (or the after-hours one), unless the customer opted out.
    pub fn hand_off_for(
        &self,
        c: &mut Conversation,
        reason: HandoffReason,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
    ) -> Turn {
        let mut turn = Turn::default();
        turn.decide(format!("triage: {reason}"));
        self.hand_off(c, &Handoff::asked(reason), content, ctx, &mut turn);
        turn
    }

    /// Carries on after the `call` step the last turn stopped at.
    pub fn on_call_result(
        &self,
        c: &mut Conversation,
        outcome: CallOutcome,
        ctx: &TurnContext<'_>,
    ) -> Turn {
        let mut turn = Turn::default();
        let Some((flow, step)) = self.position(c) else {
            turn.decide("call result with no call waiting: ignored");
            return turn;
        };
        let StepKind::Call(call) = &self.flows[flow].steps[step].kind else {
            turn.decide("call result with no call waiting: ignored");
            return turn;
        };
        let after = self.flows[flow].steps[step].next.unwrap_or(step + 1);
        c.bot.position = None;
        let content = MessageContent::Text {
            body: String::new(),
        };
        match outcome {
            CallOutcome::Answered { status, body } if (200..300).contains(&status) => {
                turn.decide(format!(
                    "call answered {status}: saved in vars.{}",
                    call.save
                ));
                c.bot.vars.insert(call.save.clone(), body);
                self.run(c, flow, after, &content, ctx, &mut turn);
            }
            outcome => {
                let error = match &outcome {
                    CallOutcome::Answered { status, .. } => format!("status {status}"),
                    CallOutcome::Failed(reason) => reason.clone(),
                };
                let status = match &outcome {
                    CallOutcome::Answered { status, body } => {
                        json!({"error": error, "status": status, "body": body})
                    }
                    CallOutcome::Failed(_) => json!({"error": error, "status": null}),
                };
                c.bot.vars.insert(call.save.clone(), status);
                turn.decide(format!("call failed: {error}"));
                match call.on_error {
                    Some(target) => self.run(c, flow, target, &content, ctx, &mut turn),
                    None => self.say_builtin(c, "call_failed", &content, ctx, &mut turn),
                }
            }
        }
        turn
    }

    /// Returns true when `content` is an answer the step the conversation waits at would
    /// take (true as well when it waits at no question).
    pub fn accepts(
        &self,
        c: &Conversation,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
    ) -> bool {
        let Some((flow, step)) = self.position(c) else {
            return true;
        };
        match &self.flows[flow].steps[step].kind {
            StepKind::Choose(choice) => self.chosen(c, choice, content, ctx).is_some(),
            StepKind::Ask(question) => {
                let today = zoned(ctx.now, &self.settings.timezone)
                    .map_or(jiff::civil::date(1970, 1, 1), |z| z.date());
                question.expect.accept(content, today).is_some()
            }
            _ => true,
        }
    }

    fn position(&self, c: &Conversation) -> Option<(usize, usize)> {
        let position = c.bot.position.as_ref()?;
        let flow = *self.by_id.get(position.flow.as_str())?;
        let step = self.flows[flow].step_index(&position.step)?;
        Some((flow, step))
    }

    /// Handles an answer to the step the conversation waits at. Returns false when the
    /// message is not an answer and should start something new.
    fn answer(
        &self,
        c: &mut Conversation,
        position: &FlowPosition,
        content: &MessageContent,
        intent: Option<&str>,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) -> bool {
        let Some((flow, step)) = self.position(c) else {
            // The flows changed under the conversation: start afresh.
            c.bot.position = None;
            turn.decide(format!(
                "position {}/{} no longer exists",
                position.flow, position.step
            ));
            return false;
        };
        let current = &self.flows[flow].steps[step];
        let after = current.next.unwrap_or(step + 1);
        let (tries, on_fail, retry) = match &current.kind {
            StepKind::Choose(choice) => {
                if let Some(index) = self.chosen(c, choice, content, ctx) {
                    let option = &choice.options[index];
                    turn.decide(format!("chose `{}`", option.id));
                    if let Some(slot) = &choice.slot {
                        c.bot.slots.insert(slot.clone(), json!(option.id));
                    }
                    c.bot.position = None;
                    c.bot.misses = 0;
                    self.route(c, (flow, after), &option.route, content, ctx, turn);
                    return true;
                }
                (choice.tries, choice.on_fail, choice.retry.as_ref())
            }
            StepKind::Ask(question) => {
                let today = zoned(ctx.now, &self.settings.timezone)
                    .map_or(jiff::civil::date(1970, 1, 1), |z| z.date());
                if let Some(value) = question.expect.accept(content, today) {
                    turn.decide(format!("slot `{}` = {value}", question.slot));
                    c.bot.slots.insert(question.slot.clone(), value);
                    c.bot.position = None;
                    c.bot.misses = 0;
                    self.run(c, flow, after, content, ctx, turn);
                    return true;
                }
                // A text another flow does not claim: the LLM may read the value out of it.
                if ctx.extract
                    && !question.expect.wants_media()
                    && intent.is_none_or(|other| position.flow == other)
                    && let Some(answer) = answer_text(content)
                {
                    let question_text = self
                        .render(c, &question.text, content, ctx)
                        .unwrap_or_default();
                    turn.decide(format!(
                        "answer refused: asking the LLM to read `{}`",
                        question.slot
                    ));
                    turn.extract = Some(ExtractRequest {
                        slot: question.slot.clone(),
                        expects: question.expect.describe(),
                        question: question_text,
                        answer: answer.to_owned(),
                    });
                    return true;
                }
                (question.tries, question.on_fail, question.retry.as_ref())
            }
            _ => {
                c.bot.position = None;
                return false;
            }
        };
        // Not an answer. A message that starts another flow leaves this one.
        if let Some(other) = intent
            && position.flow != other
        {
            turn.decide(format!("left `{}` for `{other}`", position.flow));
            c.bot.position = None;
            return false;
        }
        let tried = position.tries + 1;
        if tried >= tries {
            turn.decide(format!("no valid answer after {tried} tries"));
            c.bot.position = None;
            match on_fail {
                Some(target) => self.run(c, flow, target, content, ctx, turn),
                None => self.fall_back(c, content, ctx, turn),
            }
            return true;
        }
        turn.decide(format!("answer refused ({tried} of {tries})"));
        let builtin = if answer_text(content).is_none()
            && !matches!(&current.kind, StepKind::Ask(q) if q.expect.wants_media())
        {
            "unsupported"
        } else {
            "retry"
        };
        match retry {
            Some(text) => {
                self.say(c, text, content, ctx, turn);
            }
            None => self.say_builtin(c, builtin, content, ctx, turn),
        }
        // Ask again, then wait at the same step with one more try counted.
        self.run(c, flow, step, content, ctx, turn);
        if let Some(p) = c.bot.position.as_mut() {
            p.tries = tried;
        }
        true
    }

    /// Starts something for a message that answers no step.
    fn start(
        &self,
        c: &mut Conversation,
        content: &MessageContent,
        intent: Option<&str>,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        let Some(text) = answer_text(content) else {
            if matches!(
                content,
                MessageContent::Media { .. }
                    | MessageContent::Location { .. }
                    | MessageContent::Structured { .. }
                    | MessageContent::Unknown { .. }
            ) {
                turn.decide(format!(
                    "{} message outside a step that asks for one",
                    content.type_label()
                ));
                self.say_builtin(c, "unsupported", content, ctx, turn);
            } else {
                turn.decide(format!("{} message: no reply", content.type_label()));
            }
            return;
        };
        self.after_hours_notice(c, content, ctx, turn);
        if let Some(flow) = intent.and_then(|id| self.by_id.get(id)) {
            turn.decide(format!("intent `{}`", self.flows[*flow].id));
            c.bot.misses = 0;
            self.run(c, *flow, 0, content, ctx, turn);
            return;
        }
        let first_contact = !c.transcript.iter().any(|e| e.role == Role::Bot);
        let greeting = self.settings.greetings.iter().any(|g| g.is_match(text));
        if let Some(menu) = self
            .settings
            .menu
            .as_ref()
            .and_then(|id| self.by_id.get(id))
            && (greeting || first_contact)
        {
            turn.decide(if greeting {
                "greeting: menu"
            } else {
                "first message: menu"
            });
            c.bot.misses = 0;
            self.run(c, *menu, 0, content, ctx, turn);
            return;
        }
        self.fall_back(c, content, ctx, turn);
    }

    fn fall_back(
        &self,
        c: &mut Conversation,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        c.bot.misses += 1;
        let limit = self.settings.handoff_after_misses;
        if limit > 0 && c.bot.misses >= limit {
            turn.decide(format!("not understood {} times in a row", c.bot.misses));
            c.bot.misses = 0;
            self.hand_off(
                c,
                &Handoff::asked(HandoffReason::Fallback),
                content,
                ctx,
                turn,
            );
            return;
        }
        match self
            .settings
            .fallback
            .as_ref()
            .and_then(|id| self.by_id.get(id))
        {
            Some(&flow) => {
                turn.decide("fallback flow");
                self.run(c, flow, 0, content, ctx, turn);
            }
            None => {
                turn.decide("fallback");
                self.say_builtin(c, "fallback", content, ctx, turn);
            }
        }
    }

    fn after_hours_notice(
        &self,
        c: &mut Conversation,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        let Some(hours) = &self.settings.hours else {
            return;
        };
        if hours.is_open(ctx.now, &self.settings.timezone) {
            return;
        }
        let recent = c
            .bot
            .after_hours_noted_at
            .is_some_and(|at| at.plus(AFTER_HOURS_EVERY) > ctx.now);
        if !recent {
            turn.decide("after hours: notice");
            c.bot.after_hours_noted_at = Some(ctx.now);
            self.say_builtin(c, "after_hours", content, ctx, turn);
        }
    }

    fn hand_off(
        &self,
        c: &mut Conversation,
        handoff: &Handoff,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        let closed = self
            .settings
            .hours
            .as_ref()
            .is_some_and(|h| !h.is_open(ctx.now, &self.settings.timezone));
        let reason = &handoff.reason;
        match &handoff.message {
            Some(text) => {
                self.say(c, text, content, ctx, turn);
            }
            None => self.say_builtin(
                c,
                if closed { "after_hours" } else { "handoff" },
                content,
                ctx,
                turn,
            ),
        }
        let request = HandoffRequest {
            team: handoff
                .team
                .clone()
                .or_else(|| self.settings.human_team.clone()),
            reason: reason.clone(),
            priority: handoff.priority,
            at: ctx.now,
            answered_at: None,
            queue_noted: false,
            summary: None,
        };
        turn.decide(format!("handoff ({reason})"));
        c.request_handoff(request.clone());
        turn.effects.push(Effect::Handoff(request));
    }

    /// Follows `route` from `flow`, where `after` is the step that comes next by default.
    fn route(
        &self,
        c: &mut Conversation,
        (flow, after): (usize, usize),
        route: &Route,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        match route {
            Route::Continue => self.run(c, flow, after, content, ctx, turn),
            Route::Step(step) => self.run(c, flow, *step, content, ctx, turn),
            Route::Flow(id) => match self.by_id.get(id) {
                Some(&other) => {
                    turn.decide(format!("goto `{id}`"));
                    self.run(c, other, 0, content, ctx, turn);
                }
                None => turn.errors.push(format!("no flow `{id}`")),
            },
        }
    }

    /// Runs steps from `step` of `flow` until one waits for the customer, hands off, calls
    /// the backend or the flow ends.
    fn run(
        &self,
        c: &mut Conversation,
        mut flow: usize,
        mut step: usize,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        for _ in 0..STEP_BUDGET {
            let f = &self.flows[flow];
            let Some(current) = f.steps.get(step) else {
                turn.decide(format!("flow `{}` done", f.id));
                c.bot.position = None;
                return;
            };
            let after = current.next.unwrap_or(step + 1);
            let wait_here = || FlowPosition {
                flow: f.id.as_str().into(),
                step: current.id.as_str().into(),
                tries: 0,
            };
            match &current.kind {
                StepKind::Say(text) => {
                    if !self.say(c, text, content, ctx, turn) {
                        return self.abort(c, content, ctx, turn);
                    }
                    step = after;
                }
                StepKind::Choose(choice) => {
                    match self.render_choice(c, choice, content, ctx) {
                        Ok(message) => turn.effects.push(Effect::Reply(message)),
                        Err(e) => {
                            turn.errors.push(e.to_string());
                            return self.abort(c, content, ctx, turn);
                        }
                    }
                    c.bot.position = Some(wait_here());
                    return;
                }
                StepKind::Ask(question) => {
                    if !self.say(c, &question.text, content, ctx, turn) {
                        return self.abort(c, content, ctx, turn);
                    }
                    c.bot.position = Some(wait_here());
                    return;
                }
                StepKind::Branch(cases) => {
                    let scope = self.scope(c, content, ctx);
                    let mut taken = None;
                    for case in cases {
                        let hit = match &case.when {
                            None => Ok(true),
                            Some(condition) => self.templates.test(condition, &scope),
                        };
                        match hit {
                            Ok(true) => {
                                taken = Some(&case.route);
                                break;
                            }
                            Ok(false) => {}
                            Err(e) => {
                                turn.errors.push(e.to_string());
                                return self.abort(c, content, ctx, turn);
                            }
                        }
                    }
                    match taken {
                        Some(Route::Flow(id)) => {
                            let Some(&other) = self.by_id.get(id) else {
                                return self.abort(c, content, ctx, turn);
                            };
                            turn.decide(format!("branch: goto `{id}`"));
                            flow = other;
                            step = 0;
                        }
                        Some(Route::Step(target)) => step = *target,
                        Some(Route::Continue) | None => step = after,
                    }
                }
                StepKind::Call(call) => {
                    let scope = self.scope(c, content, ctx);
                    match self.render_call(call, &scope) {
                        Ok(request) => {
                            turn.decide(format!("call {} {}", request.method, request.url));
                            c.bot.position = Some(wait_here());
                            turn.call = Some(request);
                        }
                        Err(e) => {
                            turn.errors.push(e.to_string());
                            self.abort(c, content, ctx, turn);
                        }
                    }
                    return;
                }
                StepKind::Set(pairs) => {
                    for (name, template) in pairs {
                        let scope = self.scope(c, content, ctx);
                        match self.templates.render(template, &scope) {
                            Ok(value) => {
                                c.bot.vars.insert(name.clone(), typed_value(value));
                            }
                            Err(e) => {
                                turn.errors.push(e.to_string());
                                return self.abort(c, content, ctx, turn);
                            }
                        }
                    }
                    step = after;
                }
                StepKind::Handoff(h) => {
                    c.bot.position = None;
                    self.hand_off(c, h, content, ctx, turn);
                    return;
                }
                StepKind::Goto(id) => {
                    let Some(&other) = self.by_id.get(id) else {
                        return self.abort(c, content, ctx, turn);
                    };
                    turn.decide(format!("goto `{id}`"));
                    flow = other;
                    step = 0;
                }
                StepKind::End => {
                    turn.decide(format!("flow `{}` ended", f.id));
                    c.bot.position = None;
                    return;
                }
            }
        }
        turn.errors.push(format!(
            "more than {STEP_BUDGET} steps in one turn: the flows loop"
        ));
        self.abort(c, content, ctx, turn);
    }

    /// Leaves the flow after a failure and says the fallback text.
    fn abort(
        &self,
        c: &mut Conversation,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        turn.decide("flow left after an error");
        c.bot.position = None;
        self.say_builtin(c, "fallback", content, ctx, turn);
    }

    fn say(
        &self,
        c: &Conversation,
        text: &Text,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) -> bool {
        match self.render(c, text, content, ctx) {
            Ok(body) if body.is_empty() => true,
            Ok(body) => {
                turn.effects.push(Effect::Reply(text_message(body)));
                true
            }
            Err(e) => {
                turn.errors.push(e.to_string());
                false
            }
        }
    }

    fn say_builtin(
        &self,
        c: &Conversation,
        name: &str,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
        turn: &mut Turn,
    ) {
        match self.builtin(c, name, Some(content), ctx) {
            Ok(body) if body.is_empty() => {}
            Ok(body) => turn.effects.push(Effect::Reply(text_message(body))),
            Err(e) => turn.errors.push(e.to_string()),
        }
    }

    /// Renders the built-in text `name` (such as `queue_wait` or `bot_back`) for a message the
    /// engine sends on its own, with `queue` (position, wait, next_opening) in scope. Returns
    /// `None` when the business left the text empty.
    ///
    /// # Errors
    /// A render error, reported like a flow error.
    pub fn notice(
        &self,
        c: &Conversation,
        name: &str,
        queue: serde_json::Value,
        ctx: &TurnContext<'_>,
    ) -> Result<Option<OutboundContent>, RenderError> {
        let Some(text) = self.settings.texts.get(name) else {
            return Ok(None);
        };
        let empty = MessageContent::Text {
            body: String::new(),
        };
        let mut scope = serde_json::to_value(self.scope(c, &empty, ctx)).unwrap_or_default();
        if let Some(map) = scope.as_object_mut() {
            map.insert("queue".into(), queue);
        }
        let body = self.render_in(c, text, &Value::from_serialize(&scope))?;
        Ok((!body.is_empty()).then(|| text_message(body)))
    }

    /// True when the bot has opening hours and they are closed at `now`.
    pub fn closed_at(&self, now: Timestamp) -> bool {
        self.settings
            .hours
            .as_ref()
            .is_some_and(|h| !h.is_open(now, &self.settings.timezone))
    }

    fn builtin(
        &self,
        c: &Conversation,
        name: &str,
        content: Option<&MessageContent>,
        ctx: &TurnContext<'_>,
    ) -> Result<String, RenderError> {
        let empty = MessageContent::Text {
            body: String::new(),
        };
        match self.settings.texts.get(name) {
            Some(text) => self.render(c, text, content.unwrap_or(&empty), ctx),
            None => Ok(String::new()),
        }
    }

    fn render(
        &self,
        c: &Conversation,
        text: &Text,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
    ) -> Result<String, RenderError> {
        let scope = self.scope(c, content, ctx);
        self.render_in(c, text, &scope)
    }

    /// Renders `text` in the conversation's language with an already built scope.
    fn render_in(
        &self,
        c: &Conversation,
        text: &Text,
        scope: &Value,
    ) -> Result<String, RenderError> {
        self.templates
            .render_text(text, c.language.as_deref(), self.default_language(), scope)
    }

    fn render_choice(
        &self,
        c: &Conversation,
        choice: &Choice,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
    ) -> Result<OutboundContent, RenderError> {
        // One scope for the whole message: its texts see the same state.
        let scope = self.scope(c, content, ctx);
        let body = self.render_in(c, &choice.text, &scope)?;
        let mut rows = Vec::new();
        for option in &choice.options {
            let title = self.render_in(c, &option.title, &scope)?;
            let description = match &option.description {
                Some(d) => Some(self.render_in(c, d, &scope)?),
                None => None,
            };
            rows.push(ListRow {
                id: option.id.clone(),
                title,
                description,
            });
        }
        Ok(match &choice.list_button {
            None => OutboundContent::Buttons {
                header: None,
                body,
                footer: None,
                buttons: rows.into_iter().map(|r| (r.id, r.title)).collect(),
            },
            Some(button) => OutboundContent::List {
                header: None,
                body,
                footer: None,
                button: self.render_in(c, button, &scope)?,
                sections: vec![ListSection { title: None, rows }],
            },
        })
    }

    fn chosen(
        &self,
        c: &Conversation,
        choice: &Choice,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
    ) -> Option<usize> {
        match content {
            MessageContent::ButtonReply { id, .. } | MessageContent::ListReply { id, .. } => {
                return choice.options.iter().position(|o| o.id == *id);
            }
            _ => {}
        }
        let text = answer_text(content)?.trim().to_lowercase();
        if let Ok(n) = text.parse::<usize>()
            && (1..=choice.options.len()).contains(&n)
        {
            return Some(n - 1);
        }
        let scope = self.scope(c, content, ctx);
        choice.options.iter().position(|o| {
            o.id.to_lowercase() == text
                || self
                    .render_in(c, &o.title, &scope)
                    .is_ok_and(|t| t.trim().to_lowercase() == text)
        })
    }

    fn render_call(
        &self,
        call: &crate::model::Call,
        scope: &Value,
    ) -> Result<CallRequest, RenderError> {
        let url = self.templates.render(&call.url, scope)?;
        let mut headers = Vec::new();
        for (name, template) in &call.headers {
            let value = self.templates.render(template, scope)?;
            // A value with a line break would start another header (or the body).
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(RenderError {
                    name: format!("header {name}"),
                    detail: "the value holds a line break or another control character".into(),
                });
            }
            headers.push((name.clone(), value));
        }
        let body = match &call.body {
            Some(b) => Some(self.render_body(b, scope)?),
            None => None,
        };
        Ok(CallRequest {
            method: call.method.clone(),
            url,
            headers,
            body,
            timeout: call.timeout,
        })
    }

    fn render_body(
        &self,
        value: &serde_json::Value,
        scope: &Value,
    ) -> Result<serde_json::Value, RenderError> {
        use serde_json::Value as J;
        Ok(match value {
            J::String(name) => J::String(self.templates.render(name, scope)?),
            J::Array(items) => J::Array(
                items
                    .iter()
                    .map(|v| self.render_body(v, scope))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(map) => J::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.render_body(v, scope)?)))
                    .collect::<Result<_, RenderError>>()?,
            ),
            other => other.clone(),
        })
    }

    /// The variables templates see.
    pub fn scope(
        &self,
        c: &Conversation,
        content: &MessageContent,
        ctx: &TurnContext<'_>,
    ) -> Value {
        let tz = &self.settings.timezone;
        let now = zoned(ctx.now, tz);
        let now_value = now.as_ref().map_or(json!({}), |z| {
            json!({
                "iso": z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                "date": z.date().to_string(),
                "time": z.strftime("%H:%M").to_string(),
                "weekday": z.strftime("%A").to_string(),
                "hour": z.hour(),
                "minute": z.minute(),
            })
        });
        let hours = match &self.settings.hours {
            None => json!({"open": true, "next_opening": null}),
            Some(h) => json!({
                "open": h.is_open(ctx.now, tz),
                "next_opening": h.next_opening(ctx.now, tz).map(|z| z.strftime("%A %H:%M").to_string()),
            }),
        };
        let name = ctx
            .contact_name
            .or(c.display_name())
            .unwrap_or_default()
            .to_owned();
        let who = c.who();
        let phone = who.phone.as_ref().map(|p| p.as_str());
        let user_id = who.user_id.as_ref().map(|u| u.as_str());
        let first_name = name
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        let fields = json!({
            "contact": {
                "name": name,
                "first_name": first_name,
                "id": c.id.customer().as_str(),
                "phone": phone,
                "user_id": user_id,
                "username": who.username,
                "wa_id": phone.or(user_id),
            },
            "slots": c.bot.slots,
            "vars": c.bot.vars,
            "now": now_value,
            "hours": hours,
            "message": {"text": answer_text(content).unwrap_or_default(), "type": content.type_label()},
            "language": c.language.as_deref().unwrap_or(self.default_language()),
            "queue": {"position": 0, "wait": "", "next_opening": ""},
        });
        // The bot's own configuration is trusted: a `call` URL writes it as it is (a base
        // URL), where every other value is percent-encoded.
        let config = Value::from_iter(
            self.settings
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), Value::from_safe_string(v.clone()))),
        );
        let mut scope: Vec<(String, Value)> = fields
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
            .collect();
        scope.push(("config".to_owned(), config));
        Value::from_iter(scope)
    }
}

/// Reads a rendered `set:` value back as a number, a boolean (minijinja prints `True` and
/// `False`) or none; anything else stays text.
fn typed_value(rendered: String) -> serde_json::Value {
    match rendered.trim() {
        "True" | "true" => return serde_json::Value::Bool(true),
        "False" | "false" => return serde_json::Value::Bool(false),
        "None" | "none" | "null" => return serde_json::Value::Null,
        _ => {}
    }
    serde_json::from_str::<serde_json::Value>(&rendered)
        .ok()
        .filter(serde_json::Value::is_number)
        .unwrap_or(serde_json::Value::String(rendered))
}

fn text_message(body: String) -> OutboundContent {
    OutboundContent::Text {
        body,
        preview_url: false,
    }
}
