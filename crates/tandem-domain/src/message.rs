//! The content of one WhatsApp message, as Tandem keeps it.
//!
//! Every message type of the Cloud API maps to a variant. A type Tandem does not know yet is
//! kept whole in [`MessageContent::Unknown`] with its raw JSON, so nothing is lost when Meta
//! adds one.

use serde::{Deserialize, Serialize};

use crate::ids::MessageId;

/// The typed body of a message (inbound, echoed or imported from history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// Plain text.
    Text {
        /// The text.
        body: String,
    },
    /// A tap on an interactive reply button we sent.
    ButtonReply {
        /// The id we gave the button.
        id: String,
        /// The button's title.
        title: String,
    },
    /// A choice from an interactive list we sent.
    ListReply {
        /// The id we gave the row.
        id: String,
        /// The row's title.
        title: String,
        /// The row's description, if it had one.
        description: Option<String>,
    },
    /// A tap on a template's quick-reply button.
    TemplateButton {
        /// The payload set on the template button.
        payload: String,
        /// The button's text.
        text: String,
    },
    /// Image, video, audio, document or sticker.
    Media {
        /// Which media type (`image`, `video`, `audio`, `document`, `sticker`).
        kind: String,
        /// The media id to download it by (absent in history imports).
        media_id: Option<String>,
        /// The MIME type.
        mime_type: Option<String>,
        /// The caption, if any.
        caption: Option<String>,
        /// The file name of a document.
        filename: Option<String>,
    },
    /// A shared location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// The place's name.
        name: Option<String>,
        /// The place's address.
        address: Option<String>,
    },
    /// A reaction to an earlier message; an empty emoji removes it.
    Reaction {
        /// The message reacted to.
        message_id: String,
        /// The emoji, empty when the reaction was removed.
        emoji: String,
    },
    /// An edit of an earlier message.
    Edit {
        /// The message that was edited.
        original_message_id: String,
        /// The new text, when it is text.
        body: Option<String>,
    },
    /// A deletion of an earlier message.
    Revoke {
        /// The message that was deleted.
        original_message_id: String,
    },
    /// A message from history whose media comes later (or never).
    MediaPlaceholder,
    /// A system notice (number change, identity change).
    System {
        /// The notice's type, such as `user_changed_number`.
        kind: String,
        /// The notice's text.
        body: Option<String>,
    },
    /// Interactive, contacts, order, unsupported and other structured messages kept whole.
    Structured {
        /// The WhatsApp message type.
        kind: String,
        /// The message's type-specific object as received.
        raw: serde_json::Value,
    },
    /// A message type Tandem does not know; kept raw and counted.
    Unknown {
        /// The `type` WhatsApp gave.
        kind: String,
        /// The whole message as received.
        raw: serde_json::Value,
    },
}

impl MessageContent {
    /// Returns the WhatsApp type name of this content, a bounded set safe for metrics labels.
    pub fn type_label(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::ButtonReply { .. } | Self::ListReply { .. } => "interactive",
            Self::TemplateButton { .. } => "button",
            Self::Media { .. } => "media",
            Self::Location { .. } => "location",
            Self::Reaction { .. } => "reaction",
            Self::Edit { .. } => "edit",
            Self::Revoke { .. } => "revoke",
            Self::MediaPlaceholder => "media_placeholder",
            Self::System { .. } => "system",
            Self::Structured { .. } => "structured",
            Self::Unknown { .. } => "unknown",
        }
    }

    /// Returns the message this one edits or deletes, if it is an edit or a revoke.
    pub fn amends(&self) -> Option<MessageId> {
        match self {
            Self::Edit {
                original_message_id,
                ..
            }
            | Self::Revoke {
                original_message_id,
            } => MessageId::parse(original_message_id.as_str()).ok(),
            _ => None,
        }
    }

    /// Renders the content as one line of transcript text.
    pub fn transcript_text(&self) -> String {
        match self {
            Self::Text { body } => body.clone(),
            Self::ButtonReply { title, .. } | Self::ListReply { title, .. } => title.clone(),
            Self::TemplateButton { text, .. } => text.clone(),
            Self::Media {
                kind,
                caption,
                filename,
                ..
            } => {
                let label = caption.as_deref().or(filename.as_deref());
                match label {
                    Some(label) => format!("[{kind}] {label}"),
                    None => format!("[{kind}]"),
                }
            }
            Self::Location {
                latitude,
                longitude,
                name,
                ..
            } => match name {
                Some(name) => format!("[location] {name}"),
                None => format!("[location] {latitude},{longitude}"),
            },
            Self::Reaction { emoji, .. } if emoji.is_empty() => "[reaction removed]".to_owned(),
            Self::Reaction { emoji, .. } => format!("[reaction] {emoji}"),
            Self::Edit { body, .. } => body.clone().unwrap_or_else(|| "[edited]".to_owned()),
            Self::Revoke { .. } => "[deleted]".to_owned(),
            Self::MediaPlaceholder => "[media]".to_owned(),
            Self::System { kind, body } => match body {
                Some(body) => format!("[{kind}] {body}"),
                None => format!("[{kind}]"),
            },
            Self::Structured { kind, .. } | Self::Unknown { kind, .. } => format!("[{kind}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_text_names_non_text_content() {
        let image = MessageContent::Media {
            kind: "image".into(),
            media_id: Some("1".into()),
            mime_type: None,
            caption: Some("The box".into()),
            filename: None,
        };
        assert_eq!(image.transcript_text(), "[image] The box");
        let removed = MessageContent::Reaction {
            message_id: "x".into(),
            emoji: String::new(),
        };
        assert_eq!(removed.transcript_text(), "[reaction removed]");
        let revoke = MessageContent::Revoke {
            original_message_id: "wamid.A".into(),
        };
        assert_eq!(revoke.amends().unwrap().as_str(), "wamid.A");
    }

    #[test]
    fn content_round_trips_through_json() {
        let c = MessageContent::ListReply {
            id: "topic.returns".into(),
            title: "Returns".into(),
            description: None,
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["type"], "list_reply");
        assert_eq!(serde_json::from_value::<MessageContent>(json).unwrap(), c);
    }
}
