//! The `history` field: past chats imported from the phone, one event per thread; each
//! chunk's progress and a declined sync as number-level facts.

use serde_json::Value;
use tandem_domain::{ConversationEvent, CustomerLookup, HistoryMessage, HistoryThread};

use super::{Items, WebhookEvent, digest_json, identity_at, message_head};
use crate::content::parse_content;

impl Items<'_> {
    pub(super) fn history(&self, out: &mut Vec<WebhookEvent>) {
        for chunk in self.array("history") {
            if let Some(errors) = chunk.get("errors").and_then(Value::as_array) {
                let declined = errors
                    .iter()
                    .any(|e| e.get("code").and_then(Value::as_i64) == Some(2_593_109));
                let event = if declined {
                    "HISTORY_DECLINED"
                } else {
                    "HISTORY_ERROR"
                };
                out.push(self.number_fact(event, chunk.clone()));
                continue;
            }
            let meta = chunk.get("metadata");
            let number = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_u64);
            let phase = number("phase").and_then(|n| u8::try_from(n).ok());
            let chunk_order = number("chunk_order").and_then(|n| u32::try_from(n).ok());
            let progress = number("progress").and_then(|n| u8::try_from(n).ok());
            let Some(threads) = chunk.get("threads").and_then(Value::as_array) else {
                out.push(self.kept(chunk, "history chunk has neither `threads` nor `errors`"));
                continue;
            };
            for thread in threads {
                out.push(self.history_thread(thread, phase, chunk_order, progress));
            }
            // The sync's progress, as a fact of the number (`GET /v1/numbers/{id}` shows it).
            let progress_fact = serde_json::json!({
                "phase": phase, "chunk_order": chunk_order, "progress": progress,
                "threads": threads.len(),
            });
            out.push(self.number_fact("HISTORY_CHUNK", progress_fact));
        }
        // Media ids for history placeholders may arrive as `messages[]` under this field.
        for item in self.array("messages") {
            out.push(self.kept(
                item,
                "history media update is not imported yet; kept as received",
            ));
        }
    }

    fn history_thread(
        &self,
        thread: &Value,
        phase: Option<u8>,
        chunk_order: Option<u32>,
        progress: Option<u8>,
    ) -> WebhookEvent {
        let parsed = (|| -> Result<WebhookEvent, String> {
            let object = thread.as_object().ok_or("thread is not an object")?;
            // `id` is the customer's phone, or (for username users) a BSUID; a `user_id` next
            // to it links the two.
            let customer = identity_at(object, &["id", "user_id", "parent_user_id"])?;
            if customer.is_empty() {
                return Err("history thread has no `id`".into());
            }
            let own: Vec<&str> = [
                customer.phone.as_ref().map(|p| p.as_str()),
                customer.user_id.as_ref().map(|u| u.as_str()),
                customer.parent_user_id.as_ref().map(|u| u.as_str()),
            ]
            .into_iter()
            .flatten()
            .collect();
            let mut messages = Vec::new();
            for item in object
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let item = item.as_object().ok_or("history message is not an object")?;
                let (id, sent_at) = message_head(item)?;
                let from = item.get("from").and_then(Value::as_str).unwrap_or("");
                let from_user = item.get("from_user_id").and_then(Value::as_str);
                messages.push(HistoryMessage {
                    id,
                    sent_at,
                    // The customer's messages come from the customer; everything else in the
                    // thread was sent by the business (and carries `to`).
                    from_business: !own.contains(&from)
                        && !from_user.is_some_and(|u| own.contains(&u)),
                    content: parse_content(item),
                    status: item
                        .get("history_context")
                        .and_then(|h| h.get("status"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            }
            let thread_id = own.first().copied().unwrap_or_default();
            Ok(self.conversation_event(
                format!("history:{}:{thread_id}:{}", self.pnid, digest_json(thread)),
                CustomerLookup::of(&customer),
                "history",
                ConversationEvent::History(HistoryThread {
                    phase,
                    chunk_order,
                    progress,
                    messages,
                    customer,
                }),
            ))
        })();
        parsed.unwrap_or_else(|detail| self.kept(thread, &detail))
    }
}
