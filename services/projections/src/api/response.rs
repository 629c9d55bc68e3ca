//! The metrics API's response bodies as types. The board
//! ([`crate::board`]) renders the same values, so a page and the API cannot
//! disagree; both are built here from a mission's [`MissionMetrics`] for an
//! [`Audience`], which decides whether disclosure control applies.
//!
//! Each type is named after its schema in `api/openapi.json`. Fields are
//! declared in alphabetical order of their JSON names: the API built its
//! bodies as `serde_json` maps, which serialise their keys in that order,
//! and keeping it keeps responses byte-for-byte what they were (the golden
//! files in `api/testdata/` hold them).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use joinery_domain::{Millis, OutcomeId, YearMonth};
use joinery_engine::MissionDef;
use serde::{Serialize, Serializer};

use crate::aggregate::{self, quantile, MissionMetrics, OutcomeCounts};
use crate::disclosure::{Count, Disclosure, Rate};

/// Who figures are published for: board readers get them under disclosure
/// control, operators exact.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Audience {
    /// The rule applied for board readers.
    disclosure: Disclosure,
    /// True for operators: figures are published as counted.
    exact: bool,
}

impl Audience {
    /// Mission-board readers: figures under `disclosure`.
    pub(crate) fn board(disclosure: Disclosure) -> Audience {
        Audience {
            disclosure,
            exact: false,
        }
    }

    /// Operators: exact figures.
    pub(crate) fn operator(disclosure: Disclosure) -> Audience {
        Audience {
            disclosure,
            exact: true,
        }
    }

    fn count(self, n: i64) -> Count {
        self.disclosure.count(n, self.exact)
    }

    fn rate(self, num: i64, den: i64) -> Rate {
        self.disclosure.rate(num, den, self.exact)
    }

    fn withholds(self, n: i64) -> bool {
        self.disclosure.withholds(n, self.exact)
    }
}

/// An instant, sent as RFC 3339 (`2026-06-01T00:00:00+00:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timestamp(pub(crate) DateTime<Utc>);

impl Timestamp {
    /// The instant `ms` after the epoch; `None` for 0, which the metrics
    /// use for "never".
    fn from_millis(ms: Millis) -> Option<Timestamp> {
        DateTime::from_timestamp_millis(ms)
            .filter(|_| ms > 0)
            .map(Timestamp)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339())
    }
}

/// `Error`: the body of every error response.
#[derive(Debug, Serialize)]
pub(crate) struct ApiError {
    /// What is wrong and what to do about it.
    pub(crate) error: String,
}

/// The body of `GET /v1/missions`.
#[derive(Debug, Serialize)]
pub(crate) struct MissionList {
    /// Every mission the token may read, in definition order.
    pub(crate) missions: Vec<Mission>,
}

/// `Mission`: one mission's figures, the body of
/// `GET /v1/missions/{mission}/metrics` and each entry of `GET /v1/missions`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Mission {
    /// The disclosure rule the figures are under; null when they are exact.
    pub(crate) disclosure: Option<DisclosureRule>,
    /// What the mission measures; null when its definition is missing.
    pub(crate) doc: Option<String>,
    /// True for operators' exact figures; false means disclosure control
    /// applies.
    pub(crate) exact: bool,
    /// The first cohort month the figures cover, only when the request set
    /// `from` or `to` (then null when it set only `to`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<Option<YearMonth>>,
    /// The figures by group (`group_by` and `groups`), only when the
    /// request asked for a grouping.
    #[serde(flatten)]
    pub(crate) grouped: Option<Grouped>,
    /// The mission's id.
    pub(crate) mission: String,
    /// Each outcome's id and description, in definition order; null when
    /// the definition is missing.
    pub(crate) outcome_definitions: Option<Vec<OutcomeDefinition>>,
    /// The rebuild under way, if any: the figures are incomplete until it
    /// ends.
    pub(crate) rebuilding: Option<RebuildProgress>,
    /// Each snapshot measure (e.g. `neet`) by id; never limited by `from`
    /// or `to`.
    pub(crate) snapshots: BTreeMap<OutcomeId, Snapshot>,
    /// The mission's title; null when its definition is missing.
    pub(crate) title: Option<String>,
    /// The last cohort month the figures cover, only when the request set
    /// `from` or `to` (then null when it set only `from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) to: Option<Option<YearMonth>>,
    /// The whole cohort (of the requested cohort months, if any).
    pub(crate) total: Counts,
    /// When the figures last changed; null before the first view.
    pub(crate) updated_at: Option<Timestamp>,
    /// Figures are final up to this event time; null before the first view.
    pub(crate) watermark: Option<Timestamp>,
}

