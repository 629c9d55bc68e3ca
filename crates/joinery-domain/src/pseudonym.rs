//! Pseudonymisation: raw identifiers in, `citizen_key` out.
//!
//! The ingest gateway calls this for every event, and departments that
//! produce to Kafka directly call the same function, so both paths give the
//! same key. Identifiers are normalised first (spaces removed, upper case,
//! format and check digits verified), then HMAC-SHA256 is taken under the
//! platform key over `<kind>:<normalised>`. The kind is part of the input so
//! that an NHS number can never collide with a ULN of the same digits; cross-
//! department joins therefore rely on departments sending the same kind of
//! identifier (the NINO, where they hold it).
//!
//! Errors never contain the raw value: it must not reach logs or responses.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::ids::CitizenKey;

/// The kinds of raw citizen identifier the platform accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierKind {
    /// National Insurance number, e.g. `AB 12 34 56 C`.
    Nino,
    /// NHS number: ten digits with a modulus-11 check digit.
    NhsNumber,
    /// Unique Learner Number: ten digits with a modulus-11 check digit.
    Uln,
}

impl IdentifierKind {
    /// Every kind, in the order the gateway looks for them.
    pub const ALL: [IdentifierKind; 3] = [
        IdentifierKind::Nino,
        IdentifierKind::NhsNumber,
        IdentifierKind::Uln,
    ];

    /// The JSON field name that carries this identifier at the gateway.
    pub fn field(self) -> &'static str {
        match self {
            IdentifierKind::Nino => "nino",
            IdentifierKind::NhsNumber => "nhs_number",
            IdentifierKind::Uln => "uln",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            IdentifierKind::Nino => {
                "a National Insurance number: two letters, six digits, and a final letter A-D (e.g. AB123456C)"
            }
            IdentifierKind::NhsNumber => "an NHS number: ten digits whose last digit is a valid modulus-11 check digit",
            IdentifierKind::Uln => "a Unique Learner Number: ten digits whose last digit is a valid modulus-11 check digit",
        }
    }
}

/// Why an identifier was refused. Never carries the raw value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PseudonymError {
    /// The identifier does not have the format of its kind.
    #[error("`{field}` is not {expected}", field = kind.field(), expected = kind.describe())]
    InvalidFormat {
        /// Which kind of identifier was malformed.
        kind: IdentifierKind,
    },
    /// The format is right but the check digit is wrong (a typing error).
    #[error("`{field}` fails its check digit; it is probably mistyped", field = kind.field())]
    BadCheckDigit {
        /// Which kind of identifier failed its check.
        kind: IdentifierKind,
    },
    /// The platform key is too short to be a secret.
    #[error("the pseudonymisation key must be at least 32 bytes, got {0}")]
    WeakKey(usize),
}

/// Normalises a raw identifier: spaces and hyphens removed, letters upper
/// case, and its format and check digit verified.
pub fn normalise(kind: IdentifierKind, raw: &str) -> Result<String, PseudonymError> {
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    match kind {
        IdentifierKind::Nino => check_nino(&cleaned).map(|()| cleaned),
        IdentifierKind::NhsNumber => check_nhs_number(&cleaned).map(|()| cleaned),
        IdentifierKind::Uln => check_uln(&cleaned).map(|()| cleaned),
    }
}

fn check_nino(s: &str) -> Result<(), PseudonymError> {
    let err = PseudonymError::InvalidFormat {
        kind: IdentifierKind::Nino,
    };
    let b = s.as_bytes();
    if b.len() != 9 {
        return Err(err);
    }
    let (first, second) = (b[0], b[1]);
    let letter_ok = |c: u8| c.is_ascii_uppercase() && !b"DFIQUV".contains(&c);
    if !letter_ok(first) || !letter_ok(second) || second == b'O' {
        return Err(err);
    }
    // Prefixes HMRC never allocates.
    if ["BG", "GB", "NK", "KN", "TN", "NT", "ZZ"].contains(&&s[..2]) {
        return Err(err);
    }
    if !b[2..8].iter().all(u8::is_ascii_digit) || !(b'A'..=b'D').contains(&b[8]) {
        return Err(err);
    }
    Ok(())
}

fn ten_digits(s: &str, kind: IdentifierKind) -> Result<[u32; 10], PseudonymError> {
    let mut digits = [0u32; 10];
    if s.len() != 10 {
        return Err(PseudonymError::InvalidFormat { kind });
    }
    for (d, c) in digits.iter_mut().zip(s.chars()) {
        *d = c
            .to_digit(10)
            .ok_or(PseudonymError::InvalidFormat { kind })?;
    }
    Ok(digits)
}

