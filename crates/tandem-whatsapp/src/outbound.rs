//! Messages Tandem sends through the Cloud API, validated against WhatsApp's limits before
//! they are sent, and their exact wire bodies.

use serde_json::{Value, json};
use tandem_domain::{Identity, MessageId, Phone, UserId};

/// Where a message goes: a phone (`to`), or a business-scoped user id (`recipient`) for a
/// customer whose phone WhatsApp does not share. Never a BSUID in `to`: WhatsApp answers 200
/// and drops the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// A phone number, sent as `to`.
    Phone(Phone),
    /// A BSUID or parent BSUID, sent as `recipient`.
    User(UserId),
}

impl Recipient {
    /// The address of a customer: the phone when known (it keeps the phone visible in later
    /// webhooks), else the BSUID, else the parent BSUID.
    pub fn of(identity: &Identity) -> Option<Self> {
        if let Some(phone) = &identity.phone {
            return Some(Self::Phone(phone.clone()));
        }
        identity
            .user_id
            .as_ref()
            .or(identity.parent_user_id.as_ref())
            .map(|u| Self::User(u.clone()))
    }

    /// True for a BSUID address.
    pub fn is_user_id(&self) -> bool {
        matches!(self, Self::User(_))
    }
}

/// A message to send to one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundMessage {
    /// The customer.
    pub to: Recipient,
    /// What to send.
    pub content: OutboundContent,
    /// Quote this message (`context.message_id`).
    pub reply_to: Option<MessageId>,
    /// `biz_opaque_callback_data`: comes back on the message's statuses.
    pub callback_data: Option<String>,
}

pub use tandem_domain::outbound::{ListRow, ListSection, OutboundContent};

/// A message WhatsApp would refuse, caught before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidMessage {
    /// Which part of the message.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn limit(field: &'static str, value: &str, max: usize) -> Result<(), InvalidMessage> {
    let len = value.chars().count();
    if len == 0 {
        return Err(InvalidMessage {
            field,
            problem: "is empty".into(),
        });
    }
    if len > max {
        return Err(InvalidMessage {
            field,
            problem: format!("has {len} characters; WhatsApp allows {max}"),
        });
    }
    Ok(())
}

fn optional(field: &'static str, value: Option<&String>, max: usize) -> Result<(), InvalidMessage> {
    value.map_or(Ok(()), |v| limit(field, v, max))
}

impl OutboundMessage {
    /// Checks the message against WhatsApp's documented limits.
    ///
    /// # Errors
    /// Names the part that is empty or too long, or a count out of range.
    pub fn validate(&self) -> Result<(), InvalidMessage> {
        match &self.content {
            OutboundContent::Text { body, .. } => limit("text.body", body, 4096),
            OutboundContent::Buttons {
                header,
                body,
                footer,
                buttons,
            } => {
                check_frame(header.as_ref(), body, footer.as_ref())?;
                if !(1..=3).contains(&buttons.len()) {
                    let problem = format!("has {}; WhatsApp allows 1 to 3", buttons.len());
                    return Err(InvalidMessage {
                        field: "buttons",
                        problem,
                    });
                }
                for (id, title) in buttons {
                    limit("button id", id, 256)?;
                    limit("button title", title, 20)?;
                }
                Ok(())
            }
            OutboundContent::List {
                header,
                body,
                footer,
                button,
                sections,
            } => {
                check_frame(header.as_ref(), body, footer.as_ref())?;
                limit("list button", button, 20)?;
                let rows: usize = sections.iter().map(|s| s.rows.len()).sum();
                if sections.is_empty() || sections.len() > 10 || !(1..=10).contains(&rows) {
                    let problem = format!(
                        "{} sections and {rows} rows; WhatsApp allows 1–10 of each",
                        sections.len()
                    );
                    return Err(InvalidMessage {
                        field: "sections",
                        problem,
                    });
                }
                for section in sections {
                    optional("section title", section.title.as_ref(), 24)?;
                    for row in &section.rows {
                        limit("row id", &row.id, 200)?;
                        limit("row title", &row.title, 24)?;
                        optional("row description", row.description.as_ref(), 72)?;
                    }
                }
                Ok(())
            }
            OutboundContent::Template { name, language, .. } => {
                limit("template name", name, 512)?;
                limit("template language", language, 15)
            }
        }
    }

