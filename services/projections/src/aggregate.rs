//! Incremental outcome metrics. Each citizen's latest view is a
//! *contribution*; applying a newer view subtracts the old contribution and
//! adds the new one, and a version at or below the applied one is ignored, so
//! redelivery and replays never double count.

use std::collections::BTreeMap;

use joinery_domain::{Millis, MissionView, OutcomeState};
use serde::{Deserialize, Serialize};

/// What one citizen's view adds to the metrics: the view's typed values
/// (checked when the view was decoded) kept as the text that keys the
/// figures' groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// Version of the view this contribution came from.
    pub version: i64,
    /// Whether the citizen is in the cohort (else it contributes nothing).
    pub in_cohort: bool,
    /// Area for the breakdown.
    pub area_code: Option<String>,
    /// Cohort month for the trend.
    pub cohort_month: Option<String>,
    /// (outcome, status, duration in days when achieved).
    pub outcomes: Vec<(String, OutcomeState, Option<i64>)>,
    /// (snapshot, whether it holds, area) for each snapshot whose population
    /// the citizen is in, whether or not they are in the cohort.
    #[serde(default)]
    pub snapshots: Vec<(String, bool, Option<String>)>,
    /// The view-topic partition it came from (`None` in state saved before
    /// it was kept): a rebuild's reset drops a partition's contributions.
    #[serde(default)]
    pub partition: Option<i32>,
}

impl From<&MissionView> for Contribution {
    fn from(v: &MissionView) -> Contribution {
        Contribution {
            version: v.version,
            in_cohort: v.in_cohort,
            area_code: v.area_code.map(String::from),
            cohort_month: v.cohort_month.map(String::from),
            outcomes: v
                .outcomes
                .iter()
                .map(|o| (o.name.to_string(), o.status, o.duration_days))
                .collect(),
            snapshots: v
                .snapshots
                .iter()
                .map(|s| (s.name.to_string(), s.holds, s.area_code.map(String::from)))
                .collect(),
            partition: None,
        }
    }
}

/// Counts of one outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    /// Citizens whose outcome is still open.
    pub pending: i64,
    /// Citizens who achieved it.
    pub achieved: i64,
    /// Citizens whose deadline passed without it.
    pub not_achieved: i64,
    /// Days from anchor to achievement: days → citizens (exact quantiles).
    pub durations: BTreeMap<i64, i64>,
}

/// Counts of a cohort (whole mission, one area or one month).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Citizens in the cohort.
    pub cohort: i64,
    /// Per outcome.
    pub outcomes: BTreeMap<String, OutcomeCounts>,
}

impl Counts {
    /// Adds another group's counts to these (e.g. several cohort months).
    pub fn merge(&mut self, other: &Counts) {
        self.cohort += other.cohort;
        for (name, o) in &other.outcomes {
            let mine = self.outcomes.entry(name.clone()).or_default();
            mine.pending += o.pending;
            mine.achieved += o.achieved;
            mine.not_achieved += o.not_achieved;
            for (days, n) in &o.durations {
                *mine.durations.entry(*days).or_default() += n;
            }
        }
    }

    fn add(&mut self, c: &Contribution, sign: i64) {
        self.cohort += sign;
        for (name, status, days) in &c.outcomes {
            let o = self.outcomes.entry(name.clone()).or_default();
            match status {
                OutcomeState::Pending => o.pending += sign,
                OutcomeState::Achieved => o.achieved += sign,
                OutcomeState::NotAchieved => o.not_achieved += sign,
            }
            if let (OutcomeState::Achieved, Some(d)) = (status, days) {
                let n = o.durations.entry(*d).or_default();
                *n += sign;
                if *n == 0 {
                    o.durations.remove(d);
                }
            }
        }
    }
}

/// One group's figures for a snapshot measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotGroup {
    /// Citizens in the population at the watermark (e.g. aged 16 to 24).
    pub population: i64,
    /// Of them, those in the measured state (e.g. NEET).
    pub holds: i64,
}

/// A snapshot measure's figures: the whole population and by area.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCounts {
    /// Everyone in the population.
    pub total: SnapshotGroup,
    /// By the citizen's latest area (`unknown` when none was reported).
    pub by_area: BTreeMap<String, SnapshotGroup>,
}

