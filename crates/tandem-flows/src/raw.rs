//! The flow files as written: YAML structures with source positions, and the JSON Schema
//! editors validate them with (`tandem schema`). [`crate::load`] turns them into the checked
//! model of [`crate::model`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A text: one string, or one string per language code (`en: …`, `pt: …`). Strings are
/// minijinja templates.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawText {
    /// The same text in every language.
    One(String),
    /// One text per language code; the bot's first language is the default.
    PerLanguage(BTreeMap<String, String>),
}

/// One flow file (`flows/*.yaml`, except `bot.yaml`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Tandem flow")]
pub struct RawFlow {
    /// Unique id of the flow (letters, digits, `_` and `-`).
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// What the flow does, in a sentence (the LLM classifier reads it).
    #[serde(default)]
    pub description: Option<String>,
    /// Example customer messages that should start this flow (the local classifier learns
    /// from them).
    #[serde(default)]
    pub examples: Vec<String>,
    /// Regular expressions; a customer message matching one starts the flow.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub triggers: Vec<Spanned<String>>,
    /// The slots the flow fills, by name.
    #[serde(default)]
    pub slots: BTreeMap<String, RawSlot>,
    /// The steps, run in order unless a step routes elsewhere.
    #[schemars(with = "Vec<RawStep>")]
    pub steps: Vec<Spanned<RawStep>>,
}

/// A slot declaration.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSlot {
    /// What the slot holds (shown to people and to the LLM).
    #[serde(default)]
    pub description: Option<String>,
}

/// One step. Exactly one of `say`, `buttons`, `list`, `ask`, `branch`, `call`, `set`,
/// `handoff`, `goto` and `end` is given; the other keys refine it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// The step's id, used by `next` and `on_fail` (default: its position, `1`, `2`, …).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub id: Option<Spanned<String>>,
    /// Send a text.
    #[serde(default)]
    #[schemars(with = "Option<RawText>")]
    pub say: Option<Spanned<RawText>>,
    /// Send up to three reply buttons with this text; each option routes.
    #[serde(default)]
    #[schemars(with = "Option<RawText>")]
    pub buttons: Option<Spanned<RawText>>,
    /// Send a list of up to ten options with this text; each option routes.
    #[serde(default)]
    #[schemars(with = "Option<RawText>")]
    pub list: Option<Spanned<RawText>>,
    /// The label of the button that opens a list (default "Options").
    #[serde(default)]
    pub button: Option<RawText>,
    /// The options of `buttons` or `list`.
    #[serde(default)]
    pub options: Vec<RawOption>,
    /// Ask a question and fill `slot` with the validated answer.
    #[serde(default)]
    #[schemars(with = "Option<RawText>")]
    pub ask: Option<Spanned<RawText>>,
    /// The slot `ask` fills (or `buttons` / `list` store the chosen option id in).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub slot: Option<Spanned<String>>,
    /// What answer `ask` accepts: text (default), number, email, phone, date, choice, regex,
    /// image, document, location or media.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub expect: Option<Spanned<String>>,
    /// The regular expression for `expect: regex`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub pattern: Option<Spanned<String>>,
    /// The accepted answers for `expect: choice`.
    #[serde(default)]
    pub choices: Vec<String>,
    /// Smallest accepted number for `expect: number`.
    #[serde(default)]
    pub min: Option<f64>,
    /// Largest accepted number for `expect: number`.
    #[serde(default)]
    pub max: Option<f64>,
    /// What to say when an answer is refused (default: the bot's `texts.retry`).
    #[serde(default)]
    #[schemars(with = "Option<RawText>")]
    pub retry: Option<Spanned<RawText>>,
    /// How many answers are tried before `on_fail` (default 3).
    #[serde(default)]
    pub tries: Option<u32>,
    /// The step to go to after the last refused answer (default: the fallback).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_fail: Option<Spanned<String>>,
    /// Conditions tried in order; the first true one routes (a case without `when` is the
    /// default).
    #[serde(default)]
    pub branch: Option<Vec<RawCase>>,
    /// An HTTP request to the business's backend.
    #[serde(default)]
    pub call: Option<RawCall>,
    /// Variables to set: name → template.
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, String>>")]
    pub set: Option<BTreeMap<String, Spanned<String>>>,
    /// Hand the conversation to a person.
    #[serde(default)]
    pub handoff: Option<RawHandoff>,
    /// Continue in another flow.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub goto: Option<Spanned<String>>,
    /// End the flow (`end: true`); next to another kind, end the flow after that step.
    #[serde(default)]
    pub end: Option<bool>,
    /// The step to run next (default: the following one).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub next: Option<Spanned<String>>,
}

/// An option of a `buttons` or `list` step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOption {
    /// The id the customer's choice comes back with.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// What the customer sees (buttons: 20 characters, list rows: 24).
    pub title: RawText,
    /// A second line for list rows (72 characters).
    #[serde(default)]
    pub description: Option<RawText>,
    /// The step to run when chosen (default: the step after this one).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub next: Option<Spanned<String>>,
    /// The flow to continue in when chosen.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub goto: Option<Spanned<String>>,
}