    /// Returns the JSON body of `POST /{phone_number_id}/messages`.
    pub fn to_wire(&self) -> Value {
        let mut body = json!({"messaging_product": "whatsapp", "recipient_type": "individual"});
        match &self.to {
            Recipient::Phone(phone) => body["to"] = phone.as_str().into(),
            Recipient::User(user) => body["recipient"] = user.as_str().into(),
        }
        match &self.content {
            OutboundContent::Text {
                body: text,
                preview_url,
            } => {
                body["type"] = "text".into();
                body["text"] = json!({"preview_url": preview_url, "body": text});
            }
            OutboundContent::Buttons {
                header,
                body: text,
                footer,
                buttons,
            } => {
                let buttons: Vec<Value> = buttons
                    .iter()
                    .map(
                        |(id, title)| json!({"type": "reply", "reply": {"id": id, "title": title}}),
                    )
                    .collect();
                body["type"] = "interactive".into();
                body["interactive"] =
                    interactive("button", header, text, footer, json!({"buttons": buttons}));
            }
            OutboundContent::List {
                header,
                body: text,
                footer,
                button,
                sections,
            } => {
                let sections: Vec<Value> = sections
                    .iter()
                    .map(|s| {
                        let rows: Vec<Value> = s
                            .rows
                            .iter()
                            .map(|r| {
                                let mut row = json!({"id": r.id, "title": r.title});
                                if let Some(d) = &r.description {
                                    row["description"] = d.as_str().into();
                                }
                                row
                            })
                            .collect();
                        let mut section = json!({"rows": rows});
                        if let Some(title) = &s.title {
                            section["title"] = title.as_str().into();
                        }
                        section
                    })
                    .collect();
                let action = json!({"button": button, "sections": sections});
                body["type"] = "interactive".into();
                body["interactive"] = interactive("list", header, text, footer, action);
            }
            OutboundContent::Template {
                name,
                language,
                body_parameters,
            } => {
                let mut template = json!({"name": name, "language": {"code": language}});
                if !body_parameters.is_empty() {
                    let parameters: Vec<Value> = body_parameters
                        .iter()
                        .map(|p| json!({"type": "text", "text": p}))
                        .collect();
                    template["components"] = json!([{"type": "body", "parameters": parameters}]);
                }
                body["type"] = "template".into();
                body["template"] = template;
            }
        }
        if let Some(reply_to) = &self.reply_to {
            body["context"] = json!({"message_id": reply_to.as_str()});
        }
        if let Some(data) = &self.callback_data {
            body["biz_opaque_callback_data"] = data.as_str().into();
        }
        body
    }
}

/// Builds an `interactive` object: its type, optional text header and footer, body and action.
fn interactive(
    kind: &str,
    header: &Option<String>,
    body: &str,
    footer: &Option<String>,
    action: Value,
) -> Value {
    let mut interactive = json!({"type": kind, "body": {"text": body}, "action": action});
    if let Some(header) = header {
        interactive["header"] = json!({"type": "text", "text": header});
    }
    if let Some(footer) = footer {
        interactive["footer"] = json!({"text": footer});
    }
    interactive
}

/// Checks the header, body and footer every interactive message has.
fn check_frame(
    header: Option<&String>,
    body: &str,
    footer: Option<&String>,
) -> Result<(), InvalidMessage> {
    optional("header", header, 60)?;
    limit("body", body, 1024)?;
    optional("footer", footer, 60)
}

