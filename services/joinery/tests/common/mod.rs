//! Helpers for the end-to-end tests: the four services in-process against
//! the real broker that `deploy/local/test` starts, each test in its own
//! topic namespace, consumer groups and data directories, so that tests run
//! in parallel and leave nothing behind but their uniquely named topics.

#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use joinery_domain::Pseudonymiser;
use joinery_runtime::auth::hash_token;
use joinery_runtime::kafka::KafkaSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const DFE_TOKEN: &str = "test-dfe-token";
pub const HMRC_TOKEN: &str = "test-hmrc-token";
pub const MOJ_TOKEN: &str = "test-moj-token";
pub const DWP_TOKEN: &str = "test-dwp-token";
pub const DHSC_TOKEN: &str = "test-dhsc-token";
pub const MHCLG_TOKEN: &str = "test-mhclg-token";

/// The test token of a department.
#[allow(dead_code)] // not every test binary posts for every department
pub fn department_token(d: joinery_domain::Department) -> &'static str {
    use joinery_domain::Department::*;
    match d {
        Dfe => DFE_TOKEN,
        Dwp => DWP_TOKEN,
        Hmrc => HMRC_TOKEN,
        Dhsc => DHSC_TOKEN,
        Moj => MOJ_TOKEN,
        Mhclg => MHCLG_TOKEN,
    }
}
pub const BOARD_TOKEN: &str = "test-board-token";
pub const OPERATOR_TOKEN: &str = "test-operator-token";
pub const PSEUDONYM_KEY: &[u8] = b"test-pseudonymisation-key-of-32-bytes!";

/// What a test may change about its stack.
pub struct StackOptions {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The gateway's delivery timeout.
    pub delivery_timeout: Duration,
    /// The processor's cap on one citizen's events.
    pub max_events_per_citizen: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            brokers: brokers(),
            delivery_timeout: Duration::from_secs(30),
            max_events_per_citizen: 2_000,
        }
    }
}

pub fn brokers() -> String {
    std::env::var("JOINERY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The repository's mission definitions.
pub fn missions_dir() -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../missions")
}

/// A loopback address for a service under test (see
/// `joinery_runtime::http::spare_loopback_ports` for why not `bind(0)`).
pub fn free_port() -> Result<SocketAddr> {
    Ok(joinery_runtime::http::spare_loopback_addr()?)
}

/// A running service: its cancellation token and task.
pub struct Running {
    pub cancel: CancellationToken,
    pub task: JoinHandle<Result<()>>,
}

impl Running {
    pub async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        self.task.await?
    }
}

fn spawn<F, Fut>(f: F) -> Running
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let cancel = CancellationToken::new();
    let task = tokio::spawn(f(cancel.clone()));
    Running { cancel, task }
}

/// The whole stack of one test.
pub struct Stack {
    pub kafka: KafkaSettings,
    pub dir: tempfile::TempDir,
    pub tokens: PathBuf,
    pub registry_url: String,
    pub ingest_url: String,
    pub projections_url: String,
    pub processor_url: String,
    pub registry: Option<Running>,
    pub ingest: Option<Running>,
    pub processor: Option<Running>,
    pub projections: Option<Running>,
    pub http: reqwest::Client,
    processor_addr: SocketAddr,
    projections_addr: SocketAddr,
    /// The processor's cap on one citizen's events (a test may change it
    /// before restarting the processor).
    pub max_events_per_citizen: usize,
}

impl Stack {
    pub async fn start(test: &str) -> Result<Stack> {
        Stack::start_with(test, StackOptions::default()).await
    }

