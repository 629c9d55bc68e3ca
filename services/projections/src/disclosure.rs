//! Statistical disclosure control for figures shown to mission-board
//! readers: the ONS "10-5" rule by default. Counts under the threshold are
//! suppressed; the others are rounded to the nearest multiple of the base;
//! rates and quantiles are withheld when their base count is suppressed,
//! and a rate also when its numerator is.
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
///
/// Its fields, like [`Rate`]'s, are declared in the order the metrics API
/// has always sent them (alphabetical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Count {
    /// True when the value is withheld to protect individuals.
    pub suppressed: bool,
    /// The value, `None` when suppressed.
    pub value: Option<i64>,
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

    /// The rate `num / den` as published. Board readers get the rate of the
    /// published (rounded) counts, and none when either count is
    /// suppressed: a rate of exact counts, or one over a suppressed
    /// numerator, would give the hidden count away.
    pub fn rate(&self, num: i64, den: i64, exact: bool) -> Rate {
        let withheld = self.withholds(den, exact) || self.withholds(num, exact);
        if withheld || den == 0 {
            return Rate {
                value: None,
                withheld,
                numerator: None,
                denominator: None,
            };
        }
        let (n, d) = (self.count(num, exact).value, self.count(den, exact).value);
        Rate {
            value: match (n, d) {
                (Some(n), Some(d)) if d > 0 => Some(n as f64 / d as f64),
                _ => None,
            },
            withheld: false,
            numerator: n,
            denominator: d,
        }
    }
}

/// A rate as published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    /// The published denominator.
    pub denominator: Option<i64>,
    /// The published numerator.
    pub numerator: Option<i64>,
    /// The rate (0 to 1), `None` when withheld or the base is empty.
    pub value: Option<f64>,
    /// True when withheld to protect individuals.
    pub withheld: bool,
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

    #[test]
    fn a_rate_never_gives_a_suppressed_count_away() {
        let d = Disclosure::default();
        // 3 of 17: the 3 is suppressed, so is the rate (3/17 would reveal it).
        let r = d.rate(3, 17, false);
        assert!(r.withheld && r.value.is_none() && r.numerator.is_none());
        // 12 of 17: the rate of the published counts, 10/15.
        let r = d.rate(12, 17, false);
        assert_eq!(
            (r.value, r.numerator, r.denominator),
            (Some(10.0 / 15.0), Some(10), Some(15))
        );
        // Nothing of 40 is not a secret.
        assert_eq!(d.rate(0, 40, false).value, Some(0.0));
        // A base under 10 withholds; operators see the exact rate.
        assert!(d.rate(5, 8, false).withheld);
        assert_eq!(d.rate(3, 17, true).value, Some(3.0 / 17.0));
        assert_eq!(d.rate(0, 0, false).value, None);
    }
}
