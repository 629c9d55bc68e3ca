//! The opportunity mission's first outcome: of the citizens who leave
//! education, the share who start employment within 180 days of leaving and
//! keep it at least 90 days.
//!
//! - anchor: the citizen's first `dfe.EducationExited` (event time);
//! - achieved: an `hmrc.EmploymentStarted` within [anchor, anchor + 180 days]
//!   whose employment lasts 90 days: its `EmploymentEnded` (same
//!   `employment_id`) is at least 90 days later, or absent while the
//!   watermark has passed start + 90 days;
//! - not achieved: the watermark has passed anchor + 180 days and no
//!   employment started in the window can still last 90 days;
//! - otherwise pending, with the next deadline at which the watermark alone
//!   could decide it.
//!
//! Late data revises the status: evaluation always starts from all events.

use joinery_domain::event::DAY_MS;
use joinery_domain::{EventType, FieldValue, Millis, OutcomeState, OutcomeView};

use crate::{CitizenEvents, Evaluation, Mission};

/// Outcome id of sustained employment within 180 days of leaving education.
pub const SUSTAINED_EMPLOYMENT: &str = "sustained_employment_180d";
/// The window after leaving education in which employment must start.
pub const WINDOW_DAYS: i64 = 180;
/// How long the employment must last.
pub const SUSTAIN_DAYS: i64 = 90;

/// The opportunity mission.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opportunity;

fn employment_id(fields: &std::collections::BTreeMap<String, FieldValue>) -> Option<&str> {
    match fields.get("employment_id") {
        Some(FieldValue::Text(s)) => Some(s),
        _ => None,
    }
}

fn month_of(t: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| d.format("%Y-%m").to_string())
        .unwrap_or_else(|| "invalid".into())
}

