//! The partition step: the heart of the processor, as a function of data.
//!
//! Place in the data flow: the consume loop decodes a batch of department
//! records and groups them by source partition; for each partition,
//! [`crate::partition::work`] reads what the step needs from the state
//! (through [`crate::partition::PartitionReader`]) and calls [`step`], whose
//! output the shell writes to RocksDB in one batch with the offsets and the
//! outbox, then publishes. The step itself touches no Kafka, no RocksDB and
//! no clock: the same records and stored state give the same output, which
//! is what makes a replay, a rebuild and a crash recovery agree with the live
//! run. Its properties are tested on their own (`step/tests.rs`).
//!
//! Per partition and batch it:
//! 1. applies each event to its citizen (an event already held changes
//!    nothing);
//! 2. advances the partition's event time: the greatest event time seen,
//!    each record counting at most its Kafka timestamp plus the allowed
//!    clock skew ([`Rules::event_time`]), so that no producer can push time
//!    past the moment its records reached the log; and fires the timers it
//!    passes (timers are kept in event time);
//! 3. evaluates every mission for each changed citizen at the mission's
//!    watermark (event time minus the greatest allowed lateness of the
//!    departments it reads, [`Rules::watermark`]), on the events that had
//!    happened by the partition's event time (a future-dated event is
//!    kept, and a timer wakes the citizen when event time reaches it), and
//!    returns a view for each evaluation a reader could see change, with a
//!    version derived from the log alone ([`view_version`]);
//! 4. returns each changed citizen's record and the timers to set and clear,
//!    and counts what operators watch: events that arrived after their
//!    department's lateness, and views that revise a status already
//!    reported final.

use std::collections::BTreeMap;

use joinery_domain::{CitizenKey, Department, Event, EventType, Millis, MissionView, OutcomeState};
use joinery_engine::{Evaluation, Mission, MissionDef};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::Lateness;
use crate::state::{CitizenRecord, Published};

#[cfg(test)]
mod tests;

/// The rules every batch is worked by: the compiled missions and the allowed
/// lateness. Only these and the log decide the output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules<'a> {
    /// The missions evaluated for every changed citizen.
    pub(crate) missions: &'a [MissionDef],
    /// Each mission's allowed lateness (the greatest of the departments it
    /// reads), in the order of `missions`: how far behind the partition's
    /// event time its watermark stays.
    pub(crate) mission_lateness: &'a [Millis],
    /// Each department's allowed lateness, to count the events that arrive
    /// after it.
    pub(crate) lateness: &'a Lateness,
    /// How far ahead of its Kafka timestamp a record's event time may move
    /// the partition's event time.
    pub(crate) max_clock_skew: Millis,
    /// The most events one citizen may have; events past it are refused.
    pub(crate) max_events_per_citizen: usize,
    /// The most timers one step fires: more due ones wait for the next
    /// step (the shell runs steps without records until none is left), so
    /// that a jump of event time over a crowd of deadlines never works
    /// them all at once.
    pub(crate) max_timers: usize,
}

/// Why the step refused an event (it becomes a dead letter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// Another version of the event with the same `recorded_at` is held:
    /// the two cannot be ordered.
    #[error("another version of this event (same department, event_id and recorded_at) is held; send a correction with a later recorded_at")]
    ConflictingVersion,
    /// The citizen already has the most events one citizen may have.
    #[error("the citizen already has {cap} events, the most one citizen may have (max_events_per_citizen); a department sending this many for one identifier is likely sending other people's events under it")]
    CitizenEventCap {
        /// The cap.
        cap: usize,
    },
}

impl Refusal {
    /// The stable reason code for dead-letter headers and metrics.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::CitizenEventCap { .. } => "citizen_event_cap",
            Refusal::ConflictingVersion => "conflicting_version",
        }
    }
}

/// One decoded department event of the batch, in consumed order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Arrival {
    /// The event.
    pub(crate) event: Event,
    /// Its Kafka timestamp: when it was produced (bounds how far it moves
    /// event time; freshness).
    pub(crate) timestamp: Millis,
    /// Its index among the batch's records of the partition, to name it if
    /// it is refused.
    pub(crate) source: usize,
}