/// Returns the body that marks an inbound message read and, optionally, shows the typing
/// indicator (it disappears when we reply or after 25 seconds).
pub fn mark_read_wire(message_id: &MessageId, typing: bool) -> Value {
    let mut body = json!({"messaging_product": "whatsapp", "status": "read", "message_id": message_id.as_str()});
    if typing {
        body["typing_indicator"] = json!({"type": "text"});
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/whatsapp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn to(wa: &str, content: OutboundContent, callback: Option<&str>) -> OutboundMessage {
        OutboundMessage {
            to: Recipient::Phone(Phone::parse(wa).unwrap()),
            content,
            reply_to: None,
            callback_data: callback.map(str::to_owned),
        }
    }

    #[test]
    fn wire_bodies_match_the_recorded_requests() {
        let text = to(
            "15550002222",
            OutboundContent::Text {
                body: "We open 9:00-18:00 Monday to Saturday. Anything else I can help with?"
                    .into(),
                preview_url: false,
            },
            Some("engine=bot;conv=c_01HZX8"),
        );
        assert_eq!(text.to_wire(), fixture("send_text_request.json"));
        let buttons = to(
            "15550002222",
            OutboundContent::Buttons {
                header: Some("How can we help?".into()),
                body: "Pick a topic below, or just type your question.".into(),
                footer: Some("Reply HUMAN at any time to reach our team".into()),
                buttons: vec![
                    ("intent.opening_hours".into(), "Opening hours".into()),
                    ("intent.order_status".into(), "Where is my order".into()),
                    ("intent.human".into(), "Talk to a person".into()),
                ],
            },
            Some("engine=bot;conv=c_01HZX8"),
        );
        assert_eq!(
            buttons.to_wire(),
            fixture("send_interactive_buttons_request.json")
        );
        let row = |id: &str, title: &str, d: Option<&str>| ListRow {
            id: id.into(),
            title: title.into(),
            description: d.map(str::to_owned),
        };
        let list = to(
            "15550002222",
            OutboundContent::List {
                header: None,
                body: "What do you need help with?".into(),
                footer: Some("Choose one option".into()),
                button: "See topics".into(),
                sections: vec![
                    ListSection {
                        title: Some("Orders".into()),
                        rows: vec![
                            row(
                                "topic.order_status",
                                "Order status",
                                Some("Track a shipment"),
                            ),
                            row(
                                "topic.returns",
                                "Returns & refunds",
                                Some("Send back an item or ask about a refund"),
                            ),
                        ],
                    },
                    ListSection {
                        title: Some("Store".into()),
                        rows: vec![
                            row("topic.hours", "Opening hours", None),
                            row("topic.human", "Talk to a person", None),
                        ],
                    },
                ],
            },
            None,
        );
        assert_eq!(
            list.to_wire(),
            fixture("send_interactive_list_request.json")
        );
        let template = to(
            "15550004444",
            OutboundContent::Template {
                name: "order_follow_up".into(),
                language: "en_US".into(),
                body_parameters: vec!["Chloe".into(), "#4411".into()],
            },
            Some("engine=bot;reason=window_closed"),
        );
        assert_eq!(template.to_wire(), fixture("send_template_request.json"));
        let id = MessageId::parse("wamid.HBgLMTU1NTAwMDIyMjIFQIAEhgUZPrKLcu4Vb7cjAAA==").unwrap();
        assert_eq!(
            mark_read_wire(&id, true),
            fixture("send_mark_read_typing_request.json")
        );
        for m in [text, buttons, list, template] {
            assert_eq!(m.validate(), Ok(()));
        }
    }

    #[test]
    fn a_customer_without_a_phone_is_addressed_by_recipient_never_to() {
        let user = UserId::parse("US.13491208600000000004").unwrap();
        let message = OutboundMessage {
            to: Recipient::User(user.clone()),
            content: OutboundContent::Text {
                body: "Yes, we ship to Lisbon. Delivery takes 3-5 working days.".into(),
                preview_url: false,
            },
            reply_to: None,
            callback_data: Some("engine=bot;conv=c_01J5DARIO".into()),
        };
        assert_eq!(
            message.to_wire(),
            fixture("send_text_to_bsuid_request.json")
        );
        let both = Identity {
            phone: Some(Phone::parse("15550002222").unwrap()),
            user_id: Some(user.clone()),
            ..Identity::default()
        };
        assert!(matches!(Recipient::of(&both), Some(Recipient::Phone(_))));
        let bsuid_only = Identity {
            user_id: Some(user),
            ..Identity::default()
        };
        assert!(Recipient::of(&bsuid_only).is_some_and(|r| r.is_user_id()));
        assert_eq!(Recipient::of(&Identity::default()), None);
    }

    #[test]
    fn limits_are_checked_before_sending() {
        let long = "x".repeat(21);
        let m = to(
            "1",
            OutboundContent::Buttons {
                header: None,
                body: "b".into(),
                footer: None,
                buttons: vec![("a".into(), long)],
            },
            None,
        );
        assert_eq!(
            m.validate().unwrap_err().to_string(),
            "button title: has 21 characters; WhatsApp allows 20"
        );
        let four = (0..4).map(|i| (i.to_string(), "t".to_owned())).collect();
        let m = to(
            "1",
            OutboundContent::Buttons {
                header: None,
                body: "b".into(),
                footer: None,
                buttons: four,
            },
            None,
        );
        assert_eq!(m.validate().unwrap_err().field, "buttons");
        let m = to(
            "1",
            OutboundContent::Text {
                body: String::new(),
                preview_url: false,
            },
            None,
        );
        assert_eq!(m.validate().unwrap_err().to_string(), "text.body: is empty");
        let rows = (0..11)
            .map(|i| ListRow {
                id: i.to_string(),
                title: "t".into(),
                description: None,
            })
            .collect();
        let m = to(
            "1",
            OutboundContent::List {
                header: None,
                body: "b".into(),
                footer: None,
                button: "go".into(),
                sections: vec![ListSection { title: None, rows }],
            },
            None,
        );
        assert_eq!(m.validate().unwrap_err().field, "sections");
    }
}
