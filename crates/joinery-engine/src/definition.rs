//! Mission definitions, not code: capabilities and missions are read from
//! TOML files (`missions/` in the repository; `missions/README.md` is the
//! reference), checked against the event schemas' names and each other, and
//! compiled into [`MissionDef`]s the engine evaluates. An invalid definition
//! is refused at load with the file, line and reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use joinery_domain::{EventType, FieldValue};
use serde::Deserialize;

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
    /// The shape is right but the content is not (an unknown capability, event type, ...).
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// An event filter: `event = "dfe.EducationExited"` plus `where` conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    /// The event type.
    pub event: EventType,
    /// Field values that must match exactly.
    pub conditions: BTreeMap<String, FieldValue>,
}

/// A named per-citizen fact.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// A cohort requirement on a count or duration capability, read at the anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The count or duration capability.
    pub capability: String,
    /// Smallest value allowed.
    pub at_least: Option<i64>,
    /// Largest value allowed.
    pub at_most: Option<i64>,
}

/// Who counts in a mission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// The capability whose time anchors every outcome window; citizens
    /// without it are not in the cohort.
    pub anchor: String,
    /// Age range (whole years at the anchor, from the birth month), if any.
    pub age: Option<(i64, i64)>,
    /// Interval capabilities that must be open at the anchor time.
    pub active_at_anchor: Vec<String>,
    /// Counts and durations, at the anchor time, that must be in range.
    pub require: Vec<Requirement>,
}

/// An outcome: a condition that must hold within a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Outcome id within the mission.
    pub id: String,
    /// Plain-language description.
    pub doc: String,
    /// The window starts at this capability's time (default: the cohort anchor).
    /// Citizens without it are not counted for this outcome.
    pub from: Option<String>,
    /// The capability that must occur (or, for intervals, start) in the window.
    pub condition: String,
    /// Window length in days.
    pub within_days: i64,
    /// For interval conditions: how long it must last.
    pub sustained_days: Option<i64>,
}

/// A snapshot measure: who, at the watermark, is in a population (an age
/// range then, and known to Joinery by then) and, of them, who is in a state
/// (some intervals open, others not). Independent of the cohort: the NEET
/// count is "aged 16 to 24 and in neither education nor employment".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Snapshot id within the mission.
    pub id: String,
    /// Plain-language description.
    pub doc: String,
    /// Age range (whole years at the watermark, from the birth month), if any.
    pub age: Option<(i64, i64)>,
    /// Interval capabilities that must all be open at the watermark.
    pub open: Vec<String>,
    /// Interval capabilities none of which may be open at the watermark.
    pub not_open: Vec<String>,
}

/// A mission, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissionDef {
    /// Mission id.
    pub id: String,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesFile {
    capability: BTreeMap<String, RawCapability>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Bool(bool),
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapability {
    #[allow(dead_code)]
    doc: String,
    kind: String,
    event: Option<String>,
    #[serde(rename = "where", default)]
    where_: BTreeMap<String, RawValue>,
    start: Option<String>,
    #[serde(default)]
    start_where: BTreeMap<String, RawValue>,
    end: Option<String>,
    #[serde(default)]
    end_where: BTreeMap<String, RawValue>,
    match_on: Option<String>,
    of: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MissionFile {
    id: String,
    title: String,
    doc: String,
    cohort: RawCohort,
    #[serde(default)]
    outcome: Vec<RawOutcome>,
    #[serde(default)]
    snapshot: Vec<RawSnapshot>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    id: String,
    doc: String,
    age: Option<RawAge>,
    #[serde(default)]
    open: Vec<String>,
    #[serde(default)]
    not_open: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCohort {
    #[allow(dead_code)]
    doc: String,
    anchor: String,
    age: Option<RawAge>,
    #[serde(default)]
    active_at_anchor: Vec<String>,
    #[serde(default)]
    require: Vec<RawRequirement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    capability: String,
    at_least: Option<i64>,
    at_most: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAge {
    min: i64,
    max: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutcome {
    id: String,
    doc: String,
    from: Option<String>,
    condition: String,
    within_days: i64,
    sustained_days: Option<i64>,
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, DefinitionError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(1);
        DefinitionError::Syntax {
            path: path.to_owned(),
            line,
            reason: e.message().to_owned(),
        }
    })
}

fn filter(
    path: &Path,
    name: &str,
    event: Option<&str>,
    conditions: BTreeMap<String, RawValue>,
) -> Result<EventFilter, DefinitionError> {
    let invalid = |reason: String| DefinitionError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let event = event.ok_or_else(|| invalid(format!("capability `{name}` needs an event type")))?;
    let event: EventType =
        event
            .parse()
            .map_err(|e: joinery_domain::department::UnknownEventType| {
                invalid(format!("capability `{name}`: {e}"))
            })?;
    Ok(EventFilter {
        event,
        conditions: conditions
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    RawValue::Bool(b) => FieldValue::Bool(b),
                    RawValue::Int(i) => FieldValue::Int(i),
                    RawValue::Text(s) => FieldValue::Text(s),
                };
                (k, v)
            })
            .collect(),
    })
}

