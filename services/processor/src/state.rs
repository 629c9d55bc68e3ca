//! What the processor keeps per citizen and per partition in RocksDB, and
//! the keys it keeps them under.
//!
//! - `c/<partition>/<citizen_key>`: the citizen's events and last views;
//! - `t/<partition>/<deadline>/<citizen_key>`: a timer, fired when the
//!   partition's watermark passes the deadline;
//! - `w/<partition>`: the greatest event time seen in the partition;
//! - offsets and the outbox beside them (see `joinery-store`, `outbox`).

use std::collections::BTreeMap;

use joinery_domain::{
    AreaCode, CitizenKey, Event, EventId, EventType, FieldValue, Millis, YearMonth,
};
use joinery_engine::{CitizenEvents, Evaluation};
use serde::{Deserialize, Serialize};

/// The last view published for one mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Published {
    pub(crate) version: i64,
    pub(crate) evaluation: Evaluation,
}

/// Everything the processor knows about one citizen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CitizenRecord {
    pub(crate) events: CitizenEvents,
    pub(crate) views: BTreeMap<String, Published>,
    /// Kafka timestamp of the newest record applied.
    pub(crate) ingested_at: Millis,
    /// The timer currently set for this citizen, if any.
    pub(crate) timer: Option<Millis>,
}

/// First byte of a citizen record in MessagePack with every event in full
/// (fields by position), as written by an earlier version; still read. A
/// record written as JSON by an earlier version still starts with `{`.
const FORMAT_MSGPACK: u8 = 1;

/// First byte of a citizen record as written now: MessagePack, each event
/// without the citizen key (the record's key already holds it), a third
/// fewer bytes to read, write, compress and compact.
const FORMAT_COMPACT: u8 = 2;

/// An event as stored in a citizen record: everything but the citizen key.
#[derive(Serialize)]
struct StoredEventRef<'a> {
    event_id: &'a EventId,
    event_type: &'a EventType,
    occurred_at: Millis,
    recorded_at: Millis,
    area_code: Option<AreaCode>,
    birth_year_month: Option<YearMonth>,
    fields: &'a BTreeMap<String, FieldValue>,
}

#[derive(Deserialize)]
struct StoredEvent {
    event_id: EventId,
    event_type: EventType,
    occurred_at: Millis,
    recorded_at: Millis,
    /// Read leniently: records stored before area codes were validated
    /// may hold text that is not a GSS code, read as unknown.
    #[serde(deserialize_with = "joinery_domain::codes::lenient")]
    area_code: Option<AreaCode>,
    #[serde(deserialize_with = "joinery_domain::codes::lenient")]
    birth_year_month: Option<YearMonth>,
    fields: BTreeMap<String, FieldValue>,
}

#[derive(Serialize)]
struct StoredRecordRef<'a> {
    events: Vec<StoredEventRef<'a>>,
    views: &'a BTreeMap<String, Published>,
    ingested_at: Millis,
    timer: Option<Millis>,
}

#[derive(Deserialize)]
struct StoredRecord {
    events: Vec<StoredEvent>,
    views: BTreeMap<String, Published>,
    ingested_at: Millis,
    timer: Option<Millis>,
}

/// A citizen record as stored: [`FORMAT_COMPACT`] then MessagePack.
pub(crate) fn encode_record(record: &CitizenRecord) -> anyhow::Result<Vec<u8>> {
    let stored = StoredRecordRef {
        events: record
            .events
            .every_version()
            .map(|e| StoredEventRef {
                event_id: &e.event_id,
                event_type: &e.event_type,
                occurred_at: e.occurred_at,
                recorded_at: e.recorded_at,
                area_code: e.area_code,
                birth_year_month: e.birth_year_month,
                fields: &e.fields,
            })
            .collect(),
        views: &record.views,
        ingested_at: record.ingested_at,
        timer: record.timer,
    };
    let mut out = Vec::with_capacity(256);
    out.push(FORMAT_COMPACT);
    rmp_serde::encode::write(&mut out, &stored)?;
    Ok(out)
}

