//! Who a customer is: the identifiers WhatsApp sends for them and the aliases Tandem resolves
//! to one [`CustomerId`].
//!
//! Since 2026 a webhook may carry a phone, a business-scoped user id (BSUID), a parent BSUID,
//! any mix of them, or only a username for display. None of them alone is the customer: each
//! is an [`Alias`] of Tandem's own customer id, kept per tenant (BSUIDs are scoped to a
//! business portfolio, so an alias never matches across tenants). An [`Identity`] is what one
//! payload said; the store turns it into a customer id (see `Store::resolve_customers`).

use serde::{Deserialize, Serialize};

use crate::ids::{CustomerId, Phone, UserId};

/// The kinds of alias, in the order they are trusted to find a customer: parent BSUID, BSUID,
/// then phone (Meta's rule for echoes, and "route by BSUID" on conflicts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AliasKind {
    /// A parent BSUID (`CC.ENT.…`).
    ParentUserId,
    /// A business-scoped user id (`CC.…`).
    UserId,
    /// A phone number in digits.
    Phone,
}

impl AliasKind {
    /// Every kind, in the order they are trusted.
    pub const ALL: [AliasKind; 3] = [Self::ParentUserId, Self::UserId, Self::Phone];

    /// Parses a name as [`AliasKind::as_str`] gives it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The kind's snake_case name, used in store keys and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ParentUserId => "parent_user_id",
            Self::UserId => "user_id",
            Self::Phone => "phone",
        }
    }
}

/// One identifier of a customer, as a key of the alias table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Alias {
    /// What kind of identifier it is.
    pub kind: AliasKind,
    /// The identifier, exactly as WhatsApp sent it.
    pub value: String,
}

impl Alias {
    /// A phone alias.
    pub fn phone(phone: &Phone) -> Self {
        Self {
            kind: AliasKind::Phone,
            value: phone.as_str().to_owned(),
        }
    }

    /// A BSUID alias (or a parent BSUID alias, by the id's shape).
    pub fn user(user: &UserId) -> Self {
        Self {
            kind: if user.is_parent() {
                AliasKind::ParentUserId
            } else {
                AliasKind::UserId
            },
            value: user.as_str().to_owned(),
        }
    }
}

/// What one payload says about a customer. Every field may be missing; a payload with none of
/// phone, BSUID and parent BSUID names nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The phone (`wa_id`, `from`, `to`, `recipient_id`), when WhatsApp shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// The business-scoped user id (`user_id`, `from_user_id`, `to_user_id`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The parent BSUID, for linked portfolios.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_user_id: Option<UserId>,
    /// The username (`profile.username`): for display only, never a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

impl Identity {
    /// The identity of a customer known only by phone.
    pub fn from_phone(phone: Phone) -> Self {
        Self {
            phone: Some(phone),
            ..Self::default()
        }
    }

    /// The identity one identifier names: a phone (digits, a leading `+` allowed) or a
    /// (parent) BSUID, told apart by shape. `None` for anything else.
    pub fn of(raw: &str) -> Option<Self> {
        let mut identity = Self::default();
        identity.file(raw).then_some(identity)
    }

    /// Files one identifier by its shape — a BSUID found in a phone field is a BSUID — keeping
    /// what is already known. Returns false when it is neither a phone nor a BSUID.
    pub fn file(&mut self, raw: &str) -> bool {
        if UserId::is_shaped(raw) {
            let Ok(user) = UserId::parse(raw) else {
                return false;
            };
            let slot = if user.is_parent() {
                &mut self.parent_user_id
            } else {
                &mut self.user_id
            };
            slot.get_or_insert(user);
            return true;
        }
        match Phone::parse(raw.trim_start_matches('+')) {
            Ok(phone) => {
                self.phone.get_or_insert(phone);
                true
            }
            Err(_) => false,
        }
    }

    /// True when no identifier names the customer (a username alone does not).
    pub fn is_empty(&self) -> bool {
        self.phone.is_none() && self.user_id.is_none() && self.parent_user_id.is_none()
    }

    /// True when it carries nothing at all, username included.
    pub fn is_blank(&self) -> bool {
        self.is_empty() && self.username.is_none()
    }

    /// The aliases it carries, most trusted first (parent BSUID, BSUID, phone).
    pub fn aliases(&self) -> Vec<Alias> {
        let mut out = Vec::with_capacity(3);
        out.extend(self.parent_user_id.as_ref().map(Alias::user));
        out.extend(self.user_id.as_ref().map(Alias::user));
        out.extend(self.phone.as_ref().map(Alias::phone));
        out
    }