impl Mission {
    /// A mission's headline figures for `audience`: the whole cohort, its
    /// snapshot measures and its state, without range or grouping.
    pub(crate) fn headline(
        id: &str,
        def: Option<&MissionDef>,
        m: &MissionMetrics,
        audience: Audience,
    ) -> Mission {
        let snapshots = def.map_or_else(BTreeMap::new, |def| {
            def.snapshots
                .iter()
                .map(|s| {
                    let counts = m.snapshots.get(s.id.as_str()).cloned().unwrap_or_default();
                    (s.id.clone(), Snapshot::new(&s.doc, &counts, audience))
                })
                .collect()
        });
        Mission {
            disclosure: (!audience.exact).then(|| DisclosureRule::new(audience.disclosure)),
            doc: def.map(|d| d.doc.clone()),
            exact: audience.exact,
            from: None,
            grouped: None,
            mission: id.to_owned(),
            outcome_definitions: def.map(|d| {
                d.outcomes
                    .iter()
                    .map(|o| OutcomeDefinition {
                        better: o.better,
                        doc: o.doc.clone(),
                        id: o.id.clone(),
                    })
                    .collect()
            }),
            rebuilding: m.rebuilding.as_ref().map(RebuildProgress::new),
            snapshots,
            title: def.map(|d| d.title.clone()),
            to: None,
            total: Counts::new(None, &m.total, audience),
            updated_at: Timestamp::from_millis(m.updated_at),
            watermark: Timestamp::from_millis(m.watermark),
        }
    }
}

/// The disclosure rule figures are published under.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct DisclosureRule {
    /// Counts at or above the threshold are rounded to a multiple of this.
    pub(crate) rounding: i64,
    /// The rule in words.
    pub(crate) rule: &'static str,
    /// Counts under this (and over 0) are suppressed.
    pub(crate) threshold: i64,
}

impl DisclosureRule {
    fn new(d: Disclosure) -> DisclosureRule {
        DisclosureRule {
            rounding: d.rounding,
            rule: "counts under threshold suppressed, others rounded",
            threshold: d.threshold,
        }
    }
}

/// An outcome's id and description.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OutcomeDefinition {
    /// Whether a higher or a lower rate is the better one.
    pub(crate) better: joinery_engine::definition::Better,
    /// Plain-language description.
    pub(crate) doc: String,
    /// Outcome id within the mission.
    pub(crate) id: OutcomeId,
}

/// Progress of a rebuild under way.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RebuildProgress {
    /// Partitions of the view topic.
    pub(crate) partitions: i32,
    /// Partitions whose views the rebuild has all published.
    pub(crate) partitions_complete: usize,
    /// The rebuild's id.
    pub(crate) rebuild: String,
    /// When it started; null when unknown.
    pub(crate) started_at: Option<Timestamp>,
}

impl RebuildProgress {
    fn new(r: &aggregate::Rebuilding) -> RebuildProgress {
        RebuildProgress {
            partitions: r.partitions,
            partitions_complete: r.complete.len(),
            rebuild: r.id.clone(),
            started_at: Timestamp::from_millis(r.started_at),
        }
    }
}

/// How `groups` are grouped (`group_by=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GroupBy {
    /// By local authority district (`unknown` when none was reported).
    Area,
    /// By the month the citizen joined the cohort.
    CohortMonth,
}

impl GroupBy {
    /// The `group_by` query value, or `None` for an unsupported one.
    pub(crate) fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "area" => Some(GroupBy::Area),
            "cohort_month" => Some(GroupBy::CohortMonth),
            _ => None,
        }
    }
}

/// The figures by group, when the request asked for a grouping.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Grouped {
    /// What the groups are.
    pub(crate) group_by: GroupBy,
    /// One entry per group, in key order, each with its `key`.
    pub(crate) groups: Vec<Counts>,
}

/// `Counts`: a group's figures (the whole cohort, an area or a cohort
/// month).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Counts {
    /// Citizens in the cohort.
    pub(crate) cohort: Count,
    /// The group's key (area code or YYYY-MM), in `groups`; absent for the
    /// total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    /// Each outcome's figures by outcome id; an outcome nobody in the group
    /// is counted for is absent.
    pub(crate) outcomes: BTreeMap<String, Outcome>,
}

