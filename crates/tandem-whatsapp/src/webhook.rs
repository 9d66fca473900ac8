//! Webhook bodies → typed events with stable identities.
//!
//! The walk goes entry → change → item, because every array may hold several items and one
//! POST may mix numbers and accounts. Each item is parsed on its own: one unreadable item is
//! kept raw ([`WebhookEvent::Kept`]) while its neighbours go on normally. The only thing that
//! makes the whole body unreadable is a body that is not a JSON object with an `entry` array.
//!
//! Every event carries an identity ([`WebhookEvent::key`]) built from what Meta keeps stable
//! across retries: the wamid for messages and echoes, wamid and status for statuses, and a
//! digest of the content for the rest.

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tandem_domain::{
    AccountUpdate, ContactUpdate, ConversationEvent, ConversationId, DeadLetter, DeliveryStatus,
    Echo, InboundMessage, MessageId, PhoneNumberId, StatusUpdate, Timestamp, WaId,
};

use crate::content::parse_content;

mod history;

/// Returns, for each business number a webhook speaks of, the WABA it belongs to
/// (`entry[].id` with `changes[].value.metadata.phone_number_id`). Unreadable parts are
/// skipped: this only teaches Tandem which account a number is in.
pub fn number_owners(body: &[u8]) -> Vec<(PhoneNumberId, String)> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(default)]
        entry: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        changes: Vec<Change>,
    }
    #[derive(serde::Deserialize)]
    struct Change {
        #[serde(default)]
        value: Option<ChangeValue>,
    }
    #[derive(serde::Deserialize)]
    struct ChangeValue {
        #[serde(default)]
        metadata: Option<Metadata>,
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        #[serde(default)]
        phone_number_id: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<Body>(body) else {
        return Vec::new();
    };
    let mut owners = Vec::new();
    for entry in parsed.entry {
        let Some(waba) = entry.id else { continue };
        for change in entry.changes {
            let pnid = change
                .value
                .and_then(|v| v.metadata)
                .and_then(|m| m.phone_number_id)
                .and_then(|p| PhoneNumberId::parse(&p).ok());
            if let Some(pnid) = pnid
                && !owners.iter().any(|(p, _)| p == &pnid)
            {
                owners.push((pnid, waba.clone()));
            }
        }
    }
    owners
}

/// Why a piece of signed input was kept raw instead of being acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptReason {
    /// The body is not a JSON object with an `entry` array.
    UnparseableBody,
    /// A change or an item inside it is not of the documented shape.
    UnparseableItem,
    /// A webhook field Tandem does not handle.
    UnknownField,
}

impl KeptReason {
    /// Returns the reason as a bounded label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnparseableBody => "unparseable_body",
            Self::UnparseableItem => "unparseable_item",
            Self::UnknownField => "unknown_field",
        }
    }
}

/// One thing a webhook told us, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    /// An event for one conversation's lane.
    Conversation {
        /// Identity for deduplication.
        key: String,
        /// The conversation it belongs to.
        conversation: ConversationId,
        /// The webhook field it came from (a bounded label).
        field: &'static str,
        /// The event.
        event: ConversationEvent,
    },
    /// An address-book change from the Business App.
    Contact {
        /// Identity for deduplication.
        key: String,
        /// The change.
        update: ContactUpdate,
    },
    /// A fact about an account or number.
    Account {
        /// Identity for deduplication.
        key: String,
        /// The webhook field it came from (a bounded label).
        field: &'static str,
        /// The fact.
        update: AccountUpdate,
    },
    /// Signed input kept raw: unreadable, or of a field Tandem does not handle.
    Kept {
        /// Identity for deduplication.
        key: String,
        /// Why it was kept.
        reason: KeptReason,
        /// The raw input and what was wrong.
        letter: DeadLetter,
    },
}

impl WebhookEvent {
    /// Returns the event's identity, stable across Meta's retries of the same webhook.
    pub fn key(&self) -> &str {
        match self {
            Self::Conversation { key, .. }
            | Self::Contact { key, .. }
            | Self::Account { key, .. }
            | Self::Kept { key, .. } => key,
        }
    }

