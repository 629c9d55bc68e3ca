//! The partition step on its own: hand-checked cases and properties over
//! random journeys, against an in-memory partition and against RocksDB.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use joinery_domain::event::DAY_MS;
use joinery_domain::{CitizenKey, Event, EventId, EventType, FieldValue, Millis, MissionView};
use joinery_engine::{Evaluation, Mission, MissionDef};
use joinery_store::{Store, StoreOptions};
use proptest::prelude::*;

use super::*;
use crate::partition::{self, write_ops, PartitionReader, StorePartition};

const T0: Millis = 1_767_225_600_000; // 2026-01-01
const LATENESS: Millis = 7 * DAY_MS;
const SKEW: Millis = 5 * 60 * 1000;

fn missions() -> Vec<MissionDef> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../missions");
    joinery_engine::load_missions(&dir).expect("the repository's missions load")
}

/// Every department's lateness is [`LATENESS`].
static UNIFORM: Lateness = Lateness::uniform(LATENESS);

fn rules(missions: &[MissionDef]) -> Rules<'_> {
    rules_with(missions, &UNIFORM)
}

/// The rules with each department's lateness from `lateness`.
fn rules_with<'a>(missions: &'a [MissionDef], lateness: &'a Lateness) -> Rules<'a> {
    let per_mission: Vec<Millis> = missions.iter().map(|m| lateness.of_mission(m)).collect();
    Rules {
        missions,
        // Leaked: a few bytes per test case.
        mission_lateness: Box::leak(per_mission.into_boxed_slice()),
        lateness,
        max_clock_skew: SKEW,
        max_events_per_citizen: 2_000,
        max_timers: 40_000,
    }
}

fn citizen(n: u8) -> CitizenKey {
    format!("{n:02x}").repeat(32).parse().expect("a valid key")
}

fn text(s: &str) -> FieldValue {
    FieldValue::Text(s.into())
}

/// Event `id` of citizen `c`, `day` days after 2026-01-01, produced to
/// Kafka an hour after it happened.
fn event(c: u8, id: u128, t: EventType, day: i64, fields: &[(&str, FieldValue)]) -> Arrival {
    let at = T0 + day * DAY_MS;
    Arrival {
        event: Event {
            event_id: EventId(uuid::Uuid::from_u128(id)),
            event_type: t,
            occurred_at: at,
            recorded_at: at,
            citizen_key: citizen(c),
            area_code: Some("E08000025".parse().unwrap()),
            birth_year_month: Some("2008-03".parse().unwrap()),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        },
        timestamp: at + 3_600_000,
        source: 0,
    }
}

/// One of the events the repository's missions read, chosen by `kind`.
fn any_event(c: u8, id: u128, kind: u8, day: i64, n: u8) -> Arrival {
    let provider = format!("P{n}");
    let job = format!("E{n}");
    match kind {
        0 => event(
            c,
            id,
            EventType::EducationExited,
            day,
            &[("provider_urn", text(&provider))],
        ),
        1 => event(
            c,
            id,
            EventType::EducationEnrolled,
            day,
            &[("provider_urn", text(&provider))],
        ),
        2 => event(
            c,
            id,
            EventType::EmploymentStarted,
            day,
            &[("employment_id", text(&job))],
        ),
        3 => event(
            c,
            id,
            EventType::EmploymentEnded,
            day,
            &[("employment_id", text(&job))],
        ),
        4 => event(
            c,
            id,
            EventType::BenefitClaimStarted,
            day,
            &[
                ("claim_id", text("C1")),
                ("health_condition", FieldValue::Bool(n > 0)),
            ],
        ),
        5 => event(
            c,
            id,
            EventType::ReferralReceived,
            day,
            &[
                ("referral_id", text("R1")),
                ("pathway", text("MENTAL_HEALTH")),
            ],
        ),
        6 => event(
            c,
            id,
            EventType::TreatmentStarted,
            day,
            &[
                ("referral_id", text("R1")),
                ("pathway", text("MENTAL_HEALTH")),
            ],
        ),
        7 => event(c, id, EventType::ReleasedFromCustody, day, &[]),
        _ => event(
            c,
            id,
            EventType::AccommodationRecorded,
            day,
            &[("status", text("SETTLED"))],
        ),
    }
}

/// A partition held in memory: what RocksDB holds, as plain collections.
#[derive(Debug, Clone, Default)]
struct Memory {
    max_time: Option<Millis>,
    fired_upto: Option<Millis>,
    citizens: BTreeMap<CitizenKey, CitizenRecord>,
    timers: BTreeSet<(Millis, CitizenKey)>,
    /// Every view published, in order.
    published: Vec<MissionView>,
}

impl PartitionReader for Memory {
    fn max_time(&self) -> anyhow::Result<Option<Millis>> {
        Ok(self.max_time)
    }

    fn fired_upto(&self) -> anyhow::Result<Option<Millis>> {
        Ok(self.fired_upto)
    }

    fn due_timers(
        &self,
        after: Millis,
        upto: Millis,
        limit: usize,
    ) -> anyhow::Result<Vec<(Millis, CitizenKey)>> {
        Ok(self
            .timers
            .iter()
            .filter(|(t, _)| *t > after && *t <= upto)
            .take(limit)
            .cloned()
            .collect())
    }

