//! Reading definitions from TOML: the files' raw shape, and its
//! compilation into [`MissionDef`]s with every reference checked: each
//! capability named exists and is of a kind the place allows, and each
//! event type, field and value exists in the event schemas
//! ([`EventShapes`]). A mistake is refused with the file, the line and
//! what was expected.

use std::collections::BTreeMap;
use std::path::Path;

use joinery_domain::{EventType, FieldValue, MissionId, OutcomeId};
use serde::Deserialize;
use toml::Spanned;

use super::shapes::{EventShapes, FieldShape};
use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CapabilitiesFile {
    capability: BTreeMap<String, Spanned<RawCapability>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapability {
    #[allow(dead_code)]
    doc: String,
    kind: Spanned<String>,
    event: Option<Spanned<String>>,
    #[serde(rename = "where")]
    where_: Option<Spanned<toml::Table>>,
    start: Option<Spanned<String>>,
    start_where: Option<Spanned<toml::Table>>,
    end: Option<Spanned<String>>,
    end_where: Option<Spanned<toml::Table>>,
    match_on: Option<Spanned<String>>,
    of: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MissionFile {
    id: MissionId,
    title: String,
    doc: String,
    cohort: RawCohort,
    #[serde(default)]
    outcome: Vec<Spanned<RawOutcome>>,
    #[serde(default)]
    snapshot: Vec<Spanned<RawSnapshot>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnapshot {
    id: OutcomeId,
    doc: String,
    age: Option<Spanned<RawAge>>,
    #[serde(default)]
    open: Vec<Spanned<String>>,
    #[serde(default)]
    not_open: Vec<Spanned<String>>,
    state: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCohort {
    #[allow(dead_code)]
    doc: String,
    anchor: Spanned<String>,
    age: Option<Spanned<RawAge>>,
    #[serde(default)]
    active_at_anchor: Vec<Spanned<String>>,
    at_anchor: Option<Spanned<toml::Value>>,
    #[serde(default)]
    require: Vec<Spanned<RawRequirement>>,
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
    from: Option<Spanned<String>>,
    condition: Option<Spanned<toml::Value>>,
    within_days: Option<i64>,
    sustained_days: Option<i64>,
    state: Option<Spanned<toml::Value>>,
    at_days: Option<i64>,
    better: Option<Spanned<String>>,
}

/// The longest window or sustain period, in days: 100 years.
const MAX_WINDOW_DAYS: i64 = 36_525;

/// The deepest nesting of `any_of`, `all_of` and `not`.
const MAX_CONDITION_DEPTH: usize = 8;

/// 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, DefinitionError> {
    toml::from_str(text).map_err(|e| DefinitionError::Syntax {
        path: path.to_owned(),
        line: e.span().map(|s| line_at(text, s.start)).unwrap_or(1),
        reason: e.message().to_owned(),
    })
}

/// Builds errors at a place in one file.
struct At<'a> {
    path: &'a Path,
    text: &'a str,
}

impl At<'_> {
    fn err(&self, span: &std::ops::Range<usize>, reason: impl Into<String>) -> DefinitionError {
        DefinitionError::Invalid {
            path: self.path.to_owned(),
            line: line_at(self.text, span.start),
            reason: reason.into(),
        }
    }
}

fn event_type(
    at: &At<'_>,
    name: &str,
    event: Option<&Spanned<String>>,
    whole: &std::ops::Range<usize>,
) -> Result<EventType, DefinitionError> {
    let event =
        event.ok_or_else(|| at.err(whole, format!("capability `{name}` needs an event type")))?;
    event
        .get_ref()
        .parse()
        .map_err(|e: joinery_domain::department::UnknownEventType| {
            at.err(&event.span(), format!("capability `{name}`: {e}"))
        })
}

/// A TOML value as the field's shape holds it, or why it cannot be one.
fn field_value(shape: &FieldShape, v: &toml::Value) -> Result<FieldValue, String> {
    let wrong = || format!("expected {}, found {v}", shape.describe());
    match (shape, v) {
        (FieldShape::Bool, toml::Value::Boolean(b)) => Ok(FieldValue::Bool(*b)),
        (FieldShape::Int, toml::Value::Integer(i)) => Ok(FieldValue::Int(*i)),
        (FieldShape::Timestamp, toml::Value::Integer(i)) => Ok(FieldValue::Int(*i)),
        (FieldShape::Timestamp, toml::Value::Datetime(d)) => moment(&d.to_string()),
        (FieldShape::Timestamp, toml::Value::String(s)) => moment(s),
        (FieldShape::Text, toml::Value::String(s)) => Ok(FieldValue::Text(s.clone())),
        (FieldShape::Enum(symbols), toml::Value::String(s)) => {
            if symbols.contains(s) {
                Ok(FieldValue::Text(s.clone()))
            } else {
                Err(format!("`{s}` is not a symbol of the field; {}", wrong()))
            }
        }
        _ => Err(wrong()),
    }
}

/// Whether a value is a date without a time (`2024-12-31`).
fn date_only(v: &toml::Value) -> bool {
    match v {
        toml::Value::Datetime(d) => d.time.is_none(),
        toml::Value::String(s) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        _ => false,
    }
}

/// A date (midnight UTC) or RFC 3339 date-time, as milliseconds.
fn moment(s: &str) -> Result<FieldValue, String> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(FieldValue::Int(
            d.and_hms_opt(0, 0, 0)
                .expect("midnight exists")
                .and_utc()
                .timestamp_millis(),
        ));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| FieldValue::Int(t.timestamp_millis()))
        .map_err(|_| format!("`{s}` is not a date (YYYY-MM-DD) or an RFC 3339 date-time"))
}

