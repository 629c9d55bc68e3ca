//! A department's JSON event to an Avro value of its event type's schema,
//! with every problem reported as a field error a department can act on.
//!
//! The gateway sets `department` (from the type) and `citizen_key` (from the
//! raw identifier); the department sends the raw identifier in exactly one of
//! `nino`, `nhs_number` or `uln`, which never goes further than this module.

use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use joinery_domain::event::{check_event_time, DEFAULT_MAX_CLOCK_SKEW, MAX_TEXT_BYTES};
use joinery_domain::{AreaCode, EventType, IdentifierKind, Millis, Pseudonymiser, YearMonth};
use serde::Serialize;
use serde_json::Value as Json;

/// One thing wrong with one field of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field (or `type`, or `(event)` for the whole object).
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

fn fe(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A converted event, ready to frame and produce.
#[derive(Debug)]
pub struct Converted {
    /// Its type.
    pub event_type: EventType,
    /// Its id, as given by the department.
    pub event_id: String,
    /// The pseudonym, used as the Kafka key.
    pub citizen_key: String,
    /// The Avro value.
    pub value: Value,
}

/// A time as a department would recognise it in an error message.
fn shown_time(t: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| t.to_string())
}

/// Parses an RFC 3339 timestamp or a plain `YYYY-MM-DD` date (midnight UTC) to epoch millis.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

fn describe(schema: &Schema) -> String {
    match schema {
        Schema::String => "a string".into(),
        Schema::Boolean => "true or false".into(),
        Schema::Int | Schema::Long => "an integer".into(),
        Schema::TimestampMillis => "a date (YYYY-MM-DD) or an RFC 3339 timestamp".into(),
        Schema::Uuid(_) => "a UUID".into(),
        Schema::Enum(e) => format!("one of {}", e.symbols.join(", ")),
        Schema::Union(u) => {
            u.variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null))
                .map(describe)
                .collect::<Vec<_>>()
                .join(" or ")
                + " (optional)"
        }
        other => format!("{other:?}"),
    }
}

fn to_avro(schema: &Schema, v: &Json, field: &str) -> Result<Value, FieldError> {
    let wrong = || {
        fe(
            field,
            format!("expected {}, got {}", describe(schema), json_kind(v)),
        )
    };
    match (schema, v) {
        (Schema::Union(u), _) => {
            let variants = u.variants();
            if v.is_null() {
                return variants
                    .iter()
                    .position(|s| matches!(s, Schema::Null))
                    .map(|i| Value::Union(i as u32, Box::new(Value::Null)))
                    .ok_or_else(wrong);
            }
            let (i, inner) = variants
                .iter()
                .enumerate()
                .find(|(_, s)| !matches!(s, Schema::Null))
                .ok_or_else(wrong)?;
            Ok(Value::Union(i as u32, Box::new(to_avro(inner, v, field)?)))
        }
        (Schema::String, Json::String(s)) if s.len() > MAX_TEXT_BYTES => Err(fe(
            field,
            format!(
                "is {} bytes; text fields are at most {MAX_TEXT_BYTES} bytes",
                s.len()
            ),
        )),
        (Schema::String, Json::String(s)) => Ok(Value::String(s.clone())),
        (Schema::Boolean, Json::Bool(b)) => Ok(Value::Boolean(*b)),
        (Schema::Long, Json::Number(n)) => n.as_i64().map(Value::Long).ok_or_else(wrong),
        (Schema::Int, Json::Number(n)) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(Value::Int)
            .ok_or_else(wrong),
        (Schema::TimestampMillis, Json::String(s)) => {
            parse_time(s).map(Value::TimestampMillis).ok_or_else(wrong)
        }
        (Schema::Uuid(_), Json::String(s)) => s
            .parse::<uuid::Uuid>()
            .map(Value::Uuid)
            .map_err(|_| wrong()),
        (Schema::Enum(e), Json::String(s)) => e
            .symbols
            .iter()
            .position(|x| x == s)
            .map(|i| Value::Enum(i as u32, s.clone()))
            .ok_or_else(wrong),
        _ => Err(wrong()),
    }
}

fn json_kind(v: &Json) -> String {
    match v {
        Json::Null => "null".into(),
        Json::Bool(_) => "a boolean".into(),
        Json::Number(_) => "a number".into(),
        Json::String(s) if s.chars().count() > 40 => "a long string".into(),
        Json::String(_) => "a string".into(),
        Json::Array(_) => "an array".into(),
        Json::Object(_) => "an object".into(),
    }
}