    /// Returns the webhook field this event came from, as a bounded metrics label.
    pub fn field_label(&self) -> &'static str {
        match self {
            Self::Conversation { field, .. } | Self::Account { field, .. } => field,
            Self::Contact { .. } => "smb_app_state_sync",
            Self::Kept {
                reason: KeptReason::UnknownField,
                ..
            } => "unknown",
            Self::Kept { .. } => "unparseable",
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn digest_json(value: &Value) -> String {
    // serde_json's Map is ordered by key, so equal JSON gives equal bytes.
    digest(&serde_json::to_vec(value).unwrap_or_default())
}

/// Parses a signed webhook body received at `received_at`. Never fails; see the module docs.
pub fn parse_webhook(body: &[u8], received_at: Timestamp) -> Vec<WebhookEvent> {
    let parsed: Result<Value, String> = serde_json::from_slice(body).map_err(|e| e.to_string());
    let entries = match &parsed {
        Ok(value) => value.get("entry").and_then(Value::as_array),
        Err(_) => None,
    };
    let Some(entries) = entries else {
        let detail = match parsed {
            Err(error) => format!("body is not JSON: {error}"),
            Ok(_) => "body has no `entry` array".to_owned(),
        };
        return vec![kept_body(body, received_at, detail)];
    };
    let mut out = Vec::new();
    for entry in entries {
        let Some(changes) = entry.get("changes").and_then(Value::as_array) else {
            out.push(kept_value(
                entry,
                None,
                KeptReason::UnparseableItem,
                "entry has no `changes` array",
                received_at,
            ));
            continue;
        };
        let entry_id = entry.get("id").and_then(Value::as_str).unwrap_or("");
        let entry_time = entry
            .get("time")
            .and_then(Value::as_u64)
            .map(Timestamp::from_unix_seconds);
        for change in changes {
            let ctx = ChangeContext {
                entry_id,
                entry_time,
                received_at,
            };
            parse_change(change, &ctx, &mut out);
        }
    }
    out
}

struct ChangeContext<'a> {
    entry_id: &'a str,
    entry_time: Option<Timestamp>,
    received_at: Timestamp,
}

const FIELDS: [&str; 5] = [
    "messages",
    "smb_message_echoes",
    "smb_app_state_sync",
    "history",
    "account_update",
];

fn parse_change(change: &Value, ctx: &ChangeContext<'_>, out: &mut Vec<WebhookEvent>) {
    let field_name = change.get("field").and_then(Value::as_str).unwrap_or("");
    let value = change.get("value");
    let Some(field) = FIELDS.iter().copied().find(|f| *f == field_name) else {
        let detail = format!("webhook field {field_name:?} is not handled; kept as received");
        out.push(kept_value(
            change,
            Some(field_name),
            KeptReason::UnknownField,
            &detail,
            ctx.received_at,
        ));
        return;
    };
    let Some(value) = value.and_then(Value::as_object) else {
        out.push(kept_value(
            change,
            Some(field),
            KeptReason::UnparseableItem,
            "change has no `value` object",
            ctx.received_at,
        ));
        return;
    };
    if field == "account_update" {
        out.push(account_update(value, ctx));
        return;
    }
    let pnid = value
        .get("metadata")
        .and_then(|m| m.get("phone_number_id"))
        .and_then(Value::as_str)
        .map(PhoneNumberId::parse);
    let pnid = match pnid {
        Some(Ok(pnid)) => pnid,
        Some(Err(error)) => {
            let detail = format!("metadata.phone_number_id: {error}");
            out.push(kept_value(
                change,
                Some(field),
                KeptReason::UnparseableItem,
                &detail,
                ctx.received_at,
            ));
            return;
        }
        None => {
            let detail = "change has no metadata.phone_number_id";
            out.push(kept_value(
                change,
                Some(field),
                KeptReason::UnparseableItem,
                detail,
                ctx.received_at,
            ));
            return;
        }
    };
    let items = Items {
        field,
        pnid: &pnid,
        value,
        received_at: ctx.received_at,
    };
    match field {
        "messages" => items.messages(out),
        "smb_message_echoes" => items.echoes(out),
        "smb_app_state_sync" => items.state_sync(out),
        _ => items.history(out),
    }
}

fn account_update(value: &Map<String, Value>, ctx: &ChangeContext<'_>) -> WebhookEvent {
    let event = value
        .get("event")
        .and_then(Value::as_str)
        .unwrap_or("UNKNOWN")
        .to_owned();
    let raw = Value::Object(value.clone());
    let at = ctx.entry_time.unwrap_or(ctx.received_at);
    WebhookEvent::Account {
        key: format!("account:{}:{}:{}", ctx.entry_id, at, digest_json(&raw)),
        field: "account_update",
        update: AccountUpdate {
            account: ctx.entry_id.to_owned(),
            event,
            at,
            raw,
        },
    }
}

struct Items<'a> {
    field: &'static str,
    pnid: &'a PhoneNumberId,
    value: &'a Map<String, Value>,
    received_at: Timestamp,
}