/// Where a partition's event time stands before and after a batch, decided
/// before anything is read but the stored event time, so that the reader
/// knows which timers fall due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The partition's event time once the batch is applied (stored): the
    /// greatest [`Rules::event_time`] of its records. Events dated after it
    /// have not happened yet.
    pub(crate) max_time: Millis,
    /// The partition's event time before the batch (`Millis::MIN` before
    /// its first).
    pub(crate) previous: Millis,
    /// The event time up to which every timer has fired: the previous
    /// event time, unless an earlier step left due timers for later.
    pub(crate) fired_upto: Millis,
}

impl Plan {
    /// Whether timers in `(fired_upto, max_time]` fall due.
    pub(crate) fn fires_timers(&self) -> bool {
        self.max_time > self.fired_upto
    }
}

impl Rules<'_> {
    /// How far a record moves its partition's event time: its event time,
    /// but at most its Kafka timestamp plus the allowed clock skew. An event
    /// dated 9999-12-31, or an enrolment reported in July for September,
    /// moves it only to when it was published.
    pub(crate) fn event_time(&self, a: &Arrival) -> Millis {
        a.event
            .occurred_at
            .min(a.timestamp.saturating_add(self.max_clock_skew))
    }

    /// The event-time plan for a batch, from the stored event time (`None`
    /// before the partition's first batch) and the time timers have fired
    /// up to (`None`: up to the stored event time).
    pub(crate) fn plan(
        &self,
        stored_max_time: Option<Millis>,
        fired_upto: Option<Millis>,
        arrivals: &[Arrival],
    ) -> Plan {
        let stored = stored_max_time.unwrap_or(Millis::MIN);
        let seen = arrivals
            .iter()
            .map(|a| self.event_time(a))
            .max()
            .unwrap_or(Millis::MIN);
        Plan {
            max_time: stored.max(seen),
            previous: stored,
            fired_upto: fired_upto.unwrap_or(stored).min(stored),
        }
    }

    /// Mission `i`'s watermark at partition event time `max_time`: what
    /// its statuses are final up to. No event within the allowed lateness
    /// of any department the mission reads can change a status decided at
    /// it.
    pub(crate) fn watermark(&self, i: usize, max_time: Millis) -> Millis {
        max_time.saturating_sub(self.mission_lateness[i])
    }
}

/// What the step reads: the stored records of the batch's citizens and of
/// the citizens whose timers fall due, and those timers.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Stored records by citizen; a citizen not here has none yet.
    pub(crate) citizens: FxHashMap<CitizenKey, CitizenRecord>,
    /// The first [`Rules::max_timers`] timers in `(plan.fired_upto,
    /// plan.max_time]` (event time), in stored order (time, then citizen).
    pub(crate) due_timers: Vec<(Millis, CitizenKey)>,
    /// Whether more timers are due than `due_timers` holds.
    pub(crate) more_timers: bool,
}

/// Events applied and ignored in a batch, by event type, and what late
/// data revised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EventCounts {
    /// (event type, applied) → how many: `false` counts events already held.
    pub(crate) by_type: BTreeMap<(EventType, bool), u64>,
    /// Events applied after their department's allowed lateness had passed
    /// (dated before the partition's event time less that lateness): they
    /// may revise figures already reported final.
    pub(crate) late: BTreeMap<Department, u64>,
    /// Views, by mission index, that change the status of an outcome that
    /// was already decided (final): the revisions late data made.
    pub(crate) revisions: BTreeMap<usize, u64>,
}

/// Everything one batch changes in one partition, before it is written.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct StepOutput {
    /// The greatest event time seen, to store (each mission's watermark
    /// follows from it, [`Rules::watermark`]).
    pub(crate) max_time: Millis,
    /// The event time every timer has fired up to, to store: `max_time`,
    /// unless due timers are left for the next step ([`StepOutput::backlog`]).
    pub(crate) fired_upto: Millis,
    /// Changed citizens' records, in the order they were first touched.
    pub(crate) records: Vec<(CitizenKey, CitizenRecord)>,
    /// Timers to delete: those that fired and those replaced.
    pub(crate) timers_cleared: Vec<(Millis, CitizenKey)>,
    /// Timers to set (written after the deletes).
    pub(crate) timers_set: Vec<(Millis, CitizenKey)>,
    /// Views to publish, in order (a citizen's views keep their order).
    pub(crate) views: Vec<MissionView>,
    /// Events applied and ignored, for the metrics.
    pub(crate) counts: EventCounts,
    /// Events refused (by [`Arrival::source`]), to dead-letter.
    pub(crate) refused: Vec<(usize, Refusal)>,
}

