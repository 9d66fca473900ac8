//! Texts and the minijinja templates behind them: strict about undefined variables, checked
//! at load time for syntax and for variables nobody sets, and rendered per language.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use crate::diagnostic::{Loc, Report};

/// The names a template may start from.
pub const ROOTS: &[&str] = &[
    "contact", "slots", "vars", "config", "now", "message", "language", "hours", "queue",
];

/// A text with one template per language code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// Template name per language (`""` when the text is the same in every language).
    pub variants: BTreeMap<String, String>,
}

/// Every template of the loaded flows, compiled once.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
    /// Variables templates read, with where, checked once every flow is known.
    pub(crate) reads: Vec<(Loc, String)>,
    count: usize,
}

/// Marks the name of a template that renders a URL (see [`Templates::add_url`]).
const URL_MARK: &str = "#url#";

/// What a value written into a URL template keeps as is: RFC 3986's unreserved characters.
const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Default for Templates {
    fn default() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(false);
        // In a URL every value is percent-encoded, so a customer's answer (`1/../admin?x=`)
        // cannot change the path or the query of the business's backend; the bot's own
        // configuration (`config.*`, safe strings) and `|safe` are written as they are.
        env.set_auto_escape_callback(|name| {
            if name.contains(URL_MARK) {
                AutoEscape::Custom("url")
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(|out, state, value| {
            if state.auto_escape() == AutoEscape::Custom("url") {
                let text = value.to_string();
                if value.is_safe() {
                    out.write_str(&text)
                } else {
                    write!(
                        out,
                        "{}",
                        percent_encoding::utf8_percent_encode(&text, URL_VALUE)
                    )
                }
                .map_err(|e| {
                    minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string())
                })
            } else {
                minijinja::escape_formatter(out, state, value)
            }
        });
        Self {
            env,
            reads: Vec::new(),
            count: 0,
        }
    }
}

/// A template that failed to render (a variable missing at run time, a filter error).
#[derive(Debug, Clone, thiserror::Error)]
#[error("template {name}: {detail}")]
pub struct RenderError {
    /// The template's name (its `file:line:col`).
    pub name: String,
    /// What went wrong.
    pub detail: String,
}

impl Templates {
    /// Compiles the URL template `source`: every value it writes is percent-encoded, except
    /// the bot's `config` variables and what the author marks `|safe`.
    pub(crate) fn add_url(
        &mut self,
        at: &Loc,
        source: &str,
        report: &mut Report,
    ) -> Option<String> {
        self.add(at, URL_MARK.trim_end_matches('#'), source, report)
    }

    /// Compiles `source`, named after where it is written; records the problems in `report`.
    /// Returns the template's name, or `None` when it does not compile.
    pub(crate) fn add(
        &mut self,
        at: &Loc,
        suffix: &str,
        source: &str,
        report: &mut Report,
    ) -> Option<String> {
        // A counter keeps names unique when several templates share a position.
        let name = format!("{at}{suffix}#{}", self.count);
        self.count += 1;
        if let Err(error) = self.env.add_template_owned(name.clone(), source.to_owned()) {
            let line = error.line().map_or(0, |l| l as u64 - 1);
            let here = Loc {
                line: at.line + line,
                ..at.clone()
            };
            let detail = error.detail().unwrap_or("syntax error");
            report.error(
                &here,
                format!("template syntax: {detail}"),
                Some("templates are minijinja (Jinja2): {{ slots.name }}, {% if … %}…{% endif %}"),
            );
            return None;
        }
        if let Ok(template) = self.env.get_template(&name) {
            for var in template.undeclared_variables(true) {
                self.reads.push((at.clone(), var));
            }
        }
        Some(name)
    }

    /// Compiles a condition (`when:`) as a template that renders `1` when it is true.
    pub(crate) fn add_condition(
        &mut self,
        at: &Loc,
        expr: &str,
        report: &mut Report,
    ) -> Option<String> {
        self.add(at, "?", &format!("{{% if {expr} %}}1{{% endif %}}"), report)
    }

    /// Renders a template with `context`.
    ///
    /// # Errors
    /// A [`RenderError`] naming the template when a variable is missing or a filter fails.
    pub fn render(&self, name: &str, context: &Value) -> Result<String, RenderError> {
        // The name's `#n` suffix only keeps names unique; people want the position.
        let position = name.split('#').next().unwrap_or(name);
        let failed = |e: minijinja::Error| RenderError {
            name: position.to_owned(),
            detail: e
                .detail()
                .map_or_else(|| e.kind().to_string(), str::to_owned),
        };
        self.env
            .get_template(name)
            .map_err(failed)?
            .render(context)
            .map_err(failed)
    }

    /// Renders a condition compiled by `add_condition`.
    ///
    /// # Errors
    /// As [`Templates::render`].
    pub fn test(&self, name: &str, context: &Value) -> Result<bool, RenderError> {
        Ok(self.render(name, context)? == "1")
    }

    /// Renders `text` in `language`, or in the default language when it has no variant for
    /// it.
    ///
    /// # Errors
    /// As [`Templates::render`].
    pub fn render_text(
        &self,
        text: &Text,
        language: Option<&str>,
        default_language: &str,
        context: &Value,
    ) -> Result<String, RenderError> {
        let name = language
            .and_then(|l| text.variants.get(l))
            .or_else(|| text.variants.get(default_language))
            .or_else(|| text.variants.get(""))
            .or_else(|| text.variants.values().next());
        match name {
            Some(name) => self.render(name, context).map(|s| s.trim().to_owned()),
            None => Ok(String::new()),
        }
    }
}

/// Checks every variable a template reads against what the flows provide: the root must be
/// one of [`ROOTS`]; `slots.x` must be a declared slot, `vars.x` set by some `set` or `call`,
/// and `config.x` a configured variable.
pub(crate) fn check_reads(
    reads: &[(Loc, String)],
    slots: &BTreeSet<String>,
    vars: &BTreeSet<String>,
    config: &BTreeSet<String>,
    report: &mut Report,
) {
    for (at, var) in reads {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let field = parts.next();
        if !ROOTS.contains(&root) {
            report.error(
                at,
                format!("undefined variable `{var}`"),
                Some("templates can read contact, slots, vars, config, now, message, language, hours and queue"),
            );
            continue;
        }
        let (known, what, hint) = match root {
            "slots" => (slots, "slot", "declare it under `slots:` in a flow"),
            "vars" => (
                vars,
                "variable",
                "set it with a `set:` step or a `call:` with `save:`",
            ),
            "config" => (
                config,
                "config variable",
                "add it under `variables:` in bot.yaml",
            ),
            _ => continue,
        };
        if let Some(field) = field
            && !known.contains(field)
        {
            report.error(at, format!("undefined {what} `{root}.{field}`"), Some(hint));
        }
    }
}
