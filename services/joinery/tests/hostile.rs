//! Hostile and odd input (issue #13), against the real broker, through the
//! gateway and by producing to Kafka directly as a department may: each
//! case is refused with a reason a person can act on (a 400, a dead letter,
//! the broker's refusal), a normal event afterwards still reaches the
//! metrics, and the other citizens' figures stay what they were.

#![allow(missing_docs)]

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use apache_avro::types::Value;
use common::*;
use joinery_domain::event::DAY_MS;
use joinery_domain::{EventType, Pseudonymiser};
use joinery_wire::{Catalog, RegistryClient};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

fn cohort(m: &serde_json::Value) -> Option<i64> {
    m["total"]["cohort"]["value"].as_i64()
}

fn outcome(m: &serde_json::Value, status: &str) -> Option<i64> {
    m["total"]["outcomes"]["sustained_employment_180d"][status]["value"].as_i64()
}

fn day(t: i64) -> String {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// A department event as a direct producer would write it: converted by the
/// gateway's own converter, then with `patch` applied to its Avro fields.
fn direct(
    event: serde_json::Value,
    patch: impl FnOnce(&mut Vec<(String, Value)>),
) -> Result<joinery_loadtests::Record> {
    let catalog = Catalog::load();
    let p = Pseudonymiser::new(PSEUDONYM_KEY.to_vec())?;
    let now = chrono::Utc::now().timestamp_millis();
    let c = joinery_ingest::convert::convert(
        &event,
        |t| catalog.event_schema(t).clone(),
        &p,
        now,
        joinery_domain::event::DEFAULT_EVENT_TIME_HORIZON,
    )
    .map_err(|e| anyhow::anyhow!("the base event is valid: {e:?}"))?;
    let Value::Record(mut fields) = c.value else {
        anyhow::bail!("an event is a record");
    };
    patch(&mut fields);
    Ok((c.event_type, c.citizen_key, Value::Record(fields)))
}

fn set(fields: &mut [(String, Value)], name: &str, value: Value) {
    if let Some((_, v)) = fields.iter_mut().find(|(n, _)| n == name) {
        *v = value;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dates_that_cannot_be_true_or_lie_ahead_and_oversized_codes_change_nothing_else(
) -> Result<()> {
    let stack = Stack::start("hostile-time").await?;
    let now = chrono::Utc::now().timestamp_millis();
    let catalog = Catalog::load();
    let registry = RegistryClient::new(&stack.registry_url);
    let ids = joinery_loadtests::register_schemas(&stack.kafka, &registry, &catalog).await?;
    let producer: FutureProducer = stack.kafka.producer("hostile").create()?;

    // A leaver ten days ago: their sustained-employment outcome is pending
    // for 180 days.
    let left = day(now - 10 * DAY_MS);
    let leaver = education_exited("0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d01", "AB123456C", &left);
    let (status, body) = stack.post(DFE_TOKEN, leaver).await?;
    assert_eq!(status, 202, "{body}");
    stack
        .wait_for_metrics("the leaver to be pending", |m| {
            cohort(m) == Some(1) && outcome(m, "pending") == Some(1)
        })
        .await?;

    // The gateway refuses a date that cannot be true, naming the field.
    let (status, body) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d02",
                "JY100001A",
                "9999-12-31",
            ),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("occurred_at") && text.contains("366 days"),
        "{text}"
    );

    // ... and an area code that is not a GSS code, 600 kB of it.
    let mut huge = education_exited("0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d03", "JY100001A", &left);
    huge["area_code"] = json!("E".repeat(600_000));
    let (status, body) = stack.post(DFE_TOKEN, huge).await?;
    assert_eq!(status, 400);
    let text = body.to_string();
    assert!(
        text.contains("area_code") && text.len() < 2_000,
        "not echoed: {} bytes",
        text.len()
    );

    // The leaver's first job, reported now for a start 60 days ahead: it is
    // accepted, and counts from its date, not before.
    let job = json!({
        "type": "hmrc.EmploymentStarted",
        "event_id": "0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d04",
        "occurred_at": day(now + 60 * DAY_MS),
        "nino": "AB123456C",
        "area_code": "E08000025",
        "employment_id": "E-1",
        "weekly_hours_band": "FROM_30"
    });
    let (status, body) = stack.post(HMRC_TOKEN, job).await?;
    assert_eq!(status, 202, "{body}");

    // Direct producers: a record dated 9999-12-31 and one with a 600 kB
    // area code are dead-lettered; a record whose Kafka timestamp is two
    // days ahead is refused by the broker.
    let far = direct(
        education_exited("0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d05", "JY100002B", &left),
        |f| {
            set(
                f,
                "occurred_at",
                Value::TimestampMillis(253_402_214_400_000),
            )
        },
    )?;
    let wide = direct(
        education_exited("0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d06", "JY100002B", &left),
        |f| {
            set(
                f,
                "area_code",
                Value::Union(1, Box::new(Value::String("E".repeat(600_000)))),
            )
        },
    )?;
    joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, &[far, wide]).await?;
    let (t, key, value) = direct(
        education_exited("0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d07", "JY100002B", &left),
        |_| {},
    )?;
    let payload = joinery_wire::framing::frame(
        ids[&t],
        &joinery_wire::codec::encode_value(catalog.event_schema(t), value)?,
    );
    let topic = stack
        .kafka
        .topic(&EventType::EducationExited.department().topic());
    let refused = producer
        .send(
            FutureRecord::to(&topic)
                .key(key.as_str())
                .payload(&payload)
                .timestamp(now + 2 * DAY_MS),
            Duration::from_secs(10),
        )
        .await;
    let err = refused
        .err()
        .context("the broker refuses a timestamp two days ahead")?
        .0;
    assert!(
        err.to_string().contains("Timestamp") || err.to_string().contains("timestamp"),
        "{err}"
    );

    // A normal event afterwards reaches the metrics; the first leaver is
    // still pending (the job has not started yet) and the figures are final
    // up to no later than now.
    let (status, _) = stack
        .post(
            DFE_TOKEN,
            education_exited("0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d08", "GH123456D", &left),
        )
        .await?;
    assert_eq!(status, 202);
    let m = stack
        .wait_for_metrics("the second leaver", |m| cohort(m) == Some(2))
        .await?;
    assert_eq!(outcome(&m, "pending"), Some(2), "{m}");
    assert_eq!(outcome(&m, "achieved"), Some(0), "{m}");
    let watermark = m["watermark"].as_str().context("a watermark")?;
    let watermark = chrono::DateTime::parse_from_rfc3339(watermark)?.timestamp_millis();
    assert!(
        watermark <= now,
        "figures final up to {watermark}, after now ({now})"
    );

    let dead = read_topic(&stack.kafka, &stack.kafka.topic("joinery.deadletter"))?;
    let mut reasons: Vec<String> = dead
        .iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "joinery.reason")
                .map(|(_, v)| v.clone())
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["event_time_out_of_range", "invalid_field"]);
    let text = stack.prometheus_text(&stack.processor_url).await?;
    assert!(
        text.contains("reason=\"event_time_out_of_range\""),
        "{text}"
    );
    stack.shutdown().await
}

