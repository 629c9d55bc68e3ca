//! Statistical disclosure control for figures shown to mission-board
//! readers: the ONS "10-5" rule by default. Counts under the threshold are
//! suppressed; the others are rounded to the nearest multiple of the base;
//! rates and quantiles are withheld when their base count is suppressed.
//! Operators see exact figures.

use serde::Serialize;

/// The disclosure rule in force.
#[derive(Debug, Clone, Copy)]
pub struct Disclosure {
    /// Counts below this are suppressed (default 10).
    pub threshold: i64,
    /// Other counts are rounded to a multiple of this (default 5).
    pub rounding: i64,
}

impl Default for Disclosure {
    fn default() -> Self {
        Disclosure {
            threshold: 10,
            rounding: 5,
        }
    }
}

/// A count as published: exact, rounded, or suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Count {
    /// The value, `None` when suppressed.
    pub value: Option<i64>,
    /// True when the value is withheld to protect individuals.
    pub suppressed: bool,
}

impl Disclosure {
    /// Applies the rule to a count (`exact` for operators).
    pub fn count(&self, n: i64, exact: bool) -> Count {
        if exact {
            return Count {
                value: Some(n),
                suppressed: false,
            };
        }
        if n > 0 && n < self.threshold {
            return Count {
                value: None,
                suppressed: true,
            };
        }
        let r = self.rounding.max(1);
        Count {
            value: Some(((n + r / 2) / r) * r),
            suppressed: false,
        }
    }

    /// Whether figures derived from a base of `n` must be withheld: a base
    /// that is itself suppressed. A base of zero is published (as 0), and a
    /// figure over it is simply undefined, not withheld.
    pub fn withholds(&self, n: i64, exact: bool) -> bool {
        !exact && n > 0 && n < self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_five_rule() {
        let d = Disclosure::default();
        assert_eq!(
            d.count(3, false),
            Count {
                value: None,
                suppressed: true
            }
        );
        assert_eq!(d.count(0, false).value, Some(0));
        assert_eq!(d.count(12, false).value, Some(10));
        assert_eq!(d.count(13, false).value, Some(15));
        assert_eq!(d.count(3, true).value, Some(3));
        assert!(d.withholds(9, false) && !d.withholds(9, true));
        assert!(
            !d.withholds(0, false),
            "nothing to protect in an empty base"
        );
        assert!(!d.withholds(10, false));
    }
}