impl Mission for Opportunity {
    fn id(&self) -> &'static str {
        "opportunity"
    }

    fn evaluate(&self, events: &CitizenEvents, watermark: Millis) -> Evaluation {
        let Some(anchor) = events.of_type(EventType::EducationExited).next() else {
            return Evaluation {
                in_cohort: false,
                area_code: None,
                cohort_month: None,
                outcomes: vec![],
                next_deadline: None,
            };
        };
        let anchor_at = anchor.occurred_at;
        let window_end = anchor_at + WINDOW_DAYS * DAY_MS;
        let sustain = SUSTAIN_DAYS * DAY_MS;

        let mut achieved: Option<Millis> = None; // start of the qualifying employment
        let mut open_deadlines: Vec<Millis> = vec![];
        let mut latest_short_end = window_end;
        for start in events
            .of_type(EventType::EmploymentStarted)
            .filter(|s| s.occurred_at >= anchor_at && s.occurred_at <= window_end)
        {
            let id = employment_id(&start.fields);
            let end = events
                .of_type(EventType::EmploymentEnded)
                .find(|e| {
                    e.occurred_at >= start.occurred_at
                        && id.is_some()
                        && employment_id(&e.fields) == id
                })
                .map(|e| e.occurred_at);
            let sustained_at = start.occurred_at + sustain;
            match end {
                Some(end) if end >= sustained_at => {
                    achieved = Some(start.occurred_at);
                    break;
                }
                Some(end) => latest_short_end = latest_short_end.max(end),
                None if watermark >= sustained_at => {
                    achieved = Some(start.occurred_at);
                    break;
                }
                None => open_deadlines.push(sustained_at),
            }
        }

        let (status, decided_at, duration_days, next_deadline) = match achieved {
            Some(start) => (
                OutcomeState::Achieved,
                Some(start + sustain),
                Some((start - anchor_at) / DAY_MS),
                None,
            ),
            None if watermark >= window_end && open_deadlines.is_empty() => (
                OutcomeState::NotAchieved,
                Some(latest_short_end),
                None,
                None,
            ),
            None => {
                let next = open_deadlines
                    .into_iter()
                    .chain((watermark < window_end).then_some(window_end))
                    .min();
                (OutcomeState::Pending, None, None, next)
            }
        };
        Evaluation {
            in_cohort: true,
            area_code: anchor.area_code.clone(),
            cohort_month: Some(month_of(anchor_at)),
            outcomes: vec![OutcomeView {
                name: SUSTAINED_EMPLOYMENT.into(),
                status,
                anchor_at,
                decided_at,
                duration_days,
            }],
            next_deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use joinery_domain::{CitizenKey, Event, EventId};
    use proptest::prelude::*;

    use super::*;

    const T0: Millis = 1_767_225_600_000; // 2026-01-01

    fn key() -> CitizenKey {
        "cd".repeat(32).parse().expect("valid key")
    }

    fn ev(n: u128, t: EventType, day: i64, employment: Option<&str>) -> Event {
        let mut fields = BTreeMap::new();
        if let Some(id) = employment {
            fields.insert("employment_id".into(), FieldValue::Text(id.into()));
        }
        Event {
            event_id: EventId(uuid::Uuid::from_u128(n)),
            event_type: t,
            occurred_at: T0 + day * DAY_MS,
            recorded_at: T0 + day * DAY_MS,
            citizen_key: key(),
            area_code: Some("E08000025".into()),
            birth_year_month: Some("2008-03".into()),
            fields,
        }
    }

    fn status(events: &[Event], watermark_day: i64) -> OutcomeState {
        let mut c = CitizenEvents::default();
        for e in events {
            c.insert(e.clone());
        }
        Opportunity
            .evaluate(&c, T0 + watermark_day * DAY_MS)
            .outcomes[0]
            .status
    }

    #[test]
    fn employment_kept_ninety_days_is_achieved() {
        let evs = [
            ev(1, EventType::EducationExited, 0, None),
            ev(2, EventType::EmploymentStarted, 30, Some("E1")),
            ev(3, EventType::EmploymentEnded, 130, Some("E1")),
        ];
        assert_eq!(status(&evs, 10), OutcomeState::Achieved);
    }

    #[test]
    fn open_employment_waits_for_the_watermark() {
        let evs = [
            ev(1, EventType::EducationExited, 0, None),
            ev(2, EventType::EmploymentStarted, 30, Some("E1")),
        ];
        assert_eq!(status(&evs, 100), OutcomeState::Pending);
        assert_eq!(status(&evs, 120), OutcomeState::Achieved);
    }

    #[test]
    fn no_employment_by_the_deadline_is_not_achieved() {
        let evs = [ev(1, EventType::EducationExited, 0, None)];
        assert_eq!(status(&evs, 179), OutcomeState::Pending);
        assert_eq!(status(&evs, 180), OutcomeState::NotAchieved);
    }

    #[test]
    fn late_employment_event_revises_outcome() {
        let mut evs = vec![ev(1, EventType::EducationExited, 0, None)];
        assert_eq!(status(&evs, 300), OutcomeState::NotAchieved);
        evs.push(ev(2, EventType::EmploymentStarted, 170, Some("E1")));
        assert_eq!(status(&evs, 300), OutcomeState::Achieved);
    }

    #[test]
    fn short_employment_does_not_count() {
        let evs = [
            ev(1, EventType::EducationExited, 0, None),
            ev(2, EventType::EmploymentStarted, 10, Some("E1")),
            ev(3, EventType::EmploymentEnded, 50, Some("E1")),
        ];
        assert_eq!(status(&evs, 400), OutcomeState::NotAchieved);
    }

    #[test]
    fn pending_evaluation_names_its_next_deadline() {
        let mut c = CitizenEvents::default();
        c.insert(ev(1, EventType::EducationExited, 0, None));
        let e = Opportunity.evaluate(&c, T0);
        assert_eq!(e.next_deadline, Some(T0 + WINDOW_DAYS * DAY_MS));
        assert_eq!(e.cohort_month.as_deref(), Some("2026-01"));
    }

    fn journey() -> impl Strategy<Value = Vec<Event>> {
        let one = (0u8..4, 0i64..400, 0u8..3).prop_map(|(kind, day, emp)| (kind, day, emp));
        proptest::collection::vec(one, 0..12).prop_map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (kind, day, emp))| {
                    let id = format!("E{emp}");
                    match kind {
                        0 => ev(i as u128, EventType::EducationExited, day, None),
                        1 => ev(i as u128, EventType::EmploymentStarted, day, Some(&id)),
                        2 => ev(i as u128, EventType::EmploymentEnded, day, Some(&id)),
                        _ => ev(i as u128, EventType::EducationEnrolled, day, None),
                    }
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn arrival_order_and_duplicates_do_not_change_the_view(
            events in journey(),
            seed in any::<u64>(),
            watermark_day in 0i64..600,
        ) {
            let mut forward = CitizenEvents::default();
            for e in &events { forward.insert(e.clone()); }
            let mut shuffled = events.clone();
            // A deterministic shuffle, then every event twice.
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n.max(1)); }
            let mut other = CitizenEvents::default();
            for e in shuffled.iter().chain(events.iter()) { other.insert(e.clone()); }
            let w = T0 + watermark_day * DAY_MS;
            prop_assert_eq!(Opportunity.evaluate(&forward, w), Opportunity.evaluate(&other, w));
        }

        #[test]
        fn the_watermark_never_un_decides_an_outcome(events in journey(), a in 0i64..600, b in 0i64..600) {
            let mut c = CitizenEvents::default();
            for e in &events { c.insert(e.clone()); }
            let (lo, hi) = (a.min(b), a.max(b));
            let early = Opportunity.evaluate(&c, T0 + lo * DAY_MS);
            let late = Opportunity.evaluate(&c, T0 + hi * DAY_MS);
            if let (Some(e), Some(l)) = (early.outcomes.first(), late.outcomes.first()) {
                if e.status != OutcomeState::Pending {
                    prop_assert_eq!(e.status, l.status);
                }
            }
        }
    }
}