/// Converts one JSON event. Returns every error found, not just the first.
/// `now` is used as `recorded_at` when the department does not send one;
/// event times before 1900 or more than `horizon` after `now` are refused.
pub fn convert(
    json: &Json,
    schema_of: impl Fn(EventType) -> Schema,
    pseudonymiser: &Pseudonymiser,
    now: Millis,
    horizon: Millis,
) -> Result<Converted, Vec<FieldError>> {
    let Json::Object(obj) = json else {
        return Err(vec![fe(
            "(event)",
            format!("each event must be a JSON object, got {}", json_kind(json)),
        )]);
    };
    let event_type: EventType = match obj.get("type") {
        Some(Json::String(t)) => {
            t.parse()
                .map_err(|e: joinery_domain::department::UnknownEventType| {
                    vec![fe("type", e.to_string())]
                })?
        }
        _ => {
            return Err(vec![fe(
            "type",
            "required: the event type as `<department>.<EventName>`, e.g. `dfe.EducationExited`",
        )])
        }
    };
    let schema = schema_of(event_type);
    let Schema::Record(RecordSchema { fields, .. }) = &schema else {
        unreachable!("event schemas are records, checked by the catalog tests");
    };
    let mut errors = Vec::new();

    // The raw identifier: exactly one of the accepted kinds.
    let ids: Vec<IdentifierKind> = IdentifierKind::ALL
        .into_iter()
        .filter(|k| obj.contains_key(k.field()))
        .collect();
    let mut citizen_key = None;
    match ids.as_slice() {
        [kind] => match obj.get(kind.field()) {
            Some(Json::String(raw)) => match pseudonymiser.citizen_key(*kind, raw) {
                Ok(k) => citizen_key = Some(k.to_string()),
                Err(e) => errors.push(fe(kind.field(), e.to_string())),
            },
            _ => errors.push(fe(kind.field(), "must be a string")),
        },
        [] => errors.push(fe(
            "nino",
            "required: the citizen's identifier in exactly one of `nino`, `nhs_number` or `uln`",
        )),
        _ => errors.push(fe(
            "nino",
            "send exactly one of `nino`, `nhs_number` or `uln`, not several",
        )),
    }
    if obj.contains_key("citizen_key") {
        errors.push(fe(
            "citizen_key",
            "is set by the gateway from the raw identifier; do not send it",
        ));
    }
    if let Some(d) = obj.get("department") {
        if d.as_str() != Some(event_type.department().code()) {
            errors.push(fe(
                "department",
                format!(
                    "is set from the type; for {event_type} it is `{}` (or leave it out)",
                    event_type.department()
                ),
            ));
        }
    }
    if let Some(Json::String(b)) = obj.get("birth_year_month") {
        if let Err(e) = b.parse::<YearMonth>() {
            errors.push(fe("birth_year_month", e.to_string()));
        }
    }
    if let Some(Json::String(a)) = obj.get("area_code") {
        if let Err(e) = a.parse::<AreaCode>() {
            errors.push(fe("area_code", e.to_string()));
        }
    }

    let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    for k in obj.keys() {
        let gateway_field = k == "type" || IdentifierKind::ALL.iter().any(|i| i.field() == k);
        if !gateway_field && !known.contains(&k.as_str()) {
            errors.push(fe(
                k,
                format!(
                    "unknown field for {event_type}; its fields are: {}",
                    known
                        .iter()
                        .filter(|f| !matches!(**f, "department" | "citizen_key"))
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }

    let mut record = Vec::with_capacity(fields.len());
    let mut event_id = String::new();
    for f in fields {
        let name = f.name.as_str();
        let given: Option<Json> = match name {
            "department" => Some(Json::String(event_type.department().code().into())),
            "citizen_key" => Some(Json::String(citizen_key.clone().unwrap_or_default())),
            "recorded_at" => Some(obj.get(name).cloned().unwrap_or_else(|| {
                Json::String(
                    chrono::DateTime::from_timestamp_millis(now)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                )
            })),
            _ => obj.get(name).cloned(),
        };
        let given = match given {
            Some(v) => v,
            None if matches!(f.schema, Schema::Union(_)) => Json::Null,
            // A field added later with a default (e.g. `retracted`).
            None if f.default.is_some() => f.default.clone().unwrap_or_default(),
            None => {
                errors.push(fe(name, format!("required: {}", describe(&f.schema))));
                continue;
            }
        };
        if name == "event_id" {
            event_id = given.as_str().unwrap_or_default().to_owned();
        }
        match to_avro(&f.schema, &given, name) {
            Ok(v) => record.push((name.to_owned(), v)),
            Err(e) => errors.push(e),
        }
    }
    // Times that cannot be true. An event may be recorded ahead of its date
    // (an enrolment for next term): it counts from `occurred_at`.
    // `recorded_at` orders an event's versions: it may not lie ahead of
    // receipt (beyond clock skew), or a version stamped ahead would outrank
    // every genuine correction.
    for (name, ahead) in [
        ("occurred_at", horizon),
        ("recorded_at", DEFAULT_MAX_CLOCK_SKEW),
    ] {
        if let Some(t) = obj.get(name).and_then(Json::as_str).and_then(parse_time) {
            if let Err(e) = check_event_time(t, now, ahead) {
                errors.push(fe(name, format!("{} {e}", shown_time(t))));
            }
        }
    }
    match (errors.is_empty(), citizen_key) {
        (true, Some(citizen_key)) => Ok(Converted {
            event_type,
            event_id,
            citizen_key,
            value: Value::Record(record),
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use joinery_wire::Catalog;
    use serde_json::json;

    fn p() -> Pseudonymiser {
        Pseudonymiser::new(vec![9u8; 32]).expect("key")
    }

    fn run(j: Json) -> Result<Converted, Vec<FieldError>> {
        let c = Catalog::load();
        convert(
            &j,
            |t| c.event_schema(t).clone(),
            &p(),
            1_790_000_000_000, // 2026-09-21
            joinery_domain::event::DEFAULT_EVENT_TIME_HORIZON,
        )
    }

    fn good() -> Json {
        json!({
            "type": "dfe.EducationExited",
            "event_id": "5b0f5c1e-8d2b-4c4e-9a51-0d6c3b8f2a10",
            "occurred_at": "2026-07-20",
            "nino": "AB 12 34 56 C",
            "area_code": "E08000025",
            "provider_urn": "100001",
            "level": "LEVEL_3",
            "reason": "COMPLETED"
        })
    }

    #[test]
    fn a_valid_event_converts_and_validates_against_its_schema() {
        let c = run(good()).expect("valid");
        let catalog = Catalog::load();
        let bytes = joinery_wire::codec::encode_value(
            catalog.event_schema(EventType::EducationExited),
            c.value,
        )
        .expect("value matches the schema");
        assert!(!bytes.is_empty());
        assert_eq!(c.citizen_key.len(), 64);
        assert!(!String::from_utf8_lossy(&bytes).contains("AB123456C"));
    }

    #[test]
    fn every_error_names_its_field_and_what_was_expected() {
        let mut j = good();
        j["reason"] = json!("BORED");
        j["level"] = json!(3);
        j["colour"] = json!("blue");
        j.as_object_mut().expect("object").remove("provider_urn");
        let errs = run(j).expect_err("invalid");
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        for f in ["reason", "level", "colour", "provider_urn"] {
            assert!(fields.contains(&f), "{f} missing from {errs:?}");
        }
        let reason = errs.iter().find(|e| e.field == "reason").expect("reason");
        assert!(reason.message.contains("COMPLETED"), "{}", reason.message);
    }

    #[test]
    fn a_bad_identifier_is_refused_without_echoing_it() {
        let mut j = good();
        j["nino"] = json!("ZZ999999Z");
        let errs = run(j).expect_err("invalid");
        assert!(errs.iter().all(|e| !e.message.contains("ZZ999999Z")));
        assert!(errs.iter().any(|e| e.field == "nino"));
    }

    #[test]
    fn unknown_types_and_non_objects_are_refused() {
        assert_eq!(
            run(json!({"type": "dfe.Nope"})).expect_err("bad")[0].field,
            "type"
        );
        assert_eq!(run(json!([1])).expect_err("bad")[0].field, "(event)");
    }

    #[test]
    fn area_codes_and_birth_months_must_be_well_formed_and_are_bounded() {
        let mut j = good();
        j["area_code"] = json!("Birmingham");
        j["birth_year_month"] = json!("2008-13");
        let errs = run(j).expect_err("invalid");
        let area = errs.iter().find(|e| e.field == "area_code").expect("area");
        assert!(area.message.contains("GSS"), "{}", area.message);
        assert!(errs.iter().any(|e| e.field == "birth_year_month"));
        // A huge value is refused without being echoed back.
        let mut j = good();
        j["area_code"] = json!("E".repeat(600_000));
        let errs = run(j).expect_err("invalid");
        assert!(errs.iter().all(|e| e.message.len() < 200), "{errs:?}");
        // So is every free-text field.
        let mut j = good();
        j["provider_urn"] = json!("1".repeat(600_000));
        let errs = run(j).expect_err("invalid");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "provider_urn");
        assert!(
            errs[0].message.contains("at most 256 bytes"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn event_times_that_cannot_be_true_are_refused_and_future_dates_accepted() {
        let mut j = good();
        j["occurred_at"] = json!("9999-12-31");
        j["recorded_at"] = json!("1899-12-31");
        let errs = run(j).expect_err("invalid");
        let occurred = errs
            .iter()
            .find(|e| e.field == "occurred_at")
            .expect("occurred_at");
        assert!(
            occurred.message.contains("9999-12-31") && occurred.message.contains("366 days"),
            "{}",
            occurred.message
        );
        assert!(errs
            .iter()
            .any(|e| e.field == "recorded_at" && e.message.contains("1900")));
        // An enrolment reported now for a date two months ahead is accepted,
        // with recorded_at (now) before occurred_at.
        let mut j = good();
        j["occurred_at"] = json!("2026-11-20");
        j.as_object_mut().expect("object").remove("recorded_at");
        assert!(run(j).is_ok());
    }
}
