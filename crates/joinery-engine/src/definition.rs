//! Mission definitions, not code: capabilities and missions are read from
//! TOML files (`missions/` in the repository; `missions/README.md` is the
//! reference), checked against the event schemas' names and each other, and
//! compiled into [`MissionDef`]s the engine evaluates. An invalid definition
//! is refused at load with the file, line and reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use joinery_domain::{Department, EventType, FieldValue, MissionId, OutcomeId};
use serde::Serialize;

/// Why the definitions could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid TOML or does not have the expected shape.
    #[error("{path}:{line}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The shape is right but the content is not (an unknown capability,
    /// event type, field or value, ...).
    #[error("{path}:{line}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (of the table holding it, when the
        /// problem is in a nested value).
        line: usize,
        /// What is wrong, and what was expected.
        reason: String,
    },
}

/// A test on one field of an event, as a definition's `where` writes it.
/// (Serialised untagged, so that an exact match reads as the bare value:
/// definitions written before the other tests keep their fingerprint.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Predicate {
    /// `field = value`: equal to it.
    Eq(FieldValue),
    /// `field = [a, b]`: one of them.
    In {
        /// The values allowed.
        any: Vec<FieldValue>,
    },
    /// `field = { not = [a, b] }`: none of them (an absent field passes).
    NotIn {
        /// The values refused.
        not: Vec<FieldValue>,
    },
    /// `field = { at_least = x, at_most = y }`: a number or moment in the
    /// range, both ends included (an absent field fails).
    Range {
        /// Smallest value allowed.
        at_least: Option<i64>,
        /// Largest value allowed.
        at_most: Option<i64>,
    },
    /// `field = { present = true }`: an optional field is (or is not) set.
    Present {
        /// Whether it must be set.
        present: bool,
    },
}

impl Predicate {
    /// Whether a field's value (`None` when absent) passes.
    pub fn test(&self, v: Option<&FieldValue>) -> bool {
        match self {
            Predicate::Eq(x) => v == Some(x),
            Predicate::In { any } => v.is_some_and(|v| any.contains(v)),
            Predicate::NotIn { not } => v.is_none_or(|v| !not.contains(v)),
            Predicate::Range { at_least, at_most } => match v {
                Some(FieldValue::Int(i)) => {
                    at_least.is_none_or(|min| *i >= min) && at_most.is_none_or(|max| *i <= max)
                }
                _ => false,
            },
            Predicate::Present { present } => v.is_some() == *present,
        }
    }
}

/// An event filter: `event = "dfe.EducationExited"` plus `where` tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventFilter {
    /// The event type.
    pub event: EventType,
    /// Tests on the event's fields, all of which must pass.
    pub conditions: BTreeMap<String, Predicate>,
}

/// A condition over capabilities, as cohorts, outcomes and snapshots use
/// them: a capability by name, or `any_of`, `all_of` and `not` of others.
/// A capability *holds at* a moment when it is an occurrence that happened
/// at or before it, or an interval open then. (Serialised untagged, so a
/// bare name reads as it did before conditions could combine.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Condition {
    /// A capability, by name.
    Capability(String),
    /// Any of these.
    AnyOf {
        /// The alternatives.
        any_of: Vec<Condition>,
    },
    /// All of these.
    AllOf {
        /// What must all hold.
        all_of: Vec<Condition>,
    },
    /// Not this.
    Not {
        /// What must not hold.
        not: Box<Condition>,
    },
}

impl Condition {
    /// Every capability it names.
    pub fn capabilities(&self) -> Vec<&str> {
        match self {
            Condition::Capability(n) => vec![n.as_str()],
            Condition::AnyOf { any_of: cs } | Condition::AllOf { all_of: cs } => {
                cs.iter().flat_map(Condition::capabilities).collect()
            }
            Condition::Not { not } => not.capabilities(),
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |f: &mut std::fmt::Formatter<'_>, word: &str, cs: &[Condition]| {
            write!(f, "{word}(")?;
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{c}")?;
            }
            write!(f, ")")
        };
        match self {
            Condition::Capability(n) => write!(f, "{n}"),
            Condition::AnyOf { any_of } => list(f, "any_of", any_of),
            Condition::AllOf { all_of } => list(f, "all_of", all_of),
            Condition::Not { not } => write!(f, "not({not})"),
        }
    }
}

/// Whether a higher or a lower rate of an outcome is the better one (for
/// display only: it changes no figure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// More achieving it is better (work found, treatment on time).
    #[default]
    Higher,
    /// Fewer achieving it is better (a reoffence).
    Lower,
}

/// A named per-citizen fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Capability {
    /// The event time of the first matching event.
    First(EventFilter),
    /// The event time of the last matching event.
    Last(EventFilter),
    /// Intervals from a start event to the matching end event (same value of
    /// `match_on`), open while no end has arrived.
    Interval {
        /// What opens an interval.
        start: EventFilter,
        /// What closes it.
        end: EventFilter,
        /// The field pairing a start with its end.
        match_on: String,
    },
    /// How many matching events there are (distinct by `event_id`).
    Count(EventFilter),
    /// Whole days an interval capability has been open in total.
    Duration {
        /// The interval capability measured (by name).
        of: String,
        /// What opens an interval.
        start: EventFilter,
        /// What closes it.
        end: EventFilter,
        /// The field pairing a start with its end.
        match_on: String,
    },
}

impl Capability {
    fn is_occurrence(&self) -> bool {
        matches!(self, Capability::First(_) | Capability::Last(_))
    }

    fn is_measure(&self) -> bool {
        matches!(self, Capability::Count(_) | Capability::Duration { .. })
    }