    /// Takes every identifier `newer` carries, keeping what it leaves out.
    pub fn merge(&mut self, newer: &Identity) {
        if newer.phone.is_some() {
            self.phone.clone_from(&newer.phone);
        }
        if newer.user_id.is_some() {
            self.user_id.clone_from(&newer.user_id);
        }
        if newer.parent_user_id.is_some() {
            self.parent_user_id.clone_from(&newer.parent_user_id);
        }
        if newer.username.is_some() {
            self.username.clone_from(&newer.username);
        }
    }
}

/// A change of a customer's identifiers that WhatsApp announced (`system` messages
/// `user_changed_user_id` and `user_changed_number`, or the withdrawn `user_id_update` field).
/// Not a chat message: it adds aliases and updates the conversation's address, nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityChange {
    /// What WhatsApp called it (`user_changed_user_id`, `user_changed_number`, `user_id_update`).
    pub kind: String,
    /// The identifiers before the change.
    pub previous: Identity,
    /// The identifiers after it.
    pub current: Identity,
}

/// What the store must do with one identity: find its customer by `find` (most trusted
/// first), create one when none matches, and attach every alias of `link` to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerLookup {
    /// Aliases that find the customer, most trusted first.
    pub find: Vec<Alias>,
    /// Aliases to attach to the customer found (those of `find` included).
    pub link: Vec<Alias>,
}

impl CustomerLookup {
    /// The lookup of an identity from a message, echo, status or history thread.
    pub fn of(identity: &Identity) -> Self {
        let aliases = identity.aliases();
        Self {
            find: aliases.clone(),
            link: aliases,
        }
    }

    /// The lookup of an identity change: found by the previous identifiers, the new ones
    /// linked to the same customer (the old ones are kept, so late webhooks still resolve).
    pub fn of_change(change: &IdentityChange) -> Self {
        let mut find = change.previous.aliases();
        if find.is_empty() {
            find = change.current.aliases();
        }
        let mut link = find.clone();
        for alias in change.current.aliases() {
            if !link.contains(&alias) {
                link.push(alias);
            }
        }
        Self { find, link }
    }
}

/// What the store made of one [`CustomerLookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The customer.
    pub customer: CustomerId,
    /// True when the customer was created by this lookup.
    pub created: bool,
    /// Aliases newly attached to the customer.
    pub linked: Vec<Alias>,
    /// Aliases that already belonged to another customer and were left there: never merged
    /// silently.
    pub conflicts: Vec<(Alias, CustomerId)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn aliases_come_most_trusted_first() {
        let identity = Identity {
            phone: Some(Phone::parse("15550002222").unwrap()),
            user_id: Some(user("US.1")),
            parent_user_id: Some(user("US.ENT.9")),
            username: Some("ana".into()),
        };
        let kinds: Vec<AliasKind> = identity.aliases().iter().map(|a| a.kind).collect();
        assert_eq!(
            kinds,
            [AliasKind::ParentUserId, AliasKind::UserId, AliasKind::Phone]
        );
        assert!(Identity::default().is_empty());
        let username_only = Identity {
            username: Some("ana".into()),
            ..Identity::default()
        };
        assert!(username_only.is_empty());
    }

    #[test]
    fn a_change_is_found_by_the_old_ids_and_links_the_new_ones() {
        let change = IdentityChange {
            kind: "user_changed_user_id".into(),
            previous: Identity {
                user_id: Some(user("US.4")),
                ..Identity::default()
            },
            current: Identity {
                user_id: Some(user("US.24")),
                ..Identity::default()
            },
        };
        let lookup = CustomerLookup::of_change(&change);
        assert_eq!(lookup.find, vec![Alias::user(&user("US.4"))]);
        assert_eq!(
            lookup.link,
            vec![Alias::user(&user("US.4")), Alias::user(&user("US.24"))]
        );
    }

    #[test]
    fn identifiers_are_filed_by_shape() {
        assert_eq!(
            Identity::of("+15550002222").and_then(|i| i.phone),
            Some(Phone::parse("15550002222").unwrap())
        );
        assert_eq!(
            Identity::of("US.1").and_then(|i| i.user_id),
            Some(user("US.1"))
        );
        assert_eq!(
            Identity::of("US.ENT.9").and_then(|i| i.parent_user_id),
            Some(user("US.ENT.9"))
        );
        for neither in ["c_12ab", "", "abc", "US."] {
            assert_eq!(Identity::of(neither), None, "{neither}");
        }
    }

    #[test]
    fn merge_keeps_what_the_newer_identity_leaves_out() {
        let mut known = Identity::from_phone(Phone::parse("155").unwrap());
        known.merge(&Identity {
            user_id: Some(user("US.1")),
            ..Identity::default()
        });
        assert_eq!(known.phone.as_ref().map(Phone::as_str), Some("155"));
        assert_eq!(known.user_id.as_ref().map(UserId::as_str), Some("US.1"));
    }
}
