//! One WhatsApp message object (inbound, echoed or from history) → [`MessageContent`].
//!
//! The object carries `type` and a sub-object named after the type. Known types map to typed
//! variants; a known type whose sub-object is not of the documented shape, and any type Tandem
//! does not know, is kept whole so it can be read later.

use serde_json::{Map, Value};
use tandem_domain::MessageContent;

const MEDIA_TYPES: [&str; 5] = ["image", "video", "audio", "document", "sticker"];
const STRUCTURED_TYPES: [&str; 5] = [
    "contacts",
    "order",
    "unsupported",
    "interactive",
    "request_welcome",
];

fn text_field(object: &Value, key: &str) -> Option<String> {
    object.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// Maps a message object to its content. Never fails: unreadable shapes are kept raw.
pub(crate) fn parse_content(message: &Map<String, Value>) -> MessageContent {
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let body = message.get(&kind).cloned().unwrap_or(Value::Null);
    typed_content(&kind, &body).unwrap_or_else(|| {
        if STRUCTURED_TYPES.contains(&kind.as_str()) || MEDIA_TYPES.contains(&kind.as_str()) {
            MessageContent::Structured { kind, raw: body }
        } else {
            MessageContent::Unknown {
                kind,
                raw: Value::Object(message.clone()),
            }
        }
    })
}

fn typed_content(kind: &str, body: &Value) -> Option<MessageContent> {
    Some(match kind {
        "text" => MessageContent::Text {
            body: text_field(body, "body")?,
        },
        "interactive" => interactive(body)?,
        "button" => MessageContent::TemplateButton {
            payload: text_field(body, "payload").unwrap_or_default(),
            text: text_field(body, "text")?,
        },
        k if MEDIA_TYPES.contains(&k) => MessageContent::Media {
            kind: k.to_owned(),
            media_id: text_field(body, "id"),
            mime_type: text_field(body, "mime_type"),
            caption: text_field(body, "caption"),
            filename: text_field(body, "filename"),
        },
        "location" => MessageContent::Location {
            latitude: body.get("latitude")?.as_f64()?,
            longitude: body.get("longitude")?.as_f64()?,
            name: text_field(body, "name"),
            address: text_field(body, "address"),
        },
        "reaction" => MessageContent::Reaction {
            message_id: text_field(body, "message_id")?,
            emoji: text_field(body, "emoji").unwrap_or_default(),
        },
        "edit" => MessageContent::Edit {
            original_message_id: text_field(body, "original_message_id")?,
            body: body
                .get("message")
                .and_then(|m| m.get("text"))
                .and_then(|t| text_field(t, "body")),
        },
        "revoke" => MessageContent::Revoke {
            original_message_id: text_field(body, "original_message_id")?,
        },
        "media_placeholder" => MessageContent::MediaPlaceholder,
        "system" => MessageContent::System {
            kind: text_field(body, "type").unwrap_or_else(|| "system".to_owned()),
            body: text_field(body, "body"),
        },
        _ => return None,
    })
}

fn interactive(body: &Value) -> Option<MessageContent> {
    match body.get("type")?.as_str()? {
        "button_reply" => {
            let reply = body.get("button_reply")?;
            Some(MessageContent::ButtonReply {
                id: text_field(reply, "id")?,
                title: text_field(reply, "title")?,
            })
        }
        "list_reply" => {
            let reply = body.get("list_reply")?;
            Some(MessageContent::ListReply {
                id: text_field(reply, "id")?,
                title: text_field(reply, "title")?,
                description: text_field(reply, "description"),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> MessageContent {
        parse_content(v.as_object().unwrap())
    }

    #[test]
    fn every_documented_type_maps_to_a_variant() {
        assert_eq!(
            parse(json!({"type":"text","text":{"body":"hi"}})),
            MessageContent::Text { body: "hi".into() }
        );
        assert!(matches!(
            parse(json!({"type":"audio","audio":{"id":"1","voice":true}})),
            MessageContent::Media { kind, .. } if kind == "audio"
        ));
        assert!(matches!(
            parse(json!({"type":"edit","edit":{"original_message_id":"wamid.1","message":{"type":"text","text":{"body":"fixed"}}}})),
            MessageContent::Edit { body: Some(b), .. } if b == "fixed"
        ));
        assert!(matches!(
            parse(json!({"type":"revoke","revoke":{"original_message_id":"wamid.1"}})),
            MessageContent::Revoke { .. }
        ));
        assert!(matches!(
            parse(json!({"type":"order","order":{"catalog_id":"1"}})),
            MessageContent::Structured { kind, .. } if kind == "order"
        ));
        assert!(matches!(
            parse(json!({"type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{}}})),
            MessageContent::Structured { kind, .. } if kind == "interactive"
        ));
    }

    #[test]
    fn unknown_types_and_bad_shapes_are_kept_raw() {
        let raw = json!({"type":"hologram","hologram":{"x":1}});
        assert_eq!(
            parse(raw.clone()),
            MessageContent::Unknown {
                kind: "hologram".into(),
                raw
            }
        );
        assert!(matches!(
            parse(json!({"type":"text","text":{"body":5}})),
            MessageContent::Unknown { .. }
        ));
        assert!(
            matches!(parse(json!({"id":"x"})), MessageContent::Unknown { kind, .. } if kind.is_empty())
        );
    }
}