    /// The event types it reads.
    pub fn event_types(&self) -> Vec<EventType> {
        match self {
            Capability::First(f) | Capability::Last(f) | Capability::Count(f) => vec![f.event],
            Capability::Interval { start, end, .. } | Capability::Duration { start, end, .. } => {
                vec![start.event, end.event]
            }
        }
    }
}

/// A cohort requirement on a count or duration capability, read at the anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// The count or duration capability.
    pub capability: String,
    /// Smallest value allowed.
    pub at_least: Option<i64>,
    /// Largest value allowed.
    pub at_most: Option<i64>,
}

/// Who counts in a mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cohort {
    /// The capability whose time anchors every outcome window; citizens
    /// without it are not in the cohort.
    pub anchor: String,
    /// Age range (whole years at the anchor, from the birth month), if any.
    pub age: Option<(i64, i64)>,
    /// Interval capabilities that must be open at the anchor time.
    pub active_at_anchor: Vec<String>,
    /// A condition that must hold at the anchor time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_anchor: Option<Condition>,
    /// Counts and durations, at the anchor time, that must be in range.
    pub require: Vec<Requirement>,
}

/// An outcome: a condition that must occur within a window (an *event*
/// outcome), or hold at a moment after its start (a *state* outcome).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// Outcome id within the mission.
    pub id: OutcomeId,
    /// Plain-language description.
    pub doc: String,
    /// The window starts at this capability's time (default: the cohort anchor).
    /// Citizens without it are not counted for this outcome.
    pub from: Option<String>,
    /// Event outcome: what must occur (or, for intervals, start) in the
    /// window, a capability or `any_of` them. State outcome: what must hold
    /// `at_days` after the window's start.
    pub condition: Condition,
    /// Window length in days (a state outcome's `at_days`).
    pub within_days: i64,
    /// For interval conditions: how long it must last.
    pub sustained_days: Option<i64>,
    /// A state outcome: `condition` is read at the window's start plus
    /// this many days (equal to `within_days`), achieved if it holds then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at_days: Option<i64>,
    /// Whether a higher rate is better (display only; not a rule).
    #[serde(skip)]
    pub better: Better,
}

/// A snapshot measure: who, at the watermark, is in a population (an age
/// range then, and known to Joinery by then) and, of them, who is in a state
/// (some intervals open, others not). Independent of the cohort: the NEET
/// count is "aged 16 to 24 and in neither education nor employment".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Snapshot id within the mission.
    pub id: OutcomeId,
    /// Plain-language description.
    pub doc: String,
    /// Age range (whole years at the watermark, from the birth month), if any.
    pub age: Option<(i64, i64)>,
    /// Interval capabilities that must all be open at the watermark.
    pub open: Vec<String>,
    /// Interval capabilities none of which may be open at the watermark.
    pub not_open: Vec<String>,
    /// A condition that must hold at the watermark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Condition>,
}

/// A mission, compiled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissionDef {
    /// Mission id.
    pub id: MissionId,
    /// Title for the board.
    pub title: String,
    /// Plain-language description.
    pub doc: String,
    /// Who counts.
    pub cohort: Cohort,
    /// The outcomes.
    pub outcomes: Vec<Outcome>,
    /// The snapshot measures.
    pub snapshots: Vec<Snapshot>,
    /// The capabilities it uses, by name.
    pub capabilities: BTreeMap<String, Capability>,
}

impl MissionDef {
    /// The departments whose events the mission's capabilities read: a
    /// status it reports is final once no data within every one of these
    /// departments' allowed lateness can change it.
    pub fn departments(&self) -> BTreeSet<Department> {
        self.capabilities
            .values()
            .flat_map(Capability::event_types)
            .map(EventType::department)
            .collect()
    }
}

mod parse;
mod shapes;
#[cfg(test)]
mod tests;

pub use parse::{parse_capabilities, parse_mission};
pub use shapes::{EventShapes, FieldShape, FieldSpec};

/// A fingerprint of what evaluation depends on in `missions`: a stable
/// serialisation (JSON, fields in declaration order, maps sorted) of every
/// mission with its plain-language texts (title, docs) left out, so that
/// rewording a mission does not change it while any change of a rule, id,
/// window or capability does. The processor keeps it with its state to know
/// when that state was computed by other rules.
pub fn fingerprint(missions: &[MissionDef]) -> String {
    let semantic: Vec<MissionDef> = missions
        .iter()
        .map(|m| MissionDef {
            title: String::new(),
            doc: String::new(),
            outcomes: m
                .outcomes
                .iter()
                .map(|o| Outcome {
                    doc: String::new(),
                    ..o.clone()
                })
                .collect(),
            snapshots: m
                .snapshots
                .iter()
                .map(|s| Snapshot {
                    doc: String::new(),
                    ..s.clone()
                })
                .collect(),
            ..m.clone()
        })
        .collect();
    serde_json::to_string(&semantic).expect("definitions serialise: plain data with string keys")
}

/// Loads `capabilities.toml` and every other `*.toml` in `dir` as a mission,
/// in file-name order.
pub fn load_dir(dir: &Path) -> Result<Vec<MissionDef>, DefinitionError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| DefinitionError::Io {
            path: p.to_owned(),
            source,
        })
    };
    let cap_path = dir.join("capabilities.toml");
    let capabilities = parse_capabilities(&cap_path, &read(&cap_path)?)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| DefinitionError::Io {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name().is_some_and(|n| n != "capabilities.toml")
        })
        .collect();
    files.sort();
    let mut missions: Vec<MissionDef> = Vec::new();
    for f in files {
        let m = parse_mission(&f, &read(&f)?, &capabilities)?;
        if missions.iter().any(|x| x.id == m.id) {
            return Err(DefinitionError::Invalid {
                path: f,
                line: 1,
                reason: format!("mission id `{}` is already defined by another file", m.id),
            });
        }
        missions.push(m);
    }
    Ok(missions)
}
