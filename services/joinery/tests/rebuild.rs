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
    let neet = expected.neet["opportunity"].total;
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
        mission: "opportunity".into(),
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
        let applied = stack
            .prometheus_sum(
                &stack.processor_url,
                "joinery_processor_events_total",
                &["result=\"applied\""],
            )
            .await?;
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
