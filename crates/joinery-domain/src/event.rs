//! The decoded form of a department event: what the processor hands to the
//! mission engine after reading the Confluent-framed Avro record from Kafka.
//! Envelope fields are typed; the type-specific fields are kept as a small
//! map so that declarative capabilities can filter on them by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AreaCode, CitizenKey, EventId, EventType, YearMonth};

/// Event time: milliseconds since the Unix epoch, UTC (Avro `timestamp-millis`).
pub type Millis = i64;

/// One millisecond-precision day.
pub const DAY_MS: Millis = 86_400_000;

/// A type-specific field value of an event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// An integer (Avro int or long, including timestamps).
    Int(i64),
    /// A string or enum symbol.
    Text(String),
}

/// A citizen-outcome event as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id chosen by the department; duplicates are applied once.
    pub event_id: EventId,
    /// What happened.
    pub event_type: EventType,
    /// When it happened in the world (event time).
    pub occurred_at: Millis,
    /// When the department recorded it (always at or after `occurred_at`).
    pub recorded_at: Millis,
    /// The citizen's pseudonym.
    pub citizen_key: CitizenKey,
    /// ONS local authority code of the citizen's area, where known.
    /// (Stored state is read leniently, see [`crate::codes::lenient`].)
    #[serde(deserialize_with = "crate::codes::lenient")]
    pub area_code: Option<AreaCode>,
    /// The citizen's birth month, where the department holds it.
    #[serde(deserialize_with = "crate::codes::lenient")]
    pub birth_year_month: Option<YearMonth>,
    /// Type-specific fields, by Avro field name (absent optional fields are left out).
    pub fields: BTreeMap<String, FieldValue>,
}

/// The field a department sets to `true`, with a later `recorded_at`, to
/// retract an event it sent (same event id): the event then counts in
/// nothing. Absent or `false` on every other event; kept in
/// [`Event::fields`] only when `true`.
pub const RETRACTED_FIELD: &str = "retracted";

impl Event {
    /// Whether this version retracts the event.
    pub fn is_retraction(&self) -> bool {
        self.fields.get(RETRACTED_FIELD) == Some(&FieldValue::Bool(true))
    }
}

/// The longest value, in bytes, of an event's free-text field (an
/// identifier such as `claim_id`, `employment_id`): longer values are
/// refused where records enter, so that no record can bloat a citizen's
/// state or a view.
pub const MAX_TEXT_BYTES: usize = 256;

/// The earliest event time Joinery accepts: 1900-01-01T00:00:00Z. Nothing a
/// department reports about a living citizen's outcomes happened before it;
/// an earlier time is a sentinel or a corrupt value.
pub const EARLIEST_EVENT_TIME: Millis = -2_208_988_800_000;

/// How far ahead of the moment it was published an event may be dated,
/// unless configured otherwise: 366 days (an enrolment reported in July for
/// September, a release date set months ahead). A future-dated event is
/// kept and counts once event time reaches it.
pub const DEFAULT_EVENT_TIME_HORIZON: Millis = 366 * DAY_MS;

/// How far ahead of the moment its record reached Kafka an event's time may
/// move its partition's event time, unless configured otherwise: 5 minutes
/// of clock skew between a department and the platform.
pub const DEFAULT_MAX_CLOCK_SKEW: Millis = 5 * 60 * 1000;

/// Why an event time cannot be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTimeError {
    /// Before [`EARLIEST_EVENT_TIME`].
    #[error("is before 1900-01-01, which no outcome event can be")]
    TooEarly,
    /// Further ahead of publication than the horizon.
    #[error("is {days} days after the event was published; events may be dated at most {horizon_days} days ahead")]
    TooFarAhead {
        /// Whole days from publication to the event time.
        days: i64,
        /// The horizon, in whole days.
        horizon_days: i64,
    },
}

/// Checks that an event time `t` of an event published at `published_at`
/// (the gateway's clock, or the Kafka timestamp of a record produced
/// directly) could be true: not before 1900 and at most `horizon` ahead.
pub fn check_event_time(
    t: Millis,
    published_at: Millis,
    horizon: Millis,
) -> Result<(), EventTimeError> {
    if t < EARLIEST_EVENT_TIME {
        return Err(EventTimeError::TooEarly);
    }
    let ahead = t.saturating_sub(published_at);
    if ahead > horizon {
        return Err(EventTimeError::TooFarAhead {
            days: ahead / DAY_MS,
            horizon_days: horizon / DAY_MS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn earliest_event_time_is_1900() {
        let t = chrono::DateTime::from_timestamp_millis(EARLIEST_EVENT_TIME).expect("in range");
        assert_eq!(t.to_rfc3339(), "1900-01-01T00:00:00+00:00");
    }

    #[test]
    fn event_times_that_cannot_be_true_are_refused() {
        let now = 1_790_000_000_000;
        let h = DEFAULT_EVENT_TIME_HORIZON;
        assert_eq!(check_event_time(now, now, h), Ok(()));
        assert_eq!(check_event_time(now + h, now, h), Ok(()));
        assert_eq!(check_event_time(EARLIEST_EVENT_TIME, now, h), Ok(()));
        assert_eq!(
            check_event_time(EARLIEST_EVENT_TIME - 1, now, h),
            Err(EventTimeError::TooEarly)
        );
        let far = check_event_time(253_402_214_400_000, now, h).expect_err("9999-12-31");
        assert!(
            matches!(
                far,
                EventTimeError::TooFarAhead {
                    horizon_days: 366,
                    ..
                }
            ),
            "{far}"
        );
    }

    proptest! {
        #[test]
        fn the_check_never_overflows(t in any::<i64>(), p in any::<i64>(), h in 0..i64::MAX) {
            let ok = check_event_time(t, p, h).is_ok();
            prop_assert_eq!(ok, t >= EARLIEST_EVENT_TIME && i128::from(t) - i128::from(p) <= i128::from(h));
        }
    }
}
