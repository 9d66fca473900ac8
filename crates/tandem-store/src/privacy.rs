//! What the store keeps for data protection: the audit log, customer erasure with its
//! tombstones, and the retention purges. The rules both backends follow:
//!
//! - **Audit log**: append-only; each entry gets the next id of a store-wide counter and is
//!   listed in `(at, id)` order. Only retention removes entries ([`Purge::Audit`]).
//! - **Erasure** ([`crate::Store::erase_customer`]): removes every conversation of the customer
//!   (record, inbox, timer; so the queued messages too), the address-book entries and dead
//!   letters naming any of its identifiers, the hook deliveries (pending or dead) about it,
//!   and its aliases. It leaves one [`Tombstone`] per alias, keyed by a digest of the alias,
//!   and raises the identity epoch so every process drops its cached `alias → customer`
//!   answers: a webhook that arrives later resolves to a new, empty customer. Ingest refuses a
//!   batch resolved under an older epoch ([`crate::StoreError::StaleIdentities`]).
//! - **Retention**: purges remove whole entries older than a time, oldest first, at most a
//!   given number per call; transcripts are trimmed record by record through
//!   [`crate::Store::rewrite_conversation`], guarded by the record's revision like a lane
//!   commit.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_domain::{Alias, ConversationId, CustomerId, Timestamp};

use crate::model::HookJob;

/// One agent or admin action, as the audit log keeps it. It says who, when, what and from
/// where; never a message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, given by the store when the entry is appended.
    #[serde(default)]
    pub id: u64,
    /// When the action was taken.
    pub at: Timestamp,
    /// The tenant the action was taken in (`None`: the deployment's, or from before tenants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The name of the API token used.
    pub actor: String,
    /// The agent the token acted as, when it is one agent's or the request named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What was done, such as `conversation.takeover` or `customer.erase`.
    pub action: String,
    /// What it was done to (a conversation, customer, agent or hook delivery id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The HTTP status the action was answered with.
    pub status: u16,
    /// Facts about the action without personal data (the team assigned, counts erased).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// What a retention purge removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purge {
    /// Dead letters (raw webhook input) received before the time.
    DeadLetters,
    /// Hook deliveries given up on before the time.
    DeadHooks,
    /// Audit entries taken before the time.
    Audit,
}

impl Purge {
    /// The purge's name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeadLetters => "dead_letters",
            Self::DeadHooks => "dead_hooks",
            Self::Audit => "audit",
        }
    }
}

/// One customer to erase from one tenant.
#[derive(Debug, Clone)]
pub struct Erasure {
    /// The tenant.
    pub tenant: String,
    /// The customer.
    pub customer: CustomerId,
    /// When the erasure was asked for; late events older than this stay erased.
    pub now: Timestamp,
    /// The `customer.erased` deliveries, written in the same operation.
    pub hooks: Vec<HookJob>,
}

/// What an erasure removed, as counts (nothing about the customer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureReport {
    /// Conversation records removed.
    pub conversations: usize,
    /// Transcript lines those records held.
    pub transcript_lines: usize,
    /// Events waiting in their inboxes, removed unapplied.
    pub queued_events: usize,
    /// Address-book entries removed.
    pub contacts: usize,
    /// Aliases removed (and tombstoned).
    pub aliases: usize,
    /// Hook deliveries about the customer removed before delivery (pending or dead).
    pub hooks: usize,
    /// Dead letters naming one of the customer's identifiers.
    pub dead_letters: usize,
    /// The conversations removed.
    #[serde(skip)]
    pub conversation_ids: Vec<ConversationId>,
}

/// What is left of an erased alias: when it was erased, under a digest of the alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// When the customer was erased.
    pub erased_at: Timestamp,
}

/// The key a tombstone is stored under: a SHA-256 digest of tenant, alias kind and value, so
/// the identifier itself is not kept.
pub fn tombstone_key(tenant: &str, alias: &Alias) -> String {
    let mut digest = Sha256::new();
    digest.update(tenant.as_bytes());
    digest.update([0]);
    digest.update(alias.kind.as_str().as_bytes());
    digest.update([0]);
    digest.update(alias.value.as_bytes());
    hex::encode(digest.finalize())
}

/// True when a hook body is about `customer` (its id appears in it).
pub(crate) fn hook_names(job: &HookJob, customer: &CustomerId) -> bool {
    job.body.contains(customer.as_str())
}

/// True when a dead letter's raw input names one of `values` (phones, BSUIDs) as a whole
/// identifier: not inside a longer run of letters and digits (a timestamp, another phone).
pub(crate) fn letter_names(raw: &str, values: &[String]) -> bool {
    let part_of_identifier = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    values.iter().filter(|v| !v.is_empty()).any(|value| {
        raw.match_indices(value.as_str()).any(|(at, _)| {
            !part_of_identifier(raw[..at].chars().next_back())
                && !part_of_identifier(raw[at + value.len()..].chars().next())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_domain::AliasKind;

    #[test]
    fn tombstone_keys_hide_the_alias_and_differ_by_tenant_and_kind() {
        let alias = Alias {
            kind: AliasKind::Phone,
            value: "15550001111".into(),
        };
        let key = tombstone_key("default", &alias);
        assert_eq!(key.len(), 64);
        assert!(!key.contains("15550001111"));
        assert_ne!(key, tombstone_key("other", &alias));
        let user = Alias {
            kind: AliasKind::UserId,
            value: "15550001111".into(),
        };
        assert_ne!(key, tombstone_key("default", &user));
        assert_eq!(key, tombstone_key("default", &alias));
    }

    #[test]
    fn a_letter_names_an_identifier_only_as_a_whole() {
        let values = vec![
            "15550001111".to_owned(),
            "US.13491208655302741918".to_owned(),
        ];
        assert!(letter_names(r#"{"wa_id":"15550001111"}"#, &values));
        assert!(letter_names(
            r#"{"user_id":"US.13491208655302741918"}"#,
            &values
        ));
        assert!(!letter_names(r#"{"wa_id":"4915550001111"}"#, &values));
        assert!(!letter_names(r#"{"ts":"155500011112"}"#, &values));
        assert!(!letter_names("", &values));
        assert!(!letter_names("15550001111", &[String::new()]));
    }
}
