//! Loading a flows directory: parse every YAML file, check everything that can be checked
//! before a customer writes, and build the [`Bot`]. Every problem is reported with its
//! `file:line:col` and a hint; nothing loads while there is an error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, Loc, Report, Severity};
use crate::hours::Hours;
use crate::model::{
    Bot, Call, Case, Choice, ChoiceOption, Flow, Handoff, Question, Route, Settings, Step, StepKind,
};
use crate::raw::{RawFlow, RawSettings, RawStep, RawText};
use crate::template::{Templates, Text, check_reads};
use crate::validate::{EXPECT_NAMES, Expect};

/// The file holding the bot's global settings.
pub const SETTINGS_FILE: &str = "bot.yaml";

/// Built-in texts with their defaults; `texts:` in bot.yaml overrides them.
pub const BUILTIN_TEXTS: &[(&str, &str)] = &[
    (
        "fallback",
        "Sorry, I didn't understand that. Type *menu* to see what I can do, or *agent* to talk to a person.",
    ),
    (
        "retry",
        "Sorry, that is not an answer I can use. Please try again.",
    ),
    (
        "handoff",
        "Thanks! I'm passing you to a person on our team; they will reply here shortly.",
    ),
    (
        "after_hours",
        "Our team is away right now{% if hours.next_opening %}; we are back {{ hours.next_opening }}{% endif %}. I can still help with most questions, and a person will read anything you leave here.",
    ),
    (
        "unsupported",
        "Sorry, I can only read text messages here. Please type your question.",
    ),
    (
        "opted_out",
        "You will not get any more messages from us. Send START if you change your mind.",
    ),
    ("opted_in", "Welcome back! You will get our messages again."),
    (
        "call_failed",
        "Sorry, I can't check that right now. Please try again in a few minutes.",
    ),
    ("list_button", "Options"),
    (
        "queue_wait",
        "All of our team are busy right now. You are number {{ queue.position }} in line; someone should reply in about {{ queue.wait }}.",
    ),
    (
        "queue_closed",
        "Our team is away right now{% if queue.next_opening %}; a person will reply from {{ queue.next_opening }}{% endif %}. Your message is in line and nothing is lost.",
    ),
    // Off unless a business writes one: sent once when the bot takes a conversation back.
    ("bot_back", ""),
];

const STEP_KINDS: &str = "say, buttons, list, ask, branch, call, set, handoff, goto or end";
const DEFAULT_GREETINGS: &[&str] = &[
    r"(?i)^\s*(hi|hello|hey|hiya|good (morning|afternoon|evening)|ol[aá]|oi|bom dia|boa tarde|boa noite|hola|buen[oa]s (d[ií]as|tardes|noches)|menu|start over)\b",
];
const DEFAULT_HUMAN: &[&str] = &[
    r"(?i)\b(agent|human|person|representative|operator|real person|someone real|talk to (a|an|some)one|atendente|humano|pessoa|agente|persona|operador)\b",
];
const DEFAULT_OPT_OUT: &[&str] = &[
    "stop",
    "unsubscribe",
    "stop all",
    "parar",
    "sair",
    "cancelar suscripción",
    "baja",
];
const DEFAULT_OPT_IN: &[&str] = &["start", "unstop", "subscribe", "voltar", "alta"];

/// Flows that loaded, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    /// The bot, ready to run.
    pub bot: Bot,
    /// Problems that did not stop the load.
    pub warnings: Vec<Diagnostic>,
}

/// Flows that did not load: every problem found, errors and warnings, in file order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(.diagnostics))]
pub struct LoadError {
    /// The problems.
    pub diagnostics: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    format!("{}\n{errors} error(s) in the flows", lines.join("\n"))
}