/// A department floods one identifier with 20,000 events: the first 2,000
/// (the cap) are kept, the rest dead-lettered with the reason, and another
/// citizen's event still reaches the metrics promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_events_for_one_identifier_is_capped_and_stalls_nothing() -> Result<()> {
    let stack = Stack::start("hostile-hot").await?;
    let now = chrono::Utc::now().timestamp_millis();
    for request in 0..20u64 {
        let events: Vec<serde_json::Value> = (0..1000u64)
            .map(|i| {
                let n = request * 1000 + i;
                json!({
                    "type": "hmrc.EmploymentStarted",
                    "event_id": uuid::Uuid::from_u128(0x5eed_0000 + u128::from(n)).to_string(),
                    "occurred_at": day(now - 400 * DAY_MS + (n as i64 % 300) * DAY_MS),
                    "nino": "JY200001C",
                    "area_code": "E08000025",
                    "employment_id": format!("E-{n}"),
                    "weekly_hours_band": "FROM_30"
                })
            })
            .collect();
        let (status, body) = stack.post(HMRC_TOKEN, json!(events)).await?;
        assert_eq!(status, 202, "{body}");
    }
    let started = std::time::Instant::now();
    let (status, _) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d09",
                "AB123456C",
                &day(now - 10 * DAY_MS),
            ),
        )
        .await?;
    assert_eq!(status, 202);
    stack
        .wait_for_metrics("another citizen's leaver", |m| cohort(m) == Some(1))
        .await?;
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "the flood held another citizen's event for {:?}",
        started.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let capped = loop {
        let capped = stack
            .prometheus_sum(
                &stack.processor_url,
                "joinery_dead_letters_total",
                &["reason=\"citizen_event_cap\""],
            )
            .await?;
        if capped >= 18_000.0 || std::time::Instant::now() > deadline {
            break capped;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        capped, 18_000.0,
        "every event past the cap is dead-lettered"
    );
    let applied = stack.applied_events().await?;
    assert_eq!(applied, 2_001.0, "the cap's 2,000 and the leaver");
    stack.shutdown().await
}

