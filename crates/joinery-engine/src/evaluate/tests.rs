//! The engine against hand-checked journeys and independent references.

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
        area_code: Some("E08000025".parse().unwrap()),
        birth_year_month: Some("2008-03".parse().unwrap()),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.into())
}

fn statuses(m: &MissionDef, events: &[Event], watermark_day: i64) -> Vec<(String, OutcomeState)> {
    let mut c = CitizenEvents::default();
    for e in events {
        c.insert(e.clone());
    }
    m.evaluate(&c, T0 + watermark_day * DAY_MS)
        .outcomes
        .into_iter()
        .map(|o| (o.name.to_string(), o.status))
        .collect()
}

fn status(m: &MissionDef, events: &[Event], watermark_day: i64) -> OutcomeState {
    statuses(m, events, watermark_day)[0].1
}

fn exit(n: u128, day: i64) -> Event {
    exit_from(n, day, "P1")
}

fn exit_from(n: u128, day: i64, provider: &str) -> Event {
    ev(
        n,
        EventType::EducationExited,
        day,
        &[("provider_urn", text(provider))],
    )
}

fn enrol(n: u128, day: i64, provider: &str) -> Event {
    ev(
        n,
        EventType::EducationEnrolled,
        day,
        &[("provider_urn", text(provider))],
    )
}

fn born(mut events: Vec<Event>, birth: Option<&str>) -> Vec<Event> {
    for e in &mut events {
        e.birth_year_month = birth.map(|b| b.parse().unwrap());
    }
    events
}

fn snapshots(m: &MissionDef, events: &[Event], watermark: Millis) -> Evaluation {
    let mut c = CitizenEvents::default();
    for e in events {
        c.insert(e.clone());
    }
    m.evaluate(&c, watermark)
}

/// `Some(holds)` when in the NEET population at the watermark day.
fn neet(events: &[Event], day: i64) -> Option<bool> {
    let e = snapshots(&mission("opportunity"), events, T0 + day * DAY_MS);
    e.snapshots
        .iter()
        .find(|s| s.name == "neet")
        .map(|s| s.holds)
}

#[test]
fn neet_follows_education_and_employment_at_the_watermark() {
    // Born 2008-03: 17 at T0 (2026-01-01), still under 25 at day 400.
    let evs = [
        enrol(1, 0, "P1"),
        exit(2, 100),
        job(3, 150, "E1"),
        job_end(4, 300, "E1"),
    ];
    assert_eq!(neet(&evs, 50), Some(false), "in education");
    assert_eq!(
        neet(&evs, 99),
        Some(false),
        "still in education the day before leaving"
    );
    assert_eq!(neet(&evs, 100), Some(true), "left, not yet employed");
    assert_eq!(neet(&evs, 150), Some(false), "employed from the start day");
    assert_eq!(neet(&evs, 299), Some(false));
    assert_eq!(neet(&evs, 300), Some(true), "employment ended");
    // A second enrolment elsewhere, still open, ends NEET.
    let mut more = evs.to_vec();
    more.push(enrol(5, 320, "P2"));
    assert_eq!(neet(&more, 330), Some(false));
    // Leaving a different provider does not end the P2 enrolment.
    more.push(exit_from(6, 340, "P1"));
    assert_eq!(neet(&more, 350), Some(false));
}

#[test]
fn neet_counts_everyone_of_age_not_only_the_cohort() {
    // Never enrolled or left education (so outside the opportunity
    // cohort), but a young claimant known to DWP: NEET.
    let evs = [claim(1, 10, false)];
    let e = snapshots(&mission("opportunity"), &evs, T0 + 20 * DAY_MS);
    assert!(!e.in_cohort);
    assert_eq!(
        e.snapshots,
        vec![SnapshotView {
            name: "neet".parse().unwrap(),
            holds: true,
            area_code: Some("E08000025".parse().unwrap()),
        }]
    );
    // Other missions have no snapshots.
    assert!(snapshots(&mission("safer_streets"), &evs, T0 + 20 * DAY_MS)
        .snapshots
        .is_empty());
}

