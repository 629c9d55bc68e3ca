//! Evaluating a [`MissionDef`] over one citizen's events at a watermark.
//!
//! - The cohort is the citizens with the anchor capability, within the age
//!   range at the anchor (when one is set; unknown age is outside it), with
//!   every `active_at_anchor` interval open at the anchor.
//! - An outcome's window starts at the anchor (or its `from` capability)
//!   and lasts `within_days`. An occurrence condition is achieved by a
//!   matching event in the window; an interval condition by an interval
//!   starting in the window (lasting `sustained_days`, when set: ended at
//!   least that long after it started, or still open with the watermark
//!   past that point).
//! - Not achieved once the watermark has passed the window's end and
//!   nothing in it can still qualify; pending otherwise, with the deadline
//!   at which the watermark alone could decide it.

use joinery_domain::event::DAY_MS;
use joinery_domain::{Event, Millis, OutcomeState, OutcomeView};

use crate::definition::{Capability, EventFilter, MissionDef, Outcome};
use crate::{CitizenEvents, Evaluation, Mission};

fn matches(f: &EventFilter, e: &Event) -> bool {
    e.event_type == f.event && f.conditions.iter().all(|(k, v)| e.fields.get(k) == Some(v))
}

/// Age in whole years at `at`, from a `YYYY-MM` birth month (the day is not
/// held, so a citizen counts as a year older from the start of their birth month).
pub fn age_at(birth_year_month: &str, at: Millis) -> Option<i64> {
    let (y, m) = birth_year_month.split_once('-')?;
    let (y, m): (i64, i64) = (y.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&m) {
        return None;
    }
    let d = chrono::DateTime::from_timestamp_millis(at)?;
    let (ay, am) = (
        i64::from(chrono::Datelike::year(&d)),
        i64::from(chrono::Datelike::month(&d)),
    );
    let months = (ay * 12 + am) - (y * 12 + m);
    (months >= 0).then_some(months / 12)
}

fn month_of(t: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| d.format("%Y-%m").to_string())
        .unwrap_or_else(|| "invalid".into())
}

/// Intervals of an interval capability: (start event, end time if ended).
fn intervals<'a>(
    events: &'a CitizenEvents,
    start: &EventFilter,
    end: &EventFilter,
    key: &str,
) -> Vec<(&'a Event, Option<Millis>)> {
    events
        .iter()
        .filter(|e| matches(start, e))
        .map(|s| {
            let id = s.fields.get(key);
            let ended = events
                .iter()
                .find(|e| {
                    matches(end, e)
                        && e.occurred_at >= s.occurred_at
                        && id.is_some()
                        && e.fields.get(key) == id
                })
                .map(|e| e.occurred_at);
            (s, ended)
        })
        .collect()
}

impl MissionDef {
    fn capability(&self, name: &str) -> &Capability {
        self.capabilities
            .get(name)
            .expect("definitions are checked at load: every named capability exists")
    }

