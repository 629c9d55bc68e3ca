//! The gateway through a broker outage, on a broker of the test's own:
//! while Kafka is down the gateway answers 503 with Retry-After (never a 202
//! it cannot keep, never a hung request), and once Kafka is back every event
//! it acknowledged is in the topic.

#![allow(missing_docs)]

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::*;
use joinery_domain::EventType;
use joinery_wire::codec::{decode_value, event_from_value};
use joinery_wire::framing::unframe;
use joinery_wire::{Catalog, RegistryClient};

/// A single-node broker in a directory of its own, on ports of its own.
struct Broker {
    env: Vec<(&'static str, String)>,
}

impl Broker {
    fn script() -> PathBuf {
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("../../deploy/local/kafka.sh")
    }

    fn run(&self, verb: &str) -> Result<()> {
        let status = Command::new("bash")
            .arg(Self::script())
            .arg(verb)
            .envs(self.env.iter().map(|(k, v)| (*k, v)))
            .status()?;
        if !status.success() {
            bail!("kafka.sh {verb} failed: {status}");
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.run("stop");
    }
}

/// A port whose successor is free too (the controller's), outside the
/// ephemeral range so that the broker can bind both again after its outage.
fn free_port_pair() -> Result<u16> {
    Ok(joinery_runtime::http::spare_loopback_ports(2)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_gives_503s_and_loses_no_acknowledged_event() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port_pair()?;
    let brokers = format!("127.0.0.1:{port}");
    let broker = Broker {
        env: vec![
            ("JOINERY_KAFKA_BROKERS", brokers.clone()),
            ("JOINERY_STATE_DIR", dir.path().display().to_string()),
            (
                "JOINERY_LOG_DIR",
                dir.path().join("logs").display().to_string(),
            ),
        ],
    };
    broker.run("start")?;
    let stack = Stack::start_with(
        "outage",
        StackOptions {
            brokers,
            delivery_timeout: Duration::from_secs(3),
            ..StackOptions::default()
        },
    )
    .await?;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let statuses: Arc<Mutex<Vec<u16>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let last_refusal: Arc<Mutex<String>> = Arc::default();
    let poster = {
        let (acked, statuses, stop) =
            (Arc::clone(&acked), Arc::clone(&statuses), Arc::clone(&stop));
        let last_refusal = Arc::clone(&last_refusal);
        let (url, http) = (
            format!("{}/v1/events", stack.ingest_url),
            reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
        );
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let batch: Vec<serde_json::Value> = (0..10)
                    .map(|_| {
                        n += 1;
                        education_exited(
                            &uuid::Uuid::new_v4().to_string(),
                            &format!("RB{:06}A", n % 1_000_000),
                            "2026-05-01",
                        )
                    })
                    .collect();
                let ids: Vec<String> = batch
                    .iter()
                    .map(|e| e["event_id"].as_str().unwrap_or_default().to_owned())
                    .collect();
                let started = Instant::now();
                let resp = http
                    .post(&url)
                    .bearer_auth(DFE_TOKEN)
                    .json(&batch)
                    .send()
                    .await
                    .context("a request hung or failed")?;
                let status = resp.status().as_u16();
                if status == 503 {
                    anyhow::ensure!(
                        resp.headers().contains_key("retry-after"),
                        "a 503 without Retry-After"
                    );
                }
                if status != 202 {
                    *last_refusal.lock().expect("lock") =
                        format!("{status} {}", resp.text().await.unwrap_or_default());
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(15),
                    "a request took {:?}",
                    started.elapsed()
                );
                statuses.lock().expect("lock").push(status);
                if status == 202 {
                    acked.lock().expect("lock").extend(ids);
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok::<(), anyhow::Error>(())
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.run("stop")?;
    tokio::time::sleep(Duration::from_secs(8)).await;
    // The outage lasts until the gateway has answered a request during it
    // (a request held by the producer is answered once its delivery
    // timeout passes): how long the broker's controlled shutdown took must
    // not decide whether the test saw a 503. Bounded well past the 3 s
    // delivery timeout.
    let outage_deadline = Instant::now() + Duration::from_secs(30);
    while !statuses.lock().expect("lock").contains(&503) && Instant::now() < outage_deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during: Vec<u16> = statuses.lock().expect("lock").clone();
    broker.run("start")?;
    // Keep publishing until the gateway acknowledges again after the outage.
    let acked_before_restart = acked.lock().expect("lock").len();
    let deadline = Instant::now() + Duration::from_secs(90);
    while acked.lock().expect("lock").len() <= acked_before_restart + 50 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway never recovered after the broker came back; last refusal: {}",
            last_refusal.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    poster.await??;

    assert!(
        during.contains(&503),
        "the outage produced 503s: {during:?}"
    );
    let acked: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    let registry = RegistryClient::new(&stack.registry_url);
    let catalog = Catalog::load();
    let mut in_kafka = HashSet::new();
    for r in read_topic(&stack.kafka, &stack.kafka.topic("joinery.events.dfe"))? {
        let (id, body) = unframe(&r.value)?;
        let writer = registry.schema(id).await?;
        let event = event_from_value(
            EventType::EducationExited,
            decode_value(
                &writer,
                catalog.event_schema(EventType::EducationExited),
                body,
            )?,
        )?;
        in_kafka.insert(event.event_id.to_string());
    }
    let missing: Vec<&String> = acked.difference(&in_kafka).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are not in Kafka, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    eprintln!(
        "outage: {} events acknowledged, all in Kafka; {} requests answered 503",
        acked.len(),
        during.iter().filter(|s| **s == 503).count()
    );
    stack.shutdown().await
}
