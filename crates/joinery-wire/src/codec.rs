//! Avro values to and from the domain: department records into [`Event`]s
//! for the processor, and [`MissionView`]s to and from the view topics.
//!
//! Decoding resolves the writer schema (from the registry, by id) against the
//! reader schema this build was compiled with, so a department on an older or
//! newer compatible schema version is read correctly.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use joinery_domain::event::{MAX_TEXT_BYTES, RETRACTED_FIELD};
use joinery_domain::{
    CitizenKey, Event, EventId, EventType, FieldValue, MissionView, OutcomeState, OutcomeView,
    SnapshotView,
};
use joinery_runtime::retry::Policy;

use crate::framing::FramingError;
use crate::registry::{RegistryClient, RegistryError};

/// Why a record could not be turned into a domain value. Each variant but
/// [`DecodeError::Registry`] is a property of the record: it goes to the
/// dead-letter topic with [`DecodeError::reason`] and processing goes on.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The Confluent framing is wrong.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// The schema id is not known to the registry.
    #[error("schema id {0} is not registered")]
    UnknownSchemaId(u32),
    /// The registry holds the schema id, but not as a schema this reader
    /// can parse: a registered id never changes meaning, so this is the
    /// record's to carry, not a condition to wait out.
    #[error("schema id {id} is registered but is not a valid Avro schema: {reason}")]
    UnreadableSchema {
        /// The schema id.
        id: u32,
        /// Why it cannot be parsed.
        reason: String,
    },
    /// The registry could not be asked (retry; not the record's fault).
    #[error(transparent)]
    Registry(RegistryError),
    /// The writer schema is not one of Joinery's event types.
    #[error("writer schema `{0}` is not a Joinery event type")]
    UnknownRecordType(String),
    /// The event type does not belong on this topic.
    #[error("{event_type} does not belong on topic {topic}")]
    WrongTopic {
        /// The record's event type.
        event_type: EventType,
        /// The topic it was found on.
        topic: String,
    },
    /// The Avro body is truncated or corrupt, or cannot be resolved to the reader schema.
    #[error("Avro body is corrupt or incompatible with the reader schema: {0}")]
    CorruptAvro(String),
    /// An event time that cannot be true: before 1900, or further ahead of
    /// the moment the record was produced than the configured horizon.
    #[error("field `{field}` {error}")]
    EventTime {
        /// `occurred_at` or `recorded_at`.
        field: &'static str,
        /// What is wrong with it.
        error: joinery_domain::event::EventTimeError,
    },
    /// The body decoded but a field is invalid (e.g. a citizen_key that is not a pseudonym).
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl DecodeError {
    /// A short stable label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Framing(f) => f.reason(),
            DecodeError::UnknownSchemaId(_) => "unknown_schema_id",
            DecodeError::UnreadableSchema { .. } => "unreadable_schema",
            DecodeError::Registry(_) => "registry_unavailable",
            DecodeError::UnknownRecordType(_) => "unknown_record_type",
            DecodeError::WrongTopic { .. } => "wrong_topic",
            DecodeError::CorruptAvro(_) => "corrupt_avro",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::EventTime { .. } => "event_time_out_of_range",
        }
    }

    /// True when the record itself is bad (dead-letter it); false when the
    /// failure is the environment's (retry it).
    pub fn is_poison(&self) -> bool {
        !matches!(self, DecodeError::Registry(_))
    }
}

impl From<RegistryError> for DecodeError {
    fn from(e: RegistryError) -> Self {
        DecodeError::Registry(e)
    }
}

/// The writer schema of a record with schema id `id`, waiting under
/// `policy` while the registry is unreachable: [`DecodeError::UnknownSchemaId`]
/// only when the registry says the id does not exist (the record is then
/// poison), [`DecodeError::Registry`] when the registry cannot be asked (the
/// record is not at fault). The processor, projections and a rebuild's
/// settle resolve writer schemas this way.
pub async fn writer_schema(
    registry: &RegistryClient,
    id: u32,
    policy: &Policy,
) -> Result<Arc<Schema>, DecodeError> {
    registry
        .schema_when_ready(id, policy)
        .await
        .map_err(|e| match e {
            e if e.is_unknown_schema() => DecodeError::UnknownSchemaId(id),
            RegistryError::InvalidSchema { id, source } => DecodeError::UnreadableSchema {
                id,
                reason: source.to_string(),
            },
            e => DecodeError::Registry(e),
        })
}

/// The record full name of a record schema.
pub fn record_name(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(r) => Some(r.name.fullname(None)),
        _ => None,
    }
}