impl StepOutput {
    /// Whether due timers are left for another step (without records).
    pub(crate) fn backlog(&self) -> bool {
        self.fired_upto < self.max_time
    }
}

/// A view's version: the watermark it was evaluated at (ms, 42 bits) then
/// the number of event versions behind it (21 bits; corrections and
/// retractions count). A visible change needs
/// a new event or a higher watermark, so versions strictly increase per
/// citizen; and they depend only on the log, so an instance that rebuilds a
/// partition from the log (after a crash, a rebalance or a rebuild) produces
/// the same versions, and projections keep the newest view whoever sent it.
pub fn view_version(watermark: Millis, distinct_events: usize) -> i64 {
    let w = watermark.clamp(0, (1 << 42) - 1);
    let n = (distinct_events as i64).min((1 << 21) - 1);
    (w << 21) | n
}

/// Whether a reader could see the difference between the evaluation last
/// published (if any) and a new one. `next_deadline` is the processor's own
/// business and is not published.
fn visible_change(previous: Option<&Published>, eval: &Evaluation) -> bool {
    match previous {
        None => eval.in_cohort || !eval.snapshots.is_empty(),
        Some(prev) => {
            let a = &prev.evaluation;
            (
                a.in_cohort,
                &a.area_code,
                &a.cohort_month,
                &a.outcomes,
                &a.snapshots,
            ) != (
                eval.in_cohort,
                &eval.area_code,
                &eval.cohort_month,
                &eval.outcomes,
                &eval.snapshots,
            )
        }
    }
}

/// Whether `eval` changes the status of an outcome that `previous` had
/// decided (achieved or not achieved): a revision of a figure reported
/// final, which only data later than its departments' lateness (or a
/// correction or retraction) can make.
fn revises_final(previous: &Evaluation, eval: &Evaluation) -> bool {
    previous.outcomes.iter().any(|was| {
        was.status != OutcomeState::Pending
            && eval
                .outcomes
                .iter()
                .find(|now| now.name == was.name)
                .is_none_or(|now| now.status != was.status)
    })
}

