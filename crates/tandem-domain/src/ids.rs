//! Validated identifiers. Past ingress no phone number or message id is a bare `String`.
//!
//! WhatsApp ids are digits (`phone_number_id`, `wa_id`) or opaque strings (`wamid.…`, and the
//! business-scoped user ids rolling out in 2026 such as `US.1349…`). Each newtype accepts what
//! WhatsApp sends and refuses what would break a store key: empty values, control characters,
//! the `:` separator of [`ConversationId`] and absurd lengths.

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
    /// A conversation id is not of the form `{phone_number_id}:{wa_id}`.
    #[error("conversation id must look like {{phone_number_id}}:{{wa_id}}")]
    MissingSeparator,
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
    /// A customer's WhatsApp id: a phone number in digits, or a business-scoped user id.
    WaId, "wa_id", 64, user_id_char
);
id_type!(
    /// A WhatsApp Business Account id (`entry[].id`).
    WabaId, "waba_id", 64, |c: char| c.is_ascii_digit()
);
id_type!(
    /// A WhatsApp message id (`wamid.…`).
    MessageId, "message id", 512, opaque_char
);

/// One conversation: a business phone number and one customer, written `{phone_number_id}:{wa_id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConversationId {
    phone_number_id: PhoneNumberId,
    wa_id: WaId,
}

impl ConversationId {
    /// Builds the id from its two parts.
    pub fn new(phone_number_id: PhoneNumberId, wa_id: WaId) -> Self {
        Self {
            phone_number_id,
            wa_id,
        }
    }

    /// Parses `{phone_number_id}:{wa_id}`.
    ///
    /// # Errors
    /// Returns an [`IdError`] when the separator is missing or either part is invalid.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let (pnid, wa) = value.split_once(':').ok_or(IdError::MissingSeparator)?;
        Ok(Self::new(PhoneNumberId::parse(pnid)?, WaId::parse(wa)?))
    }

    /// Returns the business phone number id.
    pub fn phone_number_id(&self) -> &PhoneNumberId {
        &self.phone_number_id
    }

    /// Returns the customer's WhatsApp id.
    pub fn wa_id(&self) -> &WaId {
        &self.wa_id
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.phone_number_id, self.wa_id)
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
    use proptest::prelude::*;

    #[test]
    fn conversation_id_round_trips_through_its_text_form() {
        let id = ConversationId::parse("106540000000001:15550002222").unwrap();
        assert_eq!(id.phone_number_id().as_str(), "106540000000001");
        assert_eq!(id.wa_id().as_str(), "15550002222");
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