/// Reads the stored record of `citizen` (in any format this or an earlier
/// version wrote).
pub(crate) fn decode_record(bytes: &[u8], citizen: &CitizenKey) -> anyhow::Result<CitizenRecord> {
    match bytes.first() {
        Some(&FORMAT_COMPACT) => {
            let s: StoredRecord = rmp_serde::from_slice(&bytes[1..])?;
            let mut events = CitizenEvents::default();
            for e in s.events {
                events.insert(Event {
                    event_id: e.event_id,
                    event_type: e.event_type,
                    occurred_at: e.occurred_at,
                    recorded_at: e.recorded_at,
                    citizen_key: citizen.clone(),
                    area_code: e.area_code,
                    birth_year_month: e.birth_year_month,
                    fields: e.fields,
                });
            }
            Ok(CitizenRecord {
                events,
                views: s.views,
                ingested_at: s.ingested_at,
                timer: s.timer,
            })
        }
        Some(&FORMAT_MSGPACK) => Ok(rmp_serde::from_slice(&bytes[1..])?),
        Some(b'{') => Ok(serde_json::from_slice(bytes)?),
        other => anyhow::bail!("unknown citizen record format (first byte {other:?})"),
    }
}

pub(crate) fn citizen_key(partition: i32, citizen: &CitizenKey) -> Vec<u8> {
    let mut k = b"c/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(citizen.as_str().as_bytes());
    k
}

/// Order-preserving encoding of a signed time.
fn time_bytes(t: Millis) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

pub(crate) fn timer_prefix(partition: i32) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k.push(b'/');
    k
}

pub(crate) fn timer_key(partition: i32, deadline: Millis, citizen: &CitizenKey) -> Vec<u8> {
    let mut k = timer_prefix(partition);
    k.extend_from_slice(&time_bytes(deadline));
    k.extend_from_slice(citizen.as_str().as_bytes());
    k
}

/// The first timer key after every deadline at or before `watermark`.
pub(crate) fn timer_end(partition: i32, watermark: Millis) -> Vec<u8> {
    let mut k = timer_prefix(partition);
    k.extend_from_slice(&time_bytes(watermark.saturating_add(1)));
    k
}

/// The deadline and citizen of a timer key of `partition`.
pub(crate) fn timer_of(key: &[u8], partition: i32) -> Option<(Millis, CitizenKey)> {
    let rest = key.strip_prefix(timer_prefix(partition).as_slice())?;
    let deadline = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) ^ (1 << 63);
    let citizen = std::str::from_utf8(rest.get(8..)?).ok()?.parse().ok()?;
    Some((deadline as Millis, citizen))
}

/// Prefix of the [`fired_upto_key`]s.
pub(crate) const FIRED_UPTO_PREFIX: &[u8] = b"f/";