/// One `where` entry as a [`Predicate`], checked against the field.
fn predicate(
    event: EventType,
    field: &str,
    spec: &FieldSpec,
    v: &toml::Value,
) -> Result<Predicate, String> {
    let values = |v: &toml::Value| -> Result<Vec<FieldValue>, String> {
        match v {
            toml::Value::Array(items) if items.is_empty() => {
                Err("an empty list matches nothing".into())
            }
            toml::Value::Array(items) => {
                items.iter().map(|i| field_value(&spec.shape, i)).collect()
            }
            one => Ok(vec![field_value(&spec.shape, one)?]),
        }
    };
    // A date as an upper bound includes the whole day.
    let bound = |v: Option<&toml::Value>, upper: bool| -> Result<Option<i64>, String> {
        v.map(|v| match field_value(&spec.shape, v)? {
            FieldValue::Int(i) if upper && spec.shape == FieldShape::Timestamp && date_only(v) => {
                Ok(i.saturating_add(joinery_domain::event::DAY_MS - 1))
            }
            FieldValue::Int(i) => Ok(i),
            other => Err(format!("a range needs numbers or moments, found {other:?}")),
        })
        .transpose()
    };
    match v {
        toml::Value::Array(_) => Ok(Predicate::In { any: values(v)? }),
        toml::Value::Table(t) => {
            let keys: Vec<&str> = t.keys().map(String::as_str).collect();
            match keys.as_slice() {
                ["not"] => Ok(Predicate::NotIn {
                    not: values(&t["not"])?,
                }),
                ["present"] => {
                    let Some(present) = t["present"].as_bool() else {
                        return Err("`present` is true or false".into());
                    };
                    if !spec.optional {
                        return Err(format!(
                            "`{field}` is always present in {event}; `present` tests an optional field"
                        ));
                    }
                    Ok(Predicate::Present { present })
                }
                ks if !ks.is_empty() && ks.iter().all(|k| matches!(*k, "at_least" | "at_most")) => {
                    if !spec.shape.is_ordered() {
                        return Err(format!(
                            "`{field}` holds {}; `at_least` and `at_most` need a number or a moment",
                            spec.shape.describe()
                        ));
                    }
                    let (at_least, at_most) =
                        (bound(t.get("at_least"), false)?, bound(t.get("at_most"), true)?);
                    if let (Some(a), Some(b)) = (at_least, at_most) {
                        if a > b {
                            return Err("`at_least` is above `at_most`: nothing matches".into());
                        }
                    }
                    Ok(Predicate::Range { at_least, at_most })
                }
                _ => Err(format!(
                    "a test is a value, a list of values, or a table with `not`, `present`, or `at_least` and/or `at_most`; found keys {}",
                    keys.join(", ")
                )),
            }
        }
        one => Ok(Predicate::Eq(field_value(&spec.shape, one)?)),
    }
}

