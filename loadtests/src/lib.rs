//! # joinery-loadtests
//!
//! Seeded synthetic citizen journeys ([`journeys`]: calibrated, all six
//! departments, with the exact figures they imply; and the simpler
//! [`education_journeys`]), produced straight to the department topics in
//! the Confluent wire format or through the gateway, for the crash,
//! rebalance and exact-figures tests and for the benchmark runner (`cargo run --release -p joinery-loadtests
//! --bin joinery-bench`, see `loadtests/README.md`).

pub mod journeys;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use joinery_domain::event::DAY_MS;
use joinery_domain::{EventType, IdentifierKind, Pseudonymiser};
use joinery_runtime::kafka::KafkaSettings;
use joinery_wire::catalog::event_subject;
use joinery_wire::codec::encode_value;
use joinery_wire::framing::frame;
use joinery_wire::{Catalog, RegistryClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// 2023-01-01, the first simulated day: in the past, so that no generated
/// event is dated after the moment it is published (Joinery holds such an
/// event until event time reaches its date).
pub const T0: i64 = 1_672_531_200_000;

/// One department record to produce: its type, the citizen key, the Avro value.
pub type Record = (EventType, String, Value);

fn ts(day: i64) -> Value {
    Value::TimestampMillis(T0 + day * DAY_MS)
}

fn envelope(t: EventType, id: u128, key: &str, day: i64) -> Vec<(String, Value)> {
    let areas = ["E08000025", "W06000015", "S12000049"];
    vec![
        ("event_id".into(), Value::Uuid(uuid::Uuid::from_u128(id))),
        ("occurred_at".into(), ts(day)),
        ("recorded_at".into(), ts(day + 3)),
        (
            "department".into(),
            Value::String(t.department().code().into()),
        ),
        ("citizen_key".into(), Value::String(key.into())),
        (
            "area_code".into(),
            Value::Union(1, Box::new(Value::String(areas[(id % 3) as usize].into()))),
        ),
        (
            "birth_year_month".into(),
            Value::Union(
                1,
                Box::new(Value::String(format!("200{}-0{}", 1 + id % 8, 1 + id % 9))),
            ),
        ),
        ("retracted".into(), Value::Boolean(false)),
    ]
}

/// Seeded education-to-employment journeys: leavers over two years, most
/// finding work, some losing it early, some reported late, a few sent twice.
/// Every processor evaluates every mission on each of these events.
pub fn education_journeys(citizens: u64, seed: u64, key: &[u8]) -> Result<Vec<Record>> {
    let p = Pseudonymiser::new(key.to_vec())?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut records = Vec::new();
    let mut id = 0u128;
    for n in 0..citizens {
        let key = p
            .citizen_key(
                IdentifierKind::Nino,
                &format!(
                    "JY{:06}{}",
                    n % 1_000_000,
                    ["A", "B", "C", "D"][(n / 1_000_000 % 4) as usize]
                ),
            )?
            .to_string();
        let exit = rng.random_range(0..700);
        id += 1;
        let mut e = envelope(EventType::EducationExited, id, &key, exit);
        e.push(("provider_urn".into(), Value::String("100001".into())));
        e.push(("level".into(), Value::Enum(3, "LEVEL_3".into())));
        e.push(("reason".into(), Value::Enum(0, "COMPLETED".into())));
        records.push((EventType::EducationExited, key.clone(), Value::Record(e)));
        if rng.random_bool(0.05) {
            let dup = records.last().cloned().context("just pushed")?;
            records.push(dup);
        }
        if rng.random_bool(0.7) {
            let start = exit + rng.random_range(0..240);
            let emp = format!("E{n}");
            id += 1;
            let mut s = envelope(EventType::EmploymentStarted, id, &key, start);
            s.push(("employment_id".into(), Value::String(emp.clone())));
            s.push(("weekly_hours_band".into(), Value::Enum(2, "FROM_30".into())));
            records.push((EventType::EmploymentStarted, key.clone(), Value::Record(s)));
            if rng.random_bool(0.4) {
                id += 1;
                let mut x = envelope(
                    EventType::EmploymentEnded,
                    id,
                    &key,
                    start + rng.random_range(5..200),
                );
                x.push(("employment_id".into(), Value::String(emp)));
                records.push((EventType::EmploymentEnded, key.clone(), Value::Record(x)));
            }
        }
    }
    // Departments report in roughly event-time order, with some lateness.
    records.sort_by_key(|(_, _, v)| match v {
        Value::Record(f) => match &f[1].1 {
            Value::TimestampMillis(t) => *t,
            _ => 0,
        },
        _ => 0,
    });
    for i in (1..records.len()).step_by(17) {
        records.swap(i - 1, i);
    }
    Ok(records)
}

/// Registers every event schema under its department topic's subject.
pub async fn register_schemas(
    kafka: &KafkaSettings,
    registry: &RegistryClient,
    catalog: &Catalog,
) -> Result<HashMap<EventType, u32>> {
    let mut ids = HashMap::new();
    for t in EventType::ALL {
        let subject = event_subject(&kafka.topic(&t.department().topic()), t);
        ids.insert(
            t,
            registry
                .register(&subject, catalog.event_schema_text(t))
                .await?,
        );
    }
    Ok(ids)
}

/// Produces records to their department topics and waits for every acknowledgement.
pub async fn produce(
    kafka: &KafkaSettings,
    producer: &FutureProducer,
    ids: &HashMap<EventType, u32>,
    catalog: &Catalog,
    records: &[Record],
) -> Result<()> {
    for chunk in records.chunks(20_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for (t, key, value) in chunk {
            let payload = frame(
                ids[t],
                &encode_value(catalog.event_schema(*t), value.clone())?,
            );
            let topic = kafka.topic(&t.department().topic());
            let mut record = FutureRecord::to(&topic).key(key.as_str()).payload(&payload);
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(d) => break d,
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            };
            pending.push(delivery);
        }
        for r in futures::future::join_all(pending).await {
            r.context("delivery cancelled")?.map_err(|(e, _)| e)?;
        }
    }
    Ok(())
}