/// The gateway against clients that hold connections: an unauthenticated
/// request is answered 401 before its body is read, and a hundred clients
/// trickling headers do not keep a department from publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_unauthenticated_clients_do_not_hold_up_departments() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start("hostile-http").await?;
    let addr = stack.ingest_url.trim_start_matches("http://").to_owned();

    // 100 MB announced, no token, no body sent: refused at once.
    let mut s = tokio::net::TcpStream::connect(&addr).await?;
    s.write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n")
        .await?;
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut answer))
        .await
        .context("answered without waiting for the body")??;
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // A hundred clients open connections and trickle half a request line.
    let mut slow = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(b"POST /v1/ev").await?;
        slow.push(s);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let started = std::time::Instant::now();
    let (status, body) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d10",
                "AB123456C",
                &day(now - 10 * DAY_MS),
            ),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "published in {:?}",
        started.elapsed()
    );
    drop(slow);
    stack.shutdown().await
}

/// Records on a view topic that projections cannot use (not Avro, a view of
/// a mission they do not define, an unreadable control record) are copied
/// to the dead-letter topic with the reason before they are passed, and the
/// views after them still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projections_dead_letter_what_they_cannot_use() -> Result<()> {
    let stack = Stack::start("hostile-views").await?;
    let producer: FutureProducer = stack.kafka.producer("hostile-views").create()?;
    let topic = stack.kafka.topic("joinery.views.opportunity");
    let send = |key: &'static str, payload: Vec<u8>, control: bool| {
        let mut record = FutureRecord::to(&topic).key(key).payload(&payload);
        if control {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                rdkafka::message::Header {
                    key: "joinery.control",
                    value: Some("reset"),
                },
            ));
        }
        let delivery = producer.send_result(record).map_err(|(e, _)| e);
        async move {
            let acked = delivery?.await.context("cancelled")?;
            acked.map_err(|(e, _)| anyhow::Error::from(e))?;
            anyhow::Ok(())
        }
    };
    // The processor creates the view topics; wait until it has.
    stack
        .wait_for_metrics("projections to start", |m| m["mission"] == "opportunity")
        .await?;
    send("not-a-citizen", b"not avro".to_vec(), false).await?;
    send("joinery.control.reset", b"{not json".to_vec(), true).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let (status, _) = stack
        .post(
            DFE_TOKEN,
            education_exited(
                "0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d11",
                "AB123456C",
                &day(now - 10 * DAY_MS),
            ),
        )
        .await?;
    assert_eq!(status, 202);
    stack
        .wait_for_metrics("the leaver after the bad records", |m| cohort(m) == Some(1))
        .await?;
    let dead = read_topic(&stack.kafka, &stack.kafka.topic("joinery.deadletter"))?;
    let mut found: Vec<(String, String, Vec<u8>)> = dead
        .iter()
        .map(|r| {
            let h = |k: &str| {
                r.headers
                    .iter()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (h("joinery.service"), h("joinery.reason"), r.value.clone())
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (
                "projections".to_owned(),
                "bad_control_record".to_owned(),
                b"{not json".to_vec()
            ),
            (
                "projections".to_owned(),
                "wrong_magic_byte".to_owned(),
                b"not avro".to_vec()
            ),
        ]
    );
    stack.shutdown().await
}