    fn records(&self, citizens: &[&CitizenKey]) -> anyhow::Result<Vec<Option<CitizenRecord>>> {
        Ok(citizens
            .iter()
            .map(|c| self.citizens.get(*c).cloned())
            .collect())
    }
}

impl Memory {
    /// Works a batch and keeps what it changed, as the processor does.
    fn apply(&mut self, rules: &Rules<'_>, arrivals: Vec<Arrival>) -> StepOutput {
        let out = partition::work(self, rules, arrivals).expect("memory reads cannot fail");
        self.max_time = Some(out.max_time);
        self.fired_upto = out.backlog().then_some(out.fired_upto);
        for t in &out.timers_cleared {
            self.timers.remove(t);
        }
        for t in &out.timers_set {
            self.timers.insert(t.clone());
        }
        for (c, r) in &out.records {
            self.citizens.insert(c.clone(), r.clone());
        }
        self.published.extend(out.views.iter().cloned());
        out
    }

    /// Works a batch, then steps without records until no due timer is
    /// left, as the processor does; returns every step's output.
    fn apply_draining(&mut self, rules: &Rules<'_>, arrivals: Vec<Arrival>) -> Vec<StepOutput> {
        let mut outs = vec![self.apply(rules, arrivals)];
        while outs.last().is_some_and(StepOutput::backlog) {
            outs.push(self.apply(rules, Vec::new()));
        }
        outs
    }
}

/// What a reader can see of an evaluation (versions and the watermark it
/// was published at depend on batching; this does not).
type Visible = (
    bool,
    Option<joinery_domain::AreaCode>,
    Option<joinery_domain::YearMonth>,
    Vec<joinery_domain::OutcomeView>,
    Vec<joinery_domain::SnapshotView>,
);

fn visible(e: &Evaluation) -> Visible {
    (
        e.in_cohort,
        e.area_code,
        e.cohort_month,
        e.outcomes.clone(),
        e.snapshots.clone(),
    )
}

fn visible_view(v: &MissionView) -> Visible {
    (
        v.in_cohort,
        v.area_code,
        v.cohort_month,
        v.outcomes.clone(),
        v.snapshots.clone(),
    )
}

/// A citizen's events, visible evaluations by mission, newest Kafka
/// timestamp, and timer.
type SettledCitizen = (
    Vec<Event>,
    BTreeMap<String, Visible>,
    Millis,
    Option<Millis>,
);

/// The part of a partition that must not depend on how its records were
/// batched: events, evaluations as a reader sees them, freshness, timers,
/// the greatest event time, and each citizen's last published view. (A
/// stored evaluation's own `next_deadline` is left out: it is kept from the
/// last visible change only, while the timer, compared, follows every
/// evaluation.)
#[derive(Debug, PartialEq)]
struct Settled {
    max_time: Option<Millis>,
    citizens: BTreeMap<CitizenKey, SettledCitizen>,
    timers: BTreeSet<(Millis, CitizenKey)>,
    last_views: BTreeMap<(String, CitizenKey), Visible>,
}

/// Whether a view counts its citizen in anything: in the cohort or in a
/// snapshot's population. One that does not is, to every reader, the same
/// as no view: a citizen who was in a cohort and left it (late data moved
/// the anchor) gets one to retract the earlier view, a citizen who never
/// entered gets none, and the figures agree.
fn counts(v: &Visible) -> bool {
    v.0 || !v.4.is_empty()
}

fn settled(m: &Memory) -> Settled {
    Settled {
        max_time: m.max_time,
        citizens: m
            .citizens
            .iter()
            .map(|(c, r)| {
                let views = r
                    .views
                    .iter()
                    .map(|(id, p)| (id.clone(), visible(&p.evaluation)))
                    .filter(|(_, v)| counts(v))
                    .collect();
                (
                    c.clone(),
                    (
                        r.events.iter().cloned().collect(),
                        views,
                        r.ingested_at,
                        r.timer,
                    ),
                )
            })
            .collect(),
        timers: m.timers.clone(),
        last_views: m
            .published
            .iter()
            .map(|v| {
                (
                    (v.mission.to_string(), v.citizen_key.clone()),
                    visible_view(v),
                )
            })
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .filter(|(_, v)| counts(v))
            .collect(),
    }
}

#[test]
fn versions_grow_with_the_watermark_then_with_events() {
    assert!(view_version(1_000, 1) < view_version(1_000, 2));
    assert!(view_version(1_000, 9) < view_version(1_001, 1));
    assert_eq!(view_version(-5, 3), view_version(0, 3));
    assert!(
        view_version(4_102_444_800_000, 1) > 0,
        "positive until well past 2100"
    );
}