impl SnapshotCounts {
    fn add(&mut self, holds: bool, area: Option<&str>, sign: i64) {
        let area = area.unwrap_or("unknown");
        for g in [
            &mut self.total,
            self.by_area.entry(area.to_owned()).or_default(),
        ] {
            g.population += sign;
            if holds {
                g.holds += sign;
            }
        }
        if self.by_area.get(area).is_some_and(|g| g.population == 0) {
            self.by_area.remove(area);
        }
    }
}

/// A mission's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionMetrics {
    /// The whole cohort.
    pub total: Counts,
    /// By area code (`unknown` when the area was not reported).
    pub by_area: BTreeMap<String, Counts>,
    /// By cohort month.
    pub by_month: BTreeMap<String, Counts>,
    /// By area, then cohort month: for an area breakdown over a range of
    /// cohort months.
    #[serde(default)]
    pub by_area_month: BTreeMap<String, BTreeMap<String, Counts>>,
    /// What the figures are final up to: the least of the partitions'
    /// watermarks (0 before the first). It depends on the log alone, not on
    /// how views happened to be batched.
    pub watermark: Millis,
    /// Each view-topic partition's watermark, from the processor's
    /// watermark records: every view of the partition that the watermark
    /// changed was applied before it. A partition that has never held an
    /// event has none and holds no figures.
    #[serde(default)]
    pub partition_watermarks: BTreeMap<i32, Millis>,
    /// View-topic partitions whose views have been applied (since their
    /// last reset): a partition with views and no watermark record yet has
    /// nothing final.
    #[serde(default)]
    pub partitions_with_views: std::collections::BTreeSet<i32>,
    /// Wall-clock time (ms) the figures last changed.
    pub updated_at: Millis,
    /// Each snapshot measure (e.g. `neet`), by id.
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotCounts>,
    /// The rebuild under way, if any: the figures are incomplete until it ends.
    #[serde(default)]
    pub rebuilding: Option<Rebuilding>,
}

/// A rebuild of a mission under way, as its control records tell it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilding {
    /// The rebuild's id.
    pub id: String,
    /// When it started (wall clock, ms).
    pub started_at: Millis,
    /// Partitions of the view topic.
    pub partitions: i32,
    /// Partitions whose reset has been applied.
    pub reset: std::collections::BTreeSet<i32>,
    /// Partitions whose views the rebuild has all published.
    pub complete: std::collections::BTreeSet<i32>,
}

impl MissionMetrics {
    fn add(&mut self, c: &Contribution, sign: i64) {
        for (name, holds, area) in &c.snapshots {
            self.snapshots
                .entry(name.clone())
                .or_default()
                .add(*holds, area.as_deref(), sign);
        }
        if !c.in_cohort {
            return;
        }
        self.total.add(c, sign);
        let area = c.area_code.clone().unwrap_or_else(|| "unknown".into());
        self.by_area.entry(area.clone()).or_default().add(c, sign);
        if self.by_area.get(&area).is_some_and(|a| a.cohort == 0) {
            self.by_area.remove(&area);
        }
        let month = c.cohort_month.clone().unwrap_or_else(|| "unknown".into());
        self.by_month.entry(month.clone()).or_default().add(c, sign);
        if self.by_month.get(&month).is_some_and(|a| a.cohort == 0) {
            self.by_month.remove(&month);
        }
        self.add_area_month(area, month, c, sign);
    }

    fn add_area_month(&mut self, area: String, month: String, c: &Contribution, sign: i64) {
        let months = self.by_area_month.entry(area.clone()).or_default();
        months.entry(month.clone()).or_default().add(c, sign);
        if months.get(&month).is_some_and(|a| a.cohort == 0) {
            months.remove(&month);
        }
        if months.is_empty() {
            self.by_area_month.remove(&area);
        }
    }

    /// Rebuilds the area × cohort-month breakdown from every citizen's
    /// current contribution (state saved before it existed has none).
    pub fn rebuild_area_month(&mut self, contributions: impl IntoIterator<Item = Contribution>) {
        self.by_area_month.clear();
        for c in contributions.into_iter().filter(|c| c.in_cohort) {
            let area = c.area_code.clone().unwrap_or_else(|| "unknown".into());
            let month = c.cohort_month.clone().unwrap_or_else(|| "unknown".into());
            self.add_area_month(area, month, &c, 1);
        }
    }

