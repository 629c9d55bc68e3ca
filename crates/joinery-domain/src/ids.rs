//! Identifier newtypes: parse at the boundary, then trust the type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A citizen's pseudonym: 64 lowercase hex characters of a keyed HMAC-SHA256
/// over their normalised identifier. Never a raw identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CitizenKey(String);

/// A citizen key that is not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("citizen_key must be 64 lowercase hex characters (an HMAC-SHA256 pseudonym), got {len} characters")]
pub struct InvalidCitizenKey {
    /// Length of the rejected value (the value itself is never echoed: it may be a raw identifier).
    pub len: usize,
}

impl CitizenKey {
    /// The key as text, as it is written to Kafka record keys.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_hex_unchecked(hex: String) -> CitizenKey {
        CitizenKey(hex)
    }
}

impl FromStr for CitizenKey {
    type Err = InvalidCitizenKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(CitizenKey(s.to_owned()))
        } else {
            Err(InvalidCitizenKey { len: s.len() })
        }
    }
}

impl TryFrom<String> for CitizenKey {
    type Error = InvalidCitizenKey;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CitizenKey> for String {
    fn from(k: CitizenKey) -> String {
        k.0
    }
}

impl fmt::Display for CitizenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event's unique id, chosen by the publishing department (a UUID) so that
/// a re-sent event is recognised and applied once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventId(pub uuid::Uuid);

impl EventId {
    /// The least id (the nil UUID), as a bound for ranges keyed by id.
    pub const MIN: EventId = EventId(uuid::Uuid::nil());
}

impl FromStr for EventId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(EventId(s.parse()?))
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn citizen_key_accepts_only_hmac_hex() {
        assert!("ab".repeat(32).parse::<CitizenKey>().is_ok());
        assert!("AB".repeat(32).parse::<CitizenKey>().is_err());
        let err = "QQ123456C".parse::<CitizenKey>().unwrap_err();
        assert!(!err.to_string().contains("QQ123456C"));
    }
}
