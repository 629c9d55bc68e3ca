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
//! - A status is reported decided (final) only when it was decided at or
//!   before the watermark, and the watermark has reached the anchor (the
//!   cohort membership itself is final): achieved once the watermark has reached the
//!   moment it was achieved (an achievement after the watermark may still
//!   be undone by data within the allowed lateness, say an earlier end of
//!   the job reported late, and is pending until then); not achieved once
//!   the watermark has passed the window's end and nothing in it can still
//!   qualify. Pending otherwise, with the deadline at which the watermark
//!   alone could decide it.
//! - A snapshot is read at the watermark, for every citizen whatever the
//!   cohort: in its population when some event of theirs has happened by
//!   the watermark and their age then is in range (unknown age is outside);
//!   counted when its `open` intervals are all open then and none of its
//!   `not_open` ones is. Only events at or before the watermark count, so
//!   its next deadline is the next event time or birthday month that could
//!   change it.

use std::collections::BTreeMap;

use joinery_domain::event::DAY_MS;
use joinery_domain::{
    Event, FieldValue, Millis, MissionId, OutcomeState, OutcomeView, SnapshotView, YearMonth,
};

use crate::definition::{Capability, Condition, EventFilter, MissionDef, Outcome, Snapshot};
use crate::{CitizenEvents, Evaluation, Mission};

fn matches(f: &EventFilter, e: &Event) -> bool {
    e.event_type == f.event && f.conditions.iter().all(|(k, p)| p.test(e.fields.get(k)))
}

/// How far an event outcome's condition got in its window: what achieved
/// it, if anything, and what could still.
struct Attempt {
    /// (qualifying time, decided at) of the earliest decided achievement.
    achieved: Option<(Millis, Millis)>,
    /// When intervals started in the window, still open, would be sustained.
    open_deadlines: Vec<Millis>,
    /// The latest end of an interval that started in the window but ended
    /// too soon (when a not-achieved was decided, at the earliest).
    latest_short_end: Millis,
}

/// Age in whole years at `at`, from a birth month (the day is not held, so
/// a citizen counts as a year older from the start of their birth month).
pub fn age_at(birth: YearMonth, at: Millis) -> Option<i64> {
    let months = birth.months_until(YearMonth::of_millis(at)?);
    (months >= 0).then_some(months / 12)
}

/// The instant (UTC) from which someone born in `birth` counts as `years`
/// old under [`age_at`]: the start of their birth month that year.
fn turns(birth: YearMonth, years: i64) -> Option<Millis> {
    let year = i64::from(birth.year()).checked_add(years)?;
    YearMonth::new(i32::try_from(year).ok()?, birth.month()).map(YearMonth::start_millis)
}

fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Intervals of an interval capability: (start event, end time if ended).
/// A start is ended by the first end event, at or after it, with the same
/// value of `key`. O(n log n): ends are grouped by that value, in event
/// time, and each start looks its end up by binary search.
fn intervals<'a>(
    events: &'a CitizenEvents,
    start: &EventFilter,
    end: &EventFilter,
    key: &str,
) -> Vec<(&'a Event, Option<Millis>)> {
    let mut ends: BTreeMap<&FieldValue, Vec<Millis>> = BTreeMap::new();
    for e in events.iter().filter(|e| matches(end, e)) {
        if let Some(v) = e.fields.get(key) {
            ends.entry(v).or_default().push(e.occurred_at);
        }
    }
    events
        .iter()
        .filter(|e| matches(start, e))
        .map(|s| {
            let ended = s
                .fields
                .get(key)
                .and_then(|id| ends.get(id))
                .and_then(|times| {
                    let first = times.partition_point(|t| *t < s.occurred_at);
                    times.get(first).copied()
                });
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
            Capability::Interval { .. } | Capability::Count(_) | Capability::Duration { .. } => {
                None
            }
        }
    }

    /// The value at `at` of a count (matching events at or before it) or a
    /// duration (whole days the interval was open up to it, overlapping
    /// intervals counted once).
    fn measure_at(&self, name: &str, events: &CitizenEvents, at: Millis) -> i64 {
        match self.capability(name) {
            Capability::Count(f) => events
                .iter()
                .take_while(|e| e.occurred_at <= at)
                .filter(|e| matches(f, e))
                .count() as i64,
            Capability::Duration {
                start,
                end,
                match_on,
                ..
            } => {
                let mut spans: Vec<(Millis, Millis)> = intervals(events, start, end, match_on)
                    .into_iter()
                    .filter(|(s, _)| s.occurred_at <= at)
                    .map(|(s, e)| (s.occurred_at, e.map_or(at, |e| e.min(at))))
                    .collect();
                spans.sort_unstable();
                let (mut total, mut reach): (Millis, Millis) = (0, Millis::MIN);
                for (s, e) in spans {
                    let s = s.max(reach);
                    if e > s {
                        total = total.saturating_add(e.saturating_sub(s));
                        reach = e;
                    }
                }
                total / DAY_MS
            }
            _ => 0,
        }
    }

    /// Whether interval capability `name` is open at `at`: started at or
    /// before it and not ended by then.
    fn open_at(&self, name: &str, events: &CitizenEvents, at: Millis) -> bool {
        let Capability::Interval {
            start,
            end,
            match_on,
        } = self.capability(name)
        else {
            return false;
        };
        intervals(events, start, end, match_on)
            .iter()
            .any(|(s, e)| s.occurred_at <= at && e.is_none_or(|e| e > at))
    }

    /// Whether `c` holds at `at`: an occurrence capability that happened at
    /// or before it, an interval open then, or their combination.
    fn holds_at(&self, c: &Condition, events: &CitizenEvents, at: Millis) -> bool {
        match c {
            Condition::Capability(name) => match self.capability(name) {
                Capability::First(f) | Capability::Last(f) => events
                    .iter()
                    .take_while(|e| e.occurred_at <= at)
                    .any(|e| matches(f, e)),
                Capability::Interval { .. } => self.open_at(name, events, at),
                // Refused in conditions when the definitions load.
                Capability::Count(_) | Capability::Duration { .. } => false,
            },
            Condition::AnyOf { any_of } => any_of.iter().any(|c| self.holds_at(c, events, at)),
            Condition::AllOf { all_of } => all_of.iter().all(|c| self.holds_at(c, events, at)),
            Condition::Not { not } => !self.holds_at(not, events, at),
        }
    }

    /// Every snapshot whose population the citizen is in at the watermark,
    /// and the next watermark at which any snapshot could change.
    fn snapshots(
        &self,
        events: &CitizenEvents,
        watermark: Millis,
    ) -> (Vec<SnapshotView>, Option<Millis>) {
        if self.snapshots.is_empty() {
            return (Vec::new(), None);
        }
        let birth = events.iter().find_map(|e| e.birth_year_month);
        // Events iterate in event time: the first tells whether the citizen
        // is known by the watermark, the first after it when that changes.
        let known = events
            .iter()
            .next()
            .is_some_and(|e| e.occurred_at <= watermark);
        let next_event = events
            .iter()
            .map(|e| e.occurred_at)
            .find(|t| *t > watermark);
        let mut views = Vec::new();
        let mut next = None;
        for s in &self.snapshots {
            let in_age = match s.age {
                None => true,
                Some((min, max)) => {
                    let Some(b) = birth else { continue };
                    let (enters, leaves) = (turns(b, min), turns(b, max + 1));
                    if leaves.is_none_or(|l| l <= watermark) {
                        continue; // too old, for good (or no valid birth month)
                    }
                    next = earliest(next, enters.filter(|t| *t > watermark));
                    next = earliest(next, leaves);
                    enters.is_some_and(|t| t <= watermark)
                }
            };
            next = earliest(next, next_event);
            if !(known && in_age) {
                continue;
            }
            views.push(self.snapshot(s, events, watermark));
        }
        (views, next)
    }

    fn snapshot(&self, s: &Snapshot, events: &CitizenEvents, watermark: Millis) -> SnapshotView {
        let holds = s.open.iter().all(|n| self.open_at(n, events, watermark))
            && !s
                .not_open
                .iter()
                .any(|n| self.open_at(n, events, watermark))
            && s.state
                .as_ref()
                .is_none_or(|c| self.holds_at(c, events, watermark));
        SnapshotView {
            name: s.id.clone(),
            holds,
            area_code: events
                .iter()
                .take_while(|e| e.occurred_at <= watermark)
                .filter_map(|e| e.area_code)
                .last(),
        }
    }

    /// An event outcome's condition in its window: a capability, or the
    /// earliest of `any_of` them.
    fn attempt(
        &self,
        o: &Outcome,
        condition: &Condition,
        events: &CitizenEvents,
        window: (Millis, Millis),
        watermark: Millis,
    ) -> Attempt {
        let (window_start, window_end) = window;
        let in_window = |t: Millis| t >= window_start && t <= window_end;
        let mut out = Attempt {
            achieved: None,
            open_deadlines: Vec::new(),
            latest_short_end: window_end,
        };
        let name = match condition {
            Condition::Capability(name) => name,
            Condition::AnyOf { any_of } => {
                for c in any_of {
                    let a = self.attempt(o, c, events, window, watermark);
                    if let Some(got) = a.achieved {
                        if out.achieved.is_none_or(|(_, decided)| got.1 < decided) {
                            out.achieved = Some(got);
                        }
                    }
                    out.open_deadlines.extend(a.open_deadlines);
                    out.latest_short_end = out.latest_short_end.max(a.latest_short_end);
                }
                return out;
            }
            // Refused in event outcomes when the definitions load.
            Condition::AllOf { .. } | Condition::Not { .. } => return out,
        };
        match self.capability(name) {
            // Refused as conditions when the definitions load.
            Capability::Count(_) | Capability::Duration { .. } => {}
            Capability::First(f) | Capability::Last(f) => {
                out.achieved = events
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
                        out.achieved = Some((s.occurred_at, s.occurred_at));
                        break;
                    };
                    let sustained_at = s.occurred_at.saturating_add(days.saturating_mul(DAY_MS));
                    match ended {
                        Some(e) if e >= sustained_at => {
                            out.achieved = Some((s.occurred_at, sustained_at));
                            break;
                        }
                        Some(e) => out.latest_short_end = out.latest_short_end.max(e),
                        None if watermark >= sustained_at => {
                            out.achieved = Some((s.occurred_at, sustained_at));
                            break;
                        }
                        None => out.open_deadlines.push(sustained_at),
                    }
                }
            }
        }
        out
    }

    fn outcome(
        &self,
        o: &Outcome,
        events: &CitizenEvents,
        window_start: Millis,
        watermark: Millis,
    ) -> (OutcomeView, Option<Millis>) {
        // Saturating: event times come from departments and may be extreme.
        let window_end = window_start.saturating_add(o.within_days.saturating_mul(DAY_MS));
        if o.at_days.is_some() {
            return self.state_outcome(o, events, (window_start, window_end), watermark);
        }
        let Attempt {
            achieved,
            open_deadlines,
            latest_short_end,
        } = self.attempt(
            o,
            &o.condition,
            events,
            (window_start, window_end),
            watermark,
        );
        let (status, decided_at, duration_days, deadline) = match achieved {
            // Achieved after the watermark: not final yet. Decided when the
            // watermark reaches it, or earlier if an earlier open interval
            // is sustained first.
            Some((_, decided)) if decided > watermark => (
                OutcomeState::Pending,
                None,
                None,
                open_deadlines.iter().copied().chain([decided]).min(),
            ),
            Some((at, decided)) => (
                OutcomeState::Achieved,
                Some(decided),
                Some(at.saturating_sub(window_start) / DAY_MS),
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

impl MissionDef {
    /// A state outcome: decided when the watermark reaches the window's
    /// end (`at_days` after its start), achieved if the condition holds then.
    fn state_outcome(
        &self,
        o: &Outcome,
        events: &CitizenEvents,
        (window_start, at): (Millis, Millis),
        watermark: Millis,
    ) -> (OutcomeView, Option<Millis>) {
        let (status, decided_at, deadline) = if watermark >= at {
            let status = if self.holds_at(&o.condition, events, at) {
                OutcomeState::Achieved
            } else {
                OutcomeState::NotAchieved
            };
            (status, Some(at), None)
        } else {
            (OutcomeState::Pending, None, Some(at))
        };
        (
            OutcomeView {
                name: o.id.clone(),
                status,
                anchor_at: window_start,
                decided_at,
                duration_days: None,
            },
            deadline,
        )
    }

    /// The anchor event when the citizen is in the cohort.
    fn cohort_anchor<'a>(&self, events: &'a CitizenEvents) -> Option<&'a Event> {
        let anchor = self.occurrence(&self.cohort.anchor, events)?;
        let at = anchor.occurred_at;
        if let Some((min, max)) = self.cohort.age {
            let birth = events.iter().find_map(|e| e.birth_year_month);
            let age = birth.and_then(|b| age_at(b, at))?;
            if age < min || age > max {
                return None;
            }
        }
        let in_range = |r: &crate::definition::Requirement| {
            let v = self.measure_at(&r.capability, events, at);
            r.at_least.is_none_or(|min| v >= min) && r.at_most.is_none_or(|max| v <= max)
        };
        (self
            .cohort
            .active_at_anchor
            .iter()
            .all(|name| self.open_at(name, events, at))
            && self
                .cohort
                .at_anchor
                .as_ref()
                .is_none_or(|c| self.holds_at(c, events, at))
            && self.cohort.require.iter().all(in_range))
        .then_some(anchor)
    }
}

impl Mission for MissionDef {
    fn id(&self) -> &MissionId {
        &self.id
    }

    fn evaluate(&self, events: &CitizenEvents, watermark: Millis) -> Evaluation {
        let (snapshots, snapshot_deadline) = self.snapshots(events, watermark);
        let Some(anchor) = self.cohort_anchor(events) else {
            return Evaluation {
                in_cohort: false,
                area_code: None,
                cohort_month: None,
                outcomes: vec![],
                snapshots,
                next_deadline: snapshot_deadline,
            };
        };
        let anchor_at = anchor.occurred_at;
        let mut outcomes = Vec::with_capacity(self.outcomes.len());
        let mut next_deadline: Option<Millis> = snapshot_deadline;
        for o in &self.outcomes {
            let start = match &o.from {
                None => anchor_at,
                Some(f) => match self.occurrence(f, events) {
                    Some(e) => e.occurred_at,
                    None => continue,
                },
            };
            let (mut view, mut deadline) = self.outcome(o, events, start, watermark);
            if anchor_at > watermark && view.status != OutcomeState::Pending {
                // Membership of the cohort is not final until the watermark
                // reaches the anchor (a retraction or correction of the
                // anchor event on time could undo it), so neither is a
                // status, even one whose window opened earlier (`from`).
                view.status = OutcomeState::Pending;
                view.decided_at = None;
                view.duration_days = None;
                deadline = Some(anchor_at);
            }
            next_deadline = earliest(next_deadline, deadline);
            outcomes.push(view);
        }
        Evaluation {
            in_cohort: true,
            area_code: anchor
                .area_code
                .or_else(|| events.iter().find_map(|e| e.area_code)),
            cohort_month: YearMonth::of_millis(anchor_at),
            outcomes,
            snapshots,
            next_deadline,
        }
    }
}

#[cfg(test)]
mod tests;
