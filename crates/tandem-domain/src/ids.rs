//! Validated identifiers. Past ingress no phone number or message id is a bare `String`.
//!
//! WhatsApp ids are digits (`phone_number_id`, a customer's phone) or opaque strings
//! (`wamid.…`, and the business-scoped user ids of 2026 such as `US.1349…`). Each newtype
//! accepts what WhatsApp sends and refuses what would break a store key: empty values, control
//! characters, the `:` separator of [`ConversationId`] and absurd lengths.
//!
//! A customer is known inside Tandem by a [`CustomerId`]; phones ([`Phone`]) and
//! business-scoped user ids ([`UserId`]) are aliases of it (see [`crate::customer`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The value is empty.
    #[error("{what} is empty")]
    Empty {
        /// Which identifier was being parsed.
        what: &'static str,
    },
    /// The value is longer than the identifier allows.
    #[error("{what} is longer than {max} characters")]
    TooLong {
        /// Which identifier was being parsed.
        what: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// The value holds a character the identifier does not allow.
    #[error("{what} contains the character {found:?}, which is not allowed")]
    BadCharacter {
        /// Which identifier was being parsed.
        what: &'static str,
        /// The first offending character.
        found: char,
    },
    /// A conversation id is not of the form `{phone_number_id}:{customer}`.
    #[error("conversation id must look like {{phone_number_id}}:{{customer}}")]
    MissingSeparator,
    /// A business-scoped user id is not of WhatsApp's shape `CC.digits` or `CC.ENT.digits`.
    #[error("a business-scoped user id looks like `US.1349…` or `US.ENT.1181…`")]
    NotAUserId,
}

fn check(
    value: &str,
    what: &'static str,
    max: usize,
    allowed: fn(char) -> bool,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { what });
    }
    if value.chars().count() > max {
        return Err(IdError::TooLong { what, max });
    }
    match value.chars().find(|c| !allowed(*c)) {
        Some(found) => Err(IdError::BadCharacter { what, found }),
        None => Ok(()),
    }
}

fn user_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+')
}

fn opaque_char(c: char) -> bool {
    !c.is_control() && c != ':' && !c.is_whitespace()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses and validates the identifier.
            ///
            /// # Errors
            /// Returns an [`IdError`] naming the identifier and what is wrong with it.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check(&value, $what, $max, $allowed)?;
                Ok(Self(value))
            }

            /// Returns the identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The Cloud API id of a business phone number (`metadata.phone_number_id`).
    PhoneNumberId, "phone_number_id", 64, |c: char| c.is_ascii_digit()
);
id_type!(
    /// A customer's WhatsApp id as a webhook wrote it: a phone number in digits, or a
    /// business-scoped user id. Used where WhatsApp's field may hold either (address book).
    WaId, "wa_id", 140, user_id_char
);
id_type!(
    /// Tandem's id of a customer: `c_` and 32 hex digits for customers created since
    /// identities have aliases; customers stored earlier keep the phone digits they were
    /// created with. Opaque: never read a phone out of it.
    CustomerId, "customer id", 140, user_id_char
);
id_type!(
    /// A customer's phone number as WhatsApp writes it (`wa_id`): digits, no `+`.
    Phone, "phone", 20, |c: char| c.is_ascii_digit()
);
id_type!(
    /// A WhatsApp Business Account id (`entry[].id`).
    WabaId, "waba_id", 64, |c: char| c.is_ascii_digit()
);
id_type!(
    /// A WhatsApp message id (`wamid.…`).
    MessageId, "message id", 512, opaque_char
);

impl CustomerId {
    /// The id of a new customer, from 128 random bits: `c_` and 32 hex digits.
    pub fn from_random(bits: u128) -> Self {
        Self(format!("c_{bits:032x}"))
    }
}

/// A business-scoped user id (BSUID, `US.13491208655302741918`) or a parent BSUID
/// (`US.ENT.11815799212886844830`). Opaque, stored exactly as received; one value per user and
/// business portfolio.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Parses `CC.` + up to 128 letters or digits, or `CC.ENT.` + the same.
    ///
    /// # Errors
    /// [`IdError::NotAUserId`] when the value does not have that shape.
    pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if Self::is_shaped(&value) {
            Ok(Self(value))
        } else {
            Err(IdError::NotAUserId)
        }
    }

    /// True when `value` has the shape of a (parent) business-scoped user id.
    pub fn is_shaped(value: &str) -> bool {
        let Some((country, rest)) = value.split_once('.') else {
            return false;
        };
        let rest = rest.strip_prefix("ENT.").unwrap_or(rest);
        country.len() == 2
            && country.bytes().all(|b| b.is_ascii_uppercase())
            && (1..=128).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    /// True for a parent BSUID (`CC.ENT.…`), shared by a group of linked portfolios.
    pub fn is_parent(&self) -> bool {
        self.0.get(2..7) == Some(".ENT.")
    }

    /// Returns the id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(raw).map_err(serde::de::Error::custom)
    }
}

