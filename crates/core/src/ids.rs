//! Typed identifiers. Ours carry a prefix (`lnk_`, `evt_`, `dlv_`) so that an id pasted into the
//! wrong field is refused at the edge instead of matching nothing deep inside.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id; the message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("must not be empty")]
    Empty,
    #[error("must start with `{expected}`")]
    WrongPrefix { expected: &'static str },
    #[error("must be `{prefix}` followed by 32 lowercase hex characters")]
    Malformed { prefix: &'static str },
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("may contain only {allowed}")]
    BadCharacter { allowed: &'static str },
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id; UUIDv7 so that ids sort roughly by creation time.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }

            pub fn from_uuid(uuid: uuid::Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                if s.is_empty() {
                    return Err(IdError::Empty);
                }
                let rest = s
                    .strip_prefix($prefix)
                    .ok_or(IdError::WrongPrefix { expected: $prefix })?;
                let malformed = IdError::Malformed { prefix: $prefix };
                if rest.len() != 32 || !rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return Err(malformed);
                }
                uuid::Uuid::try_parse(rest).map(Self).map_err(|_| malformed)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// One end-user's connected insurance account (`lnk_…`).
    LinkId,
    "lnk_"
);
prefixed_id!(
    /// One normalized event (`evt_…`).
    EventId,
    "evt_"
);
prefixed_id!(
    /// One raw webhook delivery kept in the inbox (`dlv_…`).
    DeliveryId,
    "dlv_"
);
prefixed_id!(
    /// One tenant API key's record (`key_…`); names the key without being it.
    ApiKeyId,
    "key_"
);
prefixed_id!(
    /// One tenant's own account at one vendor (`conn_…`). Not a secret: it appears in the
    /// webhook URL given to the vendor, and deliveries on it are still authenticated with the
    /// connection's own secrets.
    ConnectionId,
    "conn_"
);

macro_rules! name_id {
    ($(#[$doc:meta])* $name:ident, max = $max:expr, allowed = $allowed:literal, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const MAX_LEN: usize = $max;

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, IdError> {
                if s.is_empty() {
                    return Err(IdError::Empty);
                }
                if s.chars().count() > $max {
                    return Err(IdError::TooLong { max: $max });
                }
                let valid: fn(&str) -> bool = $valid;
                if !valid(s) {
                    return Err(IdError::BadCharacter { allowed: $allowed });
                }
                Ok(Self(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

name_id!(
    /// A calling service, as named in configuration. It scopes every row we keep.
    TenantId,
    max = 64,
    allowed = "lowercase letters, digits, `-` and `_`, starting with a letter or digit",
    |s| s.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || (i > 0 && (b == b'-' || b == b'_'))
    })
);

name_id!(
    /// The caller's own id for its end-user (or for an entity such as a loan); opaque to us.
    UserId,
    max = 256,
    allowed = "printable characters (no control characters)",
    |s| !s.chars().any(char::is_control)
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_ids_round_trip_and_refuse_other_prefixes() {
        let id = LinkId::new();
        let text = id.to_string();
        assert!(text.starts_with("lnk_") && text.len() == 36, "{text}");
        assert_eq!(text.parse::<LinkId>().unwrap(), id);
        assert_eq!(
            text.replacen("lnk_", "evt_", 1).parse::<LinkId>(),
            Err(IdError::WrongPrefix { expected: "lnk_" })
        );
        assert_eq!(
            "lnk_XYZ".parse::<LinkId>(),
            Err(IdError::Malformed { prefix: "lnk_" })
        );
        assert_eq!(
            text.to_uppercase()
                .replacen("LNK_", "lnk_", 1)
                .parse::<LinkId>(),
            Err(IdError::Malformed { prefix: "lnk_" })
        );
        assert_eq!("".parse::<EventId>(), Err(IdError::Empty));
    }

    #[test]
    fn ids_serialize_as_their_text() {
        let id = EventId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<EventId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<EventId>("\"lnk_0\"").is_err());
    }

    #[test]
    fn tenant_and_user_ids_are_validated() {
        assert!("acme-lending_2".parse::<TenantId>().is_ok());
        assert!("-acme".parse::<TenantId>().is_err());
        assert!("Acme".parse::<TenantId>().is_err());
        assert_eq!(
            "a".repeat(65).parse::<TenantId>(),
            Err(IdError::TooLong { max: 64 })
        );
        assert!("user 42 / loan#7".parse::<UserId>().is_ok());
        assert!("bad\nuser".parse::<UserId>().is_err());
        assert!("".parse::<UserId>().is_err());
        assert!("é".repeat(256).parse::<UserId>().is_ok());
        assert!("é".repeat(257).parse::<UserId>().is_err());
    }
}