/// The key of the event time a partition's timers have fired up to, kept
/// only while due timers wait for a later step.
pub(crate) fn fired_upto_key(partition: i32) -> Vec<u8> {
    let mut k = FIRED_UPTO_PREFIX.to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

pub(crate) fn max_time_key(partition: i32) -> Vec<u8> {
    let mut k = b"w/".to_vec();
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CitizenRecord {
        use joinery_domain::{Event, EventId, EventType, FieldValue, OutcomeState, OutcomeView};
        let citizen: CitizenKey = "cd".repeat(32).parse().expect("key");
        let mut events = CitizenEvents::default();
        for (i, t) in [EventType::BenefitClaimStarted, EventType::EmploymentStarted]
            .into_iter()
            .enumerate()
        {
            events.insert(Event {
                event_id: format!("00000000-0000-4000-8000-00000000000{i}")
                    .parse::<EventId>()
                    .expect("uuid"),
                event_type: t,
                occurred_at: -86_400_000 + i as i64,
                recorded_at: 1_700_000_000_000,
                citizen_key: citizen.clone(),
                area_code: (i == 0).then(|| "E08000025".parse().unwrap()),
                birth_year_month: Some("2007-01".parse().unwrap()),
                fields: [
                    ("claim_id".to_owned(), FieldValue::Text("C1".into())),
                    ("health_condition".to_owned(), FieldValue::Bool(true)),
                    ("disposal_date".to_owned(), FieldValue::Int(-12)),
                ]
                .into(),
            });
        }
        // A correction of the first event and a retraction of the second:
        // the superseded versions are stored too.
        let versions: Vec<Event> = events.iter().cloned().collect();
        let mut corrected = versions[0].clone();
        corrected.recorded_at += 1;
        corrected.occurred_at += 1;
        let mut retracted = versions[1].clone();
        retracted.recorded_at += 1;
        retracted
            .fields
            .insert("retracted".into(), FieldValue::Bool(true));
        assert!(events.insert(corrected) && events.insert(retracted));
        assert_eq!((events.len(), events.revisions()), (1, 4));
        let evaluation = joinery_engine::Evaluation {
            in_cohort: true,
            area_code: Some("E08000025".parse().unwrap()),
            cohort_month: None,
            outcomes: vec![OutcomeView {
                name: "o".parse().unwrap(),
                status: OutcomeState::NotAchieved,
                anchor_at: 5,
                decided_at: Some(9),
                duration_days: None,
            }],
            next_deadline: Some(i64::MAX),
            snapshots: vec![joinery_domain::SnapshotView {
                name: "neet".parse().unwrap(),
                holds: true,
                area_code: None,
            }],
        };
        CitizenRecord {
            events,
            views: [(
                "opportunity".to_owned(),
                Published {
                    version: 1 << 40,
                    evaluation,
                },
            )]
            .into(),
            ingested_at: 42,
            timer: None,
        }
    }

    fn key() -> CitizenKey {
        "cd".repeat(32).parse().expect("key")
    }

    #[test]
    fn citizen_records_round_trip_and_earlier_formats_still_read() {
        let r = record();
        let packed = encode_record(&r).expect("encodes");
        assert_eq!(packed[0], FORMAT_COMPACT);
        assert_eq!(decode_record(&packed, &key()).expect("decodes"), r);
        // Version 1: MessagePack with every event in full.
        let mut full = vec![FORMAT_MSGPACK];
        rmp_serde::encode::write(&mut full, &r).expect("encodes");
        assert_eq!(decode_record(&full, &key()).expect("an earlier record"), r);
        assert!(
            packed.len() * 4 < full.len() * 3,
            "without the key in every event: {} against {} bytes",
            packed.len(),
            full.len()
        );
        // JSON, before that.
        let json = serde_json::to_vec(&r).expect("json");
        assert_eq!(
            decode_record(&json, &key()).expect("JSON from an earlier version"),
            r
        );
        assert!(decode_record(b"\x07junk", &key()).is_err());
    }

    #[test]
    fn records_stored_before_snapshots_existed_still_read() {
        // The record as stored by the previous version: the same fields,
        // by position, without the evaluation's trailing `snapshots`.
        #[derive(Serialize)]
        struct OldEvaluation {
            in_cohort: bool,
            area_code: Option<String>,
            cohort_month: Option<String>,
            outcomes: Vec<joinery_domain::OutcomeView>,
            next_deadline: Option<Millis>,
        }
        #[derive(Serialize)]
        struct OldPublished {
            version: i64,
            evaluation: OldEvaluation,
        }
        #[derive(Serialize)]
        struct OldRecord {
            events: CitizenEvents,
            views: BTreeMap<String, OldPublished>,
            ingested_at: Millis,
            timer: Option<Millis>,
        }
        let mut r = record();
        let view = r.views.get_mut("opportunity").expect("a view");
        view.evaluation.snapshots.clear();
        let e = &view.evaluation;
        let old = OldRecord {
            events: r.events.clone(),
            views: [(
                "opportunity".to_owned(),
                OldPublished {
                    version: view.version,
                    evaluation: OldEvaluation {
                        in_cohort: e.in_cohort,
                        area_code: e.area_code.map(String::from),
                        cohort_month: e.cohort_month.map(String::from),
                        outcomes: e.outcomes.clone(),
                        next_deadline: e.next_deadline,
                    },
                },
            )]
            .into(),
            ingested_at: r.ingested_at,
            timer: r.timer,
        };
        let mut packed = vec![FORMAT_MSGPACK];
        rmp_serde::encode::write(&mut packed, &old).expect("encodes");
        assert_eq!(
            decode_record(&packed, &key()).expect("an earlier record reads"),
            r
        );
    }

    #[test]
    fn timer_keys_sort_by_deadline_including_before_1970() {
        let c: CitizenKey = "ab".repeat(32).parse().expect("key");
        let a = timer_key(1, -5, &c);
        let b = timer_key(1, 3, &c);
        assert!(a < b && b < timer_end(1, 3) && timer_end(1, 2) < b);
        assert_eq!(timer_of(&b, 1), Some((3, c.clone())));
        assert_eq!(timer_of(&a, 1), Some((-5, c.clone())));
        assert_eq!(timer_of(&a, 2), None, "another partition's timer");
    }
}
