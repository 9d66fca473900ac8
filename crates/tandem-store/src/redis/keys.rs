//! Every Redis key Tandem uses, one function per key family. No key is built elsewhere.
//!
//! Keys of one conversation put the conversation id in a hash tag (`{…}`), so they would land
//! in one Redis Cluster slot.

use tandem_domain::{ConversationId, Mode, PhoneNumberId};

/// Builds keys under one prefix (default `tandem:v1`).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches(':').to_owned(),
        }
    }

    pub(crate) fn conversation(&self, id: &ConversationId) -> String {
        format!("{}:conv:{{{id}}}", self.prefix)
    }

    pub(crate) fn inbox_prefix(&self) -> String {
        format!("{}:inbox:", self.prefix)
    }

    pub(crate) fn inbox(&self, id: &ConversationId) -> String {
        format!("{}{{{id}}}", self.inbox_prefix())
    }

    pub(crate) fn lease_prefix(&self) -> String {
        format!("{}:lease:", self.prefix)
    }

    pub(crate) fn lease(&self, id: &ConversationId) -> String {
        format!("{}{{{id}}}", self.lease_prefix())
    }

    pub(crate) fn contact(&self, id: &str) -> String {
        format!("{}:contact:{{{id}}}", self.prefix)
    }

    pub(crate) fn account(&self, account: &str) -> String {
        format!("{}:account:{account}", self.prefix)
    }

    pub(crate) fn dedupe(&self, key: &str) -> String {
        format!("{}:dedupe:{key}", self.prefix)
    }

    pub(crate) fn outbound(&self, wamid: &str) -> String {
        format!("{}:outbound:{wamid}", self.prefix)
    }

    pub(crate) fn send_slot(&self, phone_number_id: &PhoneNumberId) -> String {
        format!("{}:send_slot:{phone_number_id}", self.prefix)
    }

    pub(crate) fn mode_index_prefix(&self) -> String {
        format!("{}:mode:", self.prefix)
    }

    pub(crate) fn mode_index(&self, mode: Mode) -> String {
        format!("{}{}", self.mode_index_prefix(), mode.as_str())
    }

    pub(crate) fn all_conversations(&self) -> String {
        format!("{}:convs", self.prefix)
    }

    pub(crate) fn seq(&self) -> String {
        format!("{}:seq", self.prefix)
    }

    pub(crate) fn ready(&self) -> String {
        format!("{}:ready", self.prefix)
    }

    pub(crate) fn timers(&self) -> String {
        format!("{}:timers", self.prefix)
    }

    pub(crate) fn inbox_depth(&self) -> String {
        format!("{}:inbox_depth", self.prefix)
    }

    pub(crate) fn dead_letters(&self) -> String {
        format!("{}:dead_letters", self.prefix)
    }

    pub(crate) fn hooks(&self) -> String {
        format!("{}:hooks", self.prefix)
    }

    pub(crate) fn hooks_due(&self) -> String {
        format!("{}:hooks_due", self.prefix)
    }

    pub(crate) fn dead_hooks(&self) -> String {
        format!("{}:dead_hooks", self.prefix)
    }

    pub(crate) fn dead_hooks_order(&self) -> String {
        format!("{}:dead_hooks_order", self.prefix)
    }

    pub(crate) fn agents(&self) -> String {
        format!("{}:agents", self.prefix)
    }

    /// The hash of cached embeddings of one model (one key: one slot in a cluster).
    pub(crate) fn embeddings(&self, model: &str) -> String {
        format!("{}:embeddings:{model}", self.prefix)
    }

    pub(crate) fn number(&self, id: &PhoneNumberId) -> String {
        format!("{}:number:{id}", self.prefix)
    }

    pub(crate) fn numbers(&self) -> String {
        format!("{}:numbers", self.prefix)
    }

    pub(crate) fn lead(&self, role: &str) -> String {
        format!("{}:lead:{role}", self.prefix)
    }

    /// Prefix of every alias key; `{tenant}:{kind}:{value}` follows.
    pub(crate) fn aliases_root(&self) -> String {
        format!("{}:alias:", self.prefix)
    }

    /// Prefix of a tenant's alias keys; the alias (`kind:value`) follows.
    pub(crate) fn alias_prefix(&self, tenant: &str) -> String {
        format!("{}:alias:{tenant}:", self.prefix)
    }

    /// Prefix of a tenant's per-customer alias sets; the customer id follows.
    pub(crate) fn customer_aliases_prefix(&self, tenant: &str) -> String {
        format!("{}:customer_aliases:{tenant}:", self.prefix)
    }

    /// The set of `customer`'s aliases (`kind:value`) in `tenant`.
    pub(crate) fn customer_aliases(&self, tenant: &str, customer: &str) -> String {
        format!("{}{customer}", self.customer_aliases_prefix(tenant))
    }

    /// Set once every alias is also in its customer's alias set.
    pub(crate) fn alias_index(&self) -> String {
        format!("{}:alias_index", self.prefix)
    }

    pub(crate) fn schema(&self) -> String {
        format!("{}:schema", self.prefix)
    }

    pub(crate) fn audit(&self) -> String {
        format!("{}:audit", self.prefix)
    }

    pub(crate) fn audit_seq(&self) -> String {
        format!("{}:audit_seq", self.prefix)
    }

    pub(crate) fn tombstones(&self) -> String {
        format!("{}:tombstones", self.prefix)
    }

    pub(crate) fn identity_epoch(&self) -> String {
        format!("{}:identity_epoch", self.prefix)
    }

    pub(crate) fn dead_letter_seq(&self) -> String {
        format!("{}:dead_letter_seq", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_conversation_share_a_hash_tag() {
        let keys = Keys::new("tandem:v1:");
        let id = ConversationId::parse("106:155").unwrap();
        assert_eq!(keys.conversation(&id), "tandem:v1:conv:{106:155}");
        assert_eq!(keys.inbox(&id), "tandem:v1:inbox:{106:155}");
        assert_eq!(keys.lease(&id), "tandem:v1:lease:{106:155}");
    }
}
