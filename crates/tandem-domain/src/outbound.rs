//! The content of messages Tandem sends: what a flow, an agent or the sender puts in a
//! conversation's outbox. The Cloud API wire format and WhatsApp's limits live in
//! `tandem-whatsapp`.

use serde::{Deserialize, Serialize};

/// The content of an outbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboundContent {
    /// Free text (only inside the 24-hour customer-service window).
    Text {
        /// The text, at most 4096 characters.
        body: String,
        /// Whether WhatsApp renders a link preview.
        preview_url: bool,
    },
    /// Up to three reply buttons.
    Buttons {
        /// Optional header text (at most 60 characters).
        header: Option<String>,
        /// The body (at most 1024 characters).
        body: String,
        /// Optional footer (at most 60 characters).
        footer: Option<String>,
        /// The buttons: id (at most 256) and title (at most 20 characters).
        buttons: Vec<(String, String)>,
    },
    /// A list of choices behind a button.
    List {
        /// Optional header text (at most 60 characters).
        header: Option<String>,
        /// The body (at most 1024 characters).
        body: String,
        /// Optional footer (at most 60 characters).
        footer: Option<String>,
        /// The label of the button that opens the list (at most 20 characters).
        button: String,
        /// Sections: optional title and rows (at most 10 rows in all).
        sections: Vec<ListSection>,
    },
    /// An approved template (the only kind allowed outside the 24-hour window).
    Template {
        /// The template's name.
        name: String,
        /// Its language code, such as `en_US`.
        language: String,
        /// Values of the body's `{{1}}`, `{{2}}`, … in order.
        body_parameters: Vec<String>,
    },
}

/// One section of a list message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListSection {
    /// The section title (required by WhatsApp when there are several sections).
    pub title: Option<String>,
    /// The rows.
    pub rows: Vec<ListRow>,
}

/// One row of a list message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListRow {
    /// The id the customer's choice comes back with (at most 200 characters).
    pub id: String,
    /// The title (at most 24 characters).
    pub title: String,
    /// An optional description (at most 72 characters).
    pub description: Option<String>,
}

impl OutboundContent {
    /// Returns a short name of the content kind for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Buttons { .. } => "buttons",
            Self::List { .. } => "list",
            Self::Template { .. } => "template",
        }
    }

    /// Returns true for content allowed outside the 24-hour window (templates only).
    pub fn is_template(&self) -> bool {
        matches!(self, Self::Template { .. })
    }

    /// Returns the line a transcript shows for this message.
    pub fn transcript_text(&self) -> String {
        match self {
            Self::Text { body, .. } => body.clone(),
            Self::Buttons { body, buttons, .. } => {
                let titles: Vec<_> = buttons.iter().map(|(_, t)| t.as_str()).collect();
                format!("{body} [{}]", titles.join(" | "))
            }
            Self::List { body, sections, .. } => {
                let titles: Vec<_> = sections
                    .iter()
                    .flat_map(|s| s.rows.iter().map(|r| r.title.as_str()))
                    .collect();
                format!("{body} [{}]", titles.join(" | "))
            }
            Self::Template {
                name,
                body_parameters,
                ..
            } => format!("template {name}({})", body_parameters.join(", ")),
        }
    }
}
