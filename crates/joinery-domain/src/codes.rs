//! Typed values that cross every boundary as text: a mission's and an
//! outcome's id, an ONS area code, a calendar month. Each is parsed once
//! where it enters (the gateway, the processor's decoder, the definitions
//! loader, the metrics API's query) and trusted after that; each is written
//! back as the same text, so Avro records, stored state and URLs keep their
//! format.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::Datelike;
use serde::{Deserialize, Serialize};

use crate::Millis;

/// Why a text is not one of the typed values of this module. Says what the
/// value must look like; the value itself is echoed only when it is short
/// (it may come from a hostile producer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be {rule}, got {shown}")]
pub struct InvalidCode {
    /// What was being parsed, e.g. `area code`.
    pub what: &'static str,
    /// What a valid value looks like.
    pub rule: &'static str,
    /// The rejected value, quoted, or its length when it is long.
    pub shown: String,
}

impl InvalidCode {
    fn new(what: &'static str, rule: &'static str, value: &str) -> InvalidCode {
        let shown = if value.chars().count() <= 24 && !value.chars().any(char::is_control) {
            format!("`{value}`")
        } else {
            format!("a value of {} bytes", value.len())
        };
        InvalidCode { what, rule, shown }
    }
}

/// Longest mission or outcome id accepted.
pub const MAX_ID_LEN: usize = 64;

macro_rules! slug_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Lowercase ASCII letters, digits and underscores, starting with a
        /// letter, at most [`MAX_ID_LEN`] characters. Cheap to clone.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidCode;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let ok = s.len() <= MAX_ID_LEN
                    && s.starts_with(|c: char| c.is_ascii_lowercase())
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                if ok {
                    Ok($name(Arc::from(s)))
                } else {
                    Err(InvalidCode::new(
                        $what,
                        "lowercase letters, digits and underscores, starting with a letter, at most 64 characters",
                        s,
                    ))
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidCode;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.as_ref().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }
    };
}

slug_id!(
    /// A mission's id, e.g. `opportunity`: names its views topic
    /// (`joinery.views.<id>`), its API path and its board page.
    MissionId,
    "mission id"
);

slug_id!(
    /// An outcome's or snapshot measure's id within its mission, e.g.
    /// `sustained_employment_180d`.
    OutcomeId,
    "outcome id"
);

/// An ONS Government Statistical Service (GSS) code of an area, e.g.
/// `E08000025` (Birmingham): a nation letter (E, W, S, N; K for UK or GB-wide
/// areas, L and M for the Channel Islands and the Isle of Man) and eight
/// digits. Copied into every view, so it is nine bytes and `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AreaCode([u8; 9]);

impl AreaCode {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `from_str`).
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for AreaCode {
    type Err = InvalidCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        if b.len() == 9 && b"EWSNKLM".contains(&b[0]) && b[1..].iter().all(u8::is_ascii_digit) {
            let mut code = [0; 9];
            code.copy_from_slice(b);
            Ok(AreaCode(code))
        } else {
            Err(InvalidCode::new(
                "area code",
                "an ONS GSS code: E, W, S, N, K, L or M and eight digits, e.g. E08000025",
                s,
            ))
        }
    }
}

impl TryFrom<String> for AreaCode {
    type Error = InvalidCode;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AreaCode> for String {
    fn from(a: AreaCode) -> String {
        a.as_str().to_owned()
    }
}

impl fmt::Display for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AreaCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AreaCode({})", self.as_str())
    }
}

/// A calendar month, `YYYY-MM` as text (years 0000 to 9999): a citizen's
/// birth month, a cohort's month. Ordered by time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct YearMonth {
    /// Months since January of year 0.
    index: u32,
}

impl YearMonth {
    /// The month `month` (1 to 12) of `year` (0 to 9999), if both are in range.
    pub fn new(year: i32, month: u32) -> Option<YearMonth> {
        let year = u32::try_from(year).ok().filter(|y| *y <= 9999)?;
        (1..=12).contains(&month).then(|| YearMonth {
            index: year * 12 + month - 1,
        })
    }

    /// The month (UTC) an instant falls in, if its year is 0 to 9999.
    pub fn of_millis(t: Millis) -> Option<YearMonth> {
        let d = chrono::DateTime::from_timestamp_millis(t)?;
        YearMonth::new(d.year(), d.month())
    }