/// Reads the fields every message object has: `id` and `timestamp`.
fn message_head(item: &Map<String, Value>) -> Result<(MessageId, Timestamp), String> {
    let id = item
        .get("id")
        .and_then(Value::as_str)
        .ok_or("message has no `id`")?;
    let id = MessageId::parse(id).map_err(|e| e.to_string())?;
    let at = timestamp(item.get("timestamp")).ok_or("message has no numeric `timestamp`")?;
    Ok((id, at))
}

/// WhatsApp timestamps are strings of Unix seconds; numbers are accepted too.
fn timestamp(value: Option<&Value>) -> Option<Timestamp> {
    let value = value?;
    let seconds = value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))?;
    Some(Timestamp::from_unix_seconds(seconds))
}

fn wa_id(item: &Map<String, Value>, key: &str) -> Result<WaId, String> {
    let raw = item
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("item has no `{key}`"))?;
    WaId::parse(raw).map_err(|e| format!("{key}: {e}"))
}

impl Items<'_> {
    fn array(&self, key: &str) -> impl Iterator<Item = &Value> {
        self.value
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    fn conversation(&self, wa: WaId) -> ConversationId {
        ConversationId::new(self.pnid.clone(), wa)
    }

    fn kept(&self, item: &Value, detail: &str) -> WebhookEvent {
        kept_value(
            item,
            Some(self.field),
            KeptReason::UnparseableItem,
            detail,
            self.received_at,
        )
    }

    fn each_object(
        &self,
        key: &str,
        out: &mut Vec<WebhookEvent>,
        parse: impl Fn(&Map<String, Value>) -> Result<WebhookEvent, String>,
    ) {
        for item in self.array(key) {
            let event = match item.as_object() {
                Some(object) => parse(object).unwrap_or_else(|detail| self.kept(item, &detail)),
                None => self.kept(item, &format!("{key}[] item is not an object")),
            };
            out.push(event);
        }
    }

    fn profile_name(&self, wa: &WaId) -> Option<String> {
        self.array("contacts")
            .find(|c| c.get("wa_id").and_then(Value::as_str) == Some(wa.as_str()))
            .and_then(|c| c.get("profile")?.get("name")?.as_str())
            .map(str::to_owned)
    }

    fn messages(&self, out: &mut Vec<WebhookEvent>) {
        self.each_object("messages", out, |item| {
            let (id, sent_at) = message_head(item)?;
            let from = wa_id(item, "from")?;
            let context = item.get("context");
            let message = InboundMessage {
                sent_at,
                content: parse_content(item),
                profile_name: self.profile_name(&from),
                context_id: context
                    .and_then(|c| c.get("id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                forwarded: context.is_some_and(|c| {
                    c.get("forwarded").and_then(Value::as_bool).unwrap_or(false)
                        || c.get("frequently_forwarded")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                }),
                id,
            };
            Ok(WebhookEvent::Conversation {
                key: format!("msg:{}:{}", self.pnid, message.id),
                conversation: self.conversation(from),
                field: "messages",
                event: ConversationEvent::Customer(message),
            })
        });
        self.each_object("statuses", out, |item| {
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .ok_or("status has no `id`")?;
            let message_id = MessageId::parse(id).map_err(|e| e.to_string())?;
            let status_raw = item
                .get("status")
                .and_then(Value::as_str)
                .ok_or("status has no `status`")?
                .to_owned();
            let recipient = wa_id(item, "recipient_id")?;
            let error_codes = item
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("code").and_then(Value::as_i64))
                .collect();
            let update = StatusUpdate {
                status: DeliveryStatus::parse(&status_raw),
                at: timestamp(item.get("timestamp")).unwrap_or(self.received_at),
                callback_data: item
                    .get("biz_opaque_callback_data")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                error_codes,
                message_id,
                status_raw,
            };
            Ok(WebhookEvent::Conversation {
                key: format!(
                    "status:{}:{}:{}",
                    self.pnid, update.message_id, update.status_raw
                ),
                conversation: self.conversation(recipient),
                field: "statuses",
                event: ConversationEvent::Status(update),
            })
        });
        for errors in self.value.get("errors").into_iter() {
            out.push(self.number_fact("ERRORS", errors.clone()));
        }
    }

    fn number_fact(&self, event: &str, raw: Value) -> WebhookEvent {
        WebhookEvent::Account {
            key: format!("number:{}:{event}:{}", self.pnid, digest_json(&raw)),
            field: self.field,
            update: AccountUpdate {
                account: self.pnid.to_string(),
                event: event.to_owned(),
                at: self.received_at,
                raw,
            },
        }
    }

    fn echoes(&self, out: &mut Vec<WebhookEvent>) {
        self.each_object("message_echoes", out, |item| {
            let (id, sent_at) = message_head(item)?;
            let to = wa_id(item, "to")?;
            let echo = Echo {
                id,
                sent_at,
                content: parse_content(item),
            };
            Ok(WebhookEvent::Conversation {
                key: format!("echo:{}:{}", self.pnid, echo.id),
                conversation: self.conversation(to),
                field: "smb_message_echoes",
                event: ConversationEvent::Echo(echo),
            })
        });
    }

    fn state_sync(&self, out: &mut Vec<WebhookEvent>) {
        self.each_object("state_sync", out, |item| {
            let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "contact" {
                return Err(format!("state_sync item of type {kind:?} is not handled"));
            }
            let contact = item
                .get("contact")
                .ok_or("state_sync item has no `contact`")?;
            let phone = contact
                .get("phone_number")
                .and_then(Value::as_str)
                .ok_or("contact has no `phone_number`")?;
            let wa = WaId::parse(phone).map_err(|e| format!("contact.phone_number: {e}"))?;
            let action = item.get("action").and_then(Value::as_str).unwrap_or("add");
            let at = timestamp(item.get("metadata").and_then(|m| m.get("timestamp")))
                .unwrap_or(self.received_at);
            let name = |key: &str| contact.get(key).and_then(Value::as_str).map(str::to_owned);
            let update = ContactUpdate {
                phone_number_id: self.pnid.clone(),
                full_name: name("full_name"),
                first_name: name("first_name"),
                removed: action == "remove",
                wa_id: wa,
                at,
            };
            Ok(WebhookEvent::Contact {
                key: format!("contact:{}:{}:{action}:{at}", self.pnid, update.wa_id),
                update,
            })
        });
    }
}