/// Decodes Avro records written with one schema into values of another,
/// resolving both schemas' names once (building that resolution allocates,
/// so a service decoding many records keeps one decoder per writer schema).
/// When the writer schema is the reader schema, records are not resolved.
pub struct ValueDecoder<'s> {
    reader: GenericDatumReader<'s>,
}

impl std::fmt::Debug for ValueDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueDecoder").finish_non_exhaustive()
    }
}

impl<'s> ValueDecoder<'s> {
    /// A decoder of records written with `writer` into values of `reader`,
    /// comparing the two schemas once (a decoder kept for many records
    /// skips resolving each one when they are the same).
    pub fn new(writer: &'s Schema, reader: &'s Schema) -> Result<ValueDecoder<'s>, DecodeError> {
        let same = std::ptr::eq(writer, reader)
            || matches!(
                (serde_json::to_string(writer), serde_json::to_string(reader)),
                (Ok(w), Ok(r)) if w == r
            );
        Self::build(writer, reader, same)
    }

    fn build(
        writer: &'s Schema,
        reader: &'s Schema,
        same: bool,
    ) -> Result<ValueDecoder<'s>, DecodeError> {
        let builder = GenericDatumReader::builder(writer);
        let reader = if same {
            builder.build()
        } else {
            builder.reader_schema(reader).build()
        }
        .map_err(|e| DecodeError::CorruptAvro(e.to_string()))?;
        Ok(ValueDecoder { reader })
    }

    /// Decodes one record's body (the whole of it: trailing bytes are an error).
    pub fn decode(&self, mut body: &[u8]) -> Result<Value, DecodeError> {
        let value = self
            .reader
            .read_value(&mut body)
            .map_err(|e| DecodeError::CorruptAvro(e.to_string()))?;
        if !body.is_empty() {
            return Err(DecodeError::CorruptAvro(format!(
                "{} trailing bytes after the record",
                body.len()
            )));
        }
        Ok(value)
    }
}

/// Decodes one record written with `writer` into a value of `reader`
/// (resolving it, rather than serialising both schemas to compare them for
/// a single record).
pub fn decode_value(writer: &Schema, reader: &Schema, body: &[u8]) -> Result<Value, DecodeError> {
    ValueDecoder::build(writer, reader, std::ptr::eq(writer, reader))?.decode(body)
}

/// Encodes values with one schema, validating each first, its names
/// resolved once.
pub struct ValueEncoder<'s> {
    writer: GenericDatumWriter<'s>,
}

impl std::fmt::Debug for ValueEncoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueEncoder").finish_non_exhaustive()
    }
}