#[test]
fn a_leaver_is_pending_until_the_watermark_passes_the_deadline_then_not_achieved() {
    let defs = missions();
    let rules = rules(&defs);
    let mut p = Memory::default();
    let out = p.apply(
        &rules,
        vec![event(
            1,
            1,
            EventType::EducationExited,
            0,
            &[("provider_urn", text("P1"))],
        )],
    );
    let view = out
        .views
        .iter()
        .find(|v| v.mission == "opportunity")
        .expect("the leaver enters the opportunity cohort");
    assert!(view.in_cohort);
    assert!(view
        .outcomes
        .iter()
        .all(|o| o.status == joinery_domain::OutcomeState::Pending));
    assert_eq!(rules.watermark(0, out.max_time), T0 - LATENESS);
    let (deadline, who) = p
        .timers
        .iter()
        .next()
        .cloned()
        .expect("a timer is set for the window's end");
    assert_eq!(who, citizen(1));

    // Another citizen's event moves the watermark past the outcome's
    // 180-day window: the timer fires and the leaver's outcome is decided
    // without an event of theirs.
    let day = 180 + LATENESS / DAY_MS + 1;
    let out = p.apply(
        &rules,
        vec![event(2, 2, EventType::ReleasedFromCustody, day, &[])],
    );
    assert!(
        out.timers_cleared.contains(&(deadline, citizen(1))),
        "the due timer is cleared"
    );
    let decided = out
        .views
        .iter()
        .find(|v| v.mission == "opportunity" && v.citizen_key == citizen(1))
        .expect("the leaver's view changes when the deadline passes");
    assert!(decided
        .outcomes
        .iter()
        .any(|o| o.status == joinery_domain::OutcomeState::NotAchieved));
    assert!(decided.version > view.version);
}

#[test]
fn a_batch_without_news_writes_nothing_but_the_watermark() {
    let defs = missions();
    let rules = rules(&defs);
    let mut p = Memory::default();
    let batch = vec![
        any_event(1, 1, 0, 10, 1),
        any_event(1, 2, 2, 40, 1),
        any_event(2, 3, 7, 20, 0),
    ];
    p.apply(&rules, batch.clone());
    let again = p.apply(&rules, batch);
    assert!(again.records.is_empty() && again.views.is_empty());
    assert!(again.timers_cleared.is_empty() && again.timers_set.is_empty());
    assert_eq!(again.counts.by_type.values().sum::<u64>(), 3);
    assert!(
        again.counts.by_type.keys().all(|(_, applied)| !applied),
        "all three were duplicates"
    );
}

/// `a`, published to Kafka on `day` (days after 2026-01-01) instead of an
/// hour after it happened.
fn published_on(mut a: Arrival, day: i64) -> Arrival {
    a.timestamp = T0 + day * DAY_MS;
    a
}

fn opportunity_view(out: &StepOutput, c: u8) -> Option<&MissionView> {
    out.views
        .iter()
        .find(|v| v.mission == "opportunity" && v.citizen_key == citizen(c))
}

#[test]
fn an_event_dated_9999_moves_event_time_only_to_when_it_was_published() {
    let defs = missions();
    let rules = rules(&defs);
    let mut p = Memory::default();
    p.apply(&rules, vec![any_event(1, 1, 0, 0, 1)]);
    let before = p.apply(&rules, vec![any_event(2, 2, 7, 20, 0)]);
    assert_eq!(rules.watermark(0, before.max_time), T0 + 13 * DAY_MS);
    let mut hostile = any_event(3, 3, 7, 0, 0);
    hostile.event.occurred_at = 253_402_214_400_000; // 9999-12-31
    let out = p.apply(&rules, vec![published_on(hostile, 21)]);
    assert_eq!(out.max_time, T0 + 21 * DAY_MS + SKEW);
    assert_eq!(rules.watermark(0, out.max_time), T0 + 14 * DAY_MS + SKEW);
    assert!(
        opportunity_view(&out, 1).is_none(),
        "the leaver's pending outcome is not decided"
    );
    assert!(out.timers_cleared.iter().all(|(_, c)| *c != citizen(1)));
    assert!(
        out.views
            .iter()
            .all(|v| v.citizen_key != citizen(3) || !v.in_cohort),
        "an event that has not happened counts in nothing"
    );
}

#[test]
fn a_future_dated_enrolment_counts_from_its_date_and_not_before() {
    let defs = missions();
    let rules = rules(&defs);
    let neet = |out: &StepOutput| {
        opportunity_view(out, 1).and_then(|v| {
            v.snapshots
                .iter()
                .find(|s| s.name == "neet")
                .map(|s| s.holds)
        })
    };
    let mut p = Memory::default();
    // A 17-year-old leaves education on day 0; another citizen's event on
    // day 20 moves the watermark to day 13: the leaver is NEET.
    p.apply(&rules, vec![any_event(1, 1, 0, 0, 1)]);
    let known = p.apply(&rules, vec![any_event(2, 2, 7, 20, 0)]);
    assert_eq!(neet(&known), Some(true));
    // On day 21 their college reports an enrolment starting on day 60.
    let enrolment = published_on(any_event(1, 3, 1, 60, 2), 21);
    let early = p.apply(&rules, vec![enrolment]);
    assert_eq!(
        early.max_time,
        T0 + 21 * DAY_MS + SKEW,
        "the enrolment does not move event time to its date"
    );
    assert!(
        neet(&early).is_none_or(|holds| holds),
        "not in education before the enrolment's date"
    );
    // Timers are kept in event time.
    let wake = T0 + 60 * DAY_MS;
    assert!(
        p.timers.contains(&(wake, citizen(1))),
        "a timer wakes the citizen when event time reaches the enrolment: {:?}",
        p.timers
    );
    // Another citizen's event on day 75: event time passes day 60, the
    // timer fires, and the enrolment counts.
    let later = p.apply(&rules, vec![any_event(2, 4, 7, 75, 0)]);
    assert!(later.timers_cleared.contains(&(wake, citizen(1))));
    assert_eq!(neet(&later), Some(false), "in education from day 60");
}

