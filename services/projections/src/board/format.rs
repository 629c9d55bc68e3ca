//! How the board writes figures, dates and places: GOV.UK style
//! (`1,235`, `45.7%`, `24 November 2026`, `Birmingham (E08000025)`), and a
//! published figure as [`Shown`] for `templates/macros.html` to write.

use crate::api::response::{DaysToAchieve, Outcome, Timestamp};
use crate::disclosure::{Count, Rate};

/// Names of the local authority districts the demo and the load generator
/// use, by ONS code; other codes are shown as the code alone.
const AREA_NAMES: &[(&str, &str)] = &[
    ("E06000023", "Bristol, City of"),
    ("E08000003", "Manchester"),
    ("E08000025", "Birmingham"),
    ("E09000030", "Tower Hamlets"),
    ("S12000049", "Glasgow City"),
    ("W06000015", "Cardiff"),
];

/// A string made safe for an HTML `id` (and `aria-labelledby`): letters,
/// digits, `-` and `_` kept, anything else `-`.
pub(super) fn dom_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

pub(super) fn area_label(code: &str) -> String {
    match AREA_NAMES.iter().find(|(c, _)| *c == code) {
        Some((_, name)) => format!("{name} ({code})"),
        None if code == "unknown" => "Area not reported".into(),
        None => code.to_owned(),
    }
}

/// `2025-03` → `March 2025`.
pub(super) fn month_label(key: &str) -> String {
    chrono::NaiveDate::parse_from_str(&format!("{key}-01"), "%Y-%m-%d")
        .map_or_else(|_| key.to_owned(), |d| d.format("%B %Y").to_string())
}

/// `24 November 2026`, GOV.UK style.
pub(super) fn date(t: Timestamp) -> String {
    t.0.format("%-d %B %Y").to_string()
}

/// `24 November 2026 at 18:30:05 UTC`, GOV.UK style.
pub(super) fn date_time(t: Timestamp) -> String {
    t.0.format("%-d %B %Y at %H:%M:%S UTC").to_string()
}

pub(super) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A figure as the board writes it (`templates/macros.html`, `figure`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shown {
    /// The figure as text.
    Value(String),
    /// Withheld by disclosure control: `[c]`.
    Suppressed,
    /// Nothing to show yet (nothing decided, nobody achieved it): a dash.
    Nothing,
}

/// A published count: `1,235`, or `[c]` when suppressed.
pub(super) fn count(c: &Count) -> Shown {
    if c.suppressed {
        Shown::Suppressed
    } else {
        Shown::Value(thousands(c.value.unwrap_or(0)))
    }
}

/// A rate as a percentage: `45.7%`, `[c]` when withheld, a dash when
/// nothing is decided yet.
pub(super) fn rate(r: &Rate) -> Shown {
    match r.value {
        _ if r.withheld => Shown::Suppressed,
        Some(v) => Shown::Value(format!("{:.1}%", v * 100.0)),
        None => Shown::Nothing,
    }
}

/// The share of the cohort whose outcome is still open, computed from the
/// published counts so that it reveals nothing they do not: `[c]` when one
/// of them is suppressed, a dash when there is nobody yet.
pub(super) fn provisional_share(o: &Outcome) -> Shown {
    match (o.pending.value, o.decided.value) {
        (Some(0), Some(0)) => Shown::Nothing,
        (Some(pending), Some(decided)) if pending + decided > 0 => Shown::Value(format!(
            "{:.0}%",
            pending as f64 / (pending + decided) as f64 * 100.0
        )),
        _ => Shown::Suppressed,
    }
}

/// The median time to achieve and the 90th percentile.
pub(super) fn days_to_achieve(d: &DaysToAchieve) -> Shown {
    match d.median_days {
        Some(median) => Shown::Value(format!(
            "{median} days (90% within {} days)",
            d.p90_days.unwrap_or(median)
        )),
        None if d.withheld => Shown::Suppressed,
        None => Shown::Nothing,
    }
}