/// Events the processor dead-lettered for exceeding the cap on one
/// citizen's events, by its current instance.
async fn capped(stack: &Stack) -> Result<f64> {
    stack
        .prometheus_sum(
            &stack.processor_url,
            "joinery_dead_letters_total",
            &["reason=\"citizen_event_cap\""],
        )
        .await
}

/// `joinery deadletter` lists what was refused and, once the cause is
/// fixed (here: the cap on one citizen's events raised), replays it to its
/// source topic, where it is applied like any other record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_listed_and_replayed_once_the_cause_is_fixed() -> Result<()> {
    let mut stack = Stack::start_with(
        "hostile-replay",
        StackOptions {
            max_events_per_citizen: 2,
            ..StackOptions::default()
        },
    )
    .await?;
    let now = chrono::Utc::now().timestamp_millis();
    let jobs: Vec<serde_json::Value> = (0..3u64)
        .map(|n| {
            json!({
                "type": "hmrc.EmploymentStarted",
                "event_id": uuid::Uuid::from_u128(0xdead_0000 + u128::from(n)).to_string(),
                "occurred_at": day(now - (30 - n as i64) * DAY_MS),
                "nino": "JY300001D",
                "area_code": "E08000025",
                "employment_id": format!("E-{n}"),
                "weekly_hours_band": "FROM_30"
            })
        })
        .collect();
    let (status, body) = stack.post(HMRC_TOKEN, json!(jobs)).await?;
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while capped(&stack).await? < 1.0 {
        anyhow::ensure!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let kafka = stack.kafka.clone();
    let joinery = |args: &[&str]| -> Result<String> {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_joinery"))
            .args(args)
            .env("JOINERY_KAFKA_BROKERS", &kafka.brokers)
            .env("JOINERY_TOPIC_NAMESPACE", &kafka.namespace)
            .env("JOINERY_PARTITIONS", kafka.partitions.to_string())
            .env("RUST_LOG", "warn")
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "joinery {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let listed = joinery(&["deadletter", "list"])?;
    assert!(
        listed.contains("citizen_event_cap") && listed.contains("1 of 1 dead letters"),
        "{listed}"
    );
    assert!(!listed.contains("JY300001D"), "no raw identifier: {listed}");

    // The cause is fixed: the processor restarts with a higher cap.
    if let Some(p) = stack.processor.take() {
        p.stop().await?;
    }
    stack.max_events_per_citizen = 10;
    stack.start_processor().await?;
    let dry = joinery(&[
        "deadletter",
        "replay",
        "--reason",
        "citizen_event_cap",
        "--dry-run",
    ])?;
    assert!(dry.contains("1 dead letters would be replayed"), "{dry}");
    let replayed = joinery(&["deadletter", "replay", "--reason", "citizen_event_cap"])?;
    assert!(replayed.contains("replayed 1 of 1"), "{replayed}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stack.applied_events().await? < 1.0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the replayed event was not applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        capped(&stack).await?,
        0.0,
        "not refused again (a fresh processor's count)"
    );
    // Replaying again changes nothing: the event is held.
    joinery(&["deadletter", "replay", "--reason", "citizen_event_cap"])?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let duplicates = stack
            .prometheus_sum(
                &stack.processor_url,
                "joinery_processor_events_total",
                &["result=\"duplicate\""],
            )
            .await?;
        if duplicates >= 1.0 {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the second replay was not read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stack.applied_events().await?, 1.0);
    stack.shutdown().await
}

/// A department corrects an event by sending it again with a later
/// `recorded_at`, and retracts it with `retracted: true`: the figures
/// follow the version recorded last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_department_corrects_and_retracts_an_event_it_sent() -> Result<()> {
    let stack = Stack::start("hostile-retract").await?;
    let now = chrono::Utc::now().timestamp_millis();
    let id = "0d3b1c52-7a43-4c2e-9d1e-1f6a5b2c3d12";
    let version = |occurred: i64, recorded: i64, retracted: bool| {
        let mut e = education_exited(id, "AB123456C", &day(occurred));
        e["recorded_at"] = json!(chrono::DateTime::from_timestamp_millis(recorded)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default());
        if retracted {
            e["retracted"] = json!(true);
        }
        e
    };
    let month = |t: i64| day(t)[..7].to_owned();
    let (first, moved) = (now - 70 * DAY_MS, now - 20 * DAY_MS);
    let months = |m: &serde_json::Value| -> Vec<String> {
        m["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|x| x["key"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };

    let (status, body) = stack
        .post(DFE_TOKEN, version(first, now - 60_000, false))
        .await?;
    assert_eq!(status, 202, "{body}");
    stack
        .wait_for_metrics("the leaver", |m| cohort(m) == Some(1))
        .await?;
    let (_, m) = stack
        .metrics(OPERATOR_TOKEN, "?group_by=cohort_month")
        .await?;
    assert_eq!(months(&m), [month(first)], "{m}");

    // The college corrects the leaving date.
    let (status, body) = stack
        .post(DFE_TOKEN, version(moved, now - 30_000, false))
        .await?;
    assert_eq!(status, 202, "{body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = stack
            .metrics(OPERATOR_TOKEN, "?group_by=cohort_month")
            .await?;
        if months(&m) == [month(moved)] && cohort(&m) == Some(1) {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "not corrected: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The first version sent again late changes nothing.
    let (status, _) = stack
        .post(DFE_TOKEN, version(first, now - 60_000, false))
        .await?;
    assert_eq!(status, 202);

    // Then it retracts the event: the leaver counts in nothing.
    let (status, body) = stack.post(DFE_TOKEN, version(moved, now, true)).await?;
    assert_eq!(status, 202, "{body}");
    stack
        .wait_for_metrics("the retraction", |m| cohort(m) == Some(0))
        .await?;
    stack.shutdown().await
}

/// Every numeric field of the schemas (`occurred_at`, `recorded_at`,
/// `disposal_date`) at the extremes of its type, produced directly: in this
/// debug build any overflow would panic and stop the processor. Each record
/// is applied or dead-lettered with a reason, and a normal event afterwards
/// still reaches the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_numeric_field_at_its_extremes_stops_nothing() -> Result<()> {
    let stack = Stack::start("hostile-numbers").await?;
    let catalog = Catalog::load();
    let registry = RegistryClient::new(&stack.registry_url);
    let ids = joinery_loadtests::register_schemas(&stack.kafka, &registry, &catalog).await?;
    let producer: FutureProducer = stack.kafka.producer("hostile-numbers").create()?;
    let now = chrono::Utc::now().timestamp_millis();

    // One event of each type the generator writes, as a direct producer
    // would send it, then a copy with each numeric field at each extreme
    // (alone, and with every numeric field at it), each its own event.
    let population = joinery_loadtests::journeys::Population::generate(
        joinery_loadtests::journeys::GeneratorConfig::new(400, 17),
    );
    let mut bases: std::collections::BTreeMap<EventType, serde_json::Value> = Default::default();
    for e in &population.events {
        bases.entry(e.event_type).or_insert_with(|| e.json.clone());
    }
    assert!(
        bases.len() >= 10 && bases.contains_key(&EventType::ProvenReoffence),
        "the generator writes most event types: {:?}",
        bases.keys().collect::<Vec<_>>()
    );
    let extremes = [
        i64::MIN,
        i64::MIN + 1,
        -1,
        0,
        1,
        now,
        i64::MAX - 1,
        i64::MAX,
    ];
    let mut records = Vec::new();
    let mut n = 0u128;
    for base in bases.values() {
        let numeric: Vec<&str> = ["occurred_at", "recorded_at", "disposal_date"]
            .into_iter()
            .filter(|f| base.get(f).is_some() || *f != "disposal_date")
            .collect();
        for v in extremes {
            let fields: Vec<Vec<&str>> = numeric
                .iter()
                .map(|f| vec![*f])
                .chain([numeric.clone()])
                .collect();
            for set_these in fields {
                n += 1;
                let mut json = base.clone();
                json["event_id"] = json!(uuid::Uuid::from_u128(0xE0000 + n).to_string());
                records.push(direct(json, |f| {
                    for name in &set_these {
                        set(f, name, Value::TimestampMillis(v));
                    }
                })?);
            }
        }
    }
    let produced = records.len() as f64;
    joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, &records).await?;

    // Every record is accounted for: applied, a duplicate, or dead-lettered.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events = stack
            .prometheus_sum(&stack.processor_url, "joinery_processor_events_total", &[])
            .await
            .unwrap_or(0.0);
        let dead = stack
            .prometheus_sum(&stack.processor_url, "joinery_dead_letters_total", &[])
            .await
            .unwrap_or(0.0);
        if events + dead >= produced {
            assert!(dead > 0.0, "dates that cannot be true are dead-lettered");
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{events} applied and {dead} dead-lettered of {produced} produced; is the processor still running?"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let dead = read_topic(&stack.kafka, &stack.kafka.topic("joinery.deadletter"))?;
    assert!(dead.iter().all(|r| r
        .headers
        .iter()
        .any(|(k, v)| k == "joinery.reason" && !v.is_empty())));

    // A normal event afterwards reaches the metrics.
    let before = stack.metrics(OPERATOR_TOKEN, "").await?.1;
    let left = day(now - 3 * DAY_MS);
    let (status, _) = stack
        .post(
            DFE_TOKEN,
            education_exited("7a1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1", "ZX123456A", &left),
        )
        .await?;
    assert_eq!(status, 202);
    let was = cohort(&before).unwrap_or(0);
    stack
        .wait_for_metrics("the normal leaver", |m| cohort(m) == Some(was + 1))
        .await?;
    stack.shutdown().await
}

/// A view Kafka refuses for good (here the safer-streets view topic takes
/// no record over 64 bytes) is quarantined with a metric, and the
/// partition goes on: the other missions' views, and later events, still
/// reach the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_view_kafka_refuses_is_quarantined_and_the_partition_goes_on() -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let stack = Stack::start("hostile-quarantine").await?;
    stack
        .wait_for_metrics("projections to start", |m| m["mission"] == "opportunity")
        .await?;
    let topic = stack.kafka.topic("joinery.views.safer_streets");
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        stack.kafka.client("hostile-quarantine").create()?;
    for r in admin
        .alter_configs(
            &[AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("max.message.bytes", "64")],
            &AdminOptions::new(),
        )
        .await?
    {
        r.map_err(|(what, e)| anyhow::anyhow!("{what:?}: {e}"))?;
    }
    // The broker applies a topic's new config a moment later: wait until it
    // refuses a record over the limit (the probes it took before are
    // dead-lettered by projections, as any unreadable record).
    let probe: FutureProducer = stack.kafka.producer("hostile-quarantine-probe").create()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sent = probe
            .send(
                FutureRecord::to(&topic)
                    .key("probe")
                    .payload(&[0u8; 200][..]),
                Duration::from_secs(10),
            )
            .await;
        if sent.is_err() {
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the broker still takes 200-byte records on {topic}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let now = chrono::Utc::now().timestamp_millis();
    let release = json!({"type": "moj.ReleasedFromCustody", "event_id": "7b1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1",
        "occurred_at": day(now - 5 * DAY_MS), "nino": "AB654321C", "area_code": "E08000025",
        "establishment_code": "MDI", "release_type": "LICENCE"});
    let (s, body) = stack.post(MOJ_TOKEN, release).await?;
    assert_eq!(s, 202, "{body}");
    let left = day(now - 4 * DAY_MS);
    let (s, _) = stack
        .post(
            DFE_TOKEN,
            education_exited("7b1e2d3c-4b5a-4978-8695-a4b3c2d1e0f2", "AB654321C", &left),
        )
        .await?;
    assert_eq!(s, 202);
    stack
        .wait_for_metrics("the leaver", |m| cohort(m) == Some(1))
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let quarantined = stack
            .prometheus_sum(
                &stack.processor_url,
                "joinery_outbox_quarantined_total",
                &["reason=\"too_large\"", &format!("topic=\"{topic}\"")],
            )
            .await
            .unwrap_or(0.0);
        if quarantined > 0.0 {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let text = stack.prometheus_text(&stack.processor_url).await?;
            let seen: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.contains("views_published")
                        || l.contains("outbox")
                        || l.contains("events_total")
                })
                .collect();
            anyhow::bail!(
                "no quarantined view counted; the processor's metrics:\n{}",
                seen.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The citizen's safer-streets view was refused, not published: that
    // mission counts no one, while the opportunity mission counts them.
    let (_, safer) = stack
        .mission_metrics("safer_streets", OPERATOR_TOKEN, "")
        .await?;
    assert_eq!(cohort(&safer), Some(0), "{safer}");
    // The partition goes on: a later leaver counts too.
    let (s, _) = stack
        .post(
            DFE_TOKEN,
            education_exited("7b1e2d3c-4b5a-4978-8695-a4b3c2d1e0f3", "CE123456A", &left),
        )
        .await?;
    assert_eq!(s, 202);
    stack
        .wait_for_metrics("the second leaver", |m| cohort(m) == Some(2))
        .await?;
    assert_processor_healthy(&stack).await?;
    stack.shutdown().await
}

/// A record produced directly while the schema registry is down, of a
/// schema the processor has not read yet, is not dead-lettered: the
/// processor waits for the registry, and the record counts once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_produced_while_the_registry_is_down_waits_for_it_and_counts() -> Result<()> {
    let mut stack = Stack::start("hostile-registry").await?;
    let catalog = Catalog::load();
    let registry = RegistryClient::new(&stack.registry_url);
    let ids = joinery_loadtests::register_schemas(&stack.kafka, &registry, &catalog).await?;
    let producer: FutureProducer = stack.kafka.producer("hostile-registry").create()?;
    stack
        .wait_for_metrics("projections to start", |m| m["mission"] == "opportunity")
        .await?;

    // The registry goes away; a department produces a leaver directly.
    stack
        .registry
        .take()
        .context("the stack's registry")?
        .stop()
        .await?;
    let now = chrono::Utc::now().timestamp_millis();
    let left = day(now - 10 * DAY_MS);
    let leaver = direct(
        education_exited("8c1e2d3c-4b5a-4978-8695-a4b3c2d1e0f1", "AB123456C", &left),
        |_| {},
    )?;
    joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, &[leaver]).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    async fn dead(stack: &Stack) -> f64 {
        stack
            .prometheus_sum(&stack.processor_url, "joinery_dead_letters_total", &[])
            .await
            .unwrap_or(0.0)
    }
    assert_eq!(
        dead(&stack).await,
        0.0,
        "nothing is refused while the registry is down"
    );
    let (_, m) = stack.metrics(OPERATOR_TOKEN, "").await?;
    assert_ne!(cohort(&m), Some(1), "not counted before its schema is read");

    // Back on the same address: the leaver counts, and nothing was refused.
    stack.start_registry().await?;
    stack
        .wait_for_metrics("the leaver", |m| cohort(m) == Some(1))
        .await?;
    assert_eq!(dead(&stack).await, 0.0);
    assert_processor_healthy(&stack).await?;
    stack.shutdown().await
}

/// The processor still answers healthy: nothing the test sent stopped it.
async fn assert_processor_healthy(stack: &Stack) -> Result<()> {
    let health = stack
        .http
        .get(format!("{}/healthz", stack.processor_url))
        .send()
        .await?;
    assert_eq!(health.status(), 200, "the processor answers healthy");
    Ok(())
}