#[test]
fn events_past_a_citizens_cap_are_refused_and_others_are_untouched() {
    let defs = missions();
    let mut rules = rules(&defs);
    rules.max_events_per_citizen = 3;
    let mut p = Memory::default();
    let mut batch: Vec<Arrival> = (0..5)
        .map(|i| any_event(1, 10 + i, 2, 10 + i as i64, i as u8))
        .chain([any_event(2, 99, 0, 12, 1)])
        .collect();
    for (i, a) in batch.iter_mut().enumerate() {
        a.source = i;
    }
    let out = p.apply(&rules, batch);
    let refused: Vec<usize> = out.refused.iter().map(|(s, _)| *s).collect();
    assert_eq!(refused, [3, 4], "the fourth and fifth events of citizen 1");
    assert_eq!(out.refused[0].1.reason(), "citizen_event_cap");
    assert_eq!(p.citizens[&citizen(1)].events.len(), 3);
    assert_eq!(
        p.citizens[&citizen(2)].events.len(),
        1,
        "another citizen is untouched"
    );
    // A held event sent again at the cap is a duplicate, not a refusal.
    let again = p.apply(&rules, vec![any_event(1, 10, 2, 10, 0)]);
    assert!(again.refused.is_empty());
    assert_eq!(again.counts.by_type.values().sum::<u64>(), 1);
}

#[test]
fn a_different_version_stamped_like_a_held_one_is_refused() {
    let defs = missions();
    let rules = rules(&defs);
    let mut p = Memory::default();
    let original = any_event(1, 7, 0, 10, 1);
    p.apply(&rules, vec![original.clone()]);
    let mut clash = original.clone();
    clash.event.occurred_at += DAY_MS;
    clash.source = 4;
    let out = p.apply(&rules, vec![clash, original]);
    assert_eq!(out.refused.len(), 1);
    assert_eq!(out.refused[0].0, 4);
    assert_eq!(out.refused[0].1.reason(), "conflicting_version");
    assert_eq!(p.citizens[&citizen(1)].events.revisions(), 1);
}

/// A random journey of up to three citizens, with duplicates: a pool of
/// events, then the order they arrive in (any pool event, any number of
/// times). About one event in four is future-dated: published 10 to 150
/// days before the day it is dated; some are corrections or retractions of
/// earlier ones.
fn journey() -> impl Strategy<Value = Vec<Arrival>> {
    let one = (0u8..3, 0u8..9, 0i64..500, 0u8..3, 0i64..60);
    proptest::collection::vec(one, 1..24).prop_flat_map(|pool| {
        let events: Vec<Arrival> = pool
            .iter()
            .enumerate()
            .map(|(i, (c, kind, day, n, early))| {
                let mut a = any_event(*c, i as u128 + 1, *kind, *day, *n);
                if *early >= 45 {
                    a.timestamp = a.event.occurred_at - (early - 44) * 10 * DAY_MS;
                }
                a
            })
            .collect();
        // About one event in six is a later version of an earlier one (same
        // department and id, recorded later): a correction moved to this
        // one's day, or, one time in two, a retraction.
        let mut events = events;
        for i in 1..events.len() {
            let (_, _, _, _, early) = pool[i];
            if early % 6 == 0 {
                let original = events[i / 2].event.clone();
                let mut v = original.clone();
                v.occurred_at = events[i].event.occurred_at;
                v.recorded_at = original.recorded_at + i as i64 * 60_000;
                if early % 12 == 0 {
                    v.fields.insert(
                        joinery_domain::event::RETRACTED_FIELD.into(),
                        FieldValue::Bool(true),
                    );
                }
                events[i].event = v;
            }
        }
        let len = events.len();
        proptest::collection::vec(0..len, len..len * 2)
            .prop_map(move |order| order.into_iter().map(|i| events[i].clone()).collect())
    })
}

