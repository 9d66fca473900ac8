//! Handoff hooks: the events the business's CRM or helpdesk is told about, the JSON they
//! carry, which targets get them, and the signature receivers check.
//!
//! A receiver checks `X-Tandem-Signature: sha256=HEX`, where HEX is the HMAC-SHA256 of
//! `{X-Tandem-Timestamp}.{raw body}` with the hook's secret, refuses timestamps too far from
//! its clock (replays), and drops repeated `Idempotency-Key`s (retries deliver at least once).

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tandem_domain::{Conversation, Timestamp, TranscriptEntry};

/// What happened, as the hook's `event` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookEvent {
    /// The bot (or a rule) asked for a person.
    HandoffRequested,
    /// An agent was given the conversation.
    Assigned,
    /// A person took over: from the phone (an echo) or through the API.
    HumanTakeover,
    /// The customer wrote while a person owns (or is awaited in) the conversation.
    Message,
    /// The bot is back in charge.
    Resumed,
    /// The conversation was closed.
    Closed,
    /// Meta removed a number's link (off-boarded or disconnected); its sends are held.
    NumberDisconnected,
    /// A disconnected number is linked again; held sends go out.
    NumberReconnected,
    /// No activity from the phone for the heartbeat time: the link may drop soon.
    NumberAtRisk,
    /// A customer's data was erased on request; the receiver should erase its copy.
    CustomerErased,
}

impl HookEvent {
    /// Every event, in lifecycle order.
    pub const ALL: [HookEvent; 10] = [
        Self::HandoffRequested,
        Self::Assigned,
        Self::HumanTakeover,
        Self::Message,
        Self::Resumed,
        Self::Closed,
        Self::NumberDisconnected,
        Self::NumberReconnected,
        Self::NumberAtRisk,
        Self::CustomerErased,
    ];

    /// The name receivers see (`conversation.assigned`).
    pub fn name(self) -> &'static str {
        match self {
            Self::HandoffRequested => "conversation.handoff_requested",
            Self::Assigned => "conversation.assigned",
            Self::HumanTakeover => "conversation.human_takeover",
            Self::Message => "conversation.message",
            Self::Resumed => "conversation.resumed",
            Self::Closed => "conversation.closed",
            Self::NumberDisconnected => "number.disconnected",
            Self::NumberReconnected => "number.reconnected",
            Self::NumberAtRisk => "number.at_risk",
            Self::CustomerErased => "customer.erased",
        }
    }

    /// Parses a name as [`HookEvent::name`] gives it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Where hooks go.
#[derive(Clone)]
pub struct HookTarget {
    /// A name for logs, metrics and the dead-letter list.
    pub name: String,
    /// The receiver's URL.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// Only events of conversations routed to these teams; empty means all.
    pub teams: Vec<String>,
    /// Only these events; empty means all.
    pub events: Vec<HookEvent>,
}

impl std::fmt::Debug for HookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is never printed.
        f.debug_struct("HookTarget")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("teams", &self.teams)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// Every configured hook target.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    targets: Vec<HookTarget>,
    /// Transcript lines a payload carries.
    pub transcript_lines: usize,
}

impl Hooks {
    /// Builds the set; payloads carry the last `transcript_lines` transcript lines.
    pub fn new(targets: Vec<HookTarget>, transcript_lines: usize) -> Self {
        Self {
            targets,
            transcript_lines,
        }
    }

    /// Returns true when no target is configured.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Returns the target with this name.
    pub fn target(&self, name: &str) -> Option<&HookTarget> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// Returns the targets that want `event` for a conversation of `team`. An erasure goes
    /// to every target that wants the event, whatever its teams: each may hold a copy.
    pub fn targets_for(&self, event: HookEvent, team: Option<&str>) -> Vec<&HookTarget> {
        let any_team = event == HookEvent::CustomerErased;
        self.targets
            .iter()
            .filter(|t| t.events.is_empty() || t.events.contains(&event))
            .filter(|t| {
                any_team
                    || t.teams.is_empty()
                    || team.is_some_and(|x| t.teams.iter().any(|y| y == x))
            })
            .collect()
    }

