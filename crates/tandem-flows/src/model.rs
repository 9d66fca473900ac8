//! The checked flows the runtime executes: every route resolved to a step index or a known
//! flow, every regex compiled, every text a compiled template.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use regex::Regex;
use tandem_domain::HandoffReason;

use crate::diagnostic::Loc;
use crate::hours::Hours;
use crate::template::{Templates, Text};
use crate::validate::Expect;

/// Every flow and setting of one flows directory, ready to run.
#[derive(Debug)]
pub struct Bot {
    /// The global settings.
    pub settings: Settings,
    /// The flows, in file-name order.
    pub flows: Vec<Flow>,
    /// Flow index by id.
    pub(crate) by_id: HashMap<String, usize>,
    /// Every compiled template.
    pub templates: Templates,
    /// The local intent model, trained from the flows' examples (when at least two flows
    /// have some).
    pub classifier: Option<tandem_classify::Model>,
}

impl Bot {
    /// The approved template configured for a closed 24-hour window, as sendable content.
    pub fn window_template_content(&self) -> Option<tandem_domain::OutboundContent> {
        let (name, language) = self.settings.window_template.clone()?;
        Some(tandem_domain::OutboundContent::Template {
            name,
            language,
            body_parameters: Vec::new(),
        })
    }

    /// Returns the flow with this id.
    pub fn flow(&self, id: &str) -> Option<&Flow> {
        self.by_id.get(id).map(|&i| &self.flows[i])
    }

    /// Returns every flow's example utterances labelled with the flow's id, to train the
    /// local classifier; a flow with examples also teaches its id (`order_status` → "order
    /// status") and its description.
    pub fn training_examples(&self) -> Vec<tandem_classify::Example> {
        self.flows
            .iter()
            .filter(|f| !f.examples.is_empty())
            .flat_map(|f| {
                let written = f
                    .examples
                    .iter()
                    .chain(f.description.iter())
                    .map(|text| tandem_classify::Example::new(text.clone(), f.id.clone()));
                written.chain(std::iter::once(tandem_classify::Example::from_name(&f.id)))
            })
            .collect()
    }

    /// Returns the default language (the first configured, else `en`).
    pub fn default_language(&self) -> &str {
        self.settings.languages.first().map_or("en", String::as_str)
    }
}

/// The bot's global behaviour.
#[derive(Debug)]
pub struct Settings {
    /// Language codes; the first is the default.
    pub languages: Vec<String>,
    /// The business's time zone.
    pub timezone: jiff::tz::TimeZone,
    /// The menu flow.
    pub menu: Option<String>,
    /// The fallback flow.
    pub fallback: Option<String>,
    /// Misunderstood messages in a row before a handoff (0 = never).
    pub handoff_after_misses: u32,
    /// Greeting patterns.
    pub greetings: Vec<Regex>,
    /// Patterns of requests for a person.
    pub human_patterns: Vec<Regex>,
    /// The team requests for a person go to.
    pub human_team: Option<tandem_domain::TeamId>,
    /// Whole messages that opt out (lower case).
    pub opt_out: Vec<String>,
    /// Whole messages that opt back in (lower case).
    pub opt_in: Vec<String>,
    /// Opening hours, when configured.
    pub hours: Option<Hours>,
    /// Built-in texts by name (every name of [`crate::load::BUILTIN_TEXTS`] is present).
    pub texts: BTreeMap<String, Text>,
    /// `config.*` values.
    pub variables: BTreeMap<String, String>,
    /// The template sent instead of free text outside the 24-hour window.
    pub window_template: Option<(String, String)>,
    /// The local model's confidence at which it picks a flow alone.
    pub classifier_threshold: f32,
    /// Which triage signals hand a conversation to a person.
    pub handoff_on: HandoffOn,
}

/// Which triage signals hand a conversation to a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffOn {
    /// The LLM says the customer needs a person.
    pub needs_human: bool,
    /// The LLM rates the urgency high.
    pub high_urgency: bool,
    /// The LLM rates the sentiment negative.
    pub negative_sentiment: bool,
}

impl HandoffOn {
    /// Returns the handoff reason a triage record calls for, if any.
    pub fn reason(&self, triage: &tandem_domain::Triage) -> Option<HandoffReason> {
        if self.needs_human && triage.needs_human {
            Some(HandoffReason::NeedsHuman)
        } else if self.high_urgency && triage.urgency == tandem_domain::Urgency::High {
            Some(HandoffReason::HighUrgency)
        } else if self.negative_sentiment && triage.sentiment == tandem_domain::Sentiment::Negative
        {
            Some(HandoffReason::NegativeSentiment)
        } else {
            None
        }
    }
}