    /// The year.
    pub fn year(self) -> i32 {
        // At most 9999: fits.
        i32::try_from(self.index / 12).unwrap_or(i32::MAX)
    }

    /// The month of the year, 1 to 12.
    pub fn month(self) -> u32 {
        self.index % 12 + 1
    }

    /// Whole months from `self` to `later` (negative when `later` is earlier).
    pub fn months_until(self, later: YearMonth) -> i64 {
        i64::from(later.index) - i64::from(self.index)
    }

    /// The first instant of the month, UTC.
    pub fn start_millis(self) -> Millis {
        chrono::NaiveDate::from_ymd_opt(self.year(), self.month(), 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc().timestamp_millis())
            .unwrap_or(Millis::MIN)
    }
}

impl FromStr for YearMonth {
    type Err = InvalidCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
        let parsed = (b.len() == 7 && b[4] == b'-' && digits(0..4) && digits(5..7))
            .then(|| YearMonth::new(s[..4].parse().ok()?, s[5..].parse().ok()?))
            .flatten();
        parsed.ok_or_else(|| InvalidCode::new("month", "YYYY-MM, e.g. 2026-01", s))
    }
}

impl TryFrom<String> for YearMonth {
    type Error = InvalidCode;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<YearMonth> for String {
    fn from(m: YearMonth) -> String {
        m.to_string()
    }
}

impl fmt::Display for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

impl fmt::Debug for YearMonth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "YearMonth({self})")
    }
}

/// Reads an optional typed value from stored text leniently: text that does
/// not parse (written before the value was validated) reads as absent
/// rather than making the whole record unreadable. For state and stored
/// evaluations only (`#[serde(deserialize_with = "...")]`); input from
/// departments is parsed strictly.
pub fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: FromStr,
{
    Ok(Option::<String>::deserialize(d)?.and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn area_codes_are_gss_codes() {
        for ok in [
            "E08000025",
            "W06000015",
            "S12000049",
            "N09000003",
            "K02000001",
        ] {
            assert_eq!(ok.parse::<AreaCode>().map(String::from), Ok(ok.to_owned()));
        }
        for bad in [
            "",
            "E1",
            "e08000025",
            "E0800002",
            "E080000251",
            "X08000025",
            "E0800002x",
        ] {
            assert!(bad.parse::<AreaCode>().is_err(), "{bad}");
        }
        let long = "E".repeat(600_000);
        let err = long.parse::<AreaCode>().unwrap_err().to_string();
        assert!(err.contains("600000 bytes") && err.len() < 200, "{err}");
    }

    #[test]
    fn months_parse_order_and_count() {
        let jan: YearMonth = "2026-01".parse().unwrap();
        let dec: YearMonth = "2025-12".parse().unwrap();
        assert!(dec < jan);
        assert_eq!(dec.months_until(jan), 1);
        assert_eq!((jan.year(), jan.month()), (2026, 1));
        assert_eq!(jan.start_millis(), 1_767_225_600_000);
        assert_eq!(YearMonth::of_millis(1_767_225_600_000 - 1), Some(dec));
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-01",
            "2026/01",
            "+026-01",
            "２０２６-01",
        ] {
            assert!(bad.parse::<YearMonth>().is_err(), "{bad}");
        }
        assert_eq!(YearMonth::of_millis(i64::MAX), None);
        assert_eq!(YearMonth::of_millis(-100_000_000_000_000), None);
    }

    #[test]
    fn ids_are_slugs() {
        assert!("opportunity".parse::<MissionId>().is_ok());
        assert!("neet_16_24".parse::<OutcomeId>().is_ok());
        for bad in ["", "1st", "Opportunity", "a-b", "a b", &"a".repeat(65)] {
            assert!(bad.parse::<MissionId>().is_err(), "{bad}");
        }
        let id: MissionId = "opportunity".parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"opportunity\"");
        assert!(serde_json::from_str::<MissionId>("\"Bad\"").is_err());
    }

    proptest! {
        #[test]
        fn month_text_round_trips(year in 0i32..=9999, month in 1u32..=12) {
            let m = YearMonth::new(year, month).unwrap();
            prop_assert_eq!(m.to_string().parse::<YearMonth>(), Ok(m));
            prop_assert_eq!(YearMonth::of_millis(m.start_millis()), Some(m));
        }
    }
}