    /// Builds the JSON body of `event` about conversation `c` after the step. `detail`
    /// holds what is particular to the event (the customer's message, the resume reason…).
    pub fn payload(
        &self,
        event: HookEvent,
        id: &str,
        c: &Conversation,
        contact_name: Option<&str>,
        detail: Value,
        now: Timestamp,
    ) -> Value {
        let lines: Vec<Value> = c
            .transcript
            .iter()
            .rev()
            .take(self.transcript_lines)
            .rev()
            .map(line)
            .collect();
        let assignment = c.assignment();
        let handoff = c.handoff();
        let window = match c.window_closes_at(now) {
            Some(closes) => json!({
                "open": true,
                "closes_at": rfc3339(closes),
                "seconds_left": closes.since(now).as_secs(),
            }),
            None => json!({"open": false, "closes_at": null, "seconds_left": 0}),
        };
        let mut body = json!({
            "id": id,
            "event": event.name(),
            "created_at": rfc3339(now),
            "conversation": {
                "id": c.id.to_string(),
                "phone_number_id": c.id.phone_number_id().as_str(),
                "mode": c.mode().as_str(),
                "language": c.language,
            },
            "customer": c.customer_card(contact_name),
            "team": assignment.and_then(|a| a.team.clone()).or_else(|| handoff.and_then(|h| h.team.clone())),
            "agent": assignment.and_then(|a| a.agent.clone()),
            "reason": handoff.map(|h| h.reason.clone()),
            "priority": handoff.map(|h| h.priority),
            "triage": c.triage,
            "summary": handoff.and_then(|h| h.summary.clone()),
            "window": window,
            "transcript": lines,
        });
        if let (Value::Object(body), Value::Object(detail)) = (&mut body, detail) {
            body.extend(detail);
        }
        body
    }
}

/// Builds the JSON body of a number event: `number` holds the number's state (as the API
/// shows it), `detail` what is particular to the event (Meta's reason…).
pub fn number_payload(
    event: HookEvent,
    id: &str,
    number: Value,
    detail: Value,
    now: Timestamp,
) -> Value {
    let mut body = json!({
        "id": id,
        "event": event.name(),
        "created_at": rfc3339(now),
        "number": number,
    });
    if let (Value::Object(body), Value::Object(detail)) = (&mut body, detail) {
        body.extend(detail);
    }
    body
}

/// A transcript line as hooks show it; media lines add `media_id`, voice notes heard add
/// `transcription`.
fn line(e: &TranscriptEntry) -> Value {
    let mut line = json!({
        "at": rfc3339(e.at),
        "role": e.role,
        "text": e.text,
        "kind": e.kind,
    });
    if let Some(id) = &e.media_id {
        line["media_id"] = id.as_str().into();
    }
    if let Some(words) = &e.transcription {
        line["transcription"] = words.as_str().into();
    }
    line
}

/// Formats a time as RFC 3339 in UTC (`2026-01-05T09:00:00Z`).
pub fn rfc3339(at: Timestamp) -> String {
    i64::try_from(at.as_millis())
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| at.to_string(), |t| t.to_string())
}

/// Signs a hook body: `sha256=` and the hex HMAC-SHA256 of `{timestamp}.{body}`.
pub fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail; an empty digest would simply
    // never verify.
    let digest =
        mac(secret, timestamp, body).map_or_else(Vec::new, |m| m.finalize().into_bytes().to_vec());
    format!("sha256={}", hex::encode(digest))
}

/// Checks a signature made by [`sign`], in constant time.
pub fn verify(secret: &str, timestamp: u64, body: &[u8], signature: &str) -> bool {
    let Some(hex_part) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_part) else {
        return false;
    };
    mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(&expected).is_ok())
}