/// Loads every `*.yaml` / `*.yml` file of `dir` (`bot.yaml` holds the settings; every other
/// file is one flow). `config_overrides` replace `variables:` values (from the environment).
///
/// # Errors
/// A [`LoadError`] listing every problem when a file cannot be read or anything is invalid.
pub fn load_dir(
    dir: &Path,
    config_overrides: &BTreeMap<String, String>,
) -> Result<Loaded, LoadError> {
    let failed = |message: String| LoadError {
        diagnostics: vec![Diagnostic {
            severity: Severity::Error,
            file: dir.display().to_string(),
            line: 0,
            column: 0,
            message,
            hint: Some("point --flows (or TANDEM_FLOWS) at a directory of flow files".into()),
        }],
    };
    let entries = std::fs::read_dir(dir)
        .map_err(|e| failed(format!("cannot read the flows directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| failed(e.to_string()))?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if is_yaml && path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?;
            files.push((path.display().to_string(), text));
        }
    }
    files.sort();
    load_sources(&files, config_overrides)
}

/// Loads flows from `(file name, contents)` pairs; see [`load_dir`].
///
/// # Errors
/// A [`LoadError`] listing every problem.
pub fn load_sources(
    files: &[(String, String)],
    config_overrides: &BTreeMap<String, String>,
) -> Result<Loaded, LoadError> {
    let mut report = Report::default();
    let mut raw_settings = None;
    let mut raw_flows = Vec::new();
    let mut recovered = Vec::new();
    for (file, text) in files {
        let is_settings = Path::new(file)
            .file_name()
            .is_some_and(|n| n == SETTINGS_FILE);
        if is_settings {
            raw_settings = parse::<RawSettings>(file, text, &mut report).map(|s| (file.clone(), s));
        } else if let Some(flow) = parse::<RawFlow>(file, text, &mut report) {
            raw_flows.push((file.clone(), flow));
        } else {
            step_errors(file, text, &mut report);
            recovered.push(recover_names(text));
        }
    }
    let mut compiler = Compiler::default();
    let (settings_file, raw_settings) =
        raw_settings.unwrap_or_else(|| (SETTINGS_FILE.to_owned(), RawSettings::default()));
    compiler.collect_names(&raw_flows, &mut report);
    // A file that could not be read has its error reported already; what other files say of
    // its flow, slots and variables is not an error of theirs.
    for names in recovered {
        compiler.flow_ids.extend(names.id);
        compiler.slots.extend(names.slots);
        compiler.vars.extend(names.vars);
    }
    let mut settings =
        compiler.settings(&settings_file, raw_settings, config_overrides, &mut report);
    let mut flows = Vec::new();
    for (file, raw) in raw_flows {
        flows.push(compiler.flow(&file, raw, &mut report));
    }
    compiler.check_settings_targets(&settings_file, &mut settings, &mut report);
    let config: BTreeSet<String> = settings.variables.keys().cloned().collect();
    let reads = std::mem::take(&mut compiler.templates.reads);
    check_reads(
        &reads,
        &compiler.slots,
        &compiler.vars,
        &config,
        &mut report,
    );
    if report.has_errors() {
        report
            .items
            .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(LoadError {
            diagnostics: report.items,
        });
    }
    let by_id = flows
        .iter()
        .enumerate()
        .map(|(i, f): (usize, &Flow)| (f.id.clone(), i))
        .collect();
    let mut bot = Bot {
        settings,
        flows,
        by_id,
        templates: compiler.templates,
        classifier: None,
    };
    // Fewer than two flows with examples: no model, triggers only.
    let options = tandem_classify::TrainOptions {
        languages: bot.settings.languages.clone(),
        ..tandem_classify::TrainOptions::default()
    };
    bot.classifier = tandem_classify::Model::train(&bot.training_examples(), options).ok();
    Ok(Loaded {
        bot,
        warnings: report.items,
    })
}

/// The names a flow file declares (its id, slots and variables), read leniently from a file
/// that is not a valid flow, so that other files naming them get no consequential error.
#[derive(Debug, Default)]
struct Names {
    id: Option<String>,
    slots: Vec<String>,
    vars: Vec<String>,
}

fn recover_names(text: &str) -> Names {
    let Ok(value) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return Names::default();
    };
    let keys = |v: Option<&serde_json::Value>| -> Vec<String> {
        v.and_then(serde_json::Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut vars = Vec::new();
    for step in value
        .get("steps")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
    {
        vars.extend(keys(step.get("set")));
        if let Some(save) = step
            .get("call")
            .and_then(|c| c.get("save"))
            .and_then(serde_json::Value::as_str)
        {
            vars.push(save.to_owned());
        }
    }
    Names {
        id: value
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        slots: keys(value.get("slots")),
        vars,
    }
}

/// After a flow file could not be read, reads each of its steps on its own, so that every
/// broken step is reported and not only the first. Each step's text is cut out of the file
/// (from its first key to the next step, or to the next top-level key) and read as a step,
/// its positions moved back to the file's. Errors already reported are not repeated.
fn step_errors(file: &str, text: &str, report: &mut Report) {
    #[derive(serde::Deserialize)]
    struct Steps {
        #[serde(default)]
        steps: Vec<Spanned<serde::de::IgnoredAny>>,
    }
    let Ok(found) = serde_saphyr::from_str::<Steps>(text) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<(usize, usize)> = found
        .steps
        .iter()
        .map(|s| {
            let at = &s.referenced;
            (
                usize::try_from(at.line()).unwrap_or(0),
                usize::try_from(at.column()).unwrap_or(0),
            )
        })
        .collect();
    for (i, &(line, column)) in starts.iter().enumerate() {
        if line == 0 || column == 0 || line > lines.len() {
            continue;
        }
        let end = match starts.get(i + 1) {
            Some(&(next, _)) => next.saturating_sub(1).max(line),
            None => lines
                .iter()
                .enumerate()
                .skip(line)
                .find(|(_, l)| !l.trim().is_empty() && !l.starts_with(' ') && !l.starts_with('#'))
                .map_or(lines.len(), |(k, _)| k),
        };
        let indent = column - 1;
        let mut slice = String::new();
        for (k, l) in lines[line - 1..end].iter().enumerate() {
            let dedented: String = if k == 0 || l.chars().take(indent).all(|c| c == ' ') {
                l.chars().skip(indent).collect()
            } else {
                l.trim_start().to_owned()
            };
            slice.push_str(&dedented);
            slice.push('\n');
        }
        parse_at::<RawStep>(file, &slice, (line - 1, indent), report);
    }
}

fn parse<T: serde::de::DeserializeOwned>(file: &str, text: &str, report: &mut Report) -> Option<T> {
    parse_at(file, text, (0, 0), report)
}

/// Reads `text` as a `T`; an error is reported at its position moved by `offset` (lines,
/// columns), unless the same error is reported already.
fn parse_at<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
    offset: (usize, usize),
    report: &mut Report,
) -> Option<T> {
    let options = serde_saphyr::Options {
        with_snippet: false,
        ..serde_saphyr::Options::default()
    };
    match serde_saphyr::from_str_with_options::<T>(text, options) {
        Ok(value) => Some(value),
        Err(error) => {
            let mut at = error.location().map_or_else(
                || Loc {
                    file: file.to_owned(),
                    line: 1,
                    column: 1,
                },
                |l| Loc::of(file, &l),
            );
            at.line += offset.0 as u64;
            at.column += offset.1 as u64;
            let mut message = error.to_string();
            if let Some(cut) = message.rfind(" at line ") {
                message.truncate(cut);
            }
            let hint = if message.contains("unknown field") {
                Some(
                    "check the spelling; docs/flows.md lists every key (or run `tandem schema` for editor completion)",
                )
            } else if message.contains("missing field") {
                Some("a flow file needs `id:` and `steps:`")
            } else {
                None
            };
            let repeated = report.items.iter().any(|d| {
                d.file == at.file
                    && d.line == at.line
                    && d.column == at.column
                    && d.message == message
            });
            if !repeated {
                report.error(&at, message, hint);
            }
            None
        }
    }
}

#[derive(Debug, Default)]
struct Compiler {
    templates: Templates,
    /// `texts.list_button`, compiled with the settings.
    list_button: Option<Text>,
    flow_ids: BTreeSet<String>,
    slots: BTreeSet<String>,
    vars: BTreeSet<String>,
    languages: Vec<String>,
}

fn regex(at: &Loc, pattern: &str, report: &mut Report) -> Option<Regex> {
    match Regex::new(pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            let detail = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_owned();
            report.error(
                at,
                format!("bad regex `{pattern}`: {detail}"),
                Some("patterns use Rust regex syntax; (?i) makes them case-insensitive"),
            );
            None
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Compiler {
    fn collect_names(&mut self, flows: &[(String, RawFlow)], report: &mut Report) {
        let mut seen: HashMap<String, Loc> = HashMap::new();
        for (file, flow) in flows {
            let at = Loc::of(file, &flow.id.referenced);
            if let Some(first) = seen.get(&flow.id.value) {
                report.error(
                    &at,
                    format!("duplicate flow id `{}` (also at {first})", flow.id.value),
                    Some("flow ids must be unique across files"),
                );
            } else {
                seen.insert(flow.id.value.clone(), at);
            }
            self.flow_ids.insert(flow.id.value.clone());
            self.slots.extend(flow.slots.keys().cloned());
            for step in &flow.steps {
                if let Some(set) = &step.value.set {
                    self.vars.extend(set.keys().cloned());
                }
                if let Some(call) = &step.value.call {
                    self.vars.insert(call.save.value.clone());
                }
            }
        }
    }

    fn text(&mut self, at: &Loc, raw: &RawText, report: &mut Report) -> Option<Text> {
        let mut variants = BTreeMap::new();
        match raw {
            RawText::One(source) => {
                variants.insert(String::new(), self.templates.add(at, "", source, report)?);
            }
            RawText::PerLanguage(map) => {
                for (language, source) in map {
                    if !self.languages.is_empty() && !self.languages.contains(language) {
                        report.warning(
                            at,
                            format!("language `{language}` is not in `languages:` of bot.yaml"),
                            Some("list every language you write texts in"),
                        );
                    }
                    let name = self
                        .templates
                        .add(at, &format!("@{language}"), source, report)?;
                    variants.insert(language.clone(), name);
                }
            }
        }
        Some(Text { variants })
    }

    fn spanned_text(
        &mut self,
        file: &str,
        raw: &Spanned<RawText>,
        report: &mut Report,
    ) -> Option<Text> {
        self.text(&Loc::of(file, &raw.referenced), &raw.value, report)
    }

    fn settings(
        &mut self,
        file: &str,
        raw: RawSettings,
        overrides: &BTreeMap<String, String>,
        report: &mut Report,
    ) -> Settings {
        let top = Loc {
            file: file.to_owned(),
            line: 1,
            column: 1,
        };
        self.languages.clone_from(&raw.languages);
        let timezone = match &raw.timezone {
            None => jiff::tz::TimeZone::UTC,
            Some(name) => jiff::tz::TimeZone::get(&name.value).unwrap_or_else(|_| {
                report.error(
                    &Loc::of(file, &name.referenced),
                    format!("unknown time zone `{}`", name.value),
                    Some("use an IANA name such as Europe/Lisbon or America/Sao_Paulo"),
                );
                jiff::tz::TimeZone::UTC
            }),
        };
        let patterns =
            |list: &[Spanned<String>], defaults: &[&str], report: &mut Report| -> Vec<Regex> {
                if list.is_empty() {
                    return defaults.iter().filter_map(|p| Regex::new(p).ok()).collect();
                }
                list.iter()
                    .filter_map(|p| regex(&Loc::of(file, &p.referenced), &p.value, report))
                    .collect()
            };
        let greetings = patterns(&raw.greetings, DEFAULT_GREETINGS, report);
        let human_patterns = patterns(&raw.human.patterns, DEFAULT_HUMAN, report);
        let words = |list: &[String], defaults: &[&str]| -> Vec<String> {
            if list.is_empty() {
                defaults.iter().map(|s| (*s).to_owned()).collect()
            } else {
                list.iter().map(|s| s.trim().to_lowercase()).collect()
            }
        };
        let mut texts = BTreeMap::new();
        for (name, source) in BUILTIN_TEXTS {
            let at = Loc {
                file: "<built-in>".into(),
                line: 0,
                column: 0,
            };
            if let Some(text) = self.text(&at, &RawText::One((*source).to_owned()), report) {
                texts.insert((*name).to_owned(), text);
            }
        }
        for (name, raw_text) in &raw.texts {
            if !BUILTIN_TEXTS.iter().any(|(n, _)| n == name) {
                let names: Vec<&str> = BUILTIN_TEXTS.iter().map(|(n, _)| *n).collect();
                report.error(
                    &top,
                    format!("unknown text `{name}` under `texts:`"),
                    Some(&format!("the texts are {}", names.join(", "))),
                );
                continue;
            }
            let at = Loc {
                file: file.to_owned(),
                line: 0,
                column: 0,
            };
            if let Some(text) = self.text(&Loc { line: 1, ..at }, raw_text, report) {
                texts.insert(name.clone(), text);
            }
        }
        self.list_button = texts.get("list_button").cloned();
        let mut variables = raw.variables;
        for (name, value) in overrides {
            variables.insert(name.clone(), value.clone());
        }
        Settings {
            languages: raw.languages,
            timezone,
            menu: raw.menu.map(|m| m.value),
            fallback: raw.fallback.map(|m| m.value),
            handoff_after_misses: raw.handoff_after_misses.unwrap_or(3),
            greetings,
            human_patterns,
            human_team: raw.human.team.map(Into::into),
            opt_out: words(&raw.opt_out.keywords, DEFAULT_OPT_OUT),
            opt_in: words(&raw.opt_out.opt_in_keywords, DEFAULT_OPT_IN),
            hours: raw.hours.as_ref().map(|h| Hours::parse(h, file, report)),
            texts,
            variables,
            window_template: raw.window_template.map(|t| (t.name, t.language)),
            handoff_on: crate::model::HandoffOn {
                needs_human: raw.handoff_on.needs_human.unwrap_or(true),
                high_urgency: raw.handoff_on.high_urgency.unwrap_or(false),
                negative_sentiment: raw.handoff_on.negative_sentiment.unwrap_or(false),
            },
            classifier_threshold: raw
                .classifier_threshold
                .unwrap_or(tandem_classify::DEFAULT_THRESHOLD),
        }
    }

    fn check_settings_targets(&self, file: &str, settings: &mut Settings, report: &mut Report) {
        let top = Loc {
            file: file.to_owned(),
            line: 1,
            column: 1,
        };
        for (key, target) in [("menu", &settings.menu), ("fallback", &settings.fallback)] {
            if let Some(id) = target
                && !self.flow_ids.contains(id)
            {
                report.error(
                    &top,
                    format!("`{key}: {id}` names no flow"),
                    Some("use the `id:` of one of the flow files"),
                );
            }
        }
    }

    fn flow(&mut self, file: &str, raw: RawFlow, report: &mut Report) -> Flow {
        let at = Loc::of(file, &raw.id.referenced);
        if !valid_id(&raw.id.value) {
            report.error(
                &at,
                format!(
                    "flow id `{}` has characters other than letters, digits, `_` and `-`",
                    raw.id.value
                ),
                None,
            );
        }
        let triggers = raw
            .triggers
            .iter()
            .filter_map(|t| regex(&Loc::of(file, &t.referenced), &t.value, report))
            .collect();
        if raw.steps.is_empty() {
            report.error(&at, format!("flow `{}` has no steps", raw.id.value), None);
        }
        let errors_before = report.error_count();
        // Step ids first, so routes can point forwards.
        let mut ids: Vec<String> = Vec::new();
        for (i, step) in raw.steps.iter().enumerate() {
            let id = step
                .value
                .id
                .as_ref()
                .map_or_else(|| (i + 1).to_string(), |s| s.value.clone());
            if let Some(given) = &step.value.id
                && ids.contains(&id)
            {
                report.error(
                    &Loc::of(file, &given.referenced),
                    format!("duplicate step id `{id}` in flow `{}`", raw.id.value),
                    Some("step ids must be unique within a flow"),
                );
            }
            ids.push(id);
        }
        let mut ctx = FlowContext {
            file,
            flow: &raw.id.value,
            ids: &ids,
            slots: &raw.slots.keys().cloned().collect(),
        };
        let mut steps = Vec::new();
        for (i, step) in raw.steps.iter().enumerate() {
            let step_at = Loc::of(file, &step.referenced);
            let kind = self.step(&mut ctx, &step_at, &step.value, report);
            let next = if step.value.end == Some(true) && given_kind_count(&step.value) > 0 {
                if step.value.next.is_some() {
                    report.error(
                        &step_at,
                        "both `next` and `end`",
                        Some("a step either ends the flow or names the next step"),
                    );
                }
                Some(raw.steps.len())
            } else {
                step.value
                    .next
                    .as_ref()
                    .and_then(|n| ctx.step_target(n, report))
            };
            steps.push(Step {
                id: ids[i].clone(),
                kind: kind.unwrap_or(StepKind::End),
                next,
                at: step_at,
            });
        }
        // A step that failed to compile stands in as an `end`, which would make the steps
        // after it look unreachable: only look for unreachable steps in a clean flow.
        if report.error_count() == errors_before {
            warn_unreachable(&raw.id.value, &steps, report);
        }
        Flow {
            id: raw.id.value,
            description: raw.description,
            examples: raw.examples,
            triggers,
            slots: raw
                .slots
                .into_iter()
                .map(|(k, v)| (k, v.description))
                .collect(),
            steps,
            at,
        }
    }

    fn step(
        &mut self,
        ctx: &mut FlowContext<'_>,
        at: &Loc,
        raw: &RawStep,
        report: &mut Report,
    ) -> Option<StepKind> {
        let given: Vec<&str> = [
            ("say", raw.say.is_some()),
            ("buttons", raw.buttons.is_some()),
            ("list", raw.list.is_some()),
            ("ask", raw.ask.is_some()),
            ("branch", raw.branch.is_some()),
            ("call", raw.call.is_some()),
            ("set", raw.set.is_some()),
            ("handoff", raw.handoff.is_some()),
            ("goto", raw.goto.is_some()),
            // `end: true` next to another kind ends the flow after that step.
            ("end", raw.end.is_some() && given_kind_count(raw) == 0),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match given.len() {
            0 => {
                report.error(
                    at,
                    "step does nothing",
                    Some(&format!("give it one of {STEP_KINDS}")),
                );
                return None;
            }
            1 => {}
            _ => {
                report.error(
                    at,
                    format!("step has several kinds: {}", given.join(", ")),
                    Some("split it into one step per kind"),
                );
                return None;
            }
        }
        let file = ctx.file;
        if let Some(say) = &raw.say {
            return self.spanned_text(file, say, report).map(StepKind::Say);
        }
        if let Some(text) = raw.buttons.as_ref().or(raw.list.as_ref()) {
            return self
                .choice(ctx, at, raw, text, report)
                .map(StepKind::Choose);
        }
        if let Some(ask) = &raw.ask {
            return self.question(ctx, at, raw, ask, report).map(StepKind::Ask);
        }
        if let Some(cases) = &raw.branch {
            let mut compiled = Vec::new();
            for case in cases {
                let when = case.when.as_ref().and_then(|w| {
                    self.templates
                        .add_condition(&Loc::of(file, &w.referenced), &w.value, report)
                });
                if case.when.is_some() && when.is_none() {
                    continue;
                }
                let route = ctx.route(
                    at,
                    case.next.as_ref(),
                    case.goto.as_ref(),
                    &self.flow_ids,
                    report,
                );
                compiled.push(Case { when, route });
            }
            return Some(StepKind::Branch(compiled));
        }
        if let Some(call) = &raw.call {
            let url = self.templates.add_url(
                &Loc::of(file, &call.url.referenced),
                &call.url.value,
                report,
            )?;
            let method = one_of(
                file,
                call.method.as_ref(),
                "GET",
                &["GET", "POST", "PUT", "PATCH", "DELETE"],
                "HTTP method",
                report,
            );
            let headers = call
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.clone(),
                        self.templates.add(at, &format!("#header.{k}"), v, report)?,
                    ))
                })
                .collect();
            let body = call.body.as_ref().map(|b| self.body(at, b, report));
            let timeout = match &call.timeout {
                None => Duration::from_secs(5),
                Some(t) => humantime::parse_duration(&t.value).unwrap_or_else(|_| {
                    report.error(
                        &Loc::of(file, &t.referenced),
                        format!("`{}` is not a duration", t.value),
                        Some("write it like 800ms, 3s or 1m"),
                    );
                    Duration::from_secs(5)
                }),
            };
            if !valid_id(&call.save.value) {
                report.error(
                    &Loc::of(file, &call.save.referenced),
                    format!("`save: {}` is not a variable name", call.save.value),
                    Some("use letters, digits and _"),
                );
            }
            let on_error = call
                .on_error
                .as_ref()
                .and_then(|t| ctx.step_target(t, report));
            return Some(StepKind::Call(Call {
                method,
                url,
                headers,
                body,
                timeout,
                save: call.save.value.clone(),
                on_error,
            }));
        }
        if let Some(set) = &raw.set {
            let pairs = set
                .iter()
                .filter_map(|(name, value)| {
                    Some((
                        name.clone(),
                        self.templates.add(
                            &Loc::of(file, &value.referenced),
                            "",
                            &value.value,
                            report,
                        )?,
                    ))
                })
                .collect();
            return Some(StepKind::Set(pairs));
        }
        if let Some(handoff) = &raw.handoff {
            let words = tandem_domain::Priority::ALL.map(tandem_domain::Priority::as_str);
            let priority = one_of(
                file,
                handoff.priority.as_ref(),
                "normal",
                &words,
                "priority",
                report,
            );
            let priority = tandem_domain::Priority::parse(&priority).unwrap_or_default();
            let message = handoff
                .message
                .as_ref()
                .and_then(|m| self.spanned_text(file, m, report));
            return Some(StepKind::Handoff(Handoff {
                team: handoff.team.clone().map(Into::into),
                reason: handoff.reason.clone().map_or_else(
                    || tandem_domain::HandoffReason::Flow(ctx.flow.to_owned()),
                    tandem_domain::HandoffReason::from,
                ),
                priority,
                message,
            }));
        }
        if let Some(target) = &raw.goto {
            if !self.flow_ids.contains(&target.value) {
                report.error(
                    &Loc::of(file, &target.referenced),
                    format!("`goto: {}` names no flow", target.value),
                    Some("use the `id:` of a flow file"),
                );
            }
            return Some(StepKind::Goto(target.value.clone()));
        }
        Some(StepKind::End)
    }

    fn body(
        &mut self,
        at: &Loc,
        value: &serde_json::Value,
        report: &mut Report,
    ) -> serde_json::Value {
        use serde_json::Value;
        match value {
            Value::String(s) => Value::String(
                self.templates
                    .add(at, "#body", s, report)
                    .unwrap_or_default(),
            ),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.body(at, v, report)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.body(at, v, report)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    fn choice(
        &mut self,
        ctx: &mut FlowContext<'_>,
        at: &Loc,
        raw: &RawStep,
        text: &Spanned<RawText>,
        report: &mut Report,
    ) -> Option<Choice> {
        let file = ctx.file;
        let is_list = raw.list.is_some();
        let (max, title_max) = if is_list { (10, 24) } else { (3, 20) };
        let kind = if is_list { "list" } else { "buttons" };
        if raw.options.is_empty() || raw.options.len() > max {
            report.error(
                at,
                format!(
                    "{kind} has {} options; WhatsApp allows 1 to {max}",
                    raw.options.len()
                ),
                if is_list {
                    None
                } else {
                    Some("use `list:` for up to 10 options")
                },
            );
        }
        let mut options = Vec::new();
        let mut seen = BTreeSet::new();
        for option in &raw.options {
            let option_at = Loc::of(file, &option.id.referenced);
            if !seen.insert(option.id.value.clone()) {
                report.error(
                    &option_at,
                    format!("duplicate option id `{}`", option.id.value),
                    None,
                );
            }
            if let RawText::One(title) = &option.title
                && !title.contains("{{")
                && title.chars().count() > title_max
            {
                report.error(
                    &option_at,
                    format!(
                        "title `{title}` has {} characters; WhatsApp allows {title_max} for {kind}",
                        title.chars().count()
                    ),
                    None,
                );
            }
            let title = self.text(&option_at, &option.title, report)?;
            let description = match &option.description {
                Some(d) => Some(self.text(&option_at, d, report)?),
                None => None,
            };
            let route = ctx.route(
                &option_at,
                option.next.as_ref(),
                option.goto.as_ref(),
                &self.flow_ids,
                report,
            );
            options.push(ChoiceOption {
                id: option.id.value.clone(),
                title,
                description,
                route,
            });
        }
        // A list without its own `button:` label uses the bot's `texts.list_button`.
        let list_button = match (&raw.button, is_list) {
            (_, false) => None,
            (Some(label), true) => Some(self.text(at, label, report)?),
            (None, true) => Some(self.list_button.clone()?),
        };
        let slot = raw.slot.as_ref().map(|s| ctx.slot(s, report));
        Some(Choice {
            list_button,
            text: self.spanned_text(file, text, report)?,
            options,
            slot,
            retry: raw
                .retry
                .as_ref()
                .and_then(|r| self.spanned_text(file, r, report)),
            tries: raw.tries.unwrap_or(3).max(1),
            on_fail: raw
                .on_fail
                .as_ref()
                .and_then(|t| ctx.step_target(t, report)),
        })
    }

    fn question(
        &mut self,
        ctx: &mut FlowContext<'_>,
        at: &Loc,
        raw: &RawStep,
        ask: &Spanned<RawText>,
        report: &mut Report,
    ) -> Option<Question> {
        let file = ctx.file;
        let Some(slot) = &raw.slot else {
            report.error(
                at,
                "`ask` has no `slot`",
                Some("name the slot the answer goes in, and declare it under `slots:`"),
            );
            return None;
        };
        let slot = ctx.slot(slot, report);
        let expect_name = raw.expect.as_ref().map_or("text", |e| e.value.as_str());
        let expect_at = raw
            .expect
            .as_ref()
            .map_or_else(|| at.clone(), |e| Loc::of(file, &e.referenced));
        let expect = match expect_name {
            "text" => Expect::Text,
            "number" => Expect::Number {
                min: raw.min,
                max: raw.max,
            },
            "email" => Expect::Email,
            "phone" => Expect::Phone,
            "date" => Expect::Date,
            "image" => Expect::Image,
            "document" => Expect::Document,
            "location" => Expect::Location,
            "media" => Expect::Media,
            "choice" => {
                if raw.choices.is_empty() {
                    report.error(
                        &expect_at,
                        "`expect: choice` without `choices`",
                        Some("list the accepted answers under `choices:`"),
                    );
                }
                Expect::Choice(raw.choices.clone())
            }
            "regex" => {
                let Some(pattern) = &raw.pattern else {
                    report.error(&expect_at, "`expect: regex` without `pattern`", None);
                    return None;
                };
                Expect::Regex(regex(
                    &Loc::of(file, &pattern.referenced),
                    &pattern.value,
                    report,
                )?)
            }
            other => {
                report.error(
                    &expect_at,
                    format!("unknown answer type `{other}`"),
                    Some(&format!("expect one of {}", EXPECT_NAMES.join(", "))),
                );
                return None;
            }
        };
        Some(Question {
            text: self.spanned_text(file, ask, report)?,
            slot,
            expect,
            retry: raw
                .retry
                .as_ref()
                .and_then(|r| self.spanned_text(file, r, report)),
            tries: raw.tries.unwrap_or(3).max(1),
            on_fail: raw
                .on_fail
                .as_ref()
                .and_then(|t| ctx.step_target(t, report)),
        })
    }
}

/// Reads an optional word that must be one of `allowed` (compared in any case), reporting
/// anything else at its position; returns it as written in `allowed`, or `default`.
fn one_of(
    file: &str,
    value: Option<&Spanned<String>>,
    default: &str,
    allowed: &[&str],
    what: &str,
    report: &mut Report,
) -> String {
    let Some(value) = value else {
        return default.to_owned();
    };
    match allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(&value.value))
    {
        Some(found) => (*found).to_owned(),
        None => {
            let here = Loc::of(file, &value.referenced);
            report.error(
                &here,
                format!("unknown {what} `{}`", value.value),
                Some(&format!("use {}", allowed.join(", "))),
            );
            default.to_owned()
        }
    }
}

/// How many step kinds other than `end` a step gives.
fn given_kind_count(raw: &RawStep) -> usize {
    [
        raw.say.is_some(),
        raw.buttons.is_some(),
        raw.list.is_some(),
        raw.ask.is_some(),
        raw.branch.is_some(),
        raw.call.is_some(),
        raw.set.is_some(),
        raw.handoff.is_some(),
        raw.goto.is_some(),
    ]
    .into_iter()
    .filter(|given| *given)
    .count()
}

struct FlowContext<'a> {
    file: &'a str,
    flow: &'a str,
    ids: &'a [String],
    slots: &'a BTreeSet<String>,
}

