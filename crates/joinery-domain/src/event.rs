//! The decoded form of a department event: what the processor hands to the
//! mission engine after reading the Confluent-framed Avro record from Kafka.
//! Envelope fields are typed; the type-specific fields are kept as a small
//! map so that declarative capabilities can filter on them by name.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{AreaCode, CitizenKey, EventId, EventType, YearMonth};

/// Event time: milliseconds since the Unix epoch, UTC (Avro `timestamp-millis`).
pub type Millis = i64;

/// One millisecond-precision day.
pub const DAY_MS: Millis = 86_400_000;

/// A type-specific field value of an event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// An integer (Avro int or long, including timestamps).
    Int(i64),
    /// A string or enum symbol.
    Text(String),
}

/// A citizen-outcome event as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id chosen by the department; duplicates are applied once.
    pub event_id: EventId,
    /// What happened.
    pub event_type: EventType,
    /// When it happened in the world (event time).
    pub occurred_at: Millis,
    /// When the department recorded it (always at or after `occurred_at`).
    pub recorded_at: Millis,
    /// The citizen's pseudonym.
    pub citizen_key: CitizenKey,
    /// ONS local authority code of the citizen's area, where known.
    /// (Stored state is read leniently, see [`crate::codes::lenient`].)
    #[serde(deserialize_with = "crate::codes::lenient")]
    pub area_code: Option<AreaCode>,
    /// The citizen's birth month, where the department holds it.
    #[serde(deserialize_with = "crate::codes::lenient")]
    pub birth_year_month: Option<YearMonth>,
    /// Type-specific fields, by Avro field name (absent optional fields are left out).
    pub fields: BTreeMap<String, FieldValue>,
}
