//! Dropping and rebuilding a mission's views while the live services run:
//! `joinery rebuild <mission>` (here `joinery_processor::rebuild`, the code
//! behind the command) must bring back identical figures when the
//! definitions are unchanged, and the figures of the new definitions over
//! the whole log when they have changed, whatever the old views said.

mod common;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::*;
use joinery_domain::OutcomeState;
use joinery_loadtests::journeys::{GeneratorConfig, Population};
use joinery_wire::catalog::view_topic;
use joinery_wire::control::{Control, ControlKind, CONTROL_HEADER};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

const OUTCOME: &str = "sustained_employment_180d";

/// Every opportunity figure an operator sees: total, by area, by cohort
/// month, snapshots, and whether a rebuild is under way.
async fn figures(stack: &Stack) -> Result<Value> {
    let (_, a) = stack.metrics(OPERATOR_TOKEN, "?group_by=area").await?;
    let (_, m) = stack
        .metrics(OPERATOR_TOKEN, "?group_by=cohort_month")
        .await?;
    Ok(json!({
        "total": a["total"], "by_area": a["groups"], "by_month": m["groups"],
        "snapshots": a["snapshots"], "rebuilding": a["rebuilding"],
    }))
}

/// Waits until `ok` holds for the opportunity figures.
async fn wait_for(stack: &Stack, what: &str, ok: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let f = figures(stack).await?;
        if ok(&f) {
            return Ok(f);
        }
        ensure!(
            Instant::now() < deadline,
            "timed out waiting for {what}; figures: {f}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Views applied by projections so far (not ignored as stale).
async fn applied_views(stack: &Stack) -> Result<f64> {
    stack
        .prometheus_sum(
            &stack.projections_url,
            "joinery_projections_views_total",
            &["mission=\"opportunity\"", "result=\"applied\""],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuilt_mission_comes_back_identical_and_new_definitions_replace_it() -> Result<()> {
    let mut stack = Stack::start("rebuild").await?;
    let people = Population::generate(GeneratorConfig::new(600, 5));
    let expected = people.expected(stack.kafka.partitions, PSEUDONYM_KEY)?;
    publish_population(&stack, &people).await?;
    let cohort = expected.total["opportunity"].cohort;
    let neet = expected.snapshots["opportunity"]["neet"].total;
    let before = wait_for(&stack, "the live figures", |f| {
        f["total"]["cohort"]["value"] == cohort
            && f["snapshots"]["neet"]["population"]["value"] == neet.population
            && f["snapshots"]["neet"]["count"]["value"] == neet.count
    })
    .await?;
    assert!(before["rebuilding"].is_null());

    // 1. A reset alone (a rebuild that stopped before it caught up): every
    //    earlier view stops counting, and readers are told so.
    let topic = stack.kafka.topic(&view_topic("opportunity"));
    let producer: FutureProducer = stack.kafka.producer("test-reset").create()?;
    let reset = Control {
        kind: ControlKind::Reset,
        mission: "opportunity".parse().unwrap(),
        rebuild: "interrupted".into(),
        partitions: stack.kafka.partitions,
        started_at: chrono::Utc::now().timestamp_millis(),
    };
    for p in 0..stack.kafka.partitions {
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(p)
                    .key(&reset.key())
                    .payload(&reset.to_bytes())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: CONTROL_HEADER,
                        value: Some("reset"),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let dropped = wait_for(&stack, "the reset to drop every figure", |f| {
        f["total"]["cohort"]["value"] == 0
            && f["snapshots"]["neet"]["population"]["value"] == 0
            && f["rebuilding"]["rebuild"] == "interrupted"
    })
    .await?;
    assert_eq!(dropped["rebuilding"]["partitions_complete"], 0);
    let page = stack
        .http
        .get(format!("{}/missions/opportunity", stack.projections_url))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("data-rebuilding=\"true\"") && page.contains("being rebuilt"),
        "the board warns that the figures are incomplete"
    );

    // 2. A rebuild with the same definitions: the same figures again, every
    //    view applied afresh (the same versions would otherwise be stale).
    let applied = applied_views(&stack).await?;
    let id = stack
        .rebuild("opportunity", missions_dir(), "rebuild-1")
        .await?;
    let after = wait_for(&stack, "the rebuilt figures", |f| f["rebuilding"].is_null()).await?;
    assert_eq!(after, before, "dropped and rebuilt to identical figures");
    assert!(
        applied_views(&stack).await? - applied >= cohort as f64,
        "the rebuild's views were applied, not ignored as stale"
    );
    let marks: Vec<String> = read_topic(&stack.kafka, &topic)?
        .into_iter()
        .filter_map(|r| {
            r.headers
                .into_iter()
                .find(|(k, _)| k == CONTROL_HEADER)
                .map(|(_, v)| v)
        })
        .collect();
    let count = |k: &str| marks.iter().filter(|m| *m == k).count() as i32;
    assert_eq!(
        (count("reset"), count("complete")),
        (2 * stack.kafka.partitions, stack.kafka.partitions),
        "rebuild {id} marked every partition"
    );

    // 3. New definitions (a 60-day window, NEET up to 20): the figures are
    //    those of the new rules over the whole log, not the old views'.
    let changed = stack.dir.path().join("changed-missions");
    std::fs::create_dir_all(&changed)?;
    for entry in std::fs::read_dir(missions_dir())? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, changed.join(path.file_name().context("name")?))?;
        }
    }
    let text = std::fs::read_to_string(changed.join("opportunity.toml"))?;
    let (head, snapshot) = text
        .split_once("[[snapshot]]")
        .context("the NEET snapshot")?;
    let text = format!(
        "{}[[snapshot]]{}",
        head.replace("within_days = 180", "within_days = 60"),
        snapshot.replace("max = 24", "max = 20")
    );
    std::fs::write(changed.join("opportunity.toml"), text)?;
    let def = joinery_engine::load_missions(&changed)?
        .into_iter()
        .find(|m| m.id == "opportunity")
        .context("opportunity")?;
    let truth = replay(&stack, &def).await?;
    let in_cohort: Vec<_> = truth.values().filter(|e| e.in_cohort).collect();
    let status = |s| {
        in_cohort
            .iter()
            .filter(|e| e.outcomes.first().map(|o| o.status) == Some(s))
            .count() as i64
    };
    let (achieved, not_achieved, pending) = (
        status(OutcomeState::Achieved),
        status(OutcomeState::NotAchieved),
        status(OutcomeState::Pending),
    );
    let neet: Vec<_> = truth.values().flat_map(|e| &e.snapshots).collect();
    let (population, neet_count) = (
        neet.len() as i64,
        neet.iter().filter(|s| s.holds).count() as i64,
    );
    let o = &before["total"]["outcomes"][OUTCOME];
    assert_ne!(
        (
            o["achieved"]["value"].as_i64(),
            before["snapshots"]["neet"]["population"]["value"].as_i64()
        ),
        (Some(achieved), Some(population)),
        "the new definitions change the figures"
    );
    // The live processor restarts with the new file: its state (old
    // evaluations and timers) is discarded and rebuilt from the log.
    if let Some(p) = stack.processor.take() {
        p.stop().await?;
    }
    stack.start_processor_with_missions(changed.clone()).await?;
    let distinct = distinct_events(&people) as f64;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = stack.applied_events().await?;
        if applied == distinct {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the restarted processor applied {applied} of {distinct} events: it did not rebuild its state"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stack.rebuild("opportunity", changed, "rebuild-2").await?;
    let replaced = wait_for(&stack, "the new definitions' figures", |f| {
        let o = &f["total"]["outcomes"][OUTCOME];
        f["rebuilding"].is_null()
            && f["total"]["cohort"]["value"] == in_cohort.len() as i64
            && o["achieved"]["value"] == achieved
            && o["not_achieved"]["value"] == not_achieved
            && o["pending"]["value"] == pending
            && f["snapshots"]["neet"]["population"]["value"] == population
            && f["snapshots"]["neet"]["count"]["value"] == neet_count
    })
    .await?;
    eprintln!(
        "rebuilt: cohort {}, achieved {achieved} (was {}), NEET {neet_count} of {population} (was {})",
        in_cohort.len(),
        o["achieved"]["value"],
        before["snapshots"]["neet"]["population"]["value"]
    );
    assert!(replaced["rebuilding"].is_null());
    stack.shutdown().await
}

/// A view of `citizen` with `version`, framed as the processor frames it.
fn view(schema_id: u32, citizen: &str, version: i64) -> Vec<u8> {
    let view = joinery_domain::MissionView {
        mission: "opportunity".parse().expect("a valid value"),
        citizen_key: citizen.parse().expect("a citizen key"),
        version,
        watermark: version,
        in_cohort: true,
        area_code: Some(
            format!("E0600000{}", version % 10)
                .parse()
                .expect("a valid value"),
        ),
        cohort_month: Some("2026-01".parse().expect("a valid value")),
        outcomes: vec![],
        snapshots: vec![],
        ingested_at: 0,
    };
    let catalog = joinery_wire::Catalog::load();
    let body = joinery_wire::codec::encode_value(
        catalog.view_schema(),
        joinery_wire::codec::view_to_value(&view),
    )
    .expect("a view encodes");
    joinery_wire::framing::frame(schema_id, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settling_makes_each_citizens_newest_view_its_last_so_compaction_keeps_it() -> Result<()> {
    let stack = Stack::start("settle").await?;
    let topic = stack.kafka.topic(&view_topic("opportunity"));
    // Compaction must leave the live views a rebuild reads back.
    assert_eq!(
        joinery_runtime::kafka::min_compaction_lag_ms(&stack.kafka, &topic).await?,
        86_400_000
    );
    let schema_id = joinery_wire::RegistryClient::new(&stack.registry_url)
        .register(
            &format!("{topic}-value"),
            joinery_wire::Catalog::load().view_schema_text(),
        )
        .await?;
    let producer: FutureProducer = stack.kafka.producer("test").create()?;
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    let send = |key: &str, payload: Vec<u8>, control: bool| {
        let producer = producer.clone();
        let (topic, key) = (topic.clone(), key.to_owned());
        async move {
            let mut record = FutureRecord::to(&topic)
                .partition(0)
                .key(&key)
                .payload(&payload);
            if control {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: CONTROL_HEADER,
                    value: Some("reset"),
                }));
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("{e}"))
                .map(|d| d.offset)
        }
    };
    // Before the reset: A's newest view of all, which the reset voids.
    send(&a, view(schema_id, &a, 90), false).await?;
    let control = Control {
        kind: ControlKind::Reset,
        mission: "opportunity".parse().unwrap(),
        rebuild: "opportunity-test".into(),
        partitions: 3,
        started_at: 0,
    };
    let reset = send(&String::from_utf8(control.key())?, control.to_bytes(), true).await?;
    // The live processor's newer view of A lands before the rebuild's older
    // one; C's comes after the rebuild's; B has only the rebuild's.
    send(&a, view(schema_id, &a, 50), false).await?;
    send(&c, view(schema_id, &c, 40), false).await?;
    send(&a, view(schema_id, &a, 30), false).await?;
    send(&b, view(schema_id, &b, 20), false).await?;
    send(&c, view(schema_id, &c, 60), false).await?;
    // A record that is not a view is left as it is, and settling goes on.
    send(&"d".repeat(64), b"not a view".to_vec(), false).await?;

    let from = [(0, reset + 1)].into_iter().collect();
    let started = chrono::Utc::now().timestamp_millis();
    let settled =
        joinery_processor::settle_views(&stack.kafka, &stack.registry_url, &topic, &from, started)
            .await?;
    assert_eq!(settled, 1, "only A's newest view is republished");

    // What compaction keeps of each citizen after the reset: the last record.
    let records = read_topic(&stack.kafka, &topic)?;
    let last = |key: &str| {
        records
            .iter()
            .rev()
            .find(|r| r.partition == 0 && r.offset > reset && r.key == key.as_bytes())
            .map(|r| r.value.clone())
    };
    assert_eq!(last(&a), Some(view(schema_id, &a, 50)), "A: the live view");
    assert_eq!(last(&b), Some(view(schema_id, &b, 20)));
    assert_eq!(last(&c), Some(view(schema_id, &c, 60)));

    // Settled views need nothing more.
    let again =
        joinery_processor::settle_views(&stack.kafka, &stack.registry_url, &topic, &from, started)
            .await?;
    assert_eq!(again, 0);
    stack.shutdown().await
}