impl<'s> ValueEncoder<'s> {
    /// An encoder for `schema`.
    pub fn new(schema: &'s Schema) -> Result<ValueEncoder<'s>, apache_avro::Error> {
        Ok(ValueEncoder {
            writer: GenericDatumWriter::builder(schema).build()?,
        })
    }

    /// Encodes one value (an error when it does not match the schema).
    pub fn encode(&self, value: Value) -> Result<Vec<u8>, apache_avro::Error> {
        self.writer.write_value_to_vec(value)
    }
}

/// Encodes a value with `schema`, validating it first.
pub fn encode_value(schema: &Schema, value: Value) -> Result<Vec<u8>, apache_avro::Error> {
    ValueEncoder::new(schema)?.encode(value)
}

fn unwrap_union(v: Value) -> Value {
    match v {
        Value::Union(_, inner) => unwrap_union(*inner),
        other => other,
    }
}

fn text(v: Value) -> Option<String> {
    match unwrap_union(v) {
        Value::String(s) | Value::Enum(_, s) => Some(s),
        Value::Uuid(u) => Some(u.hyphenated().to_string()),
        _ => None,
    }
}

fn millis(v: Value) -> Option<i64> {
    match unwrap_union(v) {
        Value::TimestampMillis(t) | Value::Long(t) => Some(t),
        Value::Int(i) => Some(i64::from(i)),
        _ => None,
    }
}

fn field_value(v: Value) -> Option<FieldValue> {
    match unwrap_union(v) {
        Value::Boolean(b) => Some(FieldValue::Bool(b)),
        Value::Int(i) => Some(FieldValue::Int(i64::from(i))),
        Value::Long(i) | Value::TimestampMillis(i) => Some(FieldValue::Int(i)),
        Value::String(s) | Value::Enum(_, s) => Some(FieldValue::Text(s)),
        Value::Uuid(u) => Some(FieldValue::Text(u.to_string())),
        _ => None,
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// An optional text field parsed to its typed form; a present but invalid
/// value is the record's fault.
fn typed<T: std::str::FromStr<Err = joinery_domain::InvalidCode>>(
    field: &'static str,
    v: Option<String>,
) -> Result<Option<T>, DecodeError> {
    v.map(|s| {
        s.parse()
            .map_err(|e: joinery_domain::InvalidCode| invalid(field, e.to_string()))
    })
    .transpose()
}

/// A required text field parsed to its typed form.
fn required<T: std::str::FromStr<Err = joinery_domain::InvalidCode>>(
    field: &'static str,
    v: Option<String>,
) -> Result<T, DecodeError> {
    typed(field, v)?.ok_or_else(|| invalid(field, "missing"))
}

/// Turns a decoded department record into an [`Event`].
pub fn event_from_value(event_type: EventType, value: Value) -> Result<Event, DecodeError> {
    let Value::Record(fields) = value else {
        return Err(DecodeError::CorruptAvro(
            "top-level value is not a record".into(),
        ));
    };
    let mut event_id = None;
    let mut occurred_at = None;
    let mut recorded_at = None;
    let mut citizen_key = None;
    let mut department = None;
    let mut area_code = None;
    let mut birth_year_month = None;
    let mut rest = BTreeMap::new();
    for (name, v) in fields {
        match name.as_str() {
            "event_id" => event_id = text(v),
            "occurred_at" => occurred_at = millis(v),
            "recorded_at" => recorded_at = millis(v),
            "citizen_key" => citizen_key = text(v),
            "department" => department = text(v),
            "area_code" => area_code = text(v),
            "birth_year_month" => birth_year_month = text(v),
            // Kept only when true: most events are not retractions.
            RETRACTED_FIELD => {
                if matches!(unwrap_union(v), Value::Boolean(true)) {
                    rest.insert(name, FieldValue::Bool(true));
                }
            }
            _ => match field_value(v) {
                Some(FieldValue::Text(t)) if t.len() > MAX_TEXT_BYTES => {
                    return Err(invalid(
                        "(text field)",
                        format!(
                            "`{}` is {} bytes; text fields are at most {MAX_TEXT_BYTES} bytes",
                            name.chars().take(64).collect::<String>(),
                            t.len()
                        ),
                    ));
                }
                Some(fv) => {
                    rest.insert(name, fv);
                }
                None => {}
            },
        }
    }
    let event_id: EventId = event_id
        .ok_or_else(|| invalid("event_id", "missing"))?
        .parse()
        .map_err(|e| invalid("event_id", format!("not a UUID: {e}")))?;
    let citizen_key: CitizenKey = citizen_key
        .ok_or_else(|| invalid("citizen_key", "missing"))?
        .parse()
        .map_err(|e: joinery_domain::ids::InvalidCitizenKey| {
            invalid("citizen_key", e.to_string())
        })?;
    let occurred_at = occurred_at.ok_or_else(|| invalid("occurred_at", "missing"))?;
    let recorded_at = recorded_at.ok_or_else(|| invalid("recorded_at", "missing"))?;
    if department.as_deref() != Some(event_type.department().code()) {
        return Err(invalid(
            "department",
            format!("must be `{}` for {event_type}", event_type.department()),
        ));
    }
    Ok(Event {
        event_id,
        event_type,
        occurred_at,
        recorded_at,
        citizen_key,
        area_code: typed("area_code", area_code)?,
        birth_year_month: typed("birth_year_month", birth_year_month)?,
        fields: rest,
    })
}

fn opt_string(v: Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s))),
    }
}