fn weighted_sum(digits: &[u32; 10]) -> u32 {
    digits[..9]
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum()
}

fn check_nhs_number(s: &str) -> Result<(), PseudonymError> {
    let kind = IdentifierKind::NhsNumber;
    let digits = ten_digits(s, kind)?;
    let check = match 11 - weighted_sum(&digits) % 11 {
        11 => 0,
        10 => return Err(PseudonymError::BadCheckDigit { kind }),
        c => c,
    };
    if check == digits[9] {
        Ok(())
    } else {
        Err(PseudonymError::BadCheckDigit { kind })
    }
}

fn check_uln(s: &str) -> Result<(), PseudonymError> {
    let kind = IdentifierKind::Uln;
    let digits = ten_digits(s, kind)?;
    if digits[0] == 0 {
        return Err(PseudonymError::InvalidFormat { kind });
    }
    let remainder = weighted_sum(&digits) % 11;
    if remainder == 0 || 10 - remainder != digits[9] {
        return Err(PseudonymError::BadCheckDigit { kind });
    }
    Ok(())
}

/// The platform's pseudonymisation key; its `Debug` never prints it.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: Vec<u8>,
}

impl fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pseudonymiser")
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Pseudonymiser {
    /// A pseudonymiser under `key`, which must be at least 32 bytes.
    pub fn new(key: impl Into<Vec<u8>>) -> Result<Pseudonymiser, PseudonymError> {
        let key = key.into();
        if key.len() < 32 {
            return Err(PseudonymError::WeakKey(key.len()));
        }
        Ok(Pseudonymiser { key })
    }

    /// The citizen key for a raw identifier of the given kind.
    pub fn citizen_key(
        &self,
        kind: IdentifierKind,
        raw: &str,
    ) -> Result<CitizenKey, PseudonymError> {
        let normalised = normalise(kind, raw)?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(kind.field().as_bytes());
        mac.update(b":");
        mac.update(normalised.as_bytes());
        Ok(CitizenKey::from_hex_unchecked(hex::encode(
            mac.finalize().into_bytes(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Pseudonymiser {
        Pseudonymiser::new(vec![7u8; 32]).expect("32-byte key")
    }

    #[test]
    fn spacing_and_case_do_not_change_the_key() {
        let a = p()
            .citizen_key(IdentifierKind::Nino, "ab 12 34 56 c")
            .unwrap();
        let b = p().citizen_key(IdentifierKind::Nino, "AB123456C").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str().len(), 64);
    }

    #[test]
    fn nino_rules_are_enforced() {
        for bad in [
            "QQ123456C",
            "AB123456E",
            "GB123456A",
            "AO123456A",
            "AB12345C",
            "",
        ] {
            assert!(normalise(IdentifierKind::Nino, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nhs_number_check_digit() {
        // 943 476 5919 is the NHS's published example of a valid number.
        assert_eq!(
            normalise(IdentifierKind::NhsNumber, "943 476 5919").unwrap(),
            "9434765919"
        );
        assert_eq!(
            normalise(IdentifierKind::NhsNumber, "9434765918"),
            Err(PseudonymError::BadCheckDigit {
                kind: IdentifierKind::NhsNumber
            })
        );
    }

    #[test]
    fn uln_check_digit() {
        // Weights 10..2 over 1,0,..,0 sum to 10; remainder 10; check digit 10 - 10 = 0.
        assert!(normalise(IdentifierKind::Uln, "1000000000").is_ok());
        assert!(normalise(IdentifierKind::Uln, "1000000004").is_err());
    }

    #[test]
    fn kinds_live_in_separate_namespaces() {
        let nhs = p()
            .citizen_key(IdentifierKind::NhsNumber, "9434765919")
            .unwrap();
        let uln = p().citizen_key(IdentifierKind::Uln, "9434765919");
        assert_ne!(Some(nhs), uln.ok());
    }

    #[test]
    fn errors_and_debug_never_show_secrets_or_identifiers() {
        let err = normalise(IdentifierKind::Nino, "ZZ999999Z").unwrap_err();
        assert!(!err.to_string().contains("ZZ999999Z"));
        assert!(!format!("{:?}", p()).contains('7'));
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(
            Pseudonymiser::new(vec![1u8; 8]).unwrap_err(),
            PseudonymError::WeakKey(8)
        );
    }

    proptest::proptest! {
        #[test]
        fn normalise_never_panics(kind in proptest::sample::select(IdentifierKind::ALL.to_vec()), s in ".{0,24}") {
            let _ = normalise(kind, &s);
        }
    }
}