impl Counts {
    /// The figures of `c` for `audience`, with `key` when it is a group's.
    pub(crate) fn new(key: Option<&str>, c: &aggregate::Counts, audience: Audience) -> Counts {
        Counts {
            cohort: audience.count(c.cohort),
            key: key.map(str::to_owned),
            outcomes: c
                .outcomes
                .iter()
                .map(|(name, o)| (name.clone(), Outcome::new(o, audience)))
                .collect(),
        }
    }
}

/// `Outcome`: one outcome's figures in a group.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    /// Citizens who achieved it.
    pub(crate) achieved: Count,
    /// Days from the anchor to achieving it.
    pub(crate) days_to_achieve: DaysToAchieve,
    /// Citizens whose outcome is decided (achieved or not achieved).
    #[serde(rename = "final")]
    pub(crate) decided: Count,
    /// Citizens whose deadline passed without it.
    pub(crate) not_achieved: Count,
    /// Citizens whose outcome is still open.
    pub(crate) pending: Count,
    /// The same as `pending`, by the name the board uses: figures that may
    /// still change.
    pub(crate) provisional: Count,
    /// Achieved of decided.
    pub(crate) rate: Rate,
}

impl Outcome {
    /// The figures of `o` for `audience`.
    pub(crate) fn new(o: &OutcomeCounts, audience: Audience) -> Outcome {
        let decided = o.achieved + o.not_achieved;
        Outcome {
            achieved: audience.count(o.achieved),
            days_to_achieve: DaysToAchieve::new(&o.durations, audience),
            decided: audience.count(decided),
            not_achieved: audience.count(o.not_achieved),
            pending: audience.count(o.pending),
            provisional: audience.count(o.pending),
            rate: audience.rate(o.achieved, decided),
        }
    }
}

/// The median and 90th percentile of the days to achieve an outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DaysToAchieve {
    /// Always 0: the quantiles are exact.
    pub(crate) error_bound_days: i64,
    /// The median; null when withheld or nobody achieved it.
    pub(crate) median_days: Option<i64>,
    /// How the quantiles are computed.
    pub(crate) method: &'static str,
    /// The 90th percentile; null when withheld or nobody achieved it.
    pub(crate) p90_days: Option<i64>,
    /// True when withheld because the number who achieved it is suppressed.
    pub(crate) withheld: bool,
}

impl DaysToAchieve {
    fn new(durations: &BTreeMap<i64, i64>, audience: Audience) -> DaysToAchieve {
        let n: i64 = durations.values().sum();
        let withheld = audience.withholds(n);
        let shown = !withheld && n > 0;
        DaysToAchieve {
            error_bound_days: 0,
            median_days: shown.then(|| quantile(durations, 0.5)).flatten(),
            method: "exact nearest-rank over whole days",
            p90_days: shown.then(|| quantile(durations, 0.9)).flatten(),
            withheld,
        }
    }
}

/// `Snapshot`: a snapshot measure (e.g. NEET) at the watermark, whatever
/// the cohort.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Snapshot {
    /// By the citizen's latest area (`unknown` when none was reported), in
    /// area-code order, each with its `key`.
    pub(crate) by_area: Vec<SnapshotGroup>,
    /// Of the population, citizens in the measured state.
    pub(crate) count: Count,
    /// What the measure counts.
    pub(crate) doc: String,
    /// Citizens in the population at the watermark.
    pub(crate) population: Count,
    /// `count` of `population`.
    pub(crate) rate: Rate,
}

impl Snapshot {
    fn new(doc: &str, s: &aggregate::SnapshotCounts, audience: Audience) -> Snapshot {
        let total = SnapshotGroup::new(None, &s.total, audience);
        Snapshot {
            by_area: s
                .by_area
                .iter()
                .map(|(area, g)| SnapshotGroup::new(Some(area), g, audience))
                .collect(),
            count: total.count,
            doc: doc.to_owned(),
            population: total.population,
            rate: total.rate,
        }
    }
}

/// `SnapshotGroup`: a snapshot measure's figures in one area.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SnapshotGroup {
    /// Of the population, citizens in the measured state.
    pub(crate) count: Count,
    /// The area code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    /// Citizens in the population at the watermark.
    pub(crate) population: Count,
    /// `count` of `population`.
    pub(crate) rate: Rate,
}

impl SnapshotGroup {
    fn new(key: Option<&str>, g: &aggregate::SnapshotGroup, audience: Audience) -> SnapshotGroup {
        SnapshotGroup {
            count: audience.count(g.holds),
            key: key.map(str::to_owned),
            population: audience.count(g.population),
            rate: audience.rate(g.holds, g.population),
        }
    }
}