    /// The event of an occurrence capability (first or last match).
    fn occurrence<'a>(&self, name: &str, events: &'a CitizenEvents) -> Option<&'a Event> {
        match self.capability(name) {
            Capability::First(f) => events.iter().find(|e| matches(f, e)),
            Capability::Last(f) => events.iter().filter(|e| matches(f, e)).last(),
            Capability::Interval { .. } => None,
        }
    }

    fn outcome(
        &self,
        o: &Outcome,
        events: &CitizenEvents,
        window_start: Millis,
        watermark: Millis,
    ) -> (OutcomeView, Option<Millis>) {
        let window_end = window_start + o.within_days * DAY_MS;
        let in_window = |t: Millis| t >= window_start && t <= window_end;
        let mut achieved: Option<(Millis, Millis)> = None; // (qualifying time, decided at)
        let mut open_deadlines = Vec::new();
        let mut latest_short_end = window_end;
        match self.capability(&o.condition) {
            Capability::First(f) | Capability::Last(f) => {
                achieved = events
                    .iter()
                    .find(|e| matches(f, e) && in_window(e.occurred_at))
                    .map(|e| (e.occurred_at, e.occurred_at));
            }
            Capability::Interval {
                start,
                end,
                match_on,
            } => {
                for (s, ended) in intervals(events, start, end, match_on) {
                    if !in_window(s.occurred_at) {
                        continue;
                    }
                    let Some(days) = o.sustained_days else {
                        achieved = Some((s.occurred_at, s.occurred_at));
                        break;
                    };
                    let sustained_at = s.occurred_at + days * DAY_MS;
                    match ended {
                        Some(e) if e >= sustained_at => {
                            achieved = Some((s.occurred_at, sustained_at));
                            break;
                        }
                        Some(e) => latest_short_end = latest_short_end.max(e),
                        None if watermark >= sustained_at => {
                            achieved = Some((s.occurred_at, sustained_at));
                            break;
                        }
                        None => open_deadlines.push(sustained_at),
                    }
                }
            }
        }
        let (status, decided_at, duration_days, deadline) = match achieved {
            Some((at, decided)) => (
                OutcomeState::Achieved,
                Some(decided),
                Some((at - window_start) / DAY_MS),
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
        (
            OutcomeView {
                name: o.id.clone(),
                status,
                anchor_at: window_start,
                decided_at,
                duration_days,
            },
            deadline,
        )
    }
}

impl Mission for MissionDef {
    fn id(&self) -> &str {
        &self.id
    }

    fn evaluate(&self, events: &CitizenEvents, watermark: Millis) -> Evaluation {
        let outside = Evaluation {
            in_cohort: false,
            area_code: None,
            cohort_month: None,
            outcomes: vec![],
            next_deadline: None,
        };
        let Some(anchor) = self.occurrence(&self.cohort.anchor, events) else {
            return outside;
        };
        let anchor_at = anchor.occurred_at;
        if let Some((min, max)) = self.cohort.age {
            let birth = events.iter().find_map(|e| e.birth_year_month.as_deref());
            match birth.and_then(|b| age_at(b, anchor_at)) {
                Some(age) if age >= min && age <= max => {}
                _ => return outside,
            }
        }
        for name in &self.cohort.active_at_anchor {
            let Capability::Interval {
                start,
                end,
                match_on,
            } = self.capability(name)
            else {
                return outside;
            };
            let open = intervals(events, start, end, match_on)
                .iter()
                .any(|(s, e)| s.occurred_at <= anchor_at && e.is_none_or(|e| e > anchor_at));
            if !open {
                return outside;
            }
        }
        let mut outcomes = Vec::with_capacity(self.outcomes.len());
        let mut next_deadline: Option<Millis> = None;
        for o in &self.outcomes {
            let start = match &o.from {
                None => anchor_at,
                Some(f) => match self.occurrence(f, events) {
                    Some(e) => e.occurred_at,
                    None => continue,
                },
            };
            let (view, deadline) = self.outcome(o, events, start, watermark);
            next_deadline = match (next_deadline, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            outcomes.push(view);
        }
        Evaluation {
            in_cohort: true,
            area_code: anchor
                .area_code
                .clone()
                .or_else(|| events.iter().find_map(|e| e.area_code.clone())),
            cohort_month: Some(month_of(anchor_at)),
            outcomes,
            next_deadline,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use joinery_domain::{CitizenKey, EventId, EventType, FieldValue};
    use proptest::prelude::*;

    use super::*;
    use crate::definition::load_dir;

    const T0: Millis = 1_767_225_600_000; // 2026-01-01

    fn mission(id: &str) -> MissionDef {
        let dir =
            Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
                .join("../../missions");
        load_dir(&dir)
            .expect("the repository's missions load")
            .into_iter()
            .find(|m| m.id == id)
            .expect("mission exists")
    }

    fn key() -> CitizenKey {
        "cd".repeat(32).parse().expect("valid key")
    }

    fn ev(n: u128, t: EventType, day: i64, fields: &[(&str, FieldValue)]) -> Event {
        Event {
            event_id: EventId(uuid::Uuid::from_u128(n)),
            event_type: t,
            occurred_at: T0 + day * DAY_MS,
            recorded_at: T0 + day * DAY_MS,
            citizen_key: key(),
            area_code: Some("E08000025".into()),
            birth_year_month: Some("2008-03".into()),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn text(s: &str) -> FieldValue {
        FieldValue::Text(s.into())
    }

    fn statuses(
        m: &MissionDef,
        events: &[Event],
        watermark_day: i64,
    ) -> Vec<(String, OutcomeState)> {
        let mut c = CitizenEvents::default();
        for e in events {
            c.insert(e.clone());
        }
        m.evaluate(&c, T0 + watermark_day * DAY_MS)
            .outcomes
            .into_iter()
            .map(|o| (o.name, o.status))
            .collect()
    }

    fn status(m: &MissionDef, events: &[Event], watermark_day: i64) -> OutcomeState {
        statuses(m, events, watermark_day)[0].1
    }

    fn exit(n: u128, day: i64) -> Event {
        ev(n, EventType::EducationExited, day, &[])
    }

    fn job(n: u128, day: i64, id: &str) -> Event {
        ev(
            n,
            EventType::EmploymentStarted,
            day,
            &[("employment_id", text(id))],
        )
    }

    fn job_end(n: u128, day: i64, id: &str) -> Event {
        ev(
            n,
            EventType::EmploymentEnded,
            day,
            &[("employment_id", text(id))],
        )
    }

    #[test]
    fn opportunity_employment_kept_ninety_days_is_achieved() {
        let m = mission("opportunity");
        assert_eq!(
            status(
                &m,
                &[exit(1, 0), job(2, 30, "E1"), job_end(3, 130, "E1")],
                10
            ),
            OutcomeState::Achieved
        );
    }

    #[test]
    fn opportunity_open_employment_waits_for_the_watermark() {
        let m = mission("opportunity");
        let evs = [exit(1, 0), job(2, 30, "E1")];
        assert_eq!(status(&m, &evs, 100), OutcomeState::Pending);
        assert_eq!(status(&m, &evs, 120), OutcomeState::Achieved);
    }

    #[test]
    fn opportunity_no_employment_by_the_deadline_is_not_achieved() {
        let m = mission("opportunity");
        assert_eq!(status(&m, &[exit(1, 0)], 179), OutcomeState::Pending);
        assert_eq!(status(&m, &[exit(1, 0)], 180), OutcomeState::NotAchieved);
    }

    #[test]
    fn late_employment_event_revises_outcome() {
        let m = mission("opportunity");
        let mut evs = vec![exit(1, 0)];
        assert_eq!(status(&m, &evs, 300), OutcomeState::NotAchieved);
        evs.push(job(2, 170, "E1"));
        assert_eq!(status(&m, &evs, 300), OutcomeState::Achieved);
    }

    #[test]
    fn opportunity_short_employment_does_not_count() {
        let m = mission("opportunity");
        assert_eq!(
            status(
                &m,
                &[exit(1, 0), job(2, 10, "E1"), job_end(3, 50, "E1")],
                400
            ),
            OutcomeState::NotAchieved
        );
    }

    #[test]
    fn opportunity_cohort_is_sixteen_to_twenty_four_at_leaving() {
        let m = mission("opportunity");
        let mut old = exit(1, 0);
        old.birth_year_month = Some("1990-01".into());
        let mut c = CitizenEvents::default();
        c.insert(old);
        assert!(!m.evaluate(&c, T0).in_cohort);
        let mut unknown = exit(2, 0);
        unknown.birth_year_month = None;
        let mut c = CitizenEvents::default();
        c.insert(unknown);
        assert!(
            !m.evaluate(&c, T0).in_cohort,
            "unknown age is outside an age-limited cohort"
        );
        assert_eq!(age_at("2008-03", T0), Some(17));
        assert_eq!(age_at("2008-01", T0), Some(18));
    }

    #[test]
    fn pending_evaluation_names_its_next_deadline() {
        let m = mission("opportunity");
        let mut c = CitizenEvents::default();
        c.insert(exit(1, 0));
        let e = m.evaluate(&c, T0);
        assert_eq!(e.next_deadline, Some(T0 + 180 * DAY_MS));
        assert_eq!(e.cohort_month.as_deref(), Some("2026-01"));
    }

    fn claim(n: u128, day: i64, health: bool) -> Event {
        ev(
            n,
            EventType::BenefitClaimStarted,
            day,
            &[
                ("claim_id", text("C1")),
                ("health_condition", FieldValue::Bool(health)),
            ],
        )
    }

    fn referral(n: u128, day: i64, pathway: &str) -> Event {
        ev(
            n,
            EventType::ReferralReceived,
            day,
            &[("referral_id", text("R1")), ("pathway", text(pathway))],
        )
    }

    fn treatment(n: u128, day: i64) -> Event {
        ev(
            n,
            EventType::TreatmentStarted,
            day,
            &[
                ("referral_id", text("R1")),
                ("pathway", text("MENTAL_HEALTH")),
            ],
        )
    }

    #[test]
    fn health_and_work_cohort_needs_a_health_claim_open_at_referral() {
        let m = mission("health_and_work");
        let evaluate = |evs: &[Event]| {
            let mut c = CitizenEvents::default();
            for e in evs {
                c.insert(e.clone());
            }
            m.evaluate(&c, T0 + 10 * DAY_MS).in_cohort
        };
        assert!(evaluate(&[
            claim(1, 0, true),
            referral(2, 5, "MENTAL_HEALTH")
        ]));
        assert!(
            !evaluate(&[claim(1, 0, false), referral(2, 5, "MENTAL_HEALTH")]),
            "no health condition"
        );
        assert!(
            !evaluate(&[claim(1, 6, true), referral(2, 5, "MENTAL_HEALTH")]),
            "claim started after the referral"
        );
        assert!(
            !evaluate(&[claim(1, 0, true), referral(2, 5, "MUSCULOSKELETAL")]),
            "not a mental-health referral"
        );
        let ended = ev(
            3,
            EventType::BenefitClaimEnded,
            3,
            &[("claim_id", text("C1"))],
        );
        assert!(
            !evaluate(&[claim(1, 0, true), ended, referral(2, 5, "MENTAL_HEALTH")]),
            "claim ended before the referral"
        );
    }

    #[test]
    fn health_and_work_treatment_wait_and_employment_after_treatment() {
        let m = mission("health_and_work");
        let base = [claim(1, 0, true), referral(2, 10, "MENTAL_HEALTH")];
        // Waiting: one outcome pending; the employment outcome does not apply yet.
        assert_eq!(
            statuses(&m, &base, 20),
            vec![("treatment_within_18_weeks".into(), OutcomeState::Pending)]
        );
        // Treated after 100 days: within 18 weeks, wait of 100 days.
        let mut treated = base.to_vec();
        treated.push(treatment(3, 110));
        let mut c = CitizenEvents::default();
        for e in &treated {
            c.insert(e.clone());
        }
        let eval = m.evaluate(&c, T0 + 120 * DAY_MS);
        assert_eq!(eval.outcomes[0].status, OutcomeState::Achieved);
        assert_eq!(eval.outcomes[0].duration_days, Some(100));
        assert_eq!(
            eval.outcomes[1].name,
            "employment_within_12_months_of_treatment"
        );
        assert_eq!(eval.outcomes[1].status, OutcomeState::Pending);
        treated.push(job(4, 400, "E9"));
        assert_eq!(statuses(&m, &treated, 500)[1].1, OutcomeState::Achieved);
        // Treated after 130 days: outside 18 weeks.
        let late = [
            claim(1, 0, true),
            referral(2, 10, "MENTAL_HEALTH"),
            treatment(3, 140),
        ];
        assert_eq!(status(&m, &late, 200), OutcomeState::NotAchieved);
    }

    #[test]
    fn safer_streets_outcomes_after_release() {
        let m = mission("safer_streets");
        let release = ev(
            1,
            EventType::ReleasedFromCustody,
            0,
            &[
                ("establishment_code", text("MDI")),
                ("release_type", text("LICENCE")),
            ],
        );
        let settled = ev(
            2,
            EventType::AccommodationRecorded,
            2,
            &[("status", text("SETTLED"))],
        );
        let temporary = ev(
            3,
            EventType::AccommodationRecorded,
            1,
            &[("status", text("TEMPORARY"))],
        );
        let reoffence = ev(
            4,
            EventType::ProvenReoffence,
            200,
            &[("offence_group", text("THEFT"))],
        );
        let all = [
            release.clone(),
            settled,
            temporary.clone(),
            job(5, 50, "E1"),
            reoffence,
        ];
        assert_eq!(
            statuses(&m, &all, 400),
            vec![
                ("settled_accommodation_3d".into(), OutcomeState::Achieved),
                ("employment_6w".into(), OutcomeState::NotAchieved),
                ("proven_reoffence_12m".into(), OutcomeState::Achieved),
            ]
        );
        assert_eq!(
            statuses(&m, &[release, temporary], 2),
            vec![
                ("settled_accommodation_3d".into(), OutcomeState::Pending),
                ("employment_6w".into(), OutcomeState::Pending),
                ("proven_reoffence_12m".into(), OutcomeState::Pending),
            ]
        );
    }

    fn journey() -> impl Strategy<Value = Vec<Event>> {
        let one = (0u8..8, 0i64..400, 0u8..3);
        proptest::collection::vec(one, 0..14).prop_map(|items| {
            items
                .into_iter()
                .enumerate()
                .map(|(i, (kind, day, n))| {
                    let id = format!("E{n}");
                    let i = i as u128;
                    match kind {
                        0 => exit(i, day),
                        1 => job(i, day, &id),
                        2 => job_end(i, day, &id),
                        3 => claim(i, day, n > 0),
                        4 => referral(i, day, if n == 2 { "OTHER" } else { "MENTAL_HEALTH" }),
                        5 => treatment(i, day),
                        6 => ev(i, EventType::ReleasedFromCustody, day, &[]),
                        _ => ev(
                            i,
                            EventType::AccommodationRecorded,
                            day,
                            &[("status", text("SETTLED"))],
                        ),
                    }
                })
                .collect()
        })
    }

    /// A naive reference for the opportunity outcome, written independently:
    /// try every employment start against every end.
    fn reference_opportunity(events: &[Event], watermark: Millis) -> Option<OutcomeState> {
        let anchor = events
            .iter()
            .filter(|e| e.event_type == EventType::EducationExited)
            .map(|e| e.occurred_at)
            .min()?;
        let (ws, we) = (anchor, anchor + 180 * DAY_MS);
        let mut any_open = false;
        for s in events
            .iter()
            .filter(|e| e.event_type == EventType::EmploymentStarted)
        {
            if s.occurred_at < ws || s.occurred_at > we {
                continue;
            }
            let id = s.fields.get("employment_id");
            let end = events
                .iter()
                .filter(|e| {
                    e.event_type == EventType::EmploymentEnded
                        && e.fields.get("employment_id") == id
                        && e.occurred_at >= s.occurred_at
                })
                .min_by_key(|e| (e.occurred_at, e.event_id))
                .map(|e| e.occurred_at);
            let need = s.occurred_at + 90 * DAY_MS;
            match end {
                Some(e) if e >= need => return Some(OutcomeState::Achieved),
                None if watermark >= need => return Some(OutcomeState::Achieved),
                None => any_open = true,
                Some(_) => {}
            }
        }
        Some(if watermark >= we && !any_open {
            OutcomeState::NotAchieved
        } else {
            OutcomeState::Pending
        })
    }

    fn dedup(events: &[Event]) -> Vec<Event> {
        let mut seen = std::collections::HashSet::new();
        events
            .iter()
            .filter(|e| seen.insert(e.event_id))
            .cloned()
            .collect()
    }

    proptest! {
        #[test]
        fn arrival_order_and_duplicates_do_not_change_any_view(events in journey(), seed in any::<u64>(), watermark_day in 0i64..600) {
            let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("../../missions");
            let missions = load_dir(&dir).expect("missions load");
            let mut forward = CitizenEvents::default();
            for e in &events { forward.insert(e.clone()); }
            let mut shuffled = events.clone();
            let n = shuffled.len();
            for i in 0..n { shuffled.swap(i, (seed as usize).wrapping_add(i * 7) % n.max(1)); }
            let mut other = CitizenEvents::default();
            for e in shuffled.iter().chain(events.iter()) { other.insert(e.clone()); }
            let w = T0 + watermark_day * DAY_MS;
            for m in &missions {
                prop_assert_eq!(m.evaluate(&forward, w), m.evaluate(&other, w));
            }
        }

        #[test]
        fn the_engine_agrees_with_a_naive_reference(events in journey(), watermark_day in 0i64..600) {
            let m = mission("opportunity");
            let events = dedup(&events);
            let mut c = CitizenEvents::default();
            for e in &events { c.insert(e.clone()); }
            let w = T0 + watermark_day * DAY_MS;
            let got = m.evaluate(&c, w).outcomes.first().map(|o| o.status);
            prop_assert_eq!(got, reference_opportunity(&events, w));
        }

        #[test]
        fn the_watermark_never_un_decides_an_outcome(events in journey(), a in 0i64..600, b in 0i64..600) {
            let missions = load_dir(&Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("../../missions")).expect("missions load");
            let mut c = CitizenEvents::default();
            for e in &events { c.insert(e.clone()); }
            let (lo, hi) = (a.min(b), a.max(b));
            for m in &missions {
                let early = m.evaluate(&c, T0 + lo * DAY_MS);
                let late = m.evaluate(&c, T0 + hi * DAY_MS);
                for (e, l) in early.outcomes.iter().zip(&late.outcomes) {
                    if e.status != OutcomeState::Pending && e.name == l.name {
                        prop_assert_eq!(e.status, l.status);
                    }
                }
            }
        }
    }
}