    pub async fn start_with(test: &str, options: StackOptions) -> Result<Stack> {
        joinery_runtime::telemetry::init_tracing();
        let unique = format!(
            "{test}-{}-{}.",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let kafka = KafkaSettings {
            brokers: options.brokers.clone(),
            partitions: 3,
            replication: 1,
            namespace: unique,
        };
        let dir = tempfile::tempdir()?;
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!(
                "{} department:dfe\n{} department:hmrc\n{} department:moj\n{} department:dwp\n{} department:dhsc\n{} department:mhclg\n{} board:*\n{} operator\n",
                hash_token(DFE_TOKEN),
                hash_token(HMRC_TOKEN),
                hash_token(MOJ_TOKEN),
                hash_token(DWP_TOKEN),
                hash_token(DHSC_TOKEN),
                hash_token(MHCLG_TOKEN),
                hash_token(BOARD_TOKEN),
                hash_token(OPERATOR_TOKEN)
            ),
        )?;
        let (reg, ing, proc_, proj) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let mut stack = Stack {
            kafka,
            tokens,
            registry_url: format!("http://{reg}"),
            ingest_url: format!("http://{ing}"),
            projections_url: format!("http://{proj}"),
            processor_url: format!("http://{proc_}"),
            dir,
            registry: None,
            ingest: None,
            processor: None,
            projections: None,
            http: reqwest::Client::new(),
            processor_addr: proc_,
            projections_addr: proj,
            max_events_per_citizen: options.max_events_per_citizen,
        };
        stack.start_registry().await?;
        let config = joinery_ingest::IngestConfig {
            listen: ing,
            kafka: stack.kafka.clone(),
            registry_url: stack.registry_url.clone(),
            tokens: stack.tokens.clone(),
            pseudonymiser: Pseudonymiser::new(PSEUDONYM_KEY.to_vec())?,
            max_body_bytes: 1 << 20,
            max_batch: 1000,
            delivery_timeout: options.delivery_timeout,
            event_time_horizon: joinery_domain::event::DEFAULT_EVENT_TIME_HORIZON,
        };
        stack.ingest = Some(spawn(|c| joinery_ingest::run(config, c)));
        stack.wait_ready(&stack.ingest_url.clone()).await?;
        stack.start_processor().await?;
        stack.start_projections().await?;
        Ok(stack)
    }

    /// Starts the schema registry on the stack's registry address (again,
    /// after a test stopped it: its schemas are in Kafka).
    pub async fn start_registry(&mut self) -> Result<()> {
        let listen: SocketAddr = self
            .registry_url
            .trim_start_matches("http://")
            .parse()
            .context("the registry's address")?;
        let config = joinery_registry::RegistryConfig {
            listen,
            kafka: self.kafka.clone(),
        };
        self.registry = Some(spawn(|c| joinery_registry::run(config, c)));
        self.wait_ready(&self.registry_url.clone()).await
    }

    pub async fn start_processor(&mut self) -> Result<()> {
        self.start_processor_with_missions(missions_dir()).await
    }

    /// Starts the in-process processor with the mission definitions in `dir`.
    pub async fn start_processor_with_missions(&mut self, dir: PathBuf) -> Result<()> {
        let mut config = joinery_processor::ProcessorConfig::local(
            self.kafka.clone(),
            self.registry_url.clone(),
            self.dir.path().join("processor"),
        );
        config.listen = self.processor_addr;
        config.group = format!("{}processor", self.kafka.namespace);
        config.missions_dir = dir;
        config.max_events_per_citizen = self.max_events_per_citizen;
        self.processor = Some(spawn(|c| joinery_processor::run(config, c)));
        self.wait_ready(&self.processor_url.clone()).await
    }

    pub async fn start_projections(&mut self) -> Result<()> {
        let config = joinery_projections::ProjectionsConfig {
            listen: self.projections_addr,
            kafka: self.kafka.clone(),
            registry_url: self.registry_url.clone(),
            data_dir: self.dir.path().join("projections"),
            group: format!("{}projections", self.kafka.namespace),
            tokens: self.tokens.clone(),
            disclosure: Default::default(),
            missions_dir: missions_dir(),
            board_assets: std::path::Path::new(
                &std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
            )
            .join("../../web/node_modules/govuk-frontend/dist/govuk"),
        };
        self.projections = Some(spawn(|c| joinery_projections::run(config, c)));
        self.wait_ready(&self.projections_url.clone()).await
    }