/// Works one partition's share of a batch; see the module docs. `loaded`
/// must hold every stored record of the citizens of `arrivals` and of
/// `loaded.due_timers` (a citizen without a record is new).
pub(crate) fn step(
    rules: &Rules<'_>,
    plan: &Plan,
    loaded: Loaded,
    arrivals: Vec<Arrival>,
) -> StepOutput {
    let Loaded {
        mut citizens,
        due_timers,
        more_timers,
    } = loaded;
    let fired_upto = match (more_timers, due_timers.last()) {
        // Every timer at or before the last one's time less 1 ms has fired
        // (the rest at its time are read again, those fired being gone).
        (true, Some((last, _))) => last.saturating_sub(1).max(plan.fired_upto),
        _ => plan.max_time,
    };
    let mut out = StepOutput {
        max_time: plan.max_time,
        fired_upto,
        ..StepOutput::default()
    };
    // Changed citizens, in first-touched order, and the same as a set.
    let mut dirty: Vec<CitizenKey> = Vec::new();
    let mut is_dirty: FxHashSet<CitizenKey> = FxHashSet::default();
    let mut fired: FxHashSet<CitizenKey> = FxHashSet::default();
    // The record that moves the watermark (the first consumed with the
    // greatest event time): the cause of the timers it fires, for
    // freshness. Only `ingested_at` depends on it; which record it is can
    // differ between runs when topics interleave differently.
    let mut seen = Millis::MIN;
    let mut watermark_cause = 0;
    for arrival in arrivals {
        let time = rules.event_time(&arrival);
        let Arrival {
            event,
            timestamp,
            source,
        } = arrival;
        if time > seen {
            seen = time;
            watermark_cause = timestamp;
        }
        let event_type = event.event_type;
        let citizen = event.citizen_key.clone();
        let record = citizens.entry(citizen.clone()).or_default();
        if record.events.conflicts(&event) {
            out.refused.push((source, Refusal::ConflictingVersion));
            continue;
        }
        if record.events.revisions() >= rules.max_events_per_citizen
            && !record.events.holds_version(&event)
        {
            out.refused.push((
                source,
                Refusal::CitizenEventCap {
                    cap: rules.max_events_per_citizen,
                },
            ));
            continue;
        }
        // Late: dated at or before the partition's event time less its
        // department's lateness (at or before a watermark, where statuses
        // are final). A correction or retraction is as late as the earlier
        // of the version it replaces and itself.
        let changes_from = record
            .events
            .counted_at(&event)
            .map_or(event.occurred_at, |held| held.min(event.occurred_at));
        let late = changes_from
            <= plan
                .previous
                .saturating_sub(rules.lateness.of(event_type.department()));
        let applied = record.events.insert(event);
        if applied {
            if late {
                *out.counts.late.entry(event_type.department()).or_default() += 1;
            }
            record.ingested_at = record.ingested_at.max(timestamp);
            if is_dirty.insert(citizen.clone()) {
                dirty.push(citizen);
            }
        }
        *out.counts.by_type.entry((event_type, applied)).or_default() += 1;
    }

    if plan.fires_timers() {
        for (deadline, citizen) in due_timers {
            citizens.entry(citizen.clone()).or_default().timer = None;
            fired.insert(citizen.clone());
            out.timers_cleared.push((deadline, citizen.clone()));
            if is_dirty.insert(citizen.clone()) {
                dirty.push(citizen);
            }
        }
    }

    for citizen in dirty {
        let mut record = citizens
            .remove(&citizen)
            .expect("every dirty citizen was loaded or created above");
        // What a changed view reflects: the citizen's own newest event,
        // or, when a timer fired, the record that moved the watermark.
        let cause = if fired.contains(&citizen) {
            record.ingested_at.max(watermark_cause)
        } else {
            record.ingested_at
        };
        // The history as it stood at the partition's event time; a
        // future-dated event wakes the citizen when event time reaches it.
        // Timers are in event time: a mission's deadline falls due when
        // event time passes it plus the mission's lateness.
        let (events, next_event) = record.events.as_of(plan.max_time);
        let mut next_timer: Option<Millis> = next_event;
        for (i, mission) in rules.missions.iter().enumerate() {
            let wm = rules.watermark(i, plan.max_time);
            let eval = mission.evaluate(&events, wm);
            let due = eval
                .next_deadline
                .map(|d| d.saturating_add(rules.mission_lateness[i]));
            next_timer = match (next_timer, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let previous = record.views.get(mission.id().as_str());
            if !visible_change(previous, &eval) {
                continue;
            }
            if previous.is_some_and(|p| revises_final(&p.evaluation, &eval)) {
                *out.counts.revisions.entry(i).or_default() += 1;
            }
            let version = view_version(wm, record.events.revisions());
            if previous.is_some_and(|p| p.version >= version) {
                // Cannot happen: a visible change needs a new event or a higher watermark.
                tracing::error!(citizen = %citizen, version, "view version did not increase; view not published");
                continue;
            }
            out.views.push(MissionView {
                mission: mission.id().clone(),
                citizen_key: citizen.clone(),
                version,
                watermark: wm,
                in_cohort: eval.in_cohort,
                area_code: eval.area_code,
                cohort_month: eval.cohort_month,
                outcomes: eval.outcomes.clone(),
                snapshots: eval.snapshots.clone(),
                ingested_at: cause,
            });
            record.views.insert(
                mission.id().to_string(),
                Published {
                    version,
                    evaluation: eval,
                },
            );
        }
        if record.timer != next_timer {
            if let Some(old) = record.timer {
                out.timers_cleared.push((old, citizen.clone()));
            }
            if let Some(new) = next_timer {
                out.timers_set.push((new, citizen.clone()));
            }
            record.timer = next_timer;
        }
        out.records.push((citizen, record));
    }
    out
}