/// An event filter, with each `where` field and value checked against the
/// event's schema.
fn filter(
    at: &At<'_>,
    name: &str,
    event: EventType,
    tests: Option<&Spanned<toml::Table>>,
) -> Result<EventFilter, DefinitionError> {
    let mut conditions = BTreeMap::new();
    if let Some(tests) = tests {
        let fields = EventShapes::builtin().fields(event).ok_or_else(|| {
            at.err(
                &tests.span(),
                format!("capability `{name}`: {event} has no schema"),
            )
        })?;
        for (field, v) in tests.get_ref() {
            let Some(spec) = fields.get(field) else {
                return Err(at.err(
                    &tests.span(),
                    format!(
                        "capability `{name}`: {event} has no field `{field}`; its fields are {}",
                        fields.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            let p = predicate(event, field, spec, v).map_err(|e| {
                at.err(
                    &tests.span(),
                    format!("capability `{name}`: `{field}`: {e}"),
                )
            })?;
            conditions.insert(field.clone(), p);
        }
    }
    Ok(EventFilter { event, conditions })
}

/// Checks that `match_on` is a field of both the start and the end event.
fn match_on(
    at: &At<'_>,
    name: &str,
    start: EventType,
    end: EventType,
    field: Option<&Spanned<String>>,
    whole: &std::ops::Range<usize>,
) -> Result<String, DefinitionError> {
    let field = field.ok_or_else(|| {
        at.err(
            whole,
            format!("interval capability `{name}` needs `match_on`, the field pairing a start with its end"),
        )
    })?;
    for event in [start, end] {
        let fields = EventShapes::builtin().fields(event).map(|f| {
            (
                f.contains_key(field.get_ref()),
                f.keys().cloned().collect::<Vec<_>>(),
            )
        });
        if let Some((false, known)) = fields {
            return Err(at.err(
                &field.span(),
                format!(
                    "capability `{name}`: match_on `{}` is not a field of {event}; its fields are {}",
                    field.get_ref(),
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(field.get_ref().clone())
}

/// Parses a capabilities file.
pub fn parse_capabilities(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, Capability>, DefinitionError> {
    let file: CapabilitiesFile = parse(path, text)?;
    let at = At { path, text };
    let mut out = BTreeMap::new();
    let mut durations = Vec::new();
    for (name, c) in file.capability {
        let whole = c.span();
        let c = c.into_inner();
        if c.kind.get_ref() == "duration" {
            durations.push((name, c.of, whole));
            continue;
        }
        let one = |event: &Option<Spanned<String>>, tests: &Option<Spanned<toml::Table>>| {
            let t = event_type(&at, &name, event.as_ref(), &whole)?;
            filter(&at, &name, t, tests.as_ref())
        };
        let cap = match c.kind.get_ref().as_str() {
            "first" => Capability::First(one(&c.event, &c.where_)?),
            "last" => Capability::Last(one(&c.event, &c.where_)?),
            "count" => Capability::Count(one(&c.event, &c.where_)?),
            "interval" => {
                let start = one(&c.start, &c.start_where)?;
                let end = one(&c.end, &c.end_where)?;
                let match_on = match_on(&at, &name, start.event, end.event, c.match_on.as_ref(), &whole)?;
                Capability::Interval { start, end, match_on }
            }
            other => {
                return Err(at.err(
                    &c.kind.span(),
                    format!("capability `{name}` has kind `{other}`; expected first, last, interval, count or duration"),
                ))
            }
        };
        out.insert(name, cap);
    }
    for (name, of, whole) in durations {
        let of = of.ok_or_else(|| {
            at.err(
                &whole,
                format!(
                    "duration capability `{name}` needs `of`, the interval capability it measures"
                ),
            )
        })?;
        let Some(Capability::Interval {
            start,
            end,
            match_on,
        }) = out.get(of.get_ref()).cloned()
        else {
            return Err(at.err(
                &of.span(),
                format!(
                    "duration capability `{name}`: `of = \"{}\"` must name an interval capability",
                    of.get_ref()
                ),
            ));
        };
        out.insert(
            name,
            Capability::Duration {
                of: of.into_inner(),
                start,
                end,
                match_on,
            },
        );
    }
    Ok(out)
}

/// What a place in a mission allows of the capabilities it names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Read at a moment (cohort `at_anchor`, snapshot `state`, state
    /// outcomes): occurrences and intervals, combined any way.
    State,
    /// Must occur in a window (event outcomes): occurrences and intervals,
    /// alone or `any_of` them.
    Event,
}

/// Compiles one mission against the capabilities, collecting those it uses.
struct Compiler<'a> {
    at: At<'a>,
    capabilities: &'a BTreeMap<String, Capability>,
    used: BTreeMap<String, Capability>,
}

impl Compiler<'_> {
    /// A capability by name, which must exist; recorded as used.
    fn known(
        &mut self,
        name: &str,
        what: &str,
        span: &std::ops::Range<usize>,
    ) -> Result<Capability, DefinitionError> {
        let c = self.capabilities.get(name).cloned().ok_or_else(|| {
            self.at.err(
                span,
                format!(
                    "{what} names capability `{name}`, which is not defined; defined capabilities: {}",
                    self.capabilities.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        self.used.insert(name.to_owned(), c.clone());
        Ok(c)
    }

    /// A condition written in TOML: a capability name, or a table with one
    /// of `any_of = [...]`, `all_of = [...]`, `not = ...`.
    fn condition(
        &mut self,
        v: &toml::Value,
        what: &str,
        span: &std::ops::Range<usize>,
        usage: Use,
        depth: usize,
    ) -> Result<Condition, DefinitionError> {
        if depth > MAX_CONDITION_DEPTH {
            return Err(self.at.err(
                span,
                format!("{what}: conditions nest at most {MAX_CONDITION_DEPTH} deep"),
            ));
        }
        let list = |me: &mut Self, items: &toml::Value, word: &str| {
            let Some(items) = items.as_array().filter(|a| !a.is_empty()) else {
                return Err(me.at.err(
                    span,
                    format!("{what}: `{word}` takes a non-empty list of conditions"),
                ));
            };
            items
                .iter()
                .map(|i| me.condition(i, what, span, usage, depth + 1))
                .collect::<Result<Vec<_>, _>>()
        };
        match v {
            toml::Value::String(name) => {
                let c = self.known(name, what, span)?;
                if matches!(c, Capability::Count(_) | Capability::Duration { .. }) {
                    return Err(self.at.err(
                        span,
                        format!("{what}: `{name}` is a count or duration; a condition names first, last or interval capabilities (counts and durations go in `cohort.require`)"),
                    ));
                }
                Ok(Condition::Capability(name.clone()))
            }
            toml::Value::Table(t) if t.len() == 1 => {
                let (word, inner) = t.iter().next().expect("one entry");
                match (word.as_str(), usage) {
                    ("any_of", _) => Ok(Condition::AnyOf {
                        any_of: list(self, inner, "any_of")?,
                    }),
                    ("all_of" | "not", Use::Event) => Err(self.at.err(
                        span,
                        format!("{what}: an event outcome's condition must occur in its window, so it is a capability or `any_of` them; for `{word}`, write a state outcome (`state = ...` with `at_days`)"),
                    )),
                    ("all_of", Use::State) => Ok(Condition::AllOf {
                        all_of: list(self, inner, "all_of")?,
                    }),
                    ("not", Use::State) => Ok(Condition::Not {
                        not: Box::new(self.condition(inner, what, span, usage, depth + 1)?),
                    }),
                    (other, _) => Err(self.at.err(
                        span,
                        format!("{what}: `{other}` is not a way to combine conditions; expected any_of, all_of or not"),
                    )),
                }
            }
            other => Err(self.at.err(
                span,
                format!("{what}: a condition is a capability name, or a table with one of any_of = [...], all_of = [...], not = ...; found {other}"),
            )),
        }
    }

    fn spanned_condition(
        &mut self,
        v: &Spanned<toml::Value>,
        what: &str,
        usage: Use,
    ) -> Result<Condition, DefinitionError> {
        self.condition(v.get_ref(), what, &v.span(), usage, 0)
    }

    fn age(
        &self,
        age: Option<&Spanned<RawAge>>,
        what: &str,
    ) -> Result<Option<(i64, i64)>, DefinitionError> {
        let Some(age) = age else { return Ok(None) };
        let a = age.get_ref();
        if a.min > a.max || a.min < 0 || a.max > 150 {
            return Err(self.at.err(
                &age.span(),
                format!(
                    "{what}: min {} and max {} do not make a range of ages (0 to 150)",
                    a.min, a.max
                ),
            ));
        }
        Ok(Some((a.min, a.max)))
    }

    fn cohort(&mut self, c: RawCohort) -> Result<Cohort, DefinitionError> {
        let anchor = self.known(c.anchor.get_ref(), "cohort.anchor", &c.anchor.span())?;
        if !anchor.is_occurrence() {
            return Err(self.at.err(
                &c.anchor.span(),
                format!(
                    "cohort.anchor `{}` is not an occurrence; an anchor must be a first or last capability",
                    c.anchor.get_ref()
                ),
            ));
        }
        for a in &c.active_at_anchor {
            let cap = self.known(a.get_ref(), "cohort.active_at_anchor", &a.span())?;
            if !matches!(cap, Capability::Interval { .. }) {
                return Err(self.at.err(
                    &a.span(),
                    format!(
                        "cohort.active_at_anchor `{}` must be an interval capability",
                        a.get_ref()
                    ),
                ));
            }
        }
        let at_anchor = c
            .at_anchor
            .as_ref()
            .map(|v| self.spanned_condition(v, "cohort.at_anchor", Use::State))
            .transpose()?;
        let mut require = Vec::new();
        for r in c.require {
            let span = r.span();
            let r = r.into_inner();
            let cap = self.known(&r.capability, "cohort.require", &span)?;
            if !cap.is_measure() {
                return Err(self.at.err(
                    &span,
                    format!(
                        "cohort.require `{}` must be a count or duration capability",
                        r.capability
                    ),
                ));
            }
            if r.at_least.is_none() && r.at_most.is_none() {
                return Err(self.at.err(
                    &span,
                    format!(
                        "cohort.require `{}` needs `at_least`, `at_most` or both",
                        r.capability
                    ),
                ));
            }
            require.push(Requirement {
                capability: r.capability,
                at_least: r.at_least,
                at_most: r.at_most,
            });
        }
        Ok(Cohort {
            age: self.age(c.age.as_ref(), "cohort.age")?,
            anchor: c.anchor.into_inner(),
            active_at_anchor: c
                .active_at_anchor
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            at_anchor,
            require,
        })
    }

    fn outcome(&mut self, o: Spanned<RawOutcome>) -> Result<Outcome, DefinitionError> {
        let span = o.span();
        let o = o.into_inner();
        let what = format!("outcome `{}`", o.id);
        let days = |d: Option<i64>| d.is_some_and(|d| !(0..=MAX_WINDOW_DAYS).contains(&d));
        if days(o.within_days) || days(o.sustained_days) || days(o.at_days) {
            return Err(self.at.err(
                &span,
                format!("{what}: within_days, sustained_days and at_days must be 0 to {MAX_WINDOW_DAYS} (100 years)"),
            ));
        }
        let (condition, within_days, at_days) = match (&o.condition, &o.state) {
            (Some(c), None) => {
                let Some(within) = o.within_days else {
                    return Err(self.at.err(&span, format!("{what}: a `condition` needs `within_days`, the window it must occur in")));
                };
                if o.at_days.is_some() {
                    return Err(self.at.err(&span, format!("{what}: `at_days` goes with `state`; an event outcome has `condition` and `within_days`")));
                }
                let cond = self.spanned_condition(c, &format!("{what} condition"), Use::Event)?;
                if o.sustained_days.is_some()
                    && !cond
                        .capabilities()
                        .iter()
                        .all(|n| matches!(self.capabilities.get(*n), Some(Capability::Interval { .. })))
                {
                    return Err(self.at.err(
                        &c.span(),
                        format!("{what}: sustained_days needs interval conditions, and `{cond}` names one that is not"),
                    ));
                }
                (cond, within, None)
            }
            (None, Some(s)) => {
                let Some(at) = o.at_days else {
                    return Err(self.at.err(&span, format!("{what}: a `state` needs `at_days`, the days after the window's start at which it is read")));
                };
                if o.within_days.is_some() || o.sustained_days.is_some() {
                    return Err(self.at.err(&span, format!("{what}: a state outcome is read at `at_days`; `within_days` and `sustained_days` belong to event outcomes")));
                }
                (self.spanned_condition(s, &format!("{what} state"), Use::State)?, at, Some(at))
            }
            _ => {
                return Err(self.at.err(
                    &span,
                    format!("{what} needs either `condition` with `within_days` (it must occur in a window) or `state` with `at_days` (it must hold then)"),
                ))
            }
        };
        if let Some(f) = &o.from {
            let cap = self.known(f.get_ref(), &format!("{what} from"), &f.span())?;
            if !cap.is_occurrence() {
                return Err(self.at.err(
                    &f.span(),
                    format!("{what}: `from` must be a first or last occurrence"),
                ));
            }
        }
        let better = match o.better.as_ref().map(|b| (b.get_ref().as_str(), b.span())) {
            None | Some(("higher", _)) => Better::Higher,
            Some(("lower", _)) => Better::Lower,
            Some((other, span)) => {
                return Err(self.at.err(
                    &span,
                    format!("{what}: better = `{other}`; expected \"higher\" or \"lower\""),
                ))
            }
        };
        Ok(Outcome {
            id: o.id,
            doc: o.doc,
            from: o.from.map(Spanned::into_inner),
            condition,
            within_days,
            sustained_days: o.sustained_days,
            at_days,
            better,
        })
    }

    fn snapshot(&mut self, sn: Spanned<RawSnapshot>) -> Result<Snapshot, DefinitionError> {
        let span = sn.span();
        let sn = sn.into_inner();
        let what = format!("snapshot `{}`", sn.id);
        for name in sn.open.iter().chain(&sn.not_open) {
            let cap = self.known(name.get_ref(), &what, &name.span())?;
            if !matches!(cap, Capability::Interval { .. }) {
                return Err(self.at.err(
                    &name.span(),
                    format!("{what}: `{}` must be an interval capability (open or not at the watermark)", name.get_ref()),
                ));
            }
        }
        let state = sn
            .state
            .as_ref()
            .map(|s| self.spanned_condition(s, &format!("{what} state"), Use::State))
            .transpose()?;
        if sn.open.is_empty() && sn.not_open.is_empty() && state.is_none() {
            return Err(self.at.err(
                &span,
                format!("{what} needs `state` (or `open`, `not_open`): what it counts"),
            ));
        }
        Ok(Snapshot {
            id: sn.id,
            doc: sn.doc,
            age: self.age(sn.age.as_ref(), &format!("{what}: age"))?,
            open: sn.open.into_iter().map(Spanned::into_inner).collect(),
            not_open: sn.not_open.into_iter().map(Spanned::into_inner).collect(),
            state,
        })
    }
}

/// Parses one mission file against the shared capabilities.
pub fn parse_mission(
    path: &Path,
    text: &str,
    capabilities: &BTreeMap<String, Capability>,
) -> Result<MissionDef, DefinitionError> {
    let m: MissionFile = parse(path, text)?;
    let mut c = Compiler {
        at: At { path, text },
        capabilities,
        used: BTreeMap::new(),
    };
    let cohort = c.cohort(m.cohort)?;
    let mut outcomes: Vec<Outcome> = Vec::new();
    for o in m.outcome {
        let span = o.span();
        let o = c.outcome(o)?;
        if outcomes.iter().any(|x| x.id == o.id) {
            return Err(c
                .at
                .err(&span, format!("outcome `{}` is defined twice", o.id)));
        }
        outcomes.push(o);
    }
    let mut snapshots: Vec<Snapshot> = Vec::new();
    for sn in m.snapshot {
        let span = sn.span();
        let sn = c.snapshot(sn)?;
        if snapshots.iter().any(|x| x.id == sn.id) || outcomes.iter().any(|x| x.id == sn.id) {
            return Err(c.at.err(
                &span,
                format!(
                    "snapshot `{}`: the id is already used in this mission",
                    sn.id
                ),
            ));
        }
        snapshots.push(sn);
    }
    if outcomes.is_empty() {
        return Err(DefinitionError::Invalid {
            path: path.to_owned(),
            line: 1,
            reason: "a mission needs at least one [[outcome]]".into(),
        });
    }
    Ok(MissionDef {
        id: m.id,
        title: m.title,
        doc: m.doc,
        cohort,
        outcomes,
        snapshots,
        capabilities: c.used,
    })
}