    /// Takes a citizen's contribution out (a rebuild's reset).
    pub fn withdraw(&mut self, c: &Contribution) {
        self.add(c, -1);
    }

    /// Replaces `old` (if any) by `new`. Returns false, changing nothing, when
    /// `new` is not newer than `old`.
    pub fn apply(&mut self, old: Option<&Contribution>, new: &Contribution) -> bool {
        if old.is_some_and(|o| o.version >= new.version) {
            return false;
        }
        if let Some(o) = old {
            self.add(o, -1);
        }
        self.add(new, 1);
        true
    }

    /// Partition `p`'s watermark record: its figures are final up to
    /// `watermark`. A partition's watermark never goes back (an instance
    /// that rebuilds the partition's state from the log announces earlier
    /// ones again on its way), but for a rebuild's reset.
    pub fn partition_watermark(&mut self, p: i32, watermark: Millis) {
        let w = self.partition_watermarks.entry(p).or_insert(watermark);
        *w = (*w).max(watermark);
        self.settle_watermark();
    }

    /// A view of partition `p` has been read: until the partition's
    /// watermark record is, nothing is final. Whether that is news.
    pub fn saw_view(&mut self, p: i32) -> bool {
        let new = self.partitions_with_views.insert(p);
        if new {
            self.settle_watermark();
        }
        new
    }

    /// A rebuild's reset of partition `p`: its figures start again, and so
    /// does its watermark.
    pub fn reset_partition(&mut self, p: i32) {
        self.partition_watermarks.remove(&p);
        self.partitions_with_views.remove(&p);
        self.settle_watermark();
    }

    /// The least watermark of the partitions that hold figures; a
    /// partition with views but no watermark record counts as 0.
    fn settle_watermark(&mut self) {
        let unannounced = self
            .partitions_with_views
            .iter()
            .any(|p| !self.partition_watermarks.contains_key(p));
        self.watermark = if unannounced {
            0
        } else {
            self.partition_watermarks
                .values()
                .copied()
                .min()
                .unwrap_or(0)
        };
    }

    /// Whether every partition of the view topic (`0..partitions`) is
    /// accounted for: it has a watermark, or holds no views and `read`
    /// says this instance has read it through (so it has never held an
    /// event). Otherwise [`MissionMetrics::watermark`] could leave out a
    /// partition not yet read, and no figure is final.
    ///
    /// A partition a rebuild has reset is accounted for only once its new
    /// watermark record, or the rebuild's completion of it, has been read
    /// (having read the reset itself says nothing of what follows).
    pub fn watermark_covers(&self, partitions: i32, read: impl Fn(i32) -> bool) -> bool {
        let rebuilding = |p: &i32| {
            self.rebuilding
                .as_ref()
                .is_some_and(|r| r.reset.contains(p) && !r.complete.contains(p))
        };
        (0..partitions).all(|p| {
            self.partition_watermarks.contains_key(&p)
                || (!self.partitions_with_views.contains(&p) && !rebuilding(&p) && read(p))
        })
    }
}