/// Cuts `arrivals` into batches at the (sorted, distinct) cut points.
fn batches(arrivals: &[Arrival], cuts: &[usize]) -> Vec<Vec<Arrival>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (arrivals.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([arrivals.len()]) {
        if c > start {
            out.push(arrivals[start..c].to_vec());
            start = c;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// One batch, or the same records in several: the same events, the
    /// same evaluations, timers and watermark, and the same last view of
    /// every citizen; each citizen's versions only grow.
    #[test]
    fn a_partition_does_not_depend_on_how_its_records_were_batched(
        arrivals in journey(),
        cuts in proptest::collection::vec(0usize..64, 0..6),
    ) {
        let defs = missions();
        let rules = rules(&defs);
        let mut whole = Memory::default();
        whole.apply(&rules, arrivals.clone());
        let mut split = Memory::default();
        for batch in batches(&arrivals, &cuts) {
            split.apply(&rules, batch);
        }
        prop_assert_eq!(settled(&whole), settled(&split));
        let mut last: BTreeMap<(String, CitizenKey), i64> = BTreeMap::new();
        for v in &split.published {
            let before = last.insert((v.mission.to_string(), v.citizen_key.clone()), v.version);
            prop_assert!(before.is_none_or(|b| b < v.version), "versions grow");
        }
    }

    /// Timers fired a few at a time (each step without records written on
    /// its own) end exactly as when they all fire at once.
    #[test]
    fn firing_timers_in_bounded_steps_does_not_change_the_result(
        arrivals in journey(),
        cuts in proptest::collection::vec(0usize..64, 0..6),
        max_timers in 1usize..4,
    ) {
        let defs = missions();
        let mut chunked_rules = rules(&defs);
        chunked_rules.max_timers = max_timers;
        let mut whole = Memory::default();
        whole.apply(&rules(&defs), arrivals.clone());
        let mut chunked = Memory::default();
        for batch in batches(&arrivals, &cuts) {
            let outs = chunked.apply_draining(&chunked_rules, batch);
            // A step clears at most the timers it fires plus those its
            // records' citizens replace; a step without records, only the
            // timers it fires: at most `max_timers`.
            prop_assert!(outs[0].timers_cleared.len() <= max_timers + outs[0].records.len());
            for out in &outs[1..] {
                prop_assert!(out.timers_cleared.len() <= max_timers, "{}", out.timers_cleared.len());
            }
            prop_assert!(chunked.fired_upto.is_none(), "no backlog is left");
        }
        prop_assert_eq!(settled(&whole), settled(&chunked));
    }

    /// Records may arrive while due timers are still to fire (a processor
    /// restarted mid-backlog is given records before it has finished it):
    /// steps with and without records interleaved end exactly as when every
    /// timer fires at once.
    #[test]
    fn records_arriving_while_timers_are_still_due_do_not_change_the_result(
        arrivals in journey(),
        cuts in proptest::collection::vec(0usize..64, 0..6),
        max_timers in 1usize..4,
        drained in proptest::collection::vec(0usize..3, 6),
    ) {
        let defs = missions();
        let mut chunked_rules = rules(&defs);
        chunked_rules.max_timers = max_timers;
        let mut whole = Memory::default();
        whole.apply(&rules(&defs), arrivals.clone());
        let mut chunked = Memory::default();
        for (i, batch) in batches(&arrivals, &cuts).into_iter().enumerate() {
            let mut out = chunked.apply(&chunked_rules, batch);
            // Only some of the steps without records before the next batch.
            for _ in 0..drained[i % drained.len()] {
                if !out.backlog() {
                    break;
                }
                out = chunked.apply(&chunked_rules, Vec::new());
            }
        }
        while chunked.fired_upto.is_some() {
            chunked.apply(&chunked_rules, Vec::new());
        }
        prop_assert_eq!(settled(&whole), settled(&chunked));
    }

    /// Whatever the batching, each citizen's last view is what the engine
    /// says at the final watermark of all their events that had happened by
    /// the partition's event time (a clean replay).
    #[test]
    fn the_last_views_are_those_of_a_clean_evaluation_at_the_final_watermark(
        arrivals in journey(),
        cuts in proptest::collection::vec(0usize..64, 0..6),
    ) {
        let defs = missions();
        let rules = rules(&defs);
        let mut p = Memory::default();
        for batch in batches(&arrivals, &cuts) {
            p.apply(&rules, batch);
        }
        let now = p.max_time.expect("a batch ran");
        let wm = now.saturating_sub(LATENESS);
        let s = settled(&p);
        for (c, record) in &p.citizens {
            let (happened, _) = record.events.as_of(now);
            for m in &defs {
                let eval = m.evaluate(&happened, wm);
                let last = s.last_views.get(&(m.id().to_string(), c.clone()));
                match last {
                    Some(v) => prop_assert_eq!(v, &visible(&eval)),
                    None => prop_assert!(!eval.in_cohort && eval.snapshots.is_empty()),
                }
            }
        }
    }

    /// A batch applied a second time changes nothing: its events are all
    /// held, and the watermark has not moved.
    #[test]
    fn a_batch_applied_twice_changes_nothing(arrivals in journey()) {
        let defs = missions();
        let rules = rules(&defs);
        let mut p = Memory::default();
        let first = p.apply(&rules, arrivals.clone());
        let before = settled(&p);
        let again = p.apply(&rules, arrivals);
        prop_assert!(again.records.is_empty() && again.views.is_empty());
        prop_assert!(again.timers_set.is_empty() && again.timers_cleared.is_empty());
        prop_assert_eq!(again.max_time, first.max_time);
        prop_assert_eq!(before, settled(&p));
    }

    /// The order departments' records arrive in does not change the result.
    #[test]
    fn the_order_of_arrival_within_a_batch_does_not_change_the_result(
        arrivals in journey(),
        seed in any::<u64>(),
    ) {
        let defs = missions();
        let rules = rules(&defs);
        let mut shuffled = arrivals.clone();
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let (mut a, mut b) = (Memory::default(), Memory::default());
        a.apply(&rules, arrivals);
        b.apply(&rules, shuffled);
        prop_assert_eq!(settled(&a), settled(&b));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// The RocksDB partition (keys, timer ranges, record encoding) reads
    /// back exactly what the in-memory one holds, batch after batch.
    #[test]
    fn the_rocksdb_partition_agrees_with_the_in_memory_one(
        arrivals in journey(),
        cuts in proptest::collection::vec(0usize..64, 0..6),
    ) {
        let defs = missions();
        let mut rules = rules(&defs);
        // Timers fire two at a time: the stored position is exercised too.
        rules.max_timers = 2;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("opens");
        let p = 3;
        let mut memory = Memory::default();
        for batch in batches(&arrivals, &cuts) {
            let mut batch = batch;
            loop {
                let stored = partition::work(&StorePartition { store: &store, partition: p }, &rules, batch.clone())
                    .expect("reads");
                let expected = memory.apply(&rules, batch);
                prop_assert_eq!(&stored, &expected);
                let mut b = store.batch();
                for (k, v) in write_ops(p, &stored).expect("encodes") {
                    match v {
                        Some(v) => b.put(k, v),
                        None => b.delete(k),
                    }
                }
                store.write(b).expect("writes");
                prop_assert_eq!(
                    StorePartition { store: &store, partition: p }.fired_upto().expect("reads"),
                    memory.fired_upto
                );
                if !stored.backlog() {
                    break;
                }
                batch = Vec::new();
            }
        }
        let reader = StorePartition { store: &store, partition: p };
        prop_assert_eq!(reader.max_time().expect("reads"), memory.max_time);
        prop_assert_eq!(
            reader.due_timers(Millis::MIN, Millis::MAX - 1, usize::MAX).expect("reads"),
            memory.timers.iter().cloned().collect::<Vec<_>>()
        );
        let keys: Vec<&CitizenKey> = memory.citizens.keys().collect();
        let records: Vec<CitizenRecord> = reader.records(&keys).expect("reads").into_iter().flatten().collect();
        prop_assert_eq!(records, memory.citizens.values().cloned().collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Event times and Kafka timestamps anywhere in the range of `i64` never
    /// overflow the step (debug builds check arithmetic), and event time
    /// never passes a record's timestamp plus the skew.
    #[test]
    fn extreme_times_and_timestamps_never_overflow_the_step(
        arrivals in journey(),
        times in proptest::collection::vec(prop_oneof![
            Just(i64::MIN), Just(i64::MAX), Just(0i64), any::<i64>()
        ], 2..8),
    ) {
        let defs = missions();
        let rules = rules(&defs);
        let mut p = Memory::default();
        let arrivals: Vec<Arrival> = arrivals
            .into_iter()
            .enumerate()
            .map(|(i, mut a)| {
                a.event.occurred_at = times[i % times.len()];
                a.timestamp = times[(i + 1) % times.len()];
                a
            })
            .collect();
        let mut bound = i64::MIN;
        for batch in arrivals.chunks(3) {
            for a in batch {
                bound = bound.max(a.timestamp.saturating_add(SKEW));
            }
            let out = p.apply(&rules, batch.to_vec());
            prop_assert!(out.max_time <= bound, "event time {} passed {}", out.max_time, bound);
        }
    }
}

/// Every department's lateness is [`LATENESS`] but the DfE's, 60 days.
fn slow_dfe() -> &'static Lateness {
    Box::leak(Box::new(Lateness {
        default: LATENESS,
        departments: [(joinery_domain::Department::Dfe, 60 * DAY_MS)].into(),
    }))
}

#[test]
fn each_mission_waits_for_the_slowest_department_it_reads() {
    let defs = missions();
    let lateness = slow_dfe();
    let rules = rules_with(&defs, lateness);
    let index = |id: &str| {
        defs.iter()
            .position(|m| m.id == id)
            .expect("a repository mission")
    };
    let (opportunity, safer) = (index("opportunity"), index("safer_streets"));
    let mut p = Memory::default();
    // Citizen 1 leaves education on day 0 (opportunity reads DfE and
    // HMRC); citizen 2 is released on day 0 and settled on day 1 (safer
    // streets reads MoJ, MHCLG and HMRC).
    p.apply(
        &rules,
        vec![
            any_event(1, 1, 0, 0, 1),
            any_event(2, 2, 7, 0, 0),
            any_event(2, 3, 8, 1, 0),
        ],
    );
    // A third citizen's event on day 200.
    let out = p.apply(&rules, vec![any_event(3, 4, 7, 200, 0)]);
    assert_eq!(rules.watermark(safer, out.max_time), T0 + 193 * DAY_MS);
    assert_eq!(
        rules.watermark(opportunity, out.max_time),
        T0 + 140 * DAY_MS
    );
    let status = |v: &MissionView, outcome: &str| {
        v.outcomes
            .iter()
            .find(|o| o.name == outcome)
            .map(|o| o.status)
    };
    let released = out
        .views
        .iter()
        .find(|v| v.mission == "safer_streets" && v.citizen_key == citizen(2))
        .expect("the timers of citizen 2 fired");
    assert_eq!(released.watermark, T0 + 193 * DAY_MS);
    assert_eq!(
        status(released, "employment_6w"),
        Some(joinery_domain::OutcomeState::NotAchieved),
        "safer streets is final up to day 193"
    );
    // The leaver's view changes (the NEET snapshot now sees them) but
    // their 180-day window is not final until the DfE's 60 days have passed.
    let leaver = opportunity_view(&out, 1).expect("in the NEET population at day 140");
    assert_eq!(leaver.watermark, T0 + 140 * DAY_MS);
    assert_eq!(
        status(leaver, "sustained_employment_180d"),
        Some(joinery_domain::OutcomeState::Pending)
    );
    // Day 241: the opportunity watermark passes day 180.
    let out = p.apply(&rules, vec![any_event(3, 5, 7, 241, 0)]);
    let leaver = opportunity_view(&out, 1).expect("decided");
    assert_eq!(leaver.watermark, T0 + 181 * DAY_MS);
    assert_eq!(
        status(leaver, "sustained_employment_180d"),
        Some(joinery_domain::OutcomeState::NotAchieved)
    );
}

#[test]
fn an_event_dated_at_the_watermark_is_late_as_a_status_decided_there_is_final() {
    let defs = missions();
    let rules = rules(&defs);
    let mut p = Memory::default();
    // A leaver on day 0; event time day 187: the watermark is day 180, the
    // window's end, and the outcome is final (not achieved).
    p.apply(&rules, vec![any_event(1, 1, 0, 0, 1)]);
    let decided = p.apply(&rules, vec![any_event(2, 2, 7, 187, 0)]);
    let view = opportunity_view(&decided, 1).expect("decided");
    assert!(view
        .outcomes
        .iter()
        .all(|o| o.status == joinery_domain::OutcomeState::NotAchieved));
    // A job dated day 180 exactly, the watermark, is late: counted so.
    let job = p.apply(&rules, vec![any_event(1, 3, 2, 180, 1)]);
    assert_eq!(
        job.counts.late,
        [(joinery_domain::Department::Hmrc, 1)].into()
    );
}

#[test]
fn data_later_than_its_lateness_is_counted_and_so_are_the_final_statuses_it_revises() {
    let defs = missions();
    let rules = rules(&defs);
    let mut p = Memory::default();
    p.apply(&rules, vec![any_event(1, 1, 0, 0, 1)]);
    let decided = p.apply(&rules, vec![any_event(2, 2, 7, 200, 0)]);
    let view = opportunity_view(&decided, 1).expect("decided");
    assert!(view
        .outcomes
        .iter()
        .all(|o| o.status == joinery_domain::OutcomeState::NotAchieved));
    assert!(decided.counts.late.is_empty() && decided.counts.revisions.is_empty());
    // HMRC reports, on day 200, a job started on day 20 and still open:
    // long after its 7 days' lateness. It is applied (late data still
    // revises), counted as late, and the revision of a final status is
    // counted for the mission.
    let late = p.apply(&rules, vec![any_event(1, 3, 2, 20, 1)]);
    let revised = opportunity_view(&late, 1).expect("revised");
    assert!(revised
        .outcomes
        .iter()
        .all(|o| o.status == joinery_domain::OutcomeState::Achieved));
    assert_eq!(
        late.counts.late,
        [(joinery_domain::Department::Hmrc, 1)].into()
    );
    let opportunity = defs
        .iter()
        .position(|m| m.id == "opportunity")
        .expect("a repository mission");
    assert_eq!(late.counts.revisions.get(&opportunity), Some(&1));
}

#[test]
fn an_achievement_the_watermark_has_not_reached_is_not_final_so_a_timely_correction_revises_nothing(
) {
    let defs = missions();
    let rules = rules(&defs);
    let mut p = Memory::default();
    // Left education on day 0; a job from day 20 to day 115, reported as it
    // happened. Kept 90 days on day 110, but the watermark is day 108.
    let end = any_event(1, 3, 3, 115, 1);
    let out = p.apply(
        &rules,
        vec![
            any_event(1, 1, 0, 0, 1),
            any_event(1, 2, 2, 20, 1),
            end.clone(),
        ],
    );
    assert_eq!(rules.watermark(0, out.max_time), T0 + 108 * DAY_MS);
    let view = opportunity_view(&out, 1).expect("in the cohort");
    let sustained = |v: &MissionView| {
        v.outcomes
            .iter()
            .find(|o| o.name == "sustained_employment_180d")
            .map(|o| o.status)
    };
    assert_eq!(
        sustained(view),
        Some(joinery_domain::OutcomeState::Pending),
        "not final: an earlier end reported within HMRC's lateness could undo it"
    );
    // HMRC corrects the end to day 109, within its 7 days: the job lasted
    // 89 days. No status reported final changes.
    let mut corrected = end;
    corrected.event.occurred_at = T0 + 109 * DAY_MS;
    corrected.event.recorded_at += DAY_MS;
    let out = p.apply(&rules, vec![corrected]);
    assert!(out.counts.revisions.is_empty() && out.counts.late.is_empty());
    // Another citizen's event on day 200: the window has closed.
    let out = p.apply(&rules, vec![any_event(2, 9, 7, 200, 0)]);
    let decided = opportunity_view(&out, 1).expect("decided");
    assert_eq!(
        sustained(decided),
        Some(joinery_domain::OutcomeState::NotAchieved)
    );
}

#[test]
fn timers_due_at_once_fire_a_bounded_number_per_step_and_end_the_same() {
    let defs = missions();
    let mut chunked_rules = rules(&defs);
    chunked_rules.max_timers = 2;
    let unbounded = rules(&defs);
    // Five leavers on day 0, each pending until day 180 (+ 7 days' lateness).
    let leavers: Vec<Arrival> = (1..=5u8).map(|c| any_event(c, c.into(), 0, 0, 1)).collect();
    let later = vec![any_event(9, 99, 7, 200, 0)];
    let (mut chunked, mut whole) = (Memory::default(), Memory::default());
    chunked.apply(&chunked_rules, leavers.clone());
    whole.apply(&unbounded, leavers);
    assert_eq!(chunked.timers.len(), 5);

    // Day 200: all five timers fall due at once.
    let outs = chunked.apply_draining(&chunked_rules, later.clone());
    whole.apply(&unbounded, later);
    let fired: Vec<usize> = outs
        .iter()
        .map(|o| {
            o.timers_cleared
                .iter()
                .filter(|(_, c)| *c != citizen(9))
                .count()
        })
        .collect();
    assert_eq!(
        fired,
        [2, 2, 1],
        "two at a time, each step written on its own"
    );
    assert!(outs[..2].iter().all(StepOutput::backlog));
    assert!(!outs[2].backlog() && chunked.fired_upto.is_none());
    assert!(outs.iter().all(|o| o.max_time == T0 + 200 * DAY_MS));
    // The same end as firing them all at once.
    assert_eq!(settled(&chunked), settled(&whole));
    for c in 1..=5u8 {
        let decided = chunked
            .published
            .iter()
            .rev()
            .find(|v| v.mission == "opportunity" && v.citizen_key == citizen(c))
            .expect("a view");
        assert!(decided
            .outcomes
            .iter()
            .all(|o| o.status == joinery_domain::OutcomeState::NotAchieved));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// "Final means final": after any journey, data within its
    /// department's lateness before the partition's event time (the DfE's
    /// 60 days, the others' 7) revises no status reported final, and is
    /// not counted late: a new event of any kind dated then, or a
    /// correction or retraction of an event dated then that moves it to
    /// another time then.
    #[test]
    fn data_within_its_departments_lateness_never_revises_a_final_status(
        arrivals in journey(),
        (c, kind, n) in (0u8..3, 0u8..9, 0u8..3),
        before in 0.0f64..1.0,
        (pick, amend, retract) in (any::<usize>(), any::<bool>(), any::<bool>()),
    ) {
        let defs = missions();
        let lateness = slow_dfe();
        let rules = rules_with(&defs, lateness);
        let mut p = Memory::default();
        p.apply(&rules, arrivals);
        let now = p.max_time.expect("a batch ran");
        let within = |e: &Event| {
            let allowed = lateness.of(e.event_type.department());
            e.occurred_at > now - allowed && e.occurred_at <= now
        };
        // The events held (their live versions) dated within lateness.
        let recent: Vec<&Event> = p
            .citizens
            .values()
            .flat_map(|r| r.events.iter())
            .filter(|e| within(e))
            .collect();
        let extra = if amend && !recent.is_empty() {
            // A correction (or retraction) of a recent event.
            let mut a = Arrival {
                event: recent[pick % recent.len()].clone(),
                timestamp: now,
                source: 0,
            };
            let allowed = lateness.of(a.event.event_type.department());
            a.event.occurred_at = now - ((allowed - 1) as f64 * before) as i64;
            a.event.recorded_at = now + 1;
            if retract {
                a.event.fields.insert(
                    joinery_domain::event::RETRACTED_FIELD.into(),
                    FieldValue::Bool(true),
                );
            }
            a
        } else {
            let mut a = any_event(c, 1_000_000, kind, 0, n);
            let allowed = lateness.of(a.event.event_type.department());
            a.event.occurred_at = now - ((allowed - 1) as f64 * before) as i64;
            a.event.recorded_at = a.event.occurred_at;
            a
        };
        let mut extra = extra;
        extra.timestamp = now;
        prop_assume!(within(&extra.event));
        let out = p.apply(&rules, vec![extra]);
        prop_assert_eq!(out.max_time, now, "the event does not move event time");
        prop_assert!(out.counts.late.is_empty());
        prop_assert!(out.counts.revisions.is_empty(), "revised: {:?}", out.views);
    }
}
