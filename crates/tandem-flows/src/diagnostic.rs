//! Problems found in flow files, each with its `file:line:col` and a hint.

use std::fmt;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth fixing; the flows still load.
    Warning,
    /// The flows cannot be loaded.
    Error,
}

/// One problem in a flow file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// How serious it is.
    pub severity: Severity,
    /// The file, as given to the loader.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{}:{}:{}: {level}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// A position in a flow file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loc {
    /// The file.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl Loc {
    /// The position of a spanned YAML value in `file`.
    pub(crate) fn of(file: &str, at: &serde_saphyr::Location) -> Self {
        Self {
            file: file.to_owned(),
            line: at.line(),
            column: at.column(),
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Collects the problems of one load.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) items: Vec<Diagnostic>,
}

impl Report {
    pub(crate) fn error(&mut self, at: &Loc, message: impl Into<String>, hint: Option<&str>) {
        self.push(Severity::Error, at, message.into(), hint);
    }

    pub(crate) fn warning(&mut self, at: &Loc, message: impl Into<String>, hint: Option<&str>) {
        self.push(Severity::Warning, at, message.into(), hint);
    }

    fn push(&mut self, severity: Severity, at: &Loc, message: String, hint: Option<&str>) {
        self.items.push(Diagnostic {
            severity,
            file: at.file.clone(),
            line: at.line,
            column: at.column,
            message,
            hint: hint.map(str::to_owned),
        });
    }

    pub(crate) fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }
}
