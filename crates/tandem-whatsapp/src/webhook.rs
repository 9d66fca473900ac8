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
//!
//! Customers are not named by a phone alone: each conversation event carries the
//! [`CustomerLookup`] of every identifier the payload holds (phone, BSUID, parent BSUID, and
//! the matching `contacts[]` entry), which the store resolves to a customer id. The customer
//! of an echo is whichever party is not the business number.

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tandem_domain::{
    AccountUpdate, ContactUpdate, ConversationEvent, CustomerLookup, DeadLetter, DeliveryStatus,
    Echo, Identity, IdentityChange, InboundMessage, MessageId, PhoneNumberId, StatusUpdate,
    Timestamp, WaId,
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
    /// Events of a business number no tenant of the deployment owns.
    UnknownNumber,
}

impl KeptReason {
    /// Returns the reason as a bounded label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnparseableBody => "unparseable_body",
            Self::UnparseableItem => "unparseable_item",
            Self::UnknownField => "unknown_field",
            Self::UnknownNumber => "unknown_number",
        }
    }
}

/// One thing a webhook told us, ready to be stored.
// Conversation events are most of what webhooks carry and are moved a few times each, never
// kept in bulk: boxing them would cost an allocation per event for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookEvent {
    /// An event for one conversation's lane.
    Conversation {
        /// Identity for deduplication.
        key: String,
        /// The business number of the conversation.
        number: PhoneNumberId,
        /// How to find the customer of the conversation.
        customer: CustomerLookup,
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
    if let Some(detail) = over_limits(entries) {
        return vec![kept_body(body, received_at, detail)];
    }
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

/// Most entries one delivery may hold; Meta batches far fewer.
pub const MAX_ENTRIES: usize = 1000;
/// Most changes one entry may hold.
pub const MAX_CHANGES: usize = 1000;

/// Says why a delivery is too big to read item by item, if it is: such a body is kept whole
/// in the dead-letter list instead. (Nesting is bounded by the JSON reader: deeper than 128
/// levels is not JSON to it.)
fn over_limits(entries: &[Value]) -> Option<String> {
    if entries.len() > MAX_ENTRIES {
        return Some(format!(
            "the body has {} entries; at most {MAX_ENTRIES} are read",
            entries.len()
        ));
    }
    entries.iter().find_map(|entry| {
        let changes = entry.get("changes").and_then(Value::as_array)?;
        (changes.len() > MAX_CHANGES).then(|| {
            format!(
                "an entry has {} changes; at most {MAX_CHANGES} are read",
                changes.len()
            )
        })
    })
}

/// Most items an array of one change may hold (messages, statuses, contacts…).
pub const MAX_ITEMS: usize = 1000;
/// Longest string a change may hold, in bytes (WhatsApp's longest text is 4,096 characters).
pub const MAX_STRING: usize = 64 * 1024;

/// Says why a change is too big to read, if it is: an array longer than [`MAX_ITEMS`] or a
/// string longer than [`MAX_STRING`] anywhere in it. Such a change is kept whole in the
/// dead-letter list, never cut.
fn oversized(change: &Value) -> Option<String> {
    let mut stack = vec![change];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) if text.len() > MAX_STRING => {
                return Some(format!(
                    "a string of {} bytes; at most {MAX_STRING} are read",
                    text.len()
                ));
            }
            Value::Array(items) if items.len() > MAX_ITEMS => {
                return Some(format!(
                    "an array of {} items; at most {MAX_ITEMS} are read",
                    items.len()
                ));
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (key, item) in map {
                    if key.len() > MAX_STRING {
                        return Some(format!("a key of {} bytes", key.len()));
                    }
                    stack.push(item);
                }
            }
            _ => {}
        }
    }
    None
}

struct ChangeContext<'a> {
    entry_id: &'a str,
    entry_time: Option<Timestamp>,
    received_at: Timestamp,
}