    async fn wait_ready(&mut self, base: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for slot in [
                &mut self.registry,
                &mut self.ingest,
                &mut self.processor,
                &mut self.projections,
            ] {
                if slot.as_ref().is_some_and(|r| r.task.is_finished()) {
                    let r = slot.take().expect("checked above");
                    bail!(
                        "a service stopped while {base} was starting: {:?}",
                        r.task.await
                    );
                }
            }
            if let Ok(r) = self.http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{base} not ready within 60 s (is Kafka running at {}?)",
                    brokers()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn post(
        &self,
        token: &str,
        body: serde_json::Value,
    ) -> Result<(u16, serde_json::Value)> {
        let r = self
            .http
            .post(format!("{}/v1/events", self.ingest_url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.context("response body is JSON")?))
    }

    pub async fn metrics(&self, token: &str, query: &str) -> Result<(u16, serde_json::Value)> {
        self.mission_metrics("opportunity", token, query).await
    }

    pub async fn mission_metrics(
        &self,
        mission: &str,
        token: &str,
        query: &str,
    ) -> Result<(u16, serde_json::Value)> {
        let r = self
            .http
            .get(format!(
                "{}/v1/missions/{mission}/metrics{query}",
                self.projections_url
            ))
            .bearer_auth(token)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    /// Polls the operator's figures until `pred` holds (60 s at most).
    pub async fn wait_for_metrics(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, m) = self.metrics(OPERATOR_TOKEN, "").await?;
            if pred(&m) {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; last figures: {m}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn prometheus_text(&self, base: &str) -> Result<String> {
        Ok(self
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?)
    }

    /// Department events the processor has applied (duplicates not
    /// counted), as its Prometheus counter says.
    pub async fn applied_events(&self) -> Result<f64> {
        self.prometheus_sum(
            &self.processor_url,
            "joinery_processor_events_total",
            &["result=\"applied\""],
        )
        .await
    }

    /// The sum of every sample of `metric` at `base` whose labels contain
    /// each of `labels` (e.g. `result="applied"`).
    pub async fn prometheus_sum(&self, base: &str, metric: &str, labels: &[&str]) -> Result<f64> {
        Ok(self
            .prometheus_text(base)
            .await?
            .lines()
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                    && labels.iter().all(|want| l.contains(want))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// Runs `joinery rebuild <mission>` (the code behind the command) with
    /// the definitions in `missions` in its own group and temporary state,
    /// to the end; returns the rebuild's id.
    pub async fn rebuild(&self, mission: &str, missions: PathBuf, group: &str) -> Result<String> {
        let data = tempfile::tempdir()?;
        let mut config = joinery_processor::ProcessorConfig::local(
            self.kafka.clone(),
            self.registry_url.clone(),
            data.path().to_owned(),
        );
        config.listen = "127.0.0.1:0".parse()?;
        config.group = format!("{}{group}", self.kafka.namespace);
        config.missions_dir = missions;
        config.only_mission = Some(mission.into());
        tokio::time::timeout(
            Duration::from_secs(120),
            joinery_processor::rebuild(config, CancellationToken::new()),
        )
        .await
        .context("the rebuild did not finish in 120 s")?
    }

    pub async fn shutdown(mut self) -> Result<()> {
        for s in [
            self.projections.take(),
            self.processor.take(),
            self.ingest.take(),
            self.registry.take(),
        ]
        .into_iter()
        .flatten()
        {
            s.stop().await?;
        }
        Ok(())
    }
}

/// An EducationExited event for `nino`, leaving on `date` (YYYY-MM-DD).
pub fn education_exited(event_id: &str, nino: &str, date: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "dfe.EducationExited",
        "event_id": event_id,
        "occurred_at": date,
        "nino": nino,
        "area_code": "E08000025",
        "birth_year_month": "2008-03",
        "provider_urn": "100001",
        "level": "LEVEL_3",
        "reason": "COMPLETED"
    })
}

/// A record read back: key, value and headers.
pub struct Record {
    pub partition: i32,
    /// The record's Kafka timestamp.
    pub timestamp: i64,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Every (key, value, headers) on a topic, read from the beginning to the end.
pub fn read_topic(kafka: &KafkaSettings, topic: &str) -> Result<Vec<Record>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = kafka
        .consumer(
            "joinery-test-reader",
            &format!("{}reader-{}", kafka.namespace, uuid::Uuid::new_v4()),
        )
        .create()?;
    // The topic's partitions; a metadata answer without them (a leader
    // being elected, a busy broker) is asked again, never taken as an
    // empty topic.
    let mut partitions = 0;
    for attempt in 0..40 {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let t = md.topics().first();
        partitions = t.map_or(0, |t| t.partitions().len()) as i32;
        if partitions > 0 && t.is_some_and(|t| t.error().is_none()) {
            break;
        }
        anyhow::ensure!(
            attempt < 39,
            "no partitions of {topic} in the metadata after 20 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each partition's bounds, asked again once it has been read: a
    // partition once answered as empty while it held 175 records (a crash
    // trial then reported its citizens' views missing), so the read is
    // repeated until two answers agree.
    let bounds = |consumer: &BaseConsumer| -> Result<Vec<(i64, i64)>> {
        (0..partitions)
            .map(|p| Ok(consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?))
            .collect()
    };
    let mut asked = bounds(&consumer)?;
    for attempt in 0.. {
        let out = read_partitions(&consumer, topic, &asked)?;
        let again = bounds(&consumer)?;
        if again == asked {
            return Ok(out);
        }
        anyhow::ensure!(
            attempt < 5,
            "the bounds of {topic} keep changing: {asked:?} then {again:?}"
        );
        asked = again;
    }
    unreachable!("the loop returns or fails")
}

/// The records of each partition of `topic` between its `(low, high)`
/// bounds, only that partition's.
fn read_partitions(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    bounds: &[(i64, i64)],
) -> Result<Vec<Record>> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Headers;
    use rdkafka::Message;
    let mut out = Vec::new();
    for (p, &(low, high)) in bounds.iter().enumerate() {
        let p = p as i32;
        if high <= low {
            continue;
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let mut next = low;
        while next < high {
            let m = consumer
                .poll(Duration::from_secs(10))
                .context("timed out reading the topic")??;
            if m.partition() != p {
                // Fetched for the partition assigned before.
                continue;
            }
            next = m.offset() + 1;
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_owned(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Record {
                partition: m.partition(),
                timestamp: m.timestamp().to_millis().unwrap_or_default(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                value: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }
    Ok(out)
}

/// The clean evaluation of the log: every mission's evaluation of each
/// citizen, and each mission's watermark as the log alone gives it.
pub struct Replay {
    /// Mission id → citizen key → evaluation.
    pub evaluations: std::collections::BTreeMap<
        String,
        std::collections::BTreeMap<String, joinery_engine::Evaluation>,
    >,
    /// Mission id → what its figures are final up to: each partition's
    /// event time less the mission's lateness, the least over the
    /// partitions that hold events.
    pub watermarks: std::collections::BTreeMap<String, i64>,
}

/// The clean evaluation of `mission`: every department record read back
/// from Kafka, joined per citizen, evaluated by the engine at each
/// partition's final watermark (the default 7 days' lateness).
pub async fn replay(
    stack: &Stack,
    mission: &joinery_engine::MissionDef,
) -> Result<std::collections::BTreeMap<String, joinery_engine::Evaluation>> {
    let mut all = replay_all(stack, std::slice::from_ref(mission)).await?;
    Ok(all
        .evaluations
        .remove(mission.id.as_str())
        .unwrap_or_default())
}

/// The clean evaluation of every mission of `missions` over the log (see
/// [`Replay`]), with the processor's default lateness (7 days for every
/// department) and clock skew.
pub async fn replay_all(stack: &Stack, missions: &[joinery_engine::MissionDef]) -> Result<Replay> {
    use joinery_engine::Mission;
    use joinery_wire::codec::{decode_value, event_from_value, record_name};
    let registry = joinery_wire::RegistryClient::new(&stack.registry_url);
    let catalog = joinery_wire::Catalog::load();
    let mut citizens: std::collections::HashMap<(i32, String), joinery_engine::CitizenEvents> =
        Default::default();
    let mut max_time: std::collections::BTreeMap<i32, i64> = Default::default();
    for d in joinery_domain::Department::ALL {
        for Record {
            partition: p,
            timestamp,
            key,
            value: payload,
            ..
        } in read_topic(&stack.kafka, &stack.kafka.topic(&d.topic()))?
        {
            let (id, body) = joinery_wire::framing::unframe(&payload)?;
            let writer = registry.schema(id).await?;
            let t = joinery_domain::EventType::from_avro_full_name(
                &record_name(&writer).unwrap_or_default(),
            )
            .context("event type")?;
            let event = event_from_value(t, decode_value(&writer, catalog.event_schema(t), body)?)?;
            // A record moves event time at most to its timestamp plus the
            // clock skew (the processor's default).
            let skew = joinery_domain::event::DEFAULT_MAX_CLOCK_SKEW;
            let m = max_time.entry(p).or_insert(i64::MIN);
            *m = (*m).max(event.occurred_at.min(timestamp.saturating_add(skew)));
            citizens
                .entry((p, String::from_utf8(key)?))
                .or_default()
                .insert(event);
        }
    }
    let lateness = joinery_processor::Lateness::uniform(7 * joinery_domain::event::DAY_MS);
    let mut replay = Replay {
        evaluations: Default::default(),
        watermarks: Default::default(),
    };
    for mission in missions {
        let late = lateness.of_mission(mission);
        let evaluations = citizens
            .iter()
            .map(|((p, key), events)| {
                let now = max_time[p];
                // The events that had happened by the partition's event time.
                let (happened, _) = events.as_of(now);
                (key.clone(), mission.evaluate(&happened, now - late))
            })
            .collect();
        replay
            .evaluations
            .insert(mission.id.to_string(), evaluations);
        if let Some(least) = max_time.values().min() {
            replay
                .watermarks
                .insert(mission.id.to_string(), least - late);
        }
    }
    Ok(replay)
}

/// Publishes a generated population through the gateway: each department
/// its own feed, in recorded order, in batches, the feeds side by side.
pub async fn publish_population(
    stack: &Stack,
    population: &joinery_loadtests::journeys::Population,
) -> Result<()> {
    publish_events(stack, &population.events).await
}

/// Publishes generated events through the gateway: each department its
/// own feed, in the given order, in batches, the feeds side by side.
pub async fn publish_events(
    stack: &Stack,
    events: &[joinery_loadtests::journeys::SimEvent],
) -> Result<()> {
    use serde_json::Value;
    let mut feeds: std::collections::BTreeMap<joinery_domain::Department, Vec<Value>> =
        Default::default();
    for e in events {
        feeds
            .entry(e.event_type.department())
            .or_default()
            .push(e.json.clone());
    }
    let mut sends = Vec::new();
    for (dept, events) in feeds {
        sends.push(async move {
            for batch in events.chunks(400) {
                let (status, body) = stack
                    .post(department_token(dept), Value::Array(batch.to_vec()))
                    .await?;
                anyhow::ensure!(status == 202, "{dept}: {status} {body}");
            }
            Ok(())
        });
    }
    for r in futures::future::join_all(sends).await {
        r?;
    }
    Ok(())
}

/// Distinct events (by `event_id`) of a generated population, re-sent ones once.
pub fn distinct_events(population: &joinery_loadtests::journeys::Population) -> usize {
    population
        .events
        .iter()
        .filter_map(|e| e.json["event_id"].as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
}