/// The partition Kafka's default partitioner (Java's `murmur2`, librdkafka's
/// `murmur2_random`) gives a key: the partition of the citizen's events.
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Kafka's murmur2 hash (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// A population's events as Avro records for the department topics,
/// converted by the gateway's own converter (so that producing straight to
/// Kafka and posting to the gateway put the same bytes on the log).
pub fn population_records(
    population: &journeys::Population,
    key: &[u8],
    catalog: &Catalog,
) -> Result<Vec<Record>> {
    let p = Pseudonymiser::new(key.to_vec())?;
    // Every generated event carries its recorded_at; `now` only bounds how
    // far ahead an event may be dated, as at the gateway.
    let now = chrono::Utc::now().timestamp_millis();
    population
        .events
        .iter()
        .map(|e| {
            let c = joinery_ingest::convert::convert(
                &e.json,
                |t| catalog.event_schema(t).clone(),
                &p,
                now,
                joinery_domain::event::DEFAULT_EVENT_TIME_HORIZON,
            )
            .map_err(|errors| anyhow::anyhow!("generated event refused: {errors:?}"))?;
            Ok((c.event_type, c.citizen_key, c.value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_own_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2
        for (input, hash) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(input.as_bytes()), hash, "{input}");
        }
    }

    #[test]
    fn every_generated_event_passes_the_gateway_converter() {
        let pop = journeys::Population::generate(journeys::GeneratorConfig::new(500, 3));
        let records = population_records(
            &pop,
            b"a platform key of at least thirty-two bytes",
            &Catalog::load(),
        )
        .expect("all valid");
        assert_eq!(records.len(), pop.events.len());
    }
}
