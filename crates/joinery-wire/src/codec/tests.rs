//! The codec's tests: round trips, corrupt input, typed fields.
use super::*;
use crate::Catalog;

fn view() -> MissionView {
    MissionView {
        mission: "opportunity".parse().unwrap(),
        citizen_key: "ab".repeat(32).parse().expect("valid key"),
        version: 3,
        watermark: 1_700_000_000_000,
        in_cohort: true,
        area_code: Some("E08000025".parse().unwrap()),
        cohort_month: Some("2026-07".parse().unwrap()),
        outcomes: vec![OutcomeView {
            name: "sustained_employment_180d".parse().unwrap(),
            status: OutcomeState::Achieved,
            anchor_at: 1_690_000_000_000,
            decided_at: Some(1_695_000_000_000),
            duration_days: Some(57),
        }],
        snapshots: vec![SnapshotView {
            name: "neet".parse().unwrap(),
            holds: true,
            area_code: Some("E06000001".parse().unwrap()),
        }],
        ingested_at: 1_700_000_000_123,
    }
}

#[test]
fn a_view_round_trips_through_avro() {
    let c = Catalog::load();
    let bytes = encode_value(c.view_schema(), view_to_value(&view())).expect("encodes");
    let value = decode_value(c.view_schema(), c.view_schema(), &bytes).expect("decodes");
    assert_eq!(view_from_value(value).expect("a view"), view());
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let c = Catalog::load();
        let body = crate::framing::unframe(&bytes).map(|(_, b)| b).unwrap_or(&bytes);
        for t in EventType::ALL {
            let schema = c.event_schema(t);
            if let Ok(v) = decode_value(schema, schema, body) {
                let _ = event_from_value(t, v);
            }
        }
        if let Ok(v) = decode_value(c.view_schema(), c.view_schema(), body) {
            let _ = view_from_value(v);
        }
    }

    #[test]
    fn corrupting_a_valid_record_never_panics(flip in 0usize..200, bit in 0u8..8, cut in 0usize..200) {
        let c = Catalog::load();
        let mut bytes = encode_value(c.view_schema(), view_to_value(&view())).expect("encodes");
        let i = flip % bytes.len();
        bytes[i] ^= 1 << bit;
        bytes.truncate(cut.min(bytes.len()));
        if let Ok(v) = decode_value(c.view_schema(), c.view_schema(), &bytes) {
            let _ = view_from_value(v);
        }
    }
}

#[test]
fn a_view_written_before_snapshots_existed_reads_with_none() {
    let c = Catalog::load();
    let mut json: serde_json::Value =
        serde_json::from_str(include_str!("../../../../schemas/views/MissionView.avsc"))
            .expect("json");
    json["fields"]
        .as_array_mut()
        .expect("fields")
        .retain(|f| f["name"] != "snapshots");
    let old = Schema::parse(&json).expect("the earlier schema");
    let Value::Record(mut fields) = view_to_value(&view()) else {
        unreachable!("a view is a record")
    };
    fields.retain(|(n, _)| n != "snapshots");
    let bytes = encode_value(&old, Value::Record(fields)).expect("encodes");
    let value = decode_value(&old, c.view_schema(), &bytes).expect("resolves");
    let read = view_from_value(value).expect("a view");
    assert!(read.snapshots.is_empty());
    assert_eq!(read.outcomes, view().outcomes);
}

#[test]
fn truncated_avro_is_a_named_error() {
    let c = Catalog::load();
    let bytes = encode_value(c.view_schema(), view_to_value(&view())).expect("encodes");
    let err = decode_value(c.view_schema(), c.view_schema(), &bytes[..bytes.len() / 2])
        .expect_err("truncated");
    assert_eq!(err.reason(), "corrupt_avro");
}

/// A DfE event's Avro record as a direct producer might write it: a valid
/// envelope, then `rest`.
fn dfe_record(rest: Vec<(String, Value)>) -> Value {
    let mut fields = vec![
        (
            "event_id".into(),
            Value::String("5b0f5c1e-8d2b-4c4e-9a51-0d6c3b8f2a10".into()),
        ),
        (
            "occurred_at".into(),
            Value::TimestampMillis(1_700_000_000_000),
        ),
        (
            "recorded_at".into(),
            Value::TimestampMillis(1_700_000_000_000),
        ),
        ("citizen_key".into(), Value::String("ab".repeat(32))),
        ("department".into(), Value::Enum(0, "dfe".into())),
    ];
    fields.extend(rest);
    Value::Record(fields)
}

#[test]
fn a_direct_producers_bad_area_code_or_birth_month_is_the_records_fault() {
    let record = |area: &str, birth: &str| {
        dfe_record(vec![
            (
                "area_code".into(),
                Value::Union(1, Box::new(Value::String(area.into()))),
            ),
            (
                "birth_year_month".into(),
                Value::Union(1, Box::new(Value::String(birth.into()))),
            ),
        ])
    };
    let ok = event_from_value(EventType::EducationExited, record("E08000025", "2008-03"))
        .expect("valid");
    assert_eq!(ok.area_code.map(String::from).as_deref(), Some("E08000025"));
    for (area, birth, field) in [
        (&*"E".repeat(600_000), "2008-03", "area_code"),
        ("E08000025", "2008-13", "birth_year_month"),
    ] {
        let err =
            event_from_value(EventType::EducationExited, record(area, birth)).expect_err("invalid");
        assert_eq!(err.reason(), "invalid_field");
        assert!(
            matches!(&err, DecodeError::InvalidField { field: f, .. } if *f == field),
            "{err}"
        );
        assert!(
            err.to_string().len() < 300,
            "the value is not echoed: {err}"
        );
    }
}

#[test]
fn a_direct_producers_oversized_text_field_is_the_records_fault() {
    let record = |urn: &str| dfe_record(vec![("provider_urn".into(), Value::String(urn.into()))]);
    assert!(event_from_value(EventType::EducationExited, record(&"1".repeat(256))).is_ok());
    let err = event_from_value(EventType::EducationExited, record(&"1".repeat(600_000)))
        .expect_err("too long");
    assert_eq!(err.reason(), "invalid_field");
    let text = err.to_string();
    assert!(text.contains("provider_urn") && text.len() < 300, "{text}");
}
