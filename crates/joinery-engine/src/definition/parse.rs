//! Reading definitions from TOML: the files' raw shape, and its
//! compilation into [`MissionDef`]s with every reference checked.

use std::collections::BTreeMap;
use std::path::Path;

use joinery_domain::{EventType, FieldValue, MissionId, OutcomeId};
use serde::Deserialize;

use super::*;

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
    id: MissionId,
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
    id: OutcomeId,
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
    id: OutcomeId,
    doc: String,
    from: Option<String>,
    condition: String,
    within_days: i64,
    sustained_days: Option<i64>,
}

/// The longest window or sustain period, in days: 100 years.
const MAX_WINDOW_DAYS: i64 = 36_525;

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
        if !(0..=MAX_WINDOW_DAYS).contains(&o.within_days)
            || o.sustained_days
                .is_some_and(|d| !(0..=MAX_WINDOW_DAYS).contains(&d))
        {
            return Err(invalid(format!(
                "outcome `{}`: within_days and sustained_days must be 0 to {MAX_WINDOW_DAYS} (100 years)",
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