/// One flow.
#[derive(Debug)]
pub struct Flow {
    /// Its id.
    pub id: String,
    /// What it does.
    pub description: Option<String>,
    /// Example customer messages.
    pub examples: Vec<String>,
    /// Patterns that start it.
    pub triggers: Vec<Regex>,
    /// Declared slots with their descriptions.
    pub slots: BTreeMap<String, Option<String>>,
    /// The steps.
    pub steps: Vec<Step>,
    /// Where the flow is written.
    pub at: Loc,
}

impl Flow {
    /// Returns the index of the step with this id.
    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
}

/// One step of a flow.
#[derive(Debug)]
pub struct Step {
    /// Its id (given, or its 1-based position).
    pub id: String,
    /// What it does.
    pub kind: StepKind,
    /// The step to run after it, when it does not route by itself (`None`: the following).
    pub next: Option<usize>,
    /// Where it is written.
    pub at: Loc,
}

/// Where a choice or a condition leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The step after the current one (or the step's `next`).
    Continue,
    /// A step of the same flow.
    Step(usize),
    /// The start of another flow.
    Flow(String),
}

/// What a step does.
#[derive(Debug)]
pub enum StepKind {
    /// Send a text.
    Say(Text),
    /// Send reply buttons or a list and wait for the choice.
    Choose(Choice),
    /// Ask a question and wait for a valid answer.
    Ask(Question),
    /// Route on the first true condition.
    Branch(Vec<Case>),
    /// Call the business's backend.
    Call(Call),
    /// Set variables.
    Set(Vec<(String, String)>),
    /// Hand the conversation to a person.
    Handoff(Handoff),
    /// Continue in another flow.
    Goto(String),
    /// End the flow.
    End,
}

/// A `buttons` or `list` step.
#[derive(Debug)]
pub struct Choice {
    /// Buttons, or a list with this button label.
    pub list_button: Option<Text>,
    /// The message text.
    pub text: Text,
    /// The options.
    pub options: Vec<ChoiceOption>,
    /// The slot the chosen option id is stored in.
    pub slot: Option<String>,
    /// What to say when the answer is not one of the options.
    pub retry: Option<Text>,
    /// Answers tried before `on_fail`.
    pub tries: u32,
    /// The step after the last refused answer.
    pub on_fail: Option<usize>,
}

/// An option of a choice.
#[derive(Debug)]
pub struct ChoiceOption {
    /// The id the answer comes back with.
    pub id: String,
    /// The title.
    pub title: Text,
    /// A list row's description.
    pub description: Option<Text>,
    /// Where it leads.
    pub route: Route,
}

/// An `ask` step.
#[derive(Debug)]
pub struct Question {
    /// The question.
    pub text: Text,
    /// The slot filled.
    pub slot: String,
    /// What answer is accepted.
    pub expect: Expect,
    /// What to say when an answer is refused.
    pub retry: Option<Text>,
    /// Answers tried before `on_fail`.
    pub tries: u32,
    /// The step after the last refused answer.
    pub on_fail: Option<usize>,
}

/// A case of a `branch`.
#[derive(Debug)]
pub struct Case {
    /// The condition template (`None`: always).
    pub when: Option<String>,
    /// Where it leads.
    pub route: Route,
}

/// A `call` step.
#[derive(Debug)]
pub struct Call {
    /// The HTTP method.
    pub method: String,
    /// The URL template.
    pub url: String,
    /// Header name and value template.
    pub headers: Vec<(String, String)>,
    /// The JSON body, with every string replaced by the name of its template.
    pub body: Option<serde_json::Value>,
    /// The timeout.
    pub timeout: Duration,
    /// The variable the answer is saved in.
    pub save: String,
    /// The step run on failure.
    pub on_error: Option<usize>,
}

/// A `handoff` step, or a handoff the bot decides itself.
#[derive(Debug)]
pub struct Handoff {
    /// The team.
    pub team: Option<tandem_domain::TeamId>,
    /// Why.
    pub reason: HandoffReason,
    /// How soon a person should answer.
    pub priority: tandem_domain::Priority,
    /// What to tell the customer (default: `texts.handoff`).
    pub message: Option<Text>,
}

impl Handoff {
    /// A handoff the bot decides for `reason` (a request for a person, too many misses),
    /// to the configured team, saying the built-in text.
    pub fn asked(reason: HandoffReason) -> Self {
        Self {
            team: None,
            reason,
            priority: tandem_domain::Priority::Normal,
            message: None,
        }
    }
}
