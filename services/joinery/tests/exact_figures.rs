//! The exact-figures test: a seeded, calibrated population (all six
//! departments, reporting delays, re-sent events) is published through the
//! gateway, each department in its own order and batches, and every
//! mission's figures (per outcome: achieved, not achieved, pending, median
//! and p90 days; in total, by area and by cohort month) must equal what the generator knows
//! to be true, computed from the journeys and the mission rules without
//! the engine.

mod common;

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use common::*;
use joinery_domain::Department;
use joinery_loadtests::journeys::{ExpectedCounts, GeneratorConfig, Population};
use serde_json::Value;

/// The operator's (exact) figures of one group as the generator's type.
fn actual(group: &Value) -> ExpectedCounts {
    let mut c = ExpectedCounts {
        cohort: group["cohort"]["value"].as_i64().unwrap_or(-1),
        ..Default::default()
    };
    if let Some(outcomes) = group["outcomes"].as_object() {
        for (name, o) in outcomes {
            let e = c.outcomes.entry(name.clone()).or_default();
            e.achieved = o["achieved"]["value"].as_i64().unwrap_or(-1);
            e.not_achieved = o["not_achieved"]["value"].as_i64().unwrap_or(-1);
            e.pending = o["pending"]["value"].as_i64().unwrap_or(-1);
        }
    }
    c
}

/// Compares counts, and the quantiles the API reports with those of the truth.
fn differences(what: &str, want: &ExpectedCounts, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let have = actual(got);
    let mut comparable = want.clone();
    for o in comparable.outcomes.values_mut() {
        o.days.clear();
    }
    if comparable != have {
        out.push(format!("{what}: expected {comparable:?}, got {have:?}"));
    }
    for (name, o) in &want.outcomes {
        let d = &got["outcomes"][name]["days_to_achieve"];
        for (field, q) in [("median_days", 0.5), ("p90_days", 0.9)] {
            if d[field].as_i64() != o.quantile(q) {
                out.push(format!(
                    "{what} {name} {field}: expected {:?}, got {}",
                    o.quantile(q),
                    d[field]
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_calibrated_population_through_the_gateway_gives_exactly_the_expected_figures(
) -> Result<()> {
    let stack = Stack::start("exact").await?;
    let population = Population::generate(GeneratorConfig::new(1500, 42));
    let expected = population.expected(stack.kafka.partitions, PSEUDONYM_KEY)?;
    let distinct = distinct_events(&population);

    publish_population(&stack, &population).await?;

    // The citizens land on the partitions the oracle assumed (Kafka's murmur2).
    let keys = population.citizen_keys(PSEUDONYM_KEY)?;
    let mut on_log = 0;
    for d in Department::ALL {
        for r in read_topic(&stack.kafka, &stack.kafka.topic(&d.topic()))? {
            let key = String::from_utf8(r.key.clone())?;
            ensure!(
                r.partition == joinery_loadtests::murmur2_partition(&r.key, stack.kafka.partitions),
                "{key} on partition {} but murmur2 says otherwise",
                r.partition
            );
            ensure!(keys.contains(&key), "a key the population does not have");
            on_log += 1;
        }
    }
    assert_eq!(
        on_log,
        population.events.len(),
        "every event published once"
    );

    // Wait until the processor has taken every event, then for the figures.
    let want = &expected.total["opportunity"];
    stack
        .wait_for_metrics("the opportunity cohort", |m| {
            actual(&m["total"]).cohort == want.cohort
        })
        .await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut problems = Vec::new();
        for (mission, want) in &expected.total {
            let (_, m) = stack
                .mission_metrics(mission, OPERATOR_TOKEN, "?group_by=area")
                .await?;
            problems.extend(differences(mission, want, &m["total"]));
            let (_, by_month) = stack
                .mission_metrics(mission, OPERATOR_TOKEN, "?group_by=cohort_month")
                .await?;
            for (what, body, wanted) in [
                ("area", &m, &expected.by_area[mission]),
                ("cohort month", &by_month, &expected.by_month[mission]),
            ] {
                let groups: BTreeMap<String, &Value> = body["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| (g["key"].as_str().unwrap_or_default().to_owned(), g))
                    .collect();
                if groups.keys().collect::<Vec<_>>() != wanted.keys().collect::<Vec<_>>() {
                    problems.push(format!(
                        "{mission}: {what} groups {:?}, expected {:?}",
                        groups.keys().collect::<Vec<_>>(),
                        wanted.keys().collect::<Vec<_>>()
                    ));
                }
                for (key, want) in wanted {
                    if let Some(g) = groups.get(key) {
                        problems.extend(differences(&format!("{mission} {what} {key}"), want, g));
                    }
                }
            }
        }
        // The snapshots (NEET and EET): everyone aged 16 to 24 at the watermark.
        for (mission, snapshots) in &expected.snapshots {
            let (_, m) = stack.mission_metrics(mission, OPERATOR_TOKEN, "").await?;
            for (id, want) in snapshots {
                let got = &m["snapshots"][id];
                let figures = |v: &Value| {
                    (
                        v["population"]["value"].as_i64().unwrap_or(-1),
                        v["count"]["value"].as_i64().unwrap_or(-1),
                    )
                };
                if figures(got) != (want.total.population, want.total.count) {
                    problems.push(format!(
                        "{mission} {id}: (population, count) {:?}, expected {:?}",
                        figures(got),
                        (want.total.population, want.total.count)
                    ));
                }
                let areas: BTreeMap<String, (i64, i64)> = got["by_area"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| (g["key"].as_str().unwrap_or_default().to_owned(), figures(g)))
                    .collect();
                let wanted: BTreeMap<String, (i64, i64)> = want
                    .by_area
                    .iter()
                    .map(|(k, g)| (k.clone(), (g.population, g.count)))
                    .collect();
                if areas != wanted {
                    problems.push(format!(
                        "{mission} {id} by area: {areas:?}, expected {wanted:?}"
                    ));
                }
            }
        }
        if problems.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "figures differ from the truth:\n{}",
            problems.join("\n")
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let applied = stack.applied_events().await?;
    assert_eq!(applied as usize, distinct, "re-sent events applied once");
    let neet = &expected.snapshots["opportunity"]["neet"].total;
    assert!(
        neet.count > 0 && neet.count < neet.population,
        "the population has NEET and non-NEET young people: {neet:?}"
    );
    eprintln!(
        "exact figures: {} events ({} distinct) of {} citizens; NEET {neet:?}; cohorts {:?}",
        population.events.len(),
        distinct,
        population.ninos.len(),
        expected
            .total
            .iter()
            .map(|(m, c)| (m.as_str(), c.cohort))
            .collect::<Vec<_>>()
    );
    stack.shutdown().await
}