#[test]
fn neet_population_is_the_age_at_the_watermark_and_known_by_then() {
    // Turns 25 on 2026-06-01: in the population until then.
    let evs = born(vec![claim(1, 0, false)], Some("2001-06"));
    let turns_25 = chrono::NaiveDate::from_ymd_opt(2026, 6, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
        .expect("a date");
    let e = snapshots(&mission("opportunity"), &evs, T0 + 10 * DAY_MS);
    assert_eq!(e.snapshots.len(), 1);
    assert_eq!(
        e.next_deadline,
        Some(turns_25),
        "re-evaluated on turning 25"
    );
    assert!(
        snapshots(&mission("opportunity"), &evs, turns_25 - 1)
            .snapshots
            .len()
            == 1
    );
    let after = snapshots(&mission("opportunity"), &evs, turns_25);
    assert!(after.snapshots.is_empty());
    assert_eq!(after.next_deadline, None, "never in the population again");
    // Turns 16 on 2027-09-01: outside until then, with a deadline there.
    let young = born(vec![exit(1, 0)], Some("2011-09"));
    let e = snapshots(&mission("opportunity"), &young, T0 + 10 * DAY_MS);
    assert!(e.snapshots.is_empty());
    assert_eq!(e.next_deadline, turns("2011-09".parse().unwrap(), 16));
    // Unknown age: never in it, and no timer for it.
    let unknown = born(vec![claim(1, 0, false)], None);
    let e = snapshots(&mission("opportunity"), &unknown, T0 + 10 * DAY_MS);
    assert!(e.snapshots.is_empty());
    assert_eq!(e.next_deadline, None);
    // Known only from an event after the watermark: not yet counted.
    let later = [claim(1, 100, false)];
    assert_eq!(neet(&later, 50), None);
    let e = snapshots(&mission("opportunity"), &later, T0 + 50 * DAY_MS);
    assert_eq!(e.next_deadline, Some(T0 + 100 * DAY_MS));
    assert_eq!(neet(&later, 100), Some(true));
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
fn opportunity_employment_kept_ninety_days_is_achieved_once_the_watermark_reaches_day_ninety() {
    let m = mission("opportunity");
    let evs = [exit(1, 0), job(2, 30, "E1"), job_end(3, 130, "E1")];
    // Known to have lasted, but the watermark has not reached its 90th day:
    // an earlier end reported late could still undo it, so it is not final.
    assert_eq!(status(&m, &evs, 10), OutcomeState::Pending);
    assert_eq!(status(&m, &evs, 119), OutcomeState::Pending);
    assert_eq!(status(&m, &evs, 120), OutcomeState::Achieved);
}

#[test]
fn an_achievement_after_the_watermark_is_pending_until_the_watermark_reaches_it() {
    let m = mission("opportunity");
    // A job started on day 30, still open: achieved from day 120 on.
    let evs = [exit(1, 0), job(2, 30, "E1")];
    let mut c = CitizenEvents::default();
    for e in &evs {
        c.insert(e.clone());
    }
    // The job is known on day 125 (event time), the watermark is day 118.
    let eval = m.evaluate(&c, T0 + 118 * DAY_MS);
    assert_eq!(eval.outcomes[0].status, OutcomeState::Pending);
    assert_eq!(
        eval.next_deadline,
        Some(T0 + 120 * DAY_MS),
        "the watermark reaching day 120 decides it"
    );
    assert_eq!(status(&m, &evs, 120), OutcomeState::Achieved);
}

#[test]
fn a_pending_achievement_wakes_at_the_first_moment_any_job_could_decide_it() {
    let m = mission("opportunity");
    // Job A from day 10, still open: sustained on day 100. Job B from day
    // 12 to day 104: sustained on day 102. At watermark day 98 neither is
    // final, and the earlier, day 100, decides it.
    let evs = [
        exit(1, 0),
        job(2, 10, "A"),
        job(3, 12, "B"),
        job_end(4, 104, "B"),
    ];
    let mut c = CitizenEvents::default();
    for e in &evs {
        c.insert(e.clone());
    }
    let eval = m.evaluate(&c, T0 + 98 * DAY_MS);
    assert_eq!(eval.outcomes[0].status, OutcomeState::Pending);
    assert_eq!(eval.next_deadline, Some(T0 + 100 * DAY_MS));
    assert_eq!(status(&m, &evs, 100), OutcomeState::Achieved);
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
    old.birth_year_month = Some("1990-01".parse().unwrap());
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
    assert_eq!(age_at("2008-03".parse().unwrap(), T0), Some(17));
    assert_eq!(age_at("2008-01".parse().unwrap(), T0), Some(18));
}

#[test]
fn pending_evaluation_names_its_next_deadline() {
    let m = mission("opportunity");
    let mut c = CitizenEvents::default();
    c.insert(exit(1, 0));
    let e = m.evaluate(&c, T0);
    assert_eq!(e.next_deadline, Some(T0 + 180 * DAY_MS));
    assert_eq!(
        e.cohort_month.map(|m| m.to_string()).as_deref(),
        Some("2026-01")
    );
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

/// Birth months around the NEET ages over the journeys' 600 days:
/// 25 during them, 16 during them, always in range, unknown.
const BIRTHS: [Option<&str>; 4] = [Some("2001-06"), Some("2010-04"), Some("2008-03"), None];

#[test]
fn counts_and_durations_at_the_anchor_select_the_cohort() {
    use crate::definition::{parse_capabilities, parse_mission};
    let caps = parse_capabilities(
        Path::new("c.toml"),
        r#"
        [capability.released]
        doc = "Released."
        kind = "first"
        event = "moj.ReleasedFromCustody"
        [capability.on_benefit]
        doc = "On a benefit claim."
        kind = "interval"
        start = "dwp.BenefitClaimStarted"
        end = "dwp.BenefitClaimEnded"
        match_on = "claim_id"
        [capability.reoffences]
        doc = "Proven reoffences."
        kind = "count"
        event = "moj.ProvenReoffence"
        [capability.days_on_benefit]
        doc = "Days on a benefit claim."
        kind = "duration"
        of = "on_benefit"
        "#,
    )
    .expect("capabilities");
    let m = parse_mission(
        Path::new("m.toml"),
        r#"
        id = "m"
        title = "t"
        doc = "d"
        [cohort]
        doc = "Released with no proven reoffence yet, after four weeks or more on a benefit."
        anchor = "released"
        require = [
          { capability = "reoffences", at_most = 0 },
          { capability = "days_on_benefit", at_least = 28 },
        ]
        [[outcome]]
        id = "o"
        doc = "o"
        condition = "on_benefit"
        within_days = 30
        "#,
        &caps,
    )
    .expect("mission");
    let claim = |n, day, id: &str| {
        ev(
            n,
            EventType::BenefitClaimStarted,
            day,
            &[
                ("claim_id", text(id)),
                ("health_condition", FieldValue::Bool(false)),
            ],
        )
    };
    let ended = |n, day, id: &str| {
        ev(
            n,
            EventType::BenefitClaimEnded,
            day,
            &[("claim_id", text(id))],
        )
    };
    let release = |n, day| ev(n, EventType::ReleasedFromCustody, day, &[]);
    let reoffence = |n, day| ev(n, EventType::ProvenReoffence, day, &[]);
    let in_cohort = |events: &[Event]| {
        let mut c = CitizenEvents::default();
        for e in events {
            c.insert(e.clone());
        }
        m.evaluate(&c, T0 + 400 * DAY_MS).in_cohort
    };
    // Claims over days 0-20 and 10-40 overlap: 30 days by a release on day 30.
    let base = [
        claim(1, 0, "C1"),
        ended(2, 20, "C1"),
        claim(3, 10, "C2"),
        ended(4, 40, "C2"),
    ];
    let mut evs = base.to_vec();
    evs.push(release(5, 30));
    assert!(in_cohort(&evs), "30 days on a benefit, no reoffence");
    evs.push(reoffence(6, 50));
    assert!(
        in_cohort(&evs),
        "a reoffence after the anchor does not count at it"
    );
    evs.push(reoffence(7, 5));
    assert!(!in_cohort(&evs), "a reoffence before the anchor does");
    let mut early = base.to_vec();
    early.push(release(5, 25));
    assert!(
        !in_cohort(&early),
        "25 days (overlaps counted once) is under 28"
    );
}

fn journey() -> impl Strategy<Value = Vec<Event>> {
    let one = (0u8..9, 0i64..400, 0u8..3);
    (proptest::collection::vec(one, 0..14), 0usize..4).prop_map(|(items, birth)| {
        let events = items
            .into_iter()
            .enumerate()
            .map(|(i, (kind, day, n))| {
                let id = format!("E{n}");
                let i = i as u128;
                match kind {
                    0 => exit_from(i, day, &format!("P{n}")),
                    8 => enrol(i, day, &format!("P{n}")),
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
            .collect();
        born(events, BIRTHS[birth])
    })
}

/// Age in whole years at `at` from `YYYY-MM`, computed on its own.
fn reference_age(birth: &str, at: Millis) -> Option<i64> {
    let y: i64 = birth[..4].parse().ok()?;
    let m: i64 = birth[5..].parse().ok()?;
    let d = chrono::DateTime::from_timestamp_millis(at)?.date_naive();
    let now =
        i64::from(chrono::Datelike::year(&d)) * 12 + i64::from(chrono::Datelike::month(&d)) - 1;
    let months = now - (y * 12 + m - 1);
    (months >= 0).then_some(months / 12)
}

/// A naive reference for NEET: `Some(holds)` when in the population.
fn reference_neet(events: &[Event], wm: Millis) -> Option<bool> {
    let birth = events.iter().find_map(|e| e.birth_year_month)?;
    if !events.iter().any(|e| e.occurred_at <= wm) {
        return None;
    }
    if !(16..=24).contains(&reference_age(&birth.to_string(), wm)?) {
        return None;
    }
    let open = |start: EventType, end: EventType, key: &str| {
        events.iter().any(|s| {
            s.event_type == start
                && s.occurred_at <= wm
                && !events.iter().any(|e| {
                    e.event_type == end
                        && e.fields.get(key) == s.fields.get(key)
                        && e.occurred_at >= s.occurred_at
                        && e.occurred_at <= wm
                })
        })
    };
    Some(
        !open(
            EventType::EducationEnrolled,
            EventType::EducationExited,
            "provider_urn",
        ) && !open(
            EventType::EmploymentStarted,
            EventType::EmploymentEnded,
            "employment_id",
        ),
    )
}

/// A naive reference for the opportunity outcome, written independently:
/// try every employment start against every end.
fn reference_opportunity(events: &[Event], watermark: Millis) -> Option<OutcomeState> {
    let anchor = events
        .iter()
        .filter(|e| e.event_type == EventType::EducationExited)
        .map(|e| e.occurred_at)
        .min()?;
    let birth = events.iter().find_map(|e| e.birth_year_month)?;
    if !(16..=24).contains(&reference_age(&birth.to_string(), anchor)?) {
        return None;
    }
    let (ws, we) = (anchor, anchor + 180 * DAY_MS);
    let mut any_open = false;
    // When each qualifying job was known to have lasted 90 days.
    let mut achieved_at: Option<Millis> = None;
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
            Some(e) if e >= need => achieved_at = Some(achieved_at.map_or(need, |a| a.min(need))),
            None if watermark >= need => {
                achieved_at = Some(achieved_at.map_or(need, |a| a.min(need)))
            }
            None => any_open = true,
            Some(_) => {}
        }
    }
    if let Some(at) = achieved_at {
        // Final only once the watermark has reached it.
        return Some(if at <= watermark {
            OutcomeState::Achieved
        } else {
            OutcomeState::Pending
        });
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
        let eval = m.evaluate(&c, w);
        let got = eval.outcomes.first().map(|o| o.status);
        prop_assert_eq!(got, reference_opportunity(&events, w));
        let neet = eval.snapshots.iter().find(|s| s.name == "neet").map(|s| s.holds);
        prop_assert_eq!(neet, reference_neet(&events, w));
    }

    #[test]
    fn nothing_changes_before_the_next_deadline(events in journey(), day in 0i64..600, step in 0i64..(700 * DAY_MS)) {
        let missions = load_dir(&Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("../../missions")).expect("missions load");
        let mut c = CitizenEvents::default();
        for e in &events { c.insert(e.clone()); }
        let w = T0 + day * DAY_MS;
        for m in &missions {
            let now = m.evaluate(&c, w);
            // The processor re-evaluates a citizen without new events only
            // when the watermark reaches the deadline: before it, the
            // evaluation must be the same.
            let later = match now.next_deadline {
                Some(d) => {
                    prop_assert!(d > w, "a deadline at or before the watermark: {} <= {}", d, w);
                    w + step % (d - w)
                }
                None => w + step,
            };
            prop_assert_eq!(&m.evaluate(&c, later), &now, "changed at {} before the deadline {:?}", later, now.next_deadline);
        }
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

proptest! {
    /// Event times and watermarks anywhere in the range of `i64` (a direct
    /// producer's extreme values) never overflow: evaluation neither panics
    /// (debug builds check arithmetic) nor returns a deadline at or before
    /// the watermark.
    #[test]
    fn extreme_times_never_overflow(
        events in journey(),
        times in proptest::collection::vec(prop_oneof![
            Just(i64::MIN), Just(i64::MAX), Just(0i64), any::<i64>()
        ], 1..8),
        watermark in prop_oneof![Just(i64::MIN), Just(i64::MAX), any::<i64>()],
    ) {
        let missions = load_dir(&Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("../../missions")).expect("missions load");
        let mut c = CitizenEvents::default();
        for (i, mut e) in events.into_iter().enumerate() {
            e.occurred_at = times[i % times.len()];
            e.recorded_at = e.occurred_at;
            c.insert(e);
        }
        for m in &missions {
            let eval = m.evaluate(&c, watermark);
            if let Some(d) = eval.next_deadline {
                prop_assert!(d > watermark, "deadline {} at or before the watermark {}", d, watermark);
            }
        }
    }
}

fn uc_claim(n: u128, day: i64, id: &str, benefit: &str) -> Event {
    ev(
        n,
        EventType::BenefitClaimStarted,
        day,
        &[
            ("claim_id", text(id)),
            ("benefit", text(benefit)),
            ("health_condition", FieldValue::Bool(false)),
        ],
    )
}

fn claim_end(n: u128, day: i64, id: &str) -> Event {
    ev(
        n,
        EventType::BenefitClaimEnded,
        day,
        &[("claim_id", text(id))],
    )
}

#[test]
fn uc_into_work_reads_work_and_the_claim_six_months_after_it_started() {
    let m = mission("uc_into_work");
    let o = |evs: &[Event], day| status(&m, evs, day);
    // A Jobseeker's Allowance claim is not Universal Credit: not in the cohort.
    assert!(statuses(&m, &[uc_claim(1, 0, "C1", "JOBSEEKERS_ALLOWANCE")], 400).is_empty());
    // Claim on day 0, a job from day 100, the claim ended on day 120: at
    // day 182 off the benefit and in work. Read once the watermark gets there.
    let found_work = [
        uc_claim(1, 0, "C1", "UNIVERSAL_CREDIT"),
        job(2, 100, "E1"),
        claim_end(3, 120, "C1"),
    ];
    assert_eq!(o(&found_work, 181), OutcomeState::Pending);
    assert_eq!(o(&found_work, 182), OutcomeState::Achieved);
    // In work but still claiming (in-work Universal Credit): not achieved.
    assert_eq!(o(&found_work[..2], 182), OutcomeState::NotAchieved);
    // Off the benefit but the job ended before the reading: not achieved;
    // one ending on the day itself is ended by then.
    for end in [150, 182] {
        let mut evs = found_work.to_vec();
        evs.push(job_end(4, end, "E1"));
        assert_eq!(
            o(&evs, 300),
            OutcomeState::NotAchieved,
            "job ended day {end}"
        );
    }
    // A second Universal Credit claim open at the reading counts as on it.
    let mut again = found_work.to_vec();
    again.push(uc_claim(5, 170, "C2", "UNIVERSAL_CREDIT"));
    assert_eq!(o(&again, 300), OutcomeState::NotAchieved);
    // ... and a Jobseeker's Allowance claim does not.
    let mut jsa = found_work.to_vec();
    jsa.push(uc_claim(5, 170, "C2", "JOBSEEKERS_ALLOWANCE"));
    assert_eq!(o(&jsa, 300), OutcomeState::Achieved);
    // The six months run from the first Universal Credit claim.
    let mut evs = found_work.to_vec();
    evs.push(uc_claim(6, 250, "C3", "UNIVERSAL_CREDIT"));
    let v = snapshots(&m, &evs, T0 + 300 * DAY_MS);
    assert_eq!(v.cohort_month, YearMonth::of_millis(T0));
    assert_eq!(v.outcomes[0].decided_at, Some(T0 + 182 * DAY_MS));
    assert_eq!(
        v.outcomes[0].duration_days, None,
        "a state has no days to achieve"
    );
}

#[test]
fn youth_participation_counts_education_or_employment() {
    let m = mission("youth_participation");
    let left = [enrol(1, -300, "P1"), exit(2, 0)];
    // Neither: not participating at six months, not re-engaged.
    assert_eq!(
        statuses(&m, &left, 200),
        vec![
            ("participating_at_6m".into(), OutcomeState::NotAchieved),
            ("reengaged_within_90d".into(), OutcomeState::NotAchieved),
        ]
    );
    // A new course from day 60: both, by education alone.
    let mut course = left.to_vec();
    course.push(enrol(3, 60, "P2"));
    assert_eq!(
        statuses(&m, &course, 200),
        vec![
            ("participating_at_6m".into(), OutcomeState::Achieved),
            ("reengaged_within_90d".into(), OutcomeState::Achieved),
        ]
    );
    // A job from day 120: participating at six months, but not re-engaged
    // within 90 days.
    let mut work = left.to_vec();
    work.push(job(3, 120, "E1"));
    assert_eq!(
        statuses(&m, &work, 200),
        vec![
            ("participating_at_6m".into(), OutcomeState::Achieved),
            ("reengaged_within_90d".into(), OutcomeState::NotAchieved),
        ]
    );
    // Re-engaged: the earlier of a job and a course decides the days.
    let mut both = left.to_vec();
    both.push(job(3, 70, "E1"));
    both.push(enrol(4, 40, "P2"));
    let v = snapshots(&m, &both, T0 + 200 * DAY_MS);
    assert_eq!(v.outcomes[1].duration_days, Some(40));
    // An achievement after the watermark is not final yet.
    assert_eq!(statuses(&m, &both, 30)[1].1, OutcomeState::Pending);
    // The EET snapshot is the NEET one's complement, over the same people.
    for day in [50, 100, 150, 400] {
        let eet = snapshots(&m, &work, T0 + day * DAY_MS)
            .snapshots
            .iter()
            .find(|s| s.name == "eet")
            .map(|s| s.holds);
        assert_eq!(eet, neet(&work, day).map(|n| !n), "day {day}");
    }
}

#[test]
fn filters_test_lists_exclusions_ranges_and_presence() {
    use crate::definition::Predicate;
    let v = |s: &str| Some(text(s));
    let theft = v("THEFT");
    assert!(Predicate::In {
        any: vec![text("THEFT"), text("DRUGS")]
    }
    .test(theft.as_ref()));
    assert!(!Predicate::In {
        any: vec![text("DRUGS")]
    }
    .test(theft.as_ref()));
    assert!(!Predicate::In {
        any: vec![text("DRUGS")]
    }
    .test(None));
    assert!(Predicate::NotIn {
        not: vec![text("DRUGS")]
    }
    .test(theft.as_ref()));
    assert!(!Predicate::NotIn {
        not: vec![text("THEFT")]
    }
    .test(theft.as_ref()));
    assert!(
        Predicate::NotIn {
            not: vec![text("THEFT")]
        }
        .test(None),
        "absent is none of them"
    );
    let range = Predicate::Range {
        at_least: Some(10),
        at_most: Some(20),
    };
    for (x, want) in [(9, false), (10, true), (20, true), (21, false)] {
        assert_eq!(range.test(Some(&FieldValue::Int(x))), want, "{x}");
    }
    assert!(!range.test(None) && !range.test(theft.as_ref()));
    assert!(Predicate::Present { present: true }.test(theft.as_ref()));
    assert!(Predicate::Present { present: false }.test(None));
}

#[test]
fn a_state_outcome_is_final_when_decided_and_moves_with_no_event_after_the_watermark() {
    // Final means final for state outcomes too: once decided at the
    // watermark, no event dated after the watermark changes it.
    let m = mission("uc_into_work");
    let evs = [
        uc_claim(1, 0, "C1", "UNIVERSAL_CREDIT"),
        job(2, 100, "E1"),
        claim_end(3, 120, "C1"),
    ];
    let decided = status(&m, &evs, 182);
    for later in [
        job_end(4, 183, "E1"),
        uc_claim(4, 183, "C2", "UNIVERSAL_CREDIT"),
    ] {
        let mut more = evs.to_vec();
        more.push(later);
        assert_eq!(status(&m, &more, 182), decided);
    }
}