impl FlowContext<'_> {
    fn step_target(&self, target: &Spanned<String>, report: &mut Report) -> Option<usize> {
        let index = self.ids.iter().position(|id| *id == target.value);
        if index.is_none() {
            report.error(
                &Loc::of(self.file, &target.referenced),
                format!("no step `{}` in flow `{}`", target.value, self.flow),
                Some(&format!(
                    "the steps are {}; use `goto:` to go to another flow",
                    self.ids.join(", ")
                )),
            );
        }
        index
    }

    fn route(
        &self,
        at: &Loc,
        next: Option<&Spanned<String>>,
        goto: Option<&Spanned<String>>,
        flows: &BTreeSet<String>,
        report: &mut Report,
    ) -> Route {
        match (next, goto) {
            (Some(_), Some(_)) => {
                report.error(
                    at,
                    "both `next` and `goto`",
                    Some("`next` names a step of this flow, `goto` another flow: give one"),
                );
                Route::Continue
            }
            (Some(step), None) => self
                .step_target(step, report)
                .map_or(Route::Continue, Route::Step),
            (None, Some(flow)) => {
                if !flows.contains(&flow.value) {
                    report.error(
                        &Loc::of(self.file, &flow.referenced),
                        format!("`goto: {}` names no flow", flow.value),
                        Some("use the `id:` of a flow file"),
                    );
                }
                Route::Flow(flow.value.clone())
            }
            (None, None) => Route::Continue,
        }
    }

    fn slot(&self, slot: &Spanned<String>, report: &mut Report) -> String {
        if !self.slots.contains(&slot.value) {
            report.error(
                &Loc::of(self.file, &slot.referenced),
                format!(
                    "slot `{}` is not declared in flow `{}`",
                    slot.value, self.flow
                ),
                Some(&format!(
                    "add it under `slots:`:\nslots:\n  {}: {{description: …}}",
                    slot.value
                )),
            );
        }
        slot.value.clone()
    }
}