/// Parses a capabilities file.
pub fn parse_capabilities(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, Capability>, DefinitionError> {
    let file: CapabilitiesFile = parse(path, text)?;
    let mut out = BTreeMap::new();
    let mut durations = Vec::new();
    for (name, c) in file.capability {
        if c.kind == "duration" {
            durations.push((name, c.of));
            continue;
        }
        let invalid = |reason: String| DefinitionError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let cap = match c.kind.as_str() {
            "first" => Capability::First(filter(path, &name, c.event.as_deref(), c.where_)?),
            "last" => Capability::Last(filter(path, &name, c.event.as_deref(), c.where_)?),
            "interval" => Capability::Interval {
                start: filter(path, &name, c.start.as_deref(), c.start_where)?,
                end: filter(path, &name, c.end.as_deref(), c.end_where)?,
                match_on: c
                    .match_on
                    .ok_or_else(|| invalid(format!("interval capability `{name}` needs `match_on`, the field pairing a start with its end")))?,
            },
            "count" => Capability::Count(filter(path, &name, c.event.as_deref(), c.where_)?),
            other => return Err(invalid(format!("capability `{name}` has kind `{other}`; expected first, last, interval, count or duration"))),
        };
        out.insert(name, cap);
    }
    for (name, of) in durations {
        let invalid = |reason: String| DefinitionError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let of = of.ok_or_else(|| {
            invalid(format!(
                "duration capability `{name}` needs `of`, the interval capability it measures"
            ))
        })?;
        let Some(Capability::Interval {
            start,
            end,
            match_on,
        }) = out.get(&of).cloned()
        else {
            return Err(invalid(format!(
                "duration capability `{name}`: `of = \"{of}\"` must name an interval capability"
            )));
        };
        out.insert(
            name,
            Capability::Duration {
                of,
                start,
                end,
                match_on,
            },
        );
    }
    Ok(out)
}

/// Parses one mission file against the shared capabilities.
pub fn parse_mission(
    path: &Path,
    text: &str,
    capabilities: &BTreeMap<String, Capability>,
) -> Result<MissionDef, DefinitionError> {
    let m: MissionFile = parse(path, text)?;
    let invalid = |reason: String| DefinitionError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let known = |name: &str, what: &str| -> Result<(String, Capability), DefinitionError> {
        capabilities
            .get(name)
            .map(|c| (name.to_owned(), c.clone()))
            .ok_or_else(|| {
                invalid(format!(
                "{what} names capability `{name}`, which is not defined; defined capabilities: {}",
                capabilities.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
            })
    };
    if m.id.is_empty()
        || !m
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid(format!(
            "mission id `{}` must be lowercase letters, digits and underscores",
            m.id
        )));
    }
    let mut used = BTreeMap::new();
    let (n, c) = known(&m.cohort.anchor, "cohort.anchor")?;
    if !c.is_occurrence() {
        return Err(invalid(format!(
            "cohort.anchor `{n}` is an interval; an anchor must be a first or last occurrence"
        )));
    }
    used.insert(n, c);
    for a in &m.cohort.active_at_anchor {
        let (n, c) = known(a, "cohort.active_at_anchor")?;
        if !matches!(c, Capability::Interval { .. }) {
            return Err(invalid(format!(
                "cohort.active_at_anchor `{n}` must be an interval capability"
            )));
        }
        used.insert(n, c);
    }
    if let Some(age) = &m.cohort.age {
        if age.min > age.max || age.min < 0 || age.max > 150 {
            return Err(invalid(format!(
                "cohort.age: min {} and max {} do not make a range",
                age.min, age.max
            )));
        }
    }
    let mut require = Vec::new();
    for r in m.cohort.require {
        let (n, c) = known(&r.capability, "cohort.require")?;
        if !c.is_measure() {
            return Err(invalid(format!(
                "cohort.require `{n}` must be a count or duration capability"
            )));
        }
        if r.at_least.is_none() && r.at_most.is_none() {
            return Err(invalid(format!(
                "cohort.require `{n}` needs `at_least`, `at_most` or both"
            )));
        }
        used.insert(n.clone(), c);
        require.push(Requirement {
            capability: n,
            at_least: r.at_least,
            at_most: r.at_most,
        });
    }
    let mut outcomes = Vec::new();
    for o in m.outcome {
        let (n, c) = known(&o.condition, &format!("outcome `{}` condition", o.id))?;
        if c.is_measure() {
            return Err(invalid(format!(
                "outcome `{}`: condition `{n}` is a count or duration; a condition must be a first, last or interval capability",
                o.id
            )));
        }
        if o.sustained_days.is_some() && !matches!(c, Capability::Interval { .. }) {
            return Err(invalid(format!(
                "outcome `{}`: sustained_days needs an interval condition, and `{n}` is not one",
                o.id
            )));
        }
        if o.within_days < 0 || o.sustained_days.is_some_and(|d| d < 0) {
            return Err(invalid(format!(
                "outcome `{}`: day counts must not be negative",
                o.id
            )));
        }
        used.insert(n, c);
        if let Some(f) = &o.from {
            let (n, c) = known(f, &format!("outcome `{}` from", o.id))?;
            if !c.is_occurrence() {
                return Err(invalid(format!(
                    "outcome `{}`: `from` must be a first or last occurrence",
                    o.id
                )));
            }
            used.insert(n, c);
        }
        if outcomes.iter().any(|x: &Outcome| x.id == o.id) {
            return Err(invalid(format!("outcome `{}` is defined twice", o.id)));
        }
        outcomes.push(Outcome {
            id: o.id,
            doc: o.doc,
            from: o.from,
            condition: o.condition,
            within_days: o.within_days,
            sustained_days: o.sustained_days,
        });
    }
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for sn in m.snapshot {
        let what = format!("snapshot `{}`", sn.id);
        for name in sn.open.iter().chain(&sn.not_open) {
            let (n, c) = known(name, &what)?;
            if !matches!(c, Capability::Interval { .. }) {
                return Err(invalid(format!(
                    "{what}: `{n}` must be an interval capability (open or not at the watermark)"
                )));
            }
            used.insert(n, c);
        }
        if let Some(age) = &sn.age {
            if age.min > age.max || age.min < 0 || age.max > 150 {
                return Err(invalid(format!(
                    "{what}: age min {} and max {} do not make a range",
                    age.min, age.max
                )));
            }
        }
        if sn.open.is_empty() && sn.not_open.is_empty() {
            return Err(invalid(format!(
                "{what} needs `open` or `not_open`: the state it counts"
            )));
        }
        if snapshots.iter().any(|x| x.id == sn.id) || outcomes.iter().any(|x| x.id == sn.id) {
            return Err(invalid(format!(
                "{what}: the id is already used in this mission"
            )));
        }
        snapshots.push(Snapshot {
            id: sn.id,
            doc: sn.doc,
            age: sn.age.map(|a| (a.min, a.max)),
            open: sn.open,
            not_open: sn.not_open,
        });
    }
    if outcomes.is_empty() {
        return Err(invalid("a mission needs at least one [[outcome]]".into()));
    }
    Ok(MissionDef {
        id: m.id,
        title: m.title,
        doc: m.doc,
        cohort: Cohort {
            anchor: m.cohort.anchor,
            age: m.cohort.age.map(|a| (a.min, a.max)),
            active_at_anchor: m.cohort.active_at_anchor,
            require,
        },
        outcomes,
        snapshots,
        capabilities: used,
    })
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
                reason: format!("mission id `{}` is already defined by another file", m.id),
            });
        }
        missions.push(m);
    }
    Ok(missions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: &str =
        "[capability.left]\ndoc = \"x\"\nkind = \"first\"\nevent = \"dfe.EducationExited\"\n";

    fn caps() -> BTreeMap<String, Capability> {
        parse_capabilities(Path::new("capabilities.toml"), CAPS).expect("valid")
    }

    #[test]
    fn the_repository_missions_load() {
        let dir =
            Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
                .join("../../missions");
        let ids: Vec<String> = load_dir(&dir)
            .expect("load")
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, vec!["health_and_work", "opportunity", "safer_streets"]);
    }

    #[test]
    fn counts_and_durations_are_checked_where_they_are_used() {
        let bad = "[capability.x]\ndoc = \"x\"\nkind = \"duration\"\nof = \"left\"\n[capability.left]\ndoc = \"x\"\nkind = \"first\"\nevent = \"dfe.EducationExited\"\n";
        let msg = parse_capabilities(Path::new("c.toml"), bad)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("must name an interval capability"), "{msg}");
        let caps = parse_capabilities(
            Path::new("c.toml"),
            &format!("{CAPS}[capability.n]\ndoc = \"x\"\nkind = \"count\"\nevent = \"dfe.EducationExited\"\n"),
        )
        .expect("valid");
        let anchor_is_count = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"n\"\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"left\"\nwithin_days = 3\n";
        assert!(parse_mission(Path::new("m.toml"), anchor_is_count, &caps).is_err());
        let require_occurrence = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\nrequire = [{ capability = \"left\", at_least = 1 }]\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"left\"\nwithin_days = 3\n";
        let msg = parse_mission(Path::new("m.toml"), require_occurrence, &caps)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("count or duration"), "{msg}");
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let text = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\nfavourite_colour = \"blue\"\n";
        let err = parse_mission(Path::new("m.toml"), text, &caps()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("m.toml:7:"), "{msg}");
        assert!(msg.contains("favourite_colour"), "{msg}");
    }

    #[test]
    fn unknown_capabilities_and_event_types_are_refused_with_the_reason() {
        let text = "id = \"m\"\ntitle = \"t\"\ndoc = \"d\"\n[cohort]\ndoc = \"c\"\nanchor = \"left\"\n[[outcome]]\nid = \"o\"\ndoc = \"d\"\ncondition = \"in_work\"\nwithin_days = 3\n";
        let msg = parse_mission(Path::new("m.toml"), text, &caps())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`in_work`") && msg.contains("left"), "{msg}");
        let bad = "[capability.x]\ndoc = \"x\"\nkind = \"first\"\nevent = \"dfe.Graduated\"\n";
        let msg = parse_capabilities(Path::new("c.toml"), bad)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("dfe.Graduated"), "{msg}");
        let bad =
            "[capability.x]\ndoc = \"x\"\nkind = \"sometimes\"\nevent = \"dfe.EducationExited\"\n";
        assert!(parse_capabilities(Path::new("c.toml"), bad)
            .unwrap_err()
            .to_string()
            .contains("sometimes"));
    }
}
