//! Effectively once, tested by killing: the processor and projections run as
//! real processes and are SIGKILLed at random moments while a load is being
//! produced; after the last restart, every citizen's newest view and every
//! metric must equal a clean evaluation of the same log by the engine.

#![allow(missing_docs)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::*;
use joinery_domain::{EventType, MissionView, OutcomeState, SnapshotView};
use joinery_wire::codec::{decode_value, view_from_value};
use joinery_wire::framing::unframe;
use joinery_wire::{Catalog, RegistryClient};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureProducer;

fn spawn_service(stack: &Stack, name: &str, listen: &str) -> Result<Child> {
    spawn_instance(stack, name, listen, name)
}

/// Starts a service process; `instance` names its data directory and log.
fn spawn_instance(stack: &Stack, name: &str, listen: &str, instance: &str) -> Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(stack.dir.path().join(format!("{instance}.log")))?;
    Ok(Command::new(env!("CARGO_BIN_EXE_joinery"))
        .arg(name)
        .env("JOINERY_KAFKA_BROKERS", &stack.kafka.brokers)
        .env("JOINERY_TOPIC_NAMESPACE", &stack.kafka.namespace)
        .env("JOINERY_PARTITIONS", stack.kafka.partitions.to_string())
        .env("JOINERY_REGISTRY_URL", &stack.registry_url)
        .env("JOINERY_PROCESSOR_LISTEN", listen)
        .env("JOINERY_PROJECTIONS_LISTEN", listen)
        .env(
            "JOINERY_PROCESSOR_DATA_DIR",
            stack.dir.path().join(format!("{instance}-data")),
        )
        .env(
            "JOINERY_PROJECTIONS_DATA_DIR",
            stack.dir.path().join("proj-data"),
        )
        .env(
            "JOINERY_PROCESSOR_GROUP",
            format!("{}crash-processor", stack.kafka.namespace),
        )
        .env(
            "JOINERY_PROJECTIONS_GROUP",
            format!("{}crash-projections", stack.kafka.namespace),
        )
        .env("JOINERY_TOKENS_FILE", &stack.tokens)
        .env("JOINERY_MISSIONS_DIR", missions_dir())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

fn sigkill(child: &mut Child) -> Result<()> {
    child.kill().context("SIGKILL")?; // Child::kill sends SIGKILL on Unix.
    child.wait()?;
    Ok(())
}

/// A citizen's clean evaluation: in the cohort, the outcomes' statuses, and
/// the snapshots (NEET) whose population they are in.
type Replayed = (bool, Vec<OutcomeState>, Vec<SnapshotView>);

/// The opportunity mission evaluated afresh over the log (see [`replay`]).
async fn clean_replay(stack: &Stack) -> Result<BTreeMap<String, Replayed>> {
    let missions = joinery_engine::load_missions(&missions_dir())?;
    let mission = missions
        .iter()
        .find(|m| m.id == "opportunity")
        .context("opportunity mission")?;
    Ok(replay(stack, mission)
        .await?
        .into_iter()
        .map(|(key, e)| {
            (
                key,
                (
                    e.in_cohort,
                    e.outcomes.iter().map(|o| o.status).collect(),
                    e.snapshots,
                ),
            )
        })
        .collect())
}

async fn wait_until<F: Fn() -> Fut, Fut: std::future::Future<Output = Result<bool>>>(
    what: &str,
    secs: u64,
    f: F,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f().await.unwrap_or(false) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("timed out after {secs} s waiting for {what}")
}

/// Waits until the operator's metrics equal a clean evaluation of the log,
/// then checks every citizen's newest view against it too.
async fn assert_equals_clean_replay(
    stack: &Stack,
    registry: &RegistryClient,
    catalog: &Catalog,
) -> Result<()> {
    let expected = clean_replay(stack).await?;
    let in_cohort = expected.values().filter(|(c, _, _)| *c).count() as i64;
    let count = |s: OutcomeState| {
        expected
            .values()
            .filter(|(c, o, _)| *c && o.first() == Some(&s))
            .count() as i64
    };
    let neet: Vec<&SnapshotView> = expected
        .values()
        .flat_map(|(_, _, s)| s.iter().filter(|s| s.name == "neet"))
        .collect();
    let (population, neet_count) = (
        neet.len() as i64,
        neet.iter().filter(|s| s.holds).count() as i64,
    );
    assert!(
        neet_count > 100 && population - neet_count > 100,
        "the load exercises NEET both ways: {neet_count} of {population}"
    );
    let (achieved, not_achieved, pending) = (
        count(OutcomeState::Achieved),
        count(OutcomeState::NotAchieved),
        count(OutcomeState::Pending),
    );
    assert!(
        achieved > 100 && not_achieved > 100,
        "the load exercises both outcomes: {achieved} {not_achieved}"
    );

    let s = stack;
    wait_until("the metrics to equal the clean replay", 120, || async move {
        let (_, m) = s.metrics(OPERATOR_TOKEN, "").await?;
        let o = &m["total"]["outcomes"]["sustained_employment_180d"];
        Ok(m["total"]["cohort"]["value"] == in_cohort
            && o["achieved"]["value"] == achieved
            && o["not_achieved"]["value"] == not_achieved
            && o["pending"]["value"] == pending
            && m["snapshots"]["neet"]["population"]["value"] == population
            && m["snapshots"]["neet"]["count"]["value"] == neet_count)
    })
    .await
    .with_context(|| format!("expected cohort {in_cohort}, achieved {achieved}, not achieved {not_achieved}, pending {pending}, NEET {neet_count} of {population}; logs in {}", stack.dir.path().display()))?;

    // Every citizen's newest view equals the clean evaluation.
    let mut newest: HashMap<String, MissionView> = HashMap::new();
    for Record {
        key,
        value: payload,
        ..
    } in read_topic(
        &stack.kafka,
        &stack.kafka.topic("joinery.views.opportunity"),
    )? {
        let (id, body) = unframe(&payload)?;
        let writer = registry.schema(id).await?;
        let view = view_from_value(decode_value(&writer, catalog.view_schema(), body)?)?;
        let key = String::from_utf8(key)?;
        if newest.get(&key).is_none_or(|v| v.version < view.version) {
            newest.insert(key, view);
        }
    }
    let mut mismatches = Vec::new();
    for (key, (cohort, statuses, snapshots)) in &expected {
        let got = newest.get(key).map(|v| {
            (
                v.in_cohort,
                v.outcomes.iter().map(|o| o.status).collect::<Vec<_>>(),
                v.snapshots.clone(),
            )
        });
        let want = (*cohort, statuses.clone(), snapshots.clone());
        let published = *cohort || !snapshots.is_empty();
        if published && got.as_ref() != Some(&want) {
            mismatches.push(format!("{key}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} citizens differ from the clean replay, e.g. {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );

    Ok(())
}

/// A stack whose processor and projections the test runs as processes (so
/// that it can SIGKILL them), with the event schemas registered and a
/// producer for the load.
struct Processes {
    stack: Stack,
    registry: RegistryClient,
    catalog: Catalog,
    ids: HashMap<EventType, u32>,
    producer: FutureProducer,
}

impl Processes {
    async fn start(test: &str) -> Result<Processes> {
        let mut stack = Stack::start(test).await?;
        for s in [stack.projections.take(), stack.processor.take()]
            .into_iter()
            .flatten()
        {
            s.stop().await?;
        }
        let registry = RegistryClient::new(&stack.registry_url);
        let catalog = Catalog::load();
        let ids = joinery_loadtests::register_schemas(&stack.kafka, &registry, &catalog).await?;
        let producer: FutureProducer = stack.kafka.producer(&format!("{test}-load")).create()?;
        Ok(Processes {
            stack,
            registry,
            catalog,
            ids,
            producer,
        })
    }
}

/// The two tests below kill processes and time rebalances; run side by side
/// on a small machine they starve each other's processes (a rebalance seen
/// late failed the second once in eleven runs), so they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkilled_processor_and_projections_end_equal_to_a_clean_replay() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Processes {
        mut stack,
        registry,
        catalog,
        ids,
        producer,
    } = Processes::start("crash").await?;
    let records = joinery_loadtests::education_journeys(1500, 7, PSEUDONYM_KEY)?;
    let (proc_addr, proj_addr) = (free_addr()?, free_addr()?);
    stack.projections_url = format!("http://{proj_addr}");
    let mut processor = spawn_service(&stack, "processor", &proc_addr)?;
    let mut projections = spawn_service(&stack, "projections", &proj_addr)?;

    let mut rng = StdRng::seed_from_u64(99);
    let chunks: Vec<_> = records.chunks(records.len() / 6 + 1).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, chunk).await?;
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1500))).await;
        if i % 2 == 0 {
            sigkill(&mut processor)?;
            processor = spawn_service(&stack, "processor", &proc_addr)?;
        } else {
            sigkill(&mut projections)?;
            projections = spawn_service(&stack, "projections", &proj_addr)?;
        }
    }
    // One more kill of each while they catch up.
    tokio::time::sleep(Duration::from_millis(rng.random_range(100..800))).await;
    sigkill(&mut processor)?;
    sigkill(&mut projections)?;
    processor = spawn_service(&stack, "processor", &proc_addr)?;
    projections = spawn_service(&stack, "projections", &proj_addr)?;

    assert_equals_clean_replay(&stack, &registry, &catalog).await?;

    sigkill(&mut processor)?;
    sigkill(&mut projections)?;
    stack.shutdown().await
}