fn mac(secret: &str, timestamp: u64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tandem_domain::{ConversationId, HandoffRequest, Role};

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Independent check: openssl dgst -sha256 -hmac s3cret <<< -n '1700000000.{"a":1}'
        let sig = sign("s3cret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(sig.len(), "sha256=".len() + 64);
        assert!(verify("s3cret", 1_700_000_000, br#"{"a":1}"#, &sig));
        assert!(!verify("other", 1_700_000_000, br#"{"a":1}"#, &sig));
        assert!(!verify("s3cret", 1_700_000_001, br#"{"a":1}"#, &sig));
        assert!(!verify("s3cret", 1_700_000_000, br#"{"a":1}"#, "sha256=zz"));
    }

    proptest! {
        #[test]
        fn any_change_to_the_body_breaks_the_signature(body in proptest::collection::vec(any::<u8>(), 0..256), flip in any::<usize>()) {
            let sig = sign("k", 42, &body);
            prop_assert!(verify("k", 42, &body, &sig));
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip % changed.len();
                changed[i] ^= 0x01;
                prop_assert!(!verify("k", 42, &changed, &sig));
            }
        }
    }

    fn target(name: &str, teams: &[&str], events: &[HookEvent]) -> HookTarget {
        HookTarget {
            name: name.into(),
            url: "http://127.0.0.1:1/".into(),
            secret: "x".into(),
            teams: teams.iter().map(|t| (*t).to_owned()).collect(),
            events: events.to_vec(),
        }
    }

    #[test]
    fn targets_filter_by_team_and_event() {
        let hooks = Hooks::new(
            vec![
                target("all", &[], &[]),
                target("vip", &["vip"], &[]),
                target("closes", &[], &[HookEvent::Closed]),
            ],
            10,
        );
        let names = |e, t| -> Vec<String> {
            hooks
                .targets_for(e, t)
                .iter()
                .map(|t| t.name.clone())
                .collect()
        };
        assert_eq!(names(HookEvent::Assigned, Some("vip")), ["all", "vip"]);
        assert_eq!(names(HookEvent::Assigned, None), ["all"]);
        assert_eq!(names(HookEvent::Closed, Some("support")), ["all", "closes"]);
        assert!(format!("{:?}", hooks.target("all")).contains("all"));
        assert!(!format!("{:?}", hooks.target("all")).contains("secret: \"x\""));
    }

    #[test]
    fn the_payload_carries_routing_window_and_the_last_lines() {
        let now = Timestamp(1_767_603_600_000);
        let mut c = Conversation::new(ConversationId::parse("106:351").unwrap(), now);
        c.customer_last_at = Some(now);
        for i in 0..5 {
            c.push(
                TranscriptEntry::system(Timestamp(now.as_millis() + i), format!("l{i}")),
                50,
            );
        }
        c.request_handoff(HandoffRequest {
            team: Some("support".into()),
            reason: "customer_request".into(),
            priority: tandem_domain::Priority::High,
            at: now,
            answered_at: None,
            queue_noted: false,
            summary: None,
        });
        c.assign(Some("support".into()), Some("ana".into()), now);
        let hooks = Hooks::new(vec![], 3);
        let body = hooks.payload(
            HookEvent::Assigned,
            "e1",
            &c,
            Some("Maria"),
            json!({"extra": 1}),
            now,
        );
        assert_eq!(body["event"], "conversation.assigned");
        assert_eq!(body["conversation"]["id"], "106:351");
        assert_eq!(body["customer"]["name"], "Maria");
        assert_eq!(body["team"], "support");
        assert_eq!(body["agent"], "ana");
        assert_eq!(body["reason"], "customer_request");
        assert_eq!(body["window"]["seconds_left"], 24 * 3600);
        assert_eq!(body["transcript"].as_array().unwrap().len(), 3);
        assert_eq!(body["transcript"][2]["text"], "l4");
        assert_eq!(
            body["transcript"][2]["role"],
            serde_json::to_value(Role::System).unwrap()
        );
        assert_eq!(body["extra"], 1);
        assert_eq!(body["created_at"], "2026-01-05T09:00:00Z");
        assert!(body["transcript"][2].get("media_id").is_none());

        // A voice note's line carries the audio's id and the words heard.
        let voice = tandem_domain::MessageContent::Media {
            kind: "audio".into(),
            media_id: Some("media-7".into()),
            mime_type: None,
            caption: None,
            filename: None,
        };
        let id = tandem_domain::MessageId::parse("wamid.V").unwrap();
        let later = Timestamp(now.as_millis() + 10);
        let mut heard = TranscriptEntry::message(later, Role::Customer, id, &voice);
        heard.transcribed("where is my order");
        c.push(heard, 50);
        let body = hooks.payload(HookEvent::Message, "e2", &c, None, json!({}), now);
        let last = &body["transcript"][2];
        assert_eq!(last["text"], "[audio] where is my order");
        assert_eq!(last["media_id"], "media-7");
        assert_eq!(last["transcription"], "where is my order");
    }
}
