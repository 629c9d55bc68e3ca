//! What each event type's fields may hold, read from the reviewed Avro
//! schemas, so that a definition naming a field or value the events can
//! never carry is refused at load instead of counting zero.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use joinery_domain::EventType;
use serde_json::Value;

/// The envelope every event carries; definitions filter on the
/// type-specific fields only.
const ENVELOPE: [&str; 8] = [
    "event_id",
    "occurred_at",
    "recorded_at",
    "department",
    "citizen_key",
    "area_code",
    "birth_year_month",
    "retracted",
];

/// What a field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldShape {
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Int,
    /// A moment (Avro `timestamp-millis`), written as a date or date-time.
    Timestamp,
    /// Free text.
    Text,
    /// One of these symbols.
    Enum(Vec<String>),
}

impl FieldShape {
    /// The shape in words, for an error message.
    pub fn describe(&self) -> String {
        match self {
            FieldShape::Bool => "true or false".into(),
            FieldShape::Int => "a whole number".into(),
            FieldShape::Timestamp => "a date (YYYY-MM-DD) or date-time (RFC 3339)".into(),
            FieldShape::Text => "text".into(),
            FieldShape::Enum(symbols) => format!("one of {}", symbols.join(", ")),
        }
    }

    /// Whether values of the shape are ordered (numbers and moments).
    pub fn is_ordered(&self) -> bool {
        matches!(self, FieldShape::Int | FieldShape::Timestamp)
    }
}

/// A field of an event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// What it holds.
    pub shape: FieldShape,
    /// Whether it may be absent (an Avro union with `null`).
    pub optional: bool,
}

/// Every event type's type-specific fields.
#[derive(Debug, Clone, Default)]
pub struct EventShapes {
    by_event: BTreeMap<EventType, BTreeMap<String, FieldSpec>>,
}

impl EventShapes {
    /// The shapes of the schemas this build decodes events with.
    pub fn builtin() -> &'static EventShapes {
        static SHAPES: OnceLock<EventShapes> = OnceLock::new();
        SHAPES.get_or_init(|| {
            EventShapes::from_schemas(EventType::ALL.map(|t| (t, t.schema_source())))
                .unwrap_or_else(|e| panic!("an embedded event schema is unreadable: {e}"))
        })
    }

    /// Reads the shapes from Avro schema texts.
    pub fn from_schemas<'a>(
        schemas: impl IntoIterator<Item = (EventType, &'a str)>,
    ) -> Result<EventShapes, String> {
        let mut by_event = BTreeMap::new();
        for (t, text) in schemas {
            let schema: Value =
                serde_json::from_str(text).map_err(|e| format!("{t}: not JSON: {e}"))?;
            let fields = schema["fields"]
                .as_array()
                .ok_or_else(|| format!("{t}: a record schema has `fields`"))?;
            let mut out = BTreeMap::new();
            for f in fields {
                let name = f["name"]
                    .as_str()
                    .ok_or_else(|| format!("{t}: a field without a name"))?;
                if ENVELOPE.contains(&name) {
                    continue;
                }
                let spec = spec(&f["type"])
                    .ok_or_else(|| format!("{t}.{name}: a type definitions cannot filter on"))?;
                out.insert(name.to_owned(), spec);
            }
            by_event.insert(t, out);
        }
        Ok(EventShapes { by_event })
    }

    /// The fields of `event`.
    pub fn fields(&self, event: EventType) -> Option<&BTreeMap<String, FieldSpec>> {
        self.by_event.get(&event)
    }
}

fn spec(t: &Value) -> Option<FieldSpec> {
    if let Some(branches) = t.as_array() {
        let rest: Vec<&Value> = branches.iter().filter(|b| *b != "null").collect();
        let [one] = rest.as_slice() else { return None };
        return Some(FieldSpec {
            shape: shape(one)?,
            optional: rest.len() < branches.len(),
        });
    }
    Some(FieldSpec {
        shape: shape(t)?,
        optional: false,
    })
}

fn shape(t: &Value) -> Option<FieldShape> {
    match t {
        Value::String(s) => primitive(s),
        Value::Object(o) => {
            let ty = o.get("type")?.as_str()?;
            match (ty, o.get("logicalType").and_then(Value::as_str)) {
                ("enum", _) => Some(FieldShape::Enum(
                    o.get("symbols")?
                        .as_array()?
                        .iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect(),
                )),
                ("long", Some("timestamp-millis")) => Some(FieldShape::Timestamp),
                (ty, _) => primitive(ty),
            }
        }
        _ => None,
    }
}

fn primitive(name: &str) -> Option<FieldShape> {
    match name {
        "boolean" => Some(FieldShape::Bool),
        "int" | "long" => Some(FieldShape::Int),
        "string" => Some(FieldShape::Text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_schema_has_shapes_without_its_envelope() {
        let shapes = EventShapes::builtin();
        for t in EventType::ALL {
            let fields = shapes.fields(t).expect("every event type");
            assert!(
                !fields.contains_key("citizen_key"),
                "{t}: envelope left out"
            );
        }
        let started = shapes
            .fields(EventType::BenefitClaimStarted)
            .expect("an event type");
        assert_eq!(started["claim_id"].shape, FieldShape::Text);
        assert!(
            matches!(&started["benefit"].shape, FieldShape::Enum(s) if s.contains(&"UNIVERSAL_CREDIT".to_owned()))
        );
        assert_eq!(started["health_condition"].shape, FieldShape::Bool);
    }
}