/// An address a restarted service can bind again after a SIGKILL: outside
/// the ephemeral range, so no outgoing connection takes it meanwhile.
fn free_addr() -> Result<String> {
    Ok(common::free_port()?.to_string())
}

/// Scale out and fail over: two processor instances in one group share the
/// partitions (co-partitioned by the range assignor); one is killed, the
/// other takes its partitions and rebuilds their state from the log; it
/// comes back and they rebalance again. The results equal a clean replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processors_rebalance_and_survive_losing_one() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Processes {
        mut stack,
        registry,
        catalog,
        ids,
        producer,
    } = Processes::start("rebalance").await?;
    let records = joinery_loadtests::education_journeys(1200, 11, PSEUDONYM_KEY)?;
    let proj_addr = free_addr()?;
    stack.projections_url = format!("http://{proj_addr}");
    let (a_addr, b_addr) = (free_addr()?, free_addr()?);
    let mut projections = spawn_service(&stack, "projections", &proj_addr)?;
    let mut a = spawn_instance(&stack, "processor", &a_addr, "processor-a")?;
    let chunks: Vec<_> = records.chunks(records.len() / 4 + 1).collect();

    joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, chunks[0]).await?;
    let mut b = spawn_instance(&stack, "processor", &b_addr, "processor-b")?;
    let http = reqwest::Client::new();
    let assigned =
        |addr: String| {
            let http = http.clone();
            async move {
                let text = http
                    .get(format!("http://{addr}/metrics"))
                    .send()
                    .await?
                    .text()
                    .await?;
                Ok::<bool, anyhow::Error>(text.lines().any(|l| {
                    l.starts_with("joinery_processor_rebalances_total{kind=\"assigned\"}")
                }))
            }
        };
    wait_until("instance b to get partitions", 60, || {
        assigned(b_addr.clone())
    })
    .await?;
    joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, chunks[1]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigkill(&mut a)?;
    let lost_at = Instant::now();
    joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, chunks[2]).await?;
    a = spawn_instance(&stack, "processor", &a_addr, "processor-a")?;
    joinery_loadtests::produce(&stack.kafka, &producer, &ids, &catalog, chunks[3]).await?;

    assert_equals_clean_replay(&stack, &registry, &catalog).await?;
    eprintln!(
        "rebalance: results equal the clean replay {:.1} s after losing an instance",
        lost_at.elapsed().as_secs_f64()
    );
    let text_b = http
        .get(format!("http://{b_addr}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text_b.contains("joinery_processor_rebalances_total{kind=\"revoked\"}"),
        "b saw partitions move: {text_b}"
    );
    // Operators see how long partitions took to restore on b, and that none
    // is still restoring once the results are right.
    let value = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(-1.0)
    };
    assert!(
        value(&text_b, "joinery_partition_restore_seconds_count") >= 1.0,
        "b timed its restores: {text_b}"
    );
    assert!(
        value(&text_b, "joinery_rebalance_pause_seconds_count") >= 1.0,
        "b timed a rebalance pause: {text_b}"
    );
    wait_until("b to report no partition restoring", 30, || {
        let (http, addr) = (http.clone(), b_addr.clone());
        async move {
            let text = http
                .get(format!("http://{addr}/metrics"))
                .send()
                .await?
                .text()
                .await?;
            Ok(value(&text, "joinery_partitions_restoring") == 0.0)
        }
    })
    .await?;

    sigkill(&mut a)?;
    sigkill(&mut b)?;
    sigkill(&mut projections)?;
    stack.shutdown().await
}