/// A case of a `branch` step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCase {
    /// A minijinja expression, such as `vars.order.status == "shipped"`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub when: Option<Spanned<String>>,
    /// The step to run.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub next: Option<Spanned<String>>,
    /// The flow to continue in.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub goto: Option<Spanned<String>>,
}

/// The request of a `call` step.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCall {
    /// The URL, a template (for example `{{ config.shop_api }}/orders/{{ slots.order }}`).
    #[schemars(with = "String")]
    pub url: Spanned<String>,
    /// GET (default), POST, PUT, PATCH or DELETE.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub method: Option<Spanned<String>>,
    /// Request headers; values are templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body; every string in it is a template.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// How long to wait for the answer, such as `3s` (default 5s).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
    /// The variable the JSON answer is stored in (`vars.<save>`).
    #[schemars(with = "String")]
    pub save: Spanned<String>,
    /// The step to go to when the request fails, times out or answers an error status
    /// (default: the bot's `texts.call_failed`, then the fallback).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub on_error: Option<Spanned<String>>,
}

/// A `handoff` step.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHandoff {
    /// The team to route to.
    #[serde(default)]
    pub team: Option<String>,
    /// Why (shown to agents; default `flow:<flow id>`).
    #[serde(default)]
    pub reason: Option<String>,
    /// low, normal (default), high or urgent.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub priority: Option<Spanned<String>>,
    /// What to tell the customer (default: the bot's `texts.handoff`).
    #[serde(default)]
    #[schemars(with = "Option<RawText>")]
    pub message: Option<Spanned<RawText>>,
}

/// The bot's global settings (`flows/bot.yaml`).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Tandem bot settings")]
pub struct RawSettings {
    /// Language codes of the texts; the first is the default.
    #[serde(default)]
    pub languages: Vec<String>,
    /// The business's IANA time zone, such as `Europe/Lisbon` (default UTC).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Spanned<String>>,
    /// The flow that greets and shows the menu (a greeting or a first message starts it).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub menu: Option<Spanned<String>>,
    /// The flow run when the bot does not understand (default: `texts.fallback`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub fallback: Option<Spanned<String>>,
    /// After this many misunderstood messages in a row, hand off (0 = never; default 3).
    #[serde(default)]
    pub handoff_after_misses: Option<u32>,
    /// Regular expressions of greetings (default: hi, hello, hey, good morning, olá, hola…).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub greetings: Vec<Spanned<String>>,
    /// Asking for a person.
    #[serde(default)]
    pub human: RawHuman,
    /// Opting out and back in.
    #[serde(default)]
    pub opt_out: RawOptOut,
    /// Opening hours; outside them the after-hours notice is sent.
    #[serde(default)]
    pub hours: Option<RawHours>,
    /// The built-in texts, overridable.
    #[serde(default)]
    pub texts: BTreeMap<String, RawText>,
    /// Values templates read as `config.<name>`; `TANDEM_FLOW_<NAME>` overrides one.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// When the LLM's triage of a message hands the conversation to a person.
    #[serde(default)]
    pub handoff_on: RawHandoffOn,
    /// The local intent model's confidence at which it picks a flow alone (default 0.8);
    /// below it the message goes on (today: to the fallback).
    #[serde(default)]
    pub classifier_threshold: Option<f32>,
    /// The approved template sent instead of a free-form message when the customer's 24-hour
    /// window has closed.
    #[serde(default)]
    pub window_template: Option<RawTemplateRef>,
}

/// Triage signals (from the LLM stage) that hand a conversation to a person.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHandoffOn {
    /// The LLM says the customer needs a person (default true).
    #[serde(default)]
    pub needs_human: Option<bool>,
    /// The LLM rates the message's urgency high (default false).
    #[serde(default)]
    pub high_urgency: Option<bool>,
    /// The LLM rates the message's sentiment negative (default false).
    #[serde(default)]
    pub negative_sentiment: Option<bool>,
}

/// Asking for a person.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHuman {
    /// Regular expressions of requests for a person (default: agent, human, person,
    /// atendente, humano, persona, agente…).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub patterns: Vec<Spanned<String>>,
    /// The team such requests go to.
    #[serde(default)]
    pub team: Option<String>,
}

/// Opting out and back in.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawOptOut {
    /// Whole messages that opt out (default: stop, unsubscribe, parar, cancelar suscripción).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Whole messages that opt back in (default: start, unstop).
    #[serde(default)]
    pub opt_in_keywords: Vec<String>,
}

/// A weekly schedule.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawHours {
    /// Open intervals per day: `mon: ["09:00-13:00", "14:00-18:00"]`; days not listed are
    /// closed. Keys: mon, tue, wed, thu, fri, sat, sun.
    #[schemars(with = "BTreeMap<String, Vec<String>>")]
    pub weekly: BTreeMap<String, Vec<Spanned<String>>>,
    /// Dates closed all day (`2026-12-25`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub closed: Vec<Spanned<String>>,
}

/// A template to send outside the 24-hour window.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTemplateRef {
    /// The approved template's name.
    pub name: String,
    /// Its language code, such as `en_US`.
    pub language: String,
}