/// One conversation: a business phone number and one customer, written
/// `{phone_number_id}:{customer id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationId {
    phone_number_id: PhoneNumberId,
    customer: CustomerId,
}

impl ConversationId {
    /// Builds the id from its two parts.
    pub fn new(phone_number_id: PhoneNumberId, customer: CustomerId) -> Self {
        Self {
            phone_number_id,
            customer,
        }
    }

    /// Parses `{phone_number_id}:{customer id}`.
    ///
    /// # Errors
    /// Returns an [`IdError`] when the separator is missing or either part is invalid.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let (pnid, customer) = value.split_once(':').ok_or(IdError::MissingSeparator)?;
        Ok(Self::new(
            PhoneNumberId::parse(pnid)?,
            CustomerId::parse(customer)?,
        ))
    }

    /// Returns the business phone number id.
    pub fn phone_number_id(&self) -> &PhoneNumberId {
        &self.phone_number_id
    }

    /// Returns Tandem's id of the customer.
    pub fn customer(&self) -> &CustomerId {
        &self.customer
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.phone_number_id, self.customer)
    }
}

impl FromStr for ConversationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ConversationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConversationId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_names_are_stored_and_compared_as_their_text() {
        let team: TeamId = serde_json::from_str(r#""support""#).unwrap();
        assert_eq!(team, "support");
        assert_eq!(serde_json::to_string(&team).unwrap(), r#""support""#);
        assert_eq!(team.as_str(), "support");
        let agent = AgentId::from("ana");
        assert_eq!(agent.to_string(), "ana");
        assert_ne!(agent, AgentId::new("rui"));
        let by_name: std::collections::HashMap<AgentId, u32> = [(agent, 1)].into();
        assert_eq!(by_name.get("ana"), Some(&1), "looked up by the name's text");
    }
    use proptest::prelude::*;

    #[test]
    fn conversation_id_round_trips_through_its_text_form() {
        let id = ConversationId::parse("106540000000001:15550002222").unwrap();
        assert_eq!(id.phone_number_id().as_str(), "106540000000001");
        assert_eq!(id.customer().as_str(), "15550002222");
        assert_eq!(id.to_string(), "106540000000001:15550002222");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ConversationId>(&json).unwrap(), id);
    }

    #[test]
    fn bad_ids_are_refused_with_a_reason() {
        assert_eq!(
            ConversationId::parse("nocolon"),
            Err(IdError::MissingSeparator)
        );
        assert_eq!(
            PhoneNumberId::parse(""),
            Err(IdError::Empty {
                what: "phone_number_id"
            })
        );
        assert_eq!(
            PhoneNumberId::parse("12a"),
            Err(IdError::BadCharacter {
                what: "phone_number_id",
                found: 'a'
            })
        );
        assert!(WaId::parse("US.13491208600000000001").is_ok());
        assert!(UserId::parse("US.13491208600000000001").is_ok());
        let parent = UserId::parse("US.ENT.11815799212886844830").unwrap();
        assert!(parent.is_parent());
        assert!(!UserId::parse("US.1349").unwrap().is_parent());
        for bad in [
            "15550002222",
            "us.123",
            "USA.1",
            "US.",
            "US.12-3",
            "US.ENT.",
        ] {
            assert_eq!(UserId::parse(bad), Err(IdError::NotAUserId), "{bad}");
        }
        assert!(Phone::parse("US.1").is_err());
        assert!(MessageId::parse("wamid.HBgL+/==").is_ok());
        assert!(MessageId::parse("a:b").is_err());
        assert!(ConversationId::parse("1:2:3").is_err());
    }

    proptest! {
        #[test]
        fn whatever_parses_prints_back_unchanged(s in "\\PC{0,80}") {
            if let Ok(id) = ConversationId::parse(&s) {
                prop_assert_eq!(id.to_string(), s.clone());
            }
            if let Ok(id) = MessageId::parse(s.clone()) {
                prop_assert_eq!(id.as_str(), s.as_str());
            }
            if let Ok(id) = WaId::parse(s.clone()) {
                prop_assert_eq!(id.as_str(), s.as_str());
            }
        }
    }
}

/// Declares the id of something a business names in its configuration (a team, an agent, a
/// flow, a step): a string checked where the configuration is loaded, kept as written.
macro_rules! name_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The id of ", $what, ", as the business's configuration names it.")]
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id as written in the configuration.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(id)
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(id.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

name_id!(TeamId, "a team");
name_id!(AgentId, "an agent");
name_id!(FlowId, "a flow");
name_id!(StepId, "a step of a flow");