fn kept_body(body: &[u8], received_at: Timestamp, detail: String) -> WebhookEvent {
    let (text, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    WebhookEvent::Kept {
        key: format!("kept:body:{}", digest(body)),
        reason: KeptReason::UnparseableBody,
        letter: DeadLetter {
            received_at,
            reason: KeptReason::UnparseableBody.as_str().to_owned(),
            field: None,
            detail,
            body: text,
            body_base64: base64,
        },
    }
}

fn kept_value(
    value: &Value,
    field: Option<&str>,
    reason: KeptReason,
    detail: &str,
    received_at: Timestamp,
) -> WebhookEvent {
    WebhookEvent::Kept {
        key: format!("kept:{}:{}", reason.as_str(), digest_json(value)),
        reason,
        letter: DeadLetter {
            received_at,
            reason: reason.as_str().to_owned(),
            field: field.map(str::to_owned),
            detail: detail.to_owned(),
            body: value.to_string(),
            body_base64: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: Timestamp = Timestamp(1_768_050_000_000);

    fn parse(v: Value) -> Vec<WebhookEvent> {
        parse_webhook(v.to_string().as_bytes(), NOW)
    }

    fn envelope(field: &str, value: Value) -> Value {
        json!({"object":"whatsapp_business_account","entry":[{"id":"1048","changes":[{"field":field,"value":value}]}]})
    }

    fn meta() -> Value {
        json!({"display_phone_number":"15550001111","phone_number_id":"1065"})
    }

    #[test]
    fn garbage_bodies_are_kept_whole() {
        for body in [&b"not json"[..], b"{\"object\":1}", b"[]", b"\xff\xfe"] {
            let events = parse_webhook(body, NOW);
            assert_eq!(events.len(), 1);
            let WebhookEvent::Kept { reason, letter, .. } = &events[0] else {
                panic!("not kept")
            };
            assert_eq!(*reason, KeptReason::UnparseableBody);
            assert!(!letter.detail.is_empty());
        }
        let WebhookEvent::Kept { letter, .. } = &parse_webhook(b"\xff\xfe", NOW)[0] else {
            panic!()
        };
        assert!(letter.body_base64);
        assert_eq!(letter.body, "//4=");
    }

    #[test]
    fn one_bad_item_does_not_spoil_its_neighbours() {
        let value = json!({"metadata":meta(),"messages":[
            {"from":"155","id":"wamid.A","timestamp":"1768041000","type":"text","text":{"body":"hi"}},
            {"from":"155","timestamp":"1768041000","type":"text","text":{"body":"no id"}},
            "not an object"
        ]});
        let events = parse(envelope("messages", value));
        assert_eq!(events.len(), 3);
        assert!(
            matches!(&events[0], WebhookEvent::Conversation { key, .. } if key == "msg:1065:wamid.A")
        );
        assert!(matches!(
            &events[1],
            WebhookEvent::Kept {
                reason: KeptReason::UnparseableItem,
                ..
            }
        ));
        assert!(matches!(
            &events[2],
            WebhookEvent::Kept {
                reason: KeptReason::UnparseableItem,
                ..
            }
        ));
    }

    #[test]
    fn unknown_fields_are_kept_with_their_name() {
        let events = parse(envelope(
            "message_template_status_update",
            json!({"event":"APPROVED"}),
        ));
        let WebhookEvent::Kept { reason, letter, .. } = &events[0] else {
            panic!()
        };
        assert_eq!(*reason, KeptReason::UnknownField);
        assert_eq!(
            letter.field.as_deref(),
            Some("message_template_status_update")
        );
    }

    #[test]
    fn identities_are_stable_across_retries_and_distinguish_statuses() {
        let value = json!({"metadata":meta(),"statuses":[
            {"id":"wamid.S","status":"delivered","timestamp":"1","recipient_id":"155"},
            {"id":"wamid.S","status":"read","timestamp":"2","recipient_id":"155"}
        ]});
        let a = parse(envelope("messages", value.clone()));
        let b = parse(envelope("messages", value));
        assert_eq!(a, b);
        assert_ne!(a[0].key(), a[1].key());
    }

    #[test]
    fn history_direction_is_read_from_the_sender() {
        let value = json!({"metadata":meta(),"history":[{"metadata":{"phase":0,"chunk_order":2,"progress":35},
        "threads":[{"id":"155","messages":[
            {"from":"155","id":"wamid.1","timestamp":"10","type":"text","text":{"body":"q"}},
            {"from":"15550001111","to":"155","id":"wamid.2","timestamp":"20","type":"text","text":{"body":"a"}}
        ]}]}]});
        let events = parse(envelope("history", value));
        let WebhookEvent::Conversation {
            event: ConversationEvent::History(thread),
            ..
        } = &events[0]
        else {
            panic!()
        };
        assert_eq!(thread.chunk_order, Some(2));
        assert!(!thread.messages[0].from_business);
        assert!(thread.messages[1].from_business);
    }
}
