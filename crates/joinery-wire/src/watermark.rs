//! Watermark records on a view topic: what a partition's figures are final
//! up to.
//!
//! Place in the data flow: after each batch that moves a source partition's
//! event time, the processor writes to that partition of every mission's
//! view topic, after the batch's views (views go to the partition their
//! citizen's events are in), a watermark record with the mission's
//! watermark there. A reader that has applied a partition's records up to
//! one holds that partition's figures final up to its watermark; the
//! mission's figures are final up to the least over the partitions. That
//! depends on the log alone, not on how views happened to be batched, so a
//! replay, a crash recovery and a rebuild all end with the same one.
//!
//! A watermark record is a valid view in the view schema, so that any Avro
//! reader of the topic (a Confluent deserializer, say) decodes it: keyed
//! [`WATERMARK_KEY`], with an empty `citizen_key` (never a pseudonym), in
//! no cohort and no snapshot, so a reader that aggregates views counts
//! nothing for it. Joinery's readers know it by its headers
//! ([`CONTROL_HEADER`] = [`WATERMARK_CONTROL`], [`MISSION_HEADER`],
//! [`WATERMARK_HEADER`]) and read it without decoding. Compaction keeps the
//! newest of each partition.

use apache_avro::types::Value;
use joinery_domain::{Millis, MissionView};

use crate::codec::view_to_value;
pub use crate::names::{CONTROL_HEADER, MISSION_HEADER, WATERMARK_HEADER};

/// The record key of every watermark record (never a citizen key: those
/// are 64 hex characters).
pub const WATERMARK_KEY: &str = "joinery.watermark";

/// The value of [`CONTROL_HEADER`] on a watermark record.
pub const WATERMARK_CONTROL: &str = "watermark";

/// The view-schema value of `mission`'s watermark record: evaluated at
/// `watermark`, counting no one.
pub fn watermark_value(mission: &joinery_domain::MissionId, watermark: Millis) -> Value {
    let view = MissionView {
        mission: mission.clone(),
        citizen_key: "0".repeat(64).parse().expect("64 hex characters"),
        // As a view's version with no event behind it.
        version: watermark.clamp(0, (1 << 42) - 1) << 21,
        watermark,
        in_cohort: false,
        area_code: None,
        cohort_month: None,
        outcomes: vec![],
        snapshots: vec![],
        ingested_at: 0,
    };
    match view_to_value(&view) {
        Value::Record(mut fields) => {
            for (name, value) in &mut fields {
                if name == "citizen_key" {
                    *value = Value::String(String::new());
                }
            }
            Value::Record(fields)
        }
        other => other,
    }
}

/// The headers of `mission`'s watermark record.
pub fn watermark_headers(mission: &str, watermark: Millis) -> Vec<(String, String)> {
    vec![
        (CONTROL_HEADER.into(), WATERMARK_CONTROL.into()),
        (MISSION_HEADER.into(), mission.into()),
        (WATERMARK_HEADER.into(), watermark.to_string()),
    ]
}

/// A watermark record as Joinery's readers take it from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The mission.
    pub mission: String,
    /// What the partition's figures of the mission are final up to.
    pub watermark: Millis,
}

/// Reads a watermark record's headers (`None` when the record is not one;
/// an error saying what is wrong when it is one without a usable mission
/// or watermark).
pub fn read_watermark<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Option<Result<Watermark, String>> {
    let (mut control, mut mission, mut watermark) = (None, None, None);
    for (k, v) in headers {
        match k {
            CONTROL_HEADER => control = Some(v),
            MISSION_HEADER => mission = Some(v),
            WATERMARK_HEADER => watermark = Some(v),
            _ => {}
        }
    }
    if control? != WATERMARK_CONTROL.as_bytes() {
        return None;
    }
    let mission = match mission.map(std::str::from_utf8) {
        Some(Ok(m)) if !m.is_empty() => m.to_owned(),
        _ => {
            return Some(Err(format!(
                "a watermark record without a `{MISSION_HEADER}` header"
            )))
        }
    };
    let watermark = match watermark
        .and_then(|w| std::str::from_utf8(w).ok())
        .map(str::parse::<Millis>)
    {
        Some(Ok(w)) => w,
        _ => {
            return Some(Err(format!(
                "a watermark record without a `{WATERMARK_HEADER}` header holding milliseconds"
            )))
        }
    };
    Some(Ok(Watermark { mission, watermark }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_value, ValueEncoder};
    use crate::Catalog;

    #[test]
    fn a_watermark_record_reads_back_from_its_headers() {
        let headers = watermark_headers("opportunity", 1_700_000_000_000);
        let read = read_watermark(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
        assert_eq!(
            read,
            Some(Ok(Watermark {
                mission: "opportunity".into(),
                watermark: 1_700_000_000_000,
            }))
        );
        // Not a watermark record: a view, or a rebuild's reset.
        assert_eq!(read_watermark([]), None);
        assert_eq!(read_watermark([(CONTROL_HEADER, &b"reset"[..])]), None);
        // One without its watermark says so.
        let bad = read_watermark([
            (CONTROL_HEADER, &b"watermark"[..]),
            (MISSION_HEADER, &b"opportunity"[..]),
            (WATERMARK_HEADER, &b"soon"[..]),
        ]);
        assert!(bad.is_some_and(|r| r.is_err_and(|e| e.contains(WATERMARK_HEADER))));
    }

    #[test]
    fn a_watermark_record_is_a_view_that_counts_no_one() {
        let catalog = Catalog::load();
        let schema = catalog.view_schema();
        let mission: joinery_domain::MissionId = "opportunity".parse().expect("a slug");
        let body = ValueEncoder::new(schema)
            .expect("encoder")
            .encode(watermark_value(&mission, 1_700_000_000_000))
            .expect("valid in the view schema");
        let Value::Record(fields) = decode_value(schema, schema, &body).expect("decodes") else {
            panic!("a record");
        };
        let field = |n: &str| {
            fields
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .expect("field")
        };
        assert_eq!(field("citizen_key"), Value::String(String::new()));
        assert_eq!(field("in_cohort"), Value::Boolean(false));
        assert_eq!(field("outcomes"), Value::Array(vec![]));
        assert_eq!(field("snapshots"), Value::Array(vec![]));
        assert_eq!(
            field("watermark"),
            Value::TimestampMillis(1_700_000_000_000)
        );
    }
}