/// The Avro value of a mission view (schema `gov.joinery.views.MissionView`).
pub fn view_to_value(view: &MissionView) -> Value {
    let outcomes = view
        .outcomes
        .iter()
        .map(|o| {
            let symbol_index = match o.status {
                OutcomeState::Pending => 0,
                OutcomeState::Achieved => 1,
                OutcomeState::NotAchieved => 2,
            };
            Value::Record(vec![
                ("name".into(), Value::String(o.name.to_string())),
                (
                    "status".into(),
                    Value::Enum(symbol_index, o.status.symbol().into()),
                ),
                ("anchor_at".into(), Value::TimestampMillis(o.anchor_at)),
                (
                    "decided_at".into(),
                    match o.decided_at {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(t) => Value::Union(1, Box::new(Value::TimestampMillis(t))),
                    },
                ),
                (
                    "duration_days".into(),
                    match o.duration_days {
                        None => Value::Union(0, Box::new(Value::Null)),
                        Some(d) => Value::Union(1, Box::new(Value::Long(d))),
                    },
                ),
            ])
        })
        .collect();
    Value::Record(vec![
        ("mission".into(), Value::String(view.mission.to_string())),
        (
            "citizen_key".into(),
            Value::String(view.citizen_key.to_string()),
        ),
        ("version".into(), Value::Long(view.version)),
        ("watermark".into(), Value::TimestampMillis(view.watermark)),
        ("in_cohort".into(), Value::Boolean(view.in_cohort)),
        (
            "area_code".into(),
            opt_string(view.area_code.map(String::from)),
        ),
        (
            "cohort_month".into(),
            opt_string(view.cohort_month.map(String::from)),
        ),
        ("outcomes".into(), Value::Array(outcomes)),
        (
            "snapshots".into(),
            Value::Array(
                view.snapshots
                    .iter()
                    .map(|s| {
                        Value::Record(vec![
                            ("name".into(), Value::String(s.name.to_string())),
                            ("holds".into(), Value::Boolean(s.holds)),
                            (
                                "area_code".into(),
                                opt_string(s.area_code.map(String::from)),
                            ),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "ingested_at".into(),
            Value::TimestampMillis(view.ingested_at),
        ),
    ])
}

fn take(fields: &mut Vec<(String, Value)>, name: &str) -> Option<Value> {
    let i = fields.iter().position(|(n, _)| n == name)?;
    Some(fields.swap_remove(i).1)
}

/// Reads a mission view back from its Avro value.
pub fn view_from_value(value: Value) -> Result<MissionView, DecodeError> {
    let Value::Record(mut f) = value else {
        return Err(DecodeError::CorruptAvro("view is not a record".into()));
    };
    let mut outcomes = Vec::new();
    if let Some(Value::Array(items)) = take(&mut f, "outcomes") {
        for item in items {
            let Value::Record(mut o) = item else {
                return Err(DecodeError::CorruptAvro("outcome is not a record".into()));
            };
            let status = take(&mut o, "status")
                .and_then(text)
                .and_then(|s| OutcomeState::from_symbol(&s))
                .ok_or_else(|| invalid("outcomes.status", "missing or unknown"))?;
            outcomes.push(OutcomeView {
                name: required("outcomes.name", take(&mut o, "name").and_then(text))?,
                status,
                anchor_at: take(&mut o, "anchor_at")
                    .and_then(millis)
                    .ok_or_else(|| invalid("outcomes.anchor_at", "missing"))?,
                decided_at: take(&mut o, "decided_at").and_then(millis),
                duration_days: take(&mut o, "duration_days").and_then(millis),
            });
        }
    }
    let mut snapshots = Vec::new();
    if let Some(Value::Array(items)) = take(&mut f, "snapshots") {
        for item in items {
            let Value::Record(mut s) = item else {
                return Err(DecodeError::CorruptAvro("snapshot is not a record".into()));
            };
            snapshots.push(SnapshotView {
                name: required("snapshots.name", take(&mut s, "name").and_then(text))?,
                holds: matches!(
                    take(&mut s, "holds").map(unwrap_union),
                    Some(Value::Boolean(true))
                ),
                area_code: typed(
                    "snapshots.area_code",
                    take(&mut s, "area_code").and_then(text),
                )?,
            });
        }
    }
    Ok(MissionView {
        mission: required("mission", take(&mut f, "mission").and_then(text))?,
        citizen_key: take(&mut f, "citizen_key")
            .and_then(text)
            .ok_or_else(|| invalid("citizen_key", "missing"))?
            .parse()
            .map_err(|e: joinery_domain::ids::InvalidCitizenKey| {
                invalid("citizen_key", e.to_string())
            })?,
        version: take(&mut f, "version")
            .and_then(millis)
            .ok_or_else(|| invalid("version", "missing"))?,
        watermark: take(&mut f, "watermark")
            .and_then(millis)
            .ok_or_else(|| invalid("watermark", "missing"))?,
        in_cohort: matches!(
            take(&mut f, "in_cohort").map(unwrap_union),
            Some(Value::Boolean(true))
        ),
        area_code: typed("area_code", take(&mut f, "area_code").and_then(text))?,
        cohort_month: typed("cohort_month", take(&mut f, "cohort_month").and_then(text))?,
        outcomes,
        snapshots,
        ingested_at: take(&mut f, "ingested_at").and_then(millis).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests;