/// The `q`-quantile (0..=1) of a days histogram, exact (nearest rank).
pub fn quantile(durations: &BTreeMap<i64, i64>, q: f64) -> Option<i64> {
    let n: i64 = durations.values().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as i64).clamp(1, n);
    let mut seen = 0;
    for (d, c) in durations {
        seen += c;
        if seen >= rank {
            return Some(*d);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(version: i64, status: OutcomeState, days: Option<i64>) -> Contribution {
        Contribution {
            version,
            in_cohort: true,
            area_code: Some("E09000001".parse().unwrap()),
            cohort_month: Some("2026-01".parse().unwrap()),
            outcomes: vec![("o".into(), status, days)],
            snapshots: vec![],
            partition: None,
        }
    }

    #[test]
    fn a_newer_view_replaces_the_old_contribution() {
        let mut m = MissionMetrics::default();
        assert!(m.apply(None, &c(1, OutcomeState::Pending, None)));
        assert!(m.apply(
            Some(&c(1, OutcomeState::Pending, None)),
            &c(2, OutcomeState::Achieved, Some(30)),
        ));
        let o = &m.total.outcomes["o"];
        assert_eq!((m.total.cohort, o.pending, o.achieved), (1, 0, 1));
        assert_eq!(m.by_area["E09000001"].cohort, 1);
    }

    #[test]
    fn the_figures_are_final_up_to_the_least_of_the_partitions_watermarks() {
        let mut m = MissionMetrics::default();
        assert_eq!(m.watermark, 0, "nothing is final before the first");
        m.partition_watermark(0, 500);
        m.partition_watermark(2, 300);
        assert_eq!(m.watermark, 300);
        // Partition 2 catches up; a record from an instance replaying
        // partition 0 from the log does not take it back.
        m.partition_watermark(2, 700);
        m.partition_watermark(0, 100);
        assert_eq!(m.watermark, 500);
        // A rebuild's reset of partition 0: it starts again.
        m.reset_partition(0);
        assert_eq!(m.watermark, 700);
        m.partition_watermark(0, 200);
        assert_eq!(m.watermark, 200);
        // Kept with the figures.
        let stored: MissionMetrics =
            serde_json::from_slice(&serde_json::to_vec(&m).expect("encodes")).expect("decodes");
        assert_eq!(stored, m);
        // Figures stored before partitions had watermarks read with none.
        let mut old = serde_json::to_value(&m).expect("encodes");
        old.as_object_mut()
            .expect("an object")
            .remove("partition_watermarks");
        let old: MissionMetrics = serde_json::from_value(old).expect("decodes");
        assert!(old.partition_watermarks.is_empty());
    }

    #[test]
    fn a_partition_not_yet_read_or_not_yet_announced_makes_nothing_final() {
        let mut m = MissionMetrics::default();
        m.saw_view(0);
        m.partition_watermark(0, 500);
        assert_eq!(m.watermark, 500);
        // Partition 1's views are read, its watermark record not yet.
        m.saw_view(1);
        assert_eq!(m.watermark, 0, "partition 1's figures are not final");
        m.partition_watermark(1, 900);
        assert_eq!(m.watermark, 500);
        // Of three partitions, the third has neither views nor watermark:
        // covered only once it has been read through (it is empty).
        assert!(!m.watermark_covers(3, |_| false));
        assert!(m.watermark_covers(3, |p| p == 2));
        assert!(
            m.watermark_covers(2, |_| false),
            "announced partitions need no read-through"
        );
        // A reset clears what the partition held.
        m.reset_partition(1);
        assert!(!m.partitions_with_views.contains(&1));
        assert_eq!(m.watermark, 500);
        // ... and, during the rebuild, it is not accounted for by having
        // been read through: its new views may still be on their way.
        m.rebuilding = Some(Rebuilding {
            partitions: 2,
            reset: [1].into(),
            ..Rebuilding::default()
        });
        assert!(!m.watermark_covers(2, |_| true));
        if let Some(r) = m.rebuilding.as_mut() {
            r.complete.insert(1);
        }
        assert!(
            m.watermark_covers(2, |_| true),
            "complete, and it held nothing"
        );
        if let Some(r) = m.rebuilding.as_mut() {
            r.complete.clear();
        }
        m.partition_watermark(1, 900);
        assert!(m.watermark_covers(2, |_| true), "its new watermark");
    }

    #[test]
    fn a_redelivered_or_stale_view_is_ignored() {
        let mut m = MissionMetrics::default();
        m.apply(None, &c(2, OutcomeState::Achieved, Some(3)));
        let before = m.clone();
        assert!(!m.apply(
            Some(&c(2, OutcomeState::Achieved, Some(3))),
            &c(2, OutcomeState::Achieved, Some(3)),
        ));
        assert!(!m.apply(
            Some(&c(2, OutcomeState::Achieved, Some(3))),
            &c(1, OutcomeState::Pending, None),
        ));
        assert_eq!(m, before);
    }

    #[test]
    fn merging_months_adds_counts_and_durations() {
        let mut a = MissionMetrics::default();
        a.apply(None, &c(1, OutcomeState::Achieved, Some(10)));
        let mut b = MissionMetrics::default();
        b.apply(None, &c(1, OutcomeState::Achieved, Some(10)));
        b.apply(
            None,
            &Contribution {
                version: 1,
                in_cohort: true,
                area_code: None,
                cohort_month: None,
                outcomes: vec![("o".into(), OutcomeState::Pending, None)],
                snapshots: vec![],
                partition: None,
            },
        );
        let mut total = Counts::default();
        total.merge(&a.total);
        total.merge(&b.total);
        let o = &total.outcomes["o"];
        assert_eq!(
            (total.cohort, o.achieved, o.pending, o.durations[&10]),
            (3, 2, 1, 2)
        );
    }

    #[test]
    fn area_by_month_follows_a_citizen_who_moves_and_sums_to_the_area() {
        let at = |version, area: &str, month: &str, status| Contribution {
            version,
            in_cohort: true,
            area_code: Some(area.into()),
            cohort_month: Some(month.into()),
            outcomes: vec![("o".into(), status, None)],
            snapshots: vec![],
            partition: None,
        };
        let mut m = MissionMetrics::default();
        let first = at(1, "E09000001", "2026-01", OutcomeState::Pending);
        m.apply(None, &first);
        m.apply(None, &at(1, "E09000001", "2026-02", OutcomeState::Pending));
        m.apply(None, &at(1, "E2", "2026-01", OutcomeState::Pending));
        // The first citizen's area is corrected: the contribution moves.
        m.apply(
            Some(&first),
            &at(2, "E2", "2026-03", OutcomeState::NotAchieved),
        );
        assert_eq!(
            m.by_area_month["E09000001"].keys().collect::<Vec<_>>(),
            ["2026-02"],
            "nothing left behind in the old area and month"
        );
        for (area, months) in &m.by_area_month {
            let mut sum = Counts::default();
            for c in months.values() {
                sum.merge(c);
            }
            assert_eq!(sum, m.by_area[area], "{area}: months sum to the area");
        }
        assert_eq!(
            m.by_area_month["E2"]["2026-03"].outcomes["o"].not_achieved,
            1
        );
        // State saved before the breakdown existed rebuilds it from the
        // current contributions.
        let mut rebuilt = m.clone();
        rebuilt.by_area_month.clear();
        rebuilt.rebuild_area_month([
            at(2, "E2", "2026-03", OutcomeState::NotAchieved),
            at(1, "E09000001", "2026-02", OutcomeState::Pending),
            at(1, "E2", "2026-01", OutcomeState::Pending),
        ]);
        assert_eq!(rebuilt, m);
    }

    #[test]
    fn snapshots_count_everyone_in_the_population_and_follow_changes() {
        let young = |version, in_cohort, holds, area: &str| Contribution {
            version,
            in_cohort,
            area_code: None,
            cohort_month: None,
            outcomes: vec![],
            snapshots: vec![("neet".into(), holds, Some(area.into()))],
            partition: None,
        };
        let mut m = MissionMetrics::default();
        // Outside the cohort, still in the population.
        let a = young(1, false, true, "E09000001");
        assert!(m.apply(None, &a));
        m.apply(None, &young(1, true, false, "E09000001"));
        m.apply(None, &young(1, false, true, "E2"));
        let neet = &m.snapshots["neet"];
        assert_eq!(
            neet.total,
            SnapshotGroup {
                population: 3,
                holds: 2
            }
        );
        assert_eq!(
            neet.by_area["E09000001"],
            SnapshotGroup {
                population: 2,
                holds: 1
            }
        );
        assert_eq!(m.total.cohort, 1, "the cohort counts only its members");
        // The first citizen finds work and moves to E2.
        let b = young(2, false, false, "E2");
        m.apply(Some(&a), &b);
        let neet = &m.snapshots["neet"];
        assert_eq!(
            neet.total,
            SnapshotGroup {
                population: 3,
                holds: 1
            }
        );
        assert_eq!(
            neet.by_area["E2"],
            SnapshotGroup {
                population: 2,
                holds: 1
            }
        );
        // Then turns 25: leaves the population.
        let mut c = young(3, false, false, "E2");
        c.snapshots.clear();
        m.apply(Some(&b), &c);
        assert_eq!(m.snapshots["neet"].total.population, 2);
        assert_eq!(m.snapshots["neet"].by_area["E2"].population, 1);
    }

    #[test]
    fn quantiles_are_exact_nearest_rank() {
        let h: BTreeMap<i64, i64> = [(10, 1), (20, 1), (30, 1), (40, 1)].into();
        assert_eq!(quantile(&h, 0.5), Some(20));
        assert_eq!(quantile(&h, 0.9), Some(40));
        assert_eq!(quantile(&BTreeMap::new(), 0.5), None);
    }
}