const FIELDS: [&str; 6] = [
    "messages",
    "smb_message_echoes",
    "smb_app_state_sync",
    "history",
    "account_update",
    "user_id_update",
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
    if let Some(detail) = oversized(change) {
        out.push(kept_value(
            change,
            Some(field),
            KeptReason::UnparseableItem,
            &detail,
            ctx.received_at,
        ));
        return;
    }
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
    let display = value
        .get("metadata")
        .and_then(|m| m.get("display_phone_number"))
        .and_then(Value::as_str)
        .map(|d| d.chars().filter(char::is_ascii_digit).collect::<String>());
    let items = Items {
        field,
        pnid: &pnid,
        display: display.as_deref(),
        value,
        received_at: ctx.received_at,
    };
    match field {
        "messages" => items.messages(out),
        "smb_message_echoes" => items.echoes(out),
        "smb_app_state_sync" => items.state_sync(out),
        "user_id_update" => items.user_id_update(change, out),
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
    /// The business number in digits (`metadata.display_phone_number`), when given.
    display: Option<&'a str>,
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

fn text<'v>(item: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    item.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Reads the customer identifiers an object holds under `keys` (such as `from`,
/// `from_user_id`, `from_parent_user_id`). Values are filed by their shape, whatever the key:
/// a BSUID in a phone field is a BSUID. A value of neither shape is an error naming the field.
fn identity_at(item: &Map<String, Value>, keys: &[&str]) -> Result<Identity, String> {
    let mut identity = Identity::default();
    for key in keys {
        if let Some(raw) = text(item, key) {
            file_identifier(&mut identity, key, raw)?;
        }
    }
    Ok(identity)
}

/// Files one identifier into `identity` by its shape.
fn file_identifier(identity: &mut Identity, key: &str, raw: &str) -> Result<(), String> {
    if identity.file(raw) {
        Ok(())
    } else {
        Err(format!(
            "{key}: {raw:?} is neither a phone number nor a BSUID"
        ))
    }
}

/// Reads one `contacts[]` entry: `wa_id`, `user_id`, `parent_user_id`, `profile.username`.
fn contact_identity(contact: &Map<String, Value>) -> Identity {
    // A malformed contact is only a missed chance to link; the item's own fields decide.
    let mut identity =
        identity_at(contact, &["wa_id", "user_id", "parent_user_id"]).unwrap_or_default();
    identity.username = contact
        .get("profile")
        .and_then(|p| p.get("username"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .map(str::to_owned);
    identity
}

/// True when two identities share an identifier.
fn same_customer(a: &Identity, b: &Identity) -> bool {
    (a.phone.is_some() && a.phone == b.phone)
        || (a.user_id.is_some() && a.user_id == b.user_id)
        || (a.parent_user_id.is_some() && a.parent_user_id == b.parent_user_id)
}

impl Items<'_> {
    fn array(&self, key: &str) -> impl Iterator<Item = &Value> {
        self.value
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    }

    fn conversation_event(
        &self,
        key: String,
        customer: CustomerLookup,
        field: &'static str,
        event: ConversationEvent,
    ) -> WebhookEvent {
        WebhookEvent::Conversation {
            key,
            number: self.pnid.clone(),
            customer,
            field,
            event,
        }
    }

    /// Completes `identity` from the `contacts[]` entry of the same customer (or the only
    /// entry, when the item names nobody itself); returns the entry's profile name.
    fn with_contact(&self, identity: &mut Identity) -> Option<String> {
        let contacts: Vec<&Map<String, Value>> = self
            .array("contacts")
            .filter_map(Value::as_object)
            .collect();
        let found = contacts
            .iter()
            .find(|c| same_customer(&contact_identity(c), identity))
            .or_else(|| {
                contacts
                    .first()
                    .filter(|_| identity.is_empty() && contacts.len() == 1)
            })?;
        let contact = contact_identity(found);
        // The item's own fields win; the contact fills in what they leave out.
        let mut merged = contact;
        merged.merge(identity);
        *identity = merged;
        found
            .get("profile")
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// True when `identity` is the business number itself.
    fn is_business(&self, identity: &Identity) -> bool {
        match (self.display, &identity.phone) {
            (Some(display), Some(phone)) => !display.is_empty() && phone.as_str() == display,
            _ => false,
        }
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

    fn messages(&self, out: &mut Vec<WebhookEvent>) {
        self.each_object("messages", out, |item| {
            let (id, sent_at) = message_head(item)?;
            if let Some(change) = identity_change(item)? {
                return Ok(self.conversation_event(
                    format!("msg:{}:{id}", self.pnid),
                    CustomerLookup::of_change(&change),
                    "messages",
                    ConversationEvent::IdentityChanged(Box::new(change)),
                ));
            }
            let mut from = identity_at(item, &["from", "from_user_id", "from_parent_user_id"])?;
            let profile_name = self.with_contact(&mut from);
            if from.is_empty() {
                return Err(
                    "message names no customer: no `from`, `from_user_id` or `contacts[]`".into(),
                );
            }
            let context = item.get("context");
            let message = InboundMessage {
                sent_at,
                content: parse_content(item),
                profile_name,
                from,
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
            Ok(self.conversation_event(
                format!("msg:{}:{}", self.pnid, message.id),
                CustomerLookup::of(&message.from),
                "messages",
                ConversationEvent::Customer(message),
            ))
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
            let mut recipient = identity_at(item, &["recipient_id", "recipient_user_id", "recipient_parent_user_id"])?;
            self.with_contact(&mut recipient);
            if recipient.is_empty() {
                return Err(
                    "status names no recipient: no `recipient_id`, `recipient_user_id` or `contacts[]`"
                        .into(),
                );
            }
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
                recipient,
            };
            Ok(self.conversation_event(
                format!(
                    "status:{}:{}:{}",
                    self.pnid, update.message_id, update.status_raw
                ),
                CustomerLookup::of(&update.recipient),
                "statuses",
                ConversationEvent::Status(update),
            ))
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
            let to = identity_at(item, &["to", "to_user_id", "to_parent_user_id"])?;
            let from = identity_at(item, &["from", "from_user_id", "from_parent_user_id"])
                .unwrap_or_default();
            // Some libraries write echoes the other way round: the customer is whichever
            // party is not the business number.
            let mut to = if self.is_business(&to) && !from.is_empty() && !self.is_business(&from) {
                from
            } else {
                to
            };
            if self.is_business(&to) {
                to.phone = None;
            }
            self.with_contact(&mut to);
            if to.is_empty() {
                return Err("echo names no customer: no `to`, `to_user_id` or `contacts[]`".into());
            }
            let echo = Echo {
                id,
                sent_at,
                content: parse_content(item),
                to,
            };
            Ok(self.conversation_event(
                format!("echo:{}:{}", self.pnid, echo.id),
                CustomerLookup::of(&echo.to),
                "smb_message_echoes",
                ConversationEvent::Echo(echo),
            ))
        });
    }

    /// The withdrawn `user_id_update` field: applied only when it has the shape of
    /// [`user_id_update`]; anything else is kept raw.
    fn user_id_update(&self, change: &Value, out: &mut Vec<WebhookEvent>) {
        let items: Vec<&Value> = match self.value.get("user_id_update").and_then(Value::as_array) {
            Some(items) => items.iter().collect(),
            None => vec![change.get("value").unwrap_or(change)],
        };
        for item in items {
            let parsed = item
                .as_object()
                .ok_or_else(|| "user_id_update item is not an object".to_owned())
                .and_then(user_id_update);
            out.push(match parsed {
                Ok(update) => self.conversation_event(
                    format!("user_id_update:{}:{}", self.pnid, digest_json(item)),
                    CustomerLookup::of_change(&update),
                    "user_id_update",
                    ConversationEvent::IdentityChanged(Box::new(update)),
                ),
                Err(detail) => self.kept(item, &detail),
            });
        }
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
            // Username users may come with a BSUID instead of a phone (field names not
            // documented yet): either names the address-book entry.
            let phone = ["phone_number", "wa_id", "user_id"]
                .iter()
                .find_map(|k| contact.get(*k).and_then(Value::as_str))
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

/// Reads a `system` message that announces new identifiers for the customer:
/// `user_changed_user_id` (a new BSUID, no phone) and `user_changed_number` (`from` is the old
/// phone, `system.wa_id` the new one, with the previous and new BSUIDs since August 2026).
/// Only typed fields are read, never `system.body`. Other system messages are `None`.
fn identity_change(item: &Map<String, Value>) -> Result<Option<IdentityChange>, String> {
    if text(item, "type") != Some("system") {
        return Ok(None);
    }
    let Some(system) = item.get("system").and_then(Value::as_object) else {
        return Ok(None);
    };
    let kind = text(system, "type").unwrap_or("");
    if kind != "user_changed_user_id" && kind != "user_changed_number" {
        return Ok(None);
    }
    let mut previous = identity_at(system, &["previous_user_id", "previous_parent_user_id"])?;
    let mut current = identity_at(system, &["wa_id", "user_id", "parent_user_id"])?;
    if let Some(old) = text(item, "from") {
        file_identifier(&mut previous, "from", old)?;
    }
    if kind == "user_changed_user_id" {
        // No phone can be shared with this one; a `wa_id` here would not be a new number.
        current.phone = None;
    }
    if previous.is_empty() && current.is_empty() {
        return Err(format!(
            "system message {kind:?} names no previous or new identifier"
        ));
    }
    Ok(Some(IdentityChange {
        kind: kind.to_owned(),
        previous,
        current,
    }))
}

/// Reads one item of the withdrawn `user_id_update` field, if it has the shape one
/// implementer documented: `{"user_id": {"previous": "US.…", "current": "US.…"}}`, with an
/// optional `wa_id`.
fn user_id_update(item: &Map<String, Value>) -> Result<IdentityChange, String> {
    let ids = item
        .get("user_id")
        .and_then(Value::as_object)
        .ok_or("user_id_update without a `user_id: {previous, current}` object")?;
    let previous = identity_at(ids, &["previous"])?;
    let mut current = identity_at(ids, &["current"])?;
    if let Some(phone) = text(item, "wa_id") {
        file_identifier(&mut current, "wa_id", phone)?;
    }
    if previous.user_id.is_none() || current.user_id.is_none() {
        return Err("user_id_update needs both `user_id.previous` and `user_id.current`".into());
    }
    Ok(IdentityChange {
        kind: "user_id_update".to_owned(),
        previous,
        current,
    })
}

fn kept_body(body: &[u8], received_at: Timestamp, detail: String) -> WebhookEvent {
    keep_body(body, received_at, KeptReason::UnparseableBody, detail)
}

/// The whole raw `body` as one dead letter kept for `reason`; its key is stable across
/// Meta's retries of the same body.
pub fn keep_body(
    body: &[u8],
    received_at: Timestamp,
    reason: KeptReason,
    detail: String,
) -> WebhookEvent {
    let (text, base64) = match std::str::from_utf8(body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(body), true),
    };
    let key = match reason {
        KeptReason::UnparseableBody => format!("kept:body:{}", digest(body)),
        other => format!("kept:{}:{}", other.as_str(), digest(body)),
    };
    WebhookEvent::Kept {
        key,
        reason,
        letter: DeadLetter {
            received_at,
            reason: reason.as_str().to_owned(),
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
    use tandem_domain::UserId;

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
    fn bodies_over_the_limits_are_kept_whole_not_walked() {
        let kept_detail = |body: &[u8]| {
            let events = parse_webhook(body, NOW);
            assert_eq!(events.len(), 1, "one dead letter, nothing else");
            let WebhookEvent::Kept { reason, letter, .. } = &events[0] else {
                panic!("not kept")
            };
            assert_eq!(*reason, KeptReason::UnparseableBody);
            assert_eq!(letter.body.as_bytes(), body, "the body is kept as it came");
            letter.detail.clone()
        };
        let change = json!({"field": "messages", "value": {"metadata": meta(), "messages": []}});
        let entry = json!({"id": "1048", "changes": [change]});
        let many_entries = json!({"entry": vec![entry.clone(); MAX_ENTRIES + 1]}).to_string();
        assert!(kept_detail(many_entries.as_bytes()).contains("1001 entries"));
        let many_changes =
            json!({"entry": [{"id": "1048", "changes": vec![change.clone(); MAX_CHANGES + 1]}]})
                .to_string();
        assert!(kept_detail(many_changes.as_bytes()).contains("1001 changes"));
        // Nesting deeper than the JSON reader's limit is not JSON: no stack overflow.
        let deep = format!(
            r#"{{"entry": {}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(kept_detail(deep.as_bytes()).contains("recursion limit"));
        // At the limits, the items are read.
        let at_limit = json!({"entry": vec![entry; MAX_ENTRIES]}).to_string();
        let events = parse_webhook(at_limit.as_bytes(), NOW);
        assert!(
            events
                .iter()
                .all(|e| !matches!(e, WebhookEvent::Kept { .. }))
        );
    }

    #[test]
    fn changes_with_too_many_items_or_too_long_strings_are_kept_whole() {
        let message = |body: &str| json!({"from": "15550002222", "id": "wamid.A", "timestamp": "1768050000", "type": "text", "text": {"body": body}});
        let kept = |value: Value| {
            let events = parse(envelope("messages", value));
            assert_eq!(events.len(), 1, "one dead letter for the change");
            let WebhookEvent::Kept { reason, letter, .. } = &events[0] else {
                panic!("not kept")
            };
            assert_eq!(*reason, KeptReason::UnparseableItem);
            assert_eq!(letter.field.as_deref(), Some("messages"));
            letter.detail.clone()
        };
        let long = "x".repeat(MAX_STRING + 1);
        let detail = kept(json!({"metadata": meta(), "messages": [message(&long)]}));
        assert!(detail.contains("65537 bytes"), "{detail}");
        let many = vec![message("hi"); MAX_ITEMS + 1];
        let detail = kept(json!({"metadata": meta(), "messages": many}));
        assert!(detail.contains("1001 items"), "{detail}");
        // At the limits, the messages are read.
        let at_limit = "x".repeat(MAX_STRING);
        let events = parse(envelope(
            "messages",
            json!({"metadata": meta(), "messages": [message(&at_limit)]}),
        ));
        assert!(matches!(events[0], WebhookEvent::Conversation { .. }));
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
        // The chunk's progress is a fact of the number.
        let WebhookEvent::Account { update, .. } = &events[1] else {
            panic!("no progress fact: {events:?}")
        };
        assert_eq!(update.event, "HISTORY_CHUNK");
        assert_eq!(update.account, "1065");
        assert_eq!(update.raw["progress"], 35);
        assert_eq!(update.raw["phase"], 0);
        assert_eq!(update.raw["threads"], 1);
    }

    fn sample(name: &str) -> Vec<WebhookEvent> {
        let path = format!(
            "{}/../../tests/fixtures/whatsapp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        parse_webhook(&std::fs::read(path).unwrap(), NOW)
    }

    fn only(events: Vec<WebhookEvent>) -> (CustomerLookup, ConversationEvent) {
        assert_eq!(events.len(), 1, "{events:?}");
        match events.into_iter().next().unwrap() {
            WebhookEvent::Conversation {
                customer, event, ..
            } => (customer, event),
            other => panic!("not a conversation event: {other:?}"),
        }
    }

    fn user(s: &str) -> Option<UserId> {
        Some(UserId::parse(s).unwrap())
    }

    #[test]
    fn a_username_customer_is_named_by_bsuid_and_username() {
        let (lookup, event) = only(sample("bsuid_inbound_text_username_only.json"));
        let ConversationEvent::Customer(message) = event else {
            panic!()
        };
        assert_eq!(message.from.phone, None);
        assert_eq!(message.from.user_id, user("US.13491208600000000004"));
        assert_eq!(message.from.username.as_deref(), Some("dario.m_88"));
        assert_eq!(message.profile_name.as_deref(), Some("Dario M."));
        assert_eq!(lookup, CustomerLookup::of(&message.from));
        let (lookup, _) = only(sample("bsuid_inbound_text_with_phone.json"));
        assert_eq!(lookup.find.len(), 2, "phone and BSUID are linked");
    }

    #[test]
    fn echoes_and_statuses_by_bsuid_name_the_customer() {
        let (_, event) = only(sample("bsuid_echo_text.json"));
        let ConversationEvent::Echo(echo) = event else {
            panic!()
        };
        assert_eq!(echo.to.user_id, user("US.13491208600000000004"));
        assert_eq!(
            echo.to.phone, None,
            "the business number is never the customer"
        );
        let (_, event) = only(sample("bsuid_status_delivered.json"));
        let ConversationEvent::Status(status) = event else {
            panic!()
        };
        assert_eq!(status.recipient.user_id, user("US.13491208600000000004"));
        assert_eq!(status.recipient.username.as_deref(), Some("dario.m_88"));
    }

    #[test]
    fn an_echo_written_the_other_way_round_names_the_customer() {
        let value = json!({"metadata":{"display_phone_number":"+1 555 000 1111","phone_number_id":"1065"},"message_echoes":[
            {"from":"15550002222","to":"15550001111","id":"wamid.R","timestamp":"1","type":"text","text":{"body":"hi"}}]});
        let (_, event) = only(parse(envelope("smb_message_echoes", value)));
        let ConversationEvent::Echo(echo) = event else {
            panic!()
        };
        assert_eq!(echo.to.phone.unwrap().as_str(), "15550002222");
    }

    #[test]
    fn identity_changes_are_typed_events_not_chat() {
        let (lookup, event) = only(sample("system_user_changed_user_id.json"));
        let ConversationEvent::IdentityChanged(change) = event else {
            panic!()
        };
        assert_eq!(change.previous.user_id, user("US.13491208600000000004"));
        assert_eq!(change.current.user_id, user("US.13491208600000000024"));
        assert_eq!(lookup.find, change.previous.aliases());
        let number = json!({"metadata":meta(),"messages":[{"from":"155","id":"wamid.N","timestamp":"1","type":"system",
            "system":{"type":"user_changed_number","body":"changed","wa_id":"166","previous_user_id":"US.1","user_id":"US.2"}}]});
        let (_, event) = only(parse(envelope("messages", number)));
        let ConversationEvent::IdentityChanged(change) = event else {
            panic!()
        };
        assert_eq!(change.previous.phone.unwrap().as_str(), "155");
        assert_eq!(change.current.phone.unwrap().as_str(), "166");
        assert_eq!(change.current.user_id, user("US.2"));
        // Other system messages stay messages.
        let other = json!({"metadata":meta(),"messages":[{"from":"155","id":"wamid.O","timestamp":"1","type":"system",
            "system":{"type":"customer_identity_changed","body":"x"}}]});
        assert!(matches!(
            only(parse(envelope("messages", other))).1,
            ConversationEvent::Customer(_)
        ));
    }

    #[test]
    fn the_withdrawn_user_id_update_applies_only_with_its_documented_shape() {
        let good = json!({"metadata":meta(),"user_id_update":[{"wa_id":"155","user_id":{"previous":"US.1","current":"US.2"}}]});
        let (_, event) = only(parse(envelope("user_id_update", good)));
        assert!(
            matches!(event, ConversationEvent::IdentityChanged(c) if c.kind == "user_id_update")
        );
        let bad = json!({"metadata":meta(),"user_id_update":[{"something":"else"}]});
        assert!(matches!(
            &parse(envelope("user_id_update", bad))[0],
            WebhookEvent::Kept { .. }
        ));
    }

    #[test]
    fn identifiers_are_filed_by_shape_and_garbage_is_kept() {
        let value = json!({"metadata":meta(),"messages":[
            {"from":"US.77","id":"wamid.S","timestamp":"1","type":"text","text":{"body":"a"}},
            {"from":"not a number","id":"wamid.G","timestamp":"1","type":"text","text":{"body":"b"}},
            {"id":"wamid.E","timestamp":"1","type":"text","text":{"body":"c"}}]});
        let events = parse(envelope("messages", value));
        let WebhookEvent::Conversation {
            event: ConversationEvent::Customer(m),
            ..
        } = &events[0]
        else {
            panic!()
        };
        assert_eq!(
            m.from.user_id,
            user("US.77"),
            "a BSUID in `from` is a BSUID"
        );
        assert_eq!(m.from.phone, None);
        for kept in &events[1..] {
            let WebhookEvent::Kept { letter, .. } = kept else {
                panic!("{kept:?}")
            };
            assert!(
                letter.detail.contains("neither a phone")
                    || letter.detail.contains("names no customer"),
                "{}",
                letter.detail
            );
        }
    }

    #[test]
    fn a_history_thread_may_be_named_by_bsuid() {
        let value = json!({"metadata":meta(),"history":[{"metadata":{"phase":0,"chunk_order":1,"progress":100},
        "threads":[{"id":"US.5","messages":[
            {"from":"US.5","id":"wamid.h1","timestamp":"10","type":"text","text":{"body":"q"}},
            {"from":"15550001111","to":"US.5","id":"wamid.h2","timestamp":"20","type":"text","text":{"body":"a"}}
        ]}]}]});
        let mut events = parse(envelope("history", value));
        assert!(matches!(events.pop(), Some(WebhookEvent::Account { .. })));
        let (lookup, event) = only(events);
        let ConversationEvent::History(thread) = event else {
            panic!()
        };
        assert_eq!(thread.customer.user_id, user("US.5"));
        assert_eq!(lookup.find.len(), 1);
        assert!(!thread.messages[0].from_business);
        assert!(thread.messages[1].from_business);
    }
}