/// Warns about steps no route reaches from the first step.
fn warn_unreachable(flow: &str, steps: &[Step], report: &mut Report) {
    let mut reached = vec![false; steps.len()];
    let mut todo = vec![0usize];
    while let Some(i) = todo.pop() {
        if i >= steps.len() || reached[i] {
            continue;
        }
        reached[i] = true;
        let step = &steps[i];
        let after = step.next.unwrap_or(i + 1);
        let push_route = |route: &Route, todo: &mut Vec<usize>| match route {
            Route::Continue => todo.push(after),
            Route::Step(s) => todo.push(*s),
            Route::Flow(_) => {}
        };
        match &step.kind {
            StepKind::Say(_) | StepKind::Set(_) => todo.push(after),
            StepKind::Ask(q) => {
                todo.push(after);
                todo.extend(q.on_fail);
            }
            StepKind::Choose(c) => {
                for option in &c.options {
                    push_route(&option.route, &mut todo);
                }
                todo.extend(c.on_fail);
            }
            StepKind::Branch(cases) => {
                for case in cases {
                    push_route(&case.route, &mut todo);
                }
                if cases.iter().all(|c| c.when.is_some()) {
                    todo.push(after);
                }
            }
            StepKind::Call(call) => {
                todo.push(after);
                todo.extend(call.on_error);
            }
            StepKind::Handoff(_) | StepKind::Goto(_) | StepKind::End => {}
        }
    }
    for (step, reached) in steps.iter().zip(reached) {
        if !reached {
            report.warning(
                &step.at,
                format!("step `{}` of flow `{flow}` is never reached", step.id),
                Some("route to it with `next:` or an option, or remove it"),
            );
        }
    }
}
