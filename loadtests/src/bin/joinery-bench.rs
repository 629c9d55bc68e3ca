//! The benchmark runner (`loadtests/run`, one command). On loopback, against
//! the real broker, each stage in a topic namespace of its own, on the same
//! seeded calibrated population (all six departments, three missions):
//!
//! 1. **raw rdkafka produce** and **raw consume** of the department events:
//!    the baselines;
//! 2. **processor**: the release `joinery processor` as a child process,
//!    events/s from its first event to its last, peak RSS and CPU;
//! 3. **projections**: the views the processor wrote, applied to the
//!    metrics, updates/s;
//! 4. **restore**: a second processor with empty state rebuilding from the
//!    log (how state moves between instances);
//! 5. **Kafka Streams** (`loadtests/baselines/kstreams`): the opportunity
//!    mission's outcome with RocksDB state and exactly-once-v2, on the same
//!    events and broker;
//! 6. **ingest**: the gateway taking the same events as NDJSON batches from
//!    four concurrent clients, acknowledged only after Kafka's acks=all;
//! 7. **freshness** at a fixed offered rate through the whole stack
//!    (gateway, processor, projections): event produced to metric updated,
//!    p50 and p99; and the same offered rate into Kafka Streams, event
//!    produced to its output committed.
//!
//! `--stages processor` runs 1, 2, 4 and 5 only (for the 1-million-citizen
//! state figures). It prints a Markdown section and, with `--results`,
//! writes it into `loadtests/RESULTS.md`, replacing the section of the same
//! heading.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use joinery_domain::Department;
use joinery_loadtests::journeys::{GeneratorConfig, Population};
use joinery_runtime::kafka::KafkaSettings;
use joinery_wire::{Catalog, RegistryClient};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const KEY: &[u8] = b"benchmark-pseudonymisation-key-32-bytes";

#[derive(Debug, Parser)]
#[command(about = "Joinery benchmarks against raw rdkafka and Kafka Streams on the same broker")]
struct Args {
    /// Synthetic citizens (about 3 events each).
    #[arg(long, default_value_t = 100_000)]
    citizens: u64,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Kafka bootstrap servers.
    #[arg(long, env = "JOINERY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Write the section into this results file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Mission definitions.
    #[arg(long, default_value = "missions")]
    missions_dir: PathBuf,
    /// The missions evaluated, by id: by default the three the Kafka
    /// Streams baseline implements, so that both do the same work; `all`
    /// for every mission in the directory.
    #[arg(long, default_value = "opportunity,health_and_work,safer_streets")]
    missions: String,
    /// `all`, or `processor` (baselines, processor and restore only).
    #[arg(long, default_value = "all")]
    stages: String,
    /// Offered rate of the freshness stage, events per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds the freshness stage offers load.
    #[arg(long, default_value_t = 60)]
    freshness_seconds: u64,
    /// The Kafka Streams baseline's runner; the stage is skipped, and says
    /// so, when it is not there.
    #[arg(long, default_value = "loadtests/baselines/kstreams/run")]
    kstreams: PathBuf,
}

fn free_addr() -> Result<String> {
    Ok(joinery_runtime::http::spare_loopback_addr()?.to_string())
}

fn joinery_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("binary directory")?.join("joinery");
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release --workspace --bins)",
            bin.display()
        );
    }
    Ok(bin)
}

/// A Joinery service run as a child process.
struct Service {
    name: &'static str,
    child: Child,
    url: String,
    peak_rss: f64,
    started: Instant,
}

/// Settings shared by the services of one stage.
struct StageEnv<'a> {
    args: &'a Args,
    kafka: &'a KafkaSettings,
    registry: &'a str,
    dir: PathBuf,
}

impl StageEnv<'_> {
    fn spawn(&self, name: &'static str, group: &str) -> Result<Service> {
        let listen = free_addr()?;
        let upper = name.to_uppercase();
        std::fs::create_dir_all(&self.dir)?;
        let tokens = self.dir.join("tokens");
        let mut lines = String::new();
        for d in Department::ALL {
            lines.push_str(&format!(
                "{} department:{}\n",
                joinery_runtime::auth::hash_token(&format!("bench-{}", d.code())),
                d.code()
            ));
        }
        lines.push_str(&format!(
            "{} operator\n",
            joinery_runtime::auth::hash_token("bench-operator")
        ));
        std::fs::write(&tokens, lines)?;
        let child = Command::new(joinery_binary()?)
            .arg(name)
            .env("JOINERY_KAFKA_BROKERS", &self.kafka.brokers)
            .env("JOINERY_TOPIC_NAMESPACE", &self.kafka.namespace)
            .env("JOINERY_PARTITIONS", self.kafka.partitions.to_string())
            .env("JOINERY_REGISTRY_URL", self.registry)
            .env(format!("JOINERY_{upper}_LISTEN"), &listen)
            .env(format!("JOINERY_{upper}_DATA_DIR"), self.dir.join(group))
            .env(
                format!("JOINERY_{upper}_GROUP"),
                format!("{}{group}", self.kafka.namespace),
            )
            .env("JOINERY_MISSIONS_DIR", &self.args.missions_dir)
            .env("JOINERY_TOKENS_FILE", &tokens)
            .env(
                "JOINERY_PSEUDONYM_KEY",
                String::from_utf8_lossy(KEY).as_ref(),
            )
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(Service {
            name,
            child,
            url: format!("http://{listen}"),
            peak_rss: 0.0,
            started: Instant::now(),
        })
    }
}

impl Service {
    async fn ready(&mut self, http: &reqwest::Client) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited early: {status}", self.name);
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("{} not ready within 60 s", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sum of the samples of these metric families (by line prefix).
    async fn sum(&mut self, http: &reqwest::Client, prefixes: &[&str]) -> f64 {
        self.peak_rss = self
            .peak_rss
            .max(peak_rss_mib(self.child.id()).unwrap_or(0.0));
        let Ok(resp) = http.get(format!("{}/metrics", self.url)).send().await else {
            return 0.0;
        };
        let Ok(text) = resp.text().await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn metrics_text(&self, http: &reqwest::Client) -> Result<String> {
        Ok(http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .text()
            .await?)
    }

    /// Waits until the metric sum reaches `total`; returns seconds from the
    /// first sample above zero to the last.
    async fn run_until(
        &mut self,
        http: &reqwest::Client,
        prefixes: &[&str],
        total: f64,
    ) -> Result<f64> {
        self.run_between(http, prefixes, prefixes, total).await
    }

    /// Seconds from the first sample of `start` above zero (work has begun)
    /// to the sample where `end` reaches `total` (work is done).
    async fn run_between(
        &mut self,
        http: &reqwest::Client,
        start: &[&str],
        end: &[&str],
        total: f64,
    ) -> Result<f64> {
        let mut first: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(900);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited early: {status}", self.name);
            }
            if first.is_none() && self.sum(http, start).await > 0.0 {
                first = Some(Instant::now());
            }
            let n = self.sum(http, end).await;
            if n >= total {
                return Ok(first.map_or(0.0, |f| f.elapsed().as_secs_f64()));
            }
            if Instant::now() > deadline {
                bail!("{} reached {n} of {total} in 15 minutes", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// (peak RSS MiB, CPU seconds, wall seconds since start), then stops it
    /// as an operator would (SIGTERM: it finishes the batch in hand and
    /// publishes its outbox), killing it only if it has not exited in 30 s.
    fn finish(mut self) -> Result<Usage> {
        self.peak_rss = self
            .peak_rss
            .max(peak_rss_mib(self.child.id()).unwrap_or(0.0));
        let cpu = cpu_seconds(self.child.id()).unwrap_or(0.0);
        let wall = self.started.elapsed().as_secs_f64();
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                eprintln!(
                    "bench: {} did not stop within 30 s of SIGTERM; killing it",
                    self.name
                );
                self.child.kill()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.wait()?;
        Ok(Usage {
            service: self.name,
            rss: self.peak_rss,
            cpu,
            wall,
        })
    }
}

/// A service's resource use over a stage.
struct Usage {
    service: &'static str,
    rss: f64,
    cpu: f64,
    wall: f64,
}

/// Records the processor has begun (decoded and applied, or dead-lettered).
const PROCESSED: &[&str] = &[
    "joinery_processor_events_total{",
    "joinery_dead_letters_total{",
];
/// Records whose batch the processor has finished: state, offsets and
/// outbox written, views handed to the producer.
const FINISHED: &[&str] = &["joinery_processor_batch_records_sum"];
const APPLIED: &[&str] = &["joinery_projections_views_total{"];
const ACCEPTED: &[&str] = &["joinery_ingest_events_total{"];

/// The processor's worker threads (its default, unless set for the run).
fn workers() -> usize {
    std::env::var("JOINERY_PROCESSOR_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// User + system CPU seconds of a process (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The p-quantile of a Prometheus histogram (summed over its series), with
/// linear interpolation inside the bucket, as `histogram_quantile` does.
fn histogram_quantile(text: &str, family: &str, q: f64) -> Option<f64> {
    let mut buckets: BTreeMap<u64, f64> = BTreeMap::new();
    let prefix = format!("{family}_bucket{{");
    for l in text.lines().filter(|l| l.starts_with(&prefix)) {
        let le = l.split("le=\"").nth(1)?.split('"').next()?;
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        let n: f64 = l.rsplit(' ').next()?.parse().ok()?;
        *buckets.entry(bound.to_bits()).or_default() += n;
    }
    let mut sorted: Vec<(f64, f64)> = buckets
        .into_iter()
        .map(|(b, n)| (f64::from_bits(b), n))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, n) in sorted {
        if n >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            return Some(lower + (bound - lower) * (rank - below) / (n - below).max(1e-9));
        }
        lower = bound;
        below = n;
    }
    None
}

/// Exact nearest-rank quantile of samples.
fn quantile(samples: &mut [f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
    Some(samples[rank - 1])
}

/// Sum of the log-end offsets of these topics.
fn log_end(kafka: &KafkaSettings, topics: &[String]) -> Result<u64> {
    let c: BaseConsumer = kafka.client("joinery-bench-ends").create()?;
    let mut n = 0;
    for t in topics {
        for p in 0..kafka.partitions {
            let (low, high) = c.fetch_watermarks(t, p, Duration::from_secs(10))?;
            n += (high - low) as u64;
        }
    }
    Ok(n)
}

/// The view topics of the missions in `dir` (each file is named by its
/// mission's id).
fn view_topics(kafka: &KafkaSettings, dir: &Path) -> Result<Vec<String>> {
    let mut topics = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "toml") {
            if let Some(id) = path.file_stem().and_then(|s| s.to_str()) {
                if id != "capabilities" {
                    topics.push(kafka.topic(&joinery_wire::catalog::view_topic(id)));
                }
            }
        }
    }
    Ok(topics)
}

/// Posts `events` through the gateway, batches of 500 per department, from
/// `clients` concurrent clients, as fast as it answers (or, with
/// `rate`, paced at that many events per second). Returns seconds taken.
async fn post_all(
    url: &str,
    events: &[joinery_loadtests::journeys::SimEvent],
    clients: usize,
    rate: Option<u64>,
) -> Result<f64> {
    let mut batches: Vec<(Department, String)> = Vec::new();
    let mut by_dept: BTreeMap<Department, Vec<&Value>> = BTreeMap::new();
    let batch_size = rate.map_or(500, |r| (r / 20).clamp(1, 500) as usize);
    for e in events {
        let d = e.event_type.department();
        let v = by_dept.entry(d).or_default();
        v.push(&e.json);
        if v.len() == batch_size {
            batches.push((d, ndjson(v)));
            v.clear();
        }
    }
    for (d, v) in by_dept {
        if !v.is_empty() {
            batches.push((d, ndjson(&v)));
        }
    }
    let queue = Arc::new(std::sync::Mutex::new(
        batches
            .into_iter()
            .enumerate()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (queue, http, url) = (Arc::clone(&queue), http.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((i, (dept, body))) = queue.lock().expect("lock").pop_front() else {
                    return Ok::<(), anyhow::Error>(());
                };
                if let Some(r) = rate {
                    // Batch i is due at i * batch / rate seconds.
                    let due =
                        started + Duration::from_secs_f64(i as f64 * batch_size as f64 / r as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                loop {
                    let resp = http
                        .post(format!("{url}/v1/events"))
                        .bearer_auth(format!("bench-{}", dept.code()))
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await?;
                    match resp.status().as_u16() {
                        202 => break,
                        503 | 429 => tokio::time::sleep(Duration::from_millis(200)).await,
                        s => bail!(
                            "gateway answered {s}: {}",
                            resp.text().await.unwrap_or_default()
                        ),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn ndjson(v: &[&Value]) -> String {
    let mut s = String::new();
    for e in v {
        s.push_str(&e.to_string());
        s.push('\n');
    }
    s
}

/// What the Kafka Streams runner printed.
#[derive(Debug, Default, serde::Deserialize)]
struct KStreams {
    events: u64,
    seconds: f64,
    events_per_s: f64,
    cohort: i64,
    achieved: i64,
    not_achieved: i64,
    pending: i64,
}

fn kstreams_command(
    args: &Args,
    kafka: &KafkaSettings,
    registry: &str,
    expect: u64,
    state: &Path,
) -> Command {
    let mut c = Command::new("bash");
    c.arg(&args.kstreams)
        .arg("--brokers")
        .arg(&kafka.brokers)
        .arg("--registry")
        .arg(registry)
        .arg("--namespace")
        .arg(&kafka.namespace)
        .arg("--expect-events")
        .arg(expect.to_string())
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c
}

fn kstreams_result(out: std::process::Output) -> Result<KStreams> {
    if !out.status.success() {
        bail!("Kafka Streams baseline failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("Kafka Streams baseline printed no JSON result")?;
    Ok(serde_json::from_str(line)?)
}
fn raw_consume(kafka: &KafkaSettings, total: u64) -> Result<f64> {
    let consumer: BaseConsumer = kafka
        .consumer(
            "joinery-bench-raw",
            &format!("{}raw-consume", kafka.namespace),
        )
        .set("fetch.max.bytes", "52428800")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for d in joinery_domain::Department::ALL {
        for p in 0..kafka.partitions {
            tpl.add_partition_offset(&kafka.topic(&d.topic()), p, Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0usize;
    while n < total {
        if let Some(m) = consumer.poll(Duration::from_secs(10)) {
            let m = m?;
            bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
            n += 1;
        } else {
            bail!("raw consumer stalled at {n} of {total}");
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("raw consume took over 10 minutes");
        }
    }
    std::hint::black_box(bytes);
    Ok(started.elapsed().as_secs_f64())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or("?".into(), |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0));
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    format!("{cpus} cores ({model}), {mem}")
}

/// Registers the event schemas under `kafka`'s namespace and creates its
/// department topics.
async fn prepare(
    kafka: &KafkaSettings,
    registry: &RegistryClient,
    catalog: &Catalog,
) -> Result<std::collections::HashMap<joinery_domain::EventType, u32>> {
    let ids = joinery_loadtests::register_schemas(kafka, registry, catalog).await?;
    joinery_runtime::kafka::ensure_topics(kafka, &joinery_wire::names::department_topics(kafka))
        .await?;
    Ok(ids)
}

#[tokio::main]
async fn main() -> Result<()> {
    joinery_runtime::telemetry::init_tracing();
    let mut args = Args::parse();
    let work = tempfile::tempdir()?;
    args.missions_dir = select_missions(&args.missions_dir, &args.missions, work.path())?;
    let all = match args.stages.as_str() {
        "all" => true,
        "processor" => false,
        other => bail!("--stages {other}: use all or processor"),
    };
    let run = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let settings = |stage: &str| KafkaSettings {
        brokers: args.brokers.clone(),
        partitions: args.partitions,
        replication: 1,
        namespace: format!("bench-{run}.{stage}."),
    };
    let http = reqwest::Client::new();

    // The registry runs in-process; the services are separate processes.
    let registry_addr = free_addr()?;
    let cancel = CancellationToken::new();
    let registry_task = tokio::spawn(in_process_registry::run(
        settings("registry"),
        registry_addr.clone(),
        cancel.clone(),
    ));
    let registry_url = format!("http://{registry_addr}");
    let registry = RegistryClient::new(&registry_url);
    let catalog = Catalog::load();
    let log = settings("log");
    let ids = loop {
        match prepare(&log, &registry, &catalog).await {
            Ok(ids) => break ids,
            Err(_) if !registry_task.is_finished() => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e),
        }
    };

    eprintln!("bench: generating {} citizens", args.citizens);
    let population = Population::generate(GeneratorConfig::new(args.citizens, 1));
    let expected = population.expected(args.partitions, KEY)?;
    let records = joinery_loadtests::population_records(&population, KEY, &catalog)?;
    let total = records.len() as u64;
    let producer: FutureProducer = log
        .producer("joinery-bench")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()?;
    eprintln!("bench: raw produce of {total} events");
    let t = Instant::now();
    joinery_loadtests::produce(&log, &producer, &ids, &catalog, &records).await?;
    let produce_secs = t.elapsed().as_secs_f64();
    drop(records);

    eprintln!("bench: raw consume");
    let consume_secs = tokio::task::spawn_blocking({
        let kafka = log.clone();
        move || raw_consume(&kafka, total)
    })
    .await??;

    let mut usage = Vec::new();
    let env = StageEnv {
        args: &args,
        kafka: &log,
        registry: &registry_url,
        dir: work.path().join("log"),
    };
    eprintln!("bench: processor");
    let mut p = env.spawn("processor", "processor")?;
    let proc_secs = p
        .run_between(&http, PROCESSED, FINISHED, total as f64)
        .await?;
    let state_bytes = dir_size(&env.dir.join("processor"));
    usage.push(("processor, at full speed", p.finish()?));

    let mut projections_secs = None;
    let mut views = 0;
    let mut joinery_opportunity = None;
    if all {
        eprintln!("bench: projections");
        views = log_end(&log, &view_topics(&log, &args.missions_dir)?)?;
        let mut pr = env.spawn("projections", "projections")?;
        projections_secs = Some(pr.run_until(&http, APPLIED, views as f64).await?);
        let figures: Value = http
            .get(format!("{}/v1/missions/opportunity/metrics", pr.url))
            .bearer_auth("bench-operator")
            .send()
            .await?
            .json()
            .await?;
        joinery_opportunity = Some(figures);
        usage.push(("projections, at full speed", pr.finish()?));
    }

    eprintln!("bench: restore by replay into empty state");
    let mut r = env.spawn("processor", "restore")?;
    let restore_secs = r
        .run_between(&http, PROCESSED, FINISHED, total as f64)
        .await?;
    r.finish()?;

    let mut kstreams: Option<Result<KStreams>> = None;
    let mut ingest_secs = None;
    let mut fresh = None;
    let mut ks_fresh: Option<Result<(f64, f64, usize)>> = None;
    if args.kstreams.exists() {
        eprintln!("bench: Kafka Streams baseline on the same events");
        {
            let out = kstreams_command(
                &args,
                &log,
                &registry_url,
                total,
                &work.path().join("kstreams"),
            )
            .output()?;
            kstreams = Some(kstreams_result(out).and_then(|k| {
                if k.events == total {
                    Ok(k)
                } else {
                    bail!("Kafka Streams processed {} of {total} events", k.events)
                }
            }));
        }
    }
    if all {
        eprintln!("bench: ingest gateway");
        let gw = settings("gateway");
        prepare(&gw, &registry, &catalog).await?;
        let env = StageEnv {
            args: &args,
            kafka: &gw,
            registry: &registry_url,
            dir: work.path().join("gateway"),
        };
        let mut ingest = env.spawn("ingest", "ingest")?;
        ingest.ready(&http).await?;
        let secs = post_all(&ingest.url, &population.events, 4, None).await?;
        let accepted = ingest.sum(&http, ACCEPTED).await;
        if accepted < total as f64 {
            bail!("the gateway counted {accepted} of {total} events");
        }
        ingest_secs = Some(secs);
        usage.push(("ingest, at full speed", ingest.finish()?));

        // Freshness at a fixed offered rate, through the whole stack.
        let live_events = args.rate * args.freshness_seconds;
        let live = Population::generate(GeneratorConfig::new((live_events / 3).max(1), 2));
        let events: Vec<_> = live
            .events
            .iter()
            .take(live_events as usize)
            .cloned()
            .collect();
        eprintln!(
            "bench: freshness, {} events/s for {} s through the stack",
            args.rate, args.freshness_seconds
        );
        let lv = settings("live");
        prepare(&lv, &registry, &catalog).await?;
        let env = StageEnv {
            args: &args,
            kafka: &lv,
            registry: &registry_url,
            dir: work.path().join("live"),
        };
        let mut processor = env.spawn("processor", "processor")?;
        processor.ready(&http).await?;
        let mut projections = env.spawn("projections", "projections")?;
        projections.ready(&http).await?;
        let mut ingest = env.spawn("ingest", "ingest")?;
        ingest.ready(&http).await?;
        let offered = post_all(&ingest.url, &events, 8, Some(args.rate)).await?;
        processor
            .run_between(&http, PROCESSED, FINISHED, events.len() as f64)
            .await?;
        let views = log_end(&lv, &view_topics(&lv, &args.missions_dir)?)?;
        projections.run_until(&http, APPLIED, views as f64).await?;
        let text = projections.metrics_text(&http).await?;
        let view_text = processor.metrics_text(&http).await?;
        fresh = Some((
            offered,
            events.len(),
            histogram_quantile(&text, "joinery_event_to_metric_seconds", 0.5),
            histogram_quantile(&text, "joinery_event_to_metric_seconds", 0.99),
            histogram_quantile(&view_text, "joinery_event_to_view_seconds", 0.99),
        ));
        usage.push(("ingest, at the offered rate", ingest.finish()?));
        usage.push(("processor, at the offered rate", processor.finish()?));
        usage.push(("projections, at the offered rate", projections.finish()?));

        if args.kstreams.exists() {
            eprintln!("bench: Kafka Streams freshness at the same offered rate");
            ks_fresh = Some(
                kstreams_freshness(
                    &args,
                    &settings("kslive"),
                    &registry,
                    &registry_url,
                    &catalog,
                    &live,
                    args.rate,
                    work.path(),
                )
                .await,
            );
        }
    }
    cancel.cancel();
    let _ = registry_task.await;

    let rate = |n: u64, secs: f64| n as f64 / secs.max(1e-9);
    let heading = if all {
        format!("## Benchmark ({} citizens)", args.citizens)
    } else {
        format!("## Processor benchmark ({} citizens)", args.citizens)
    };
    let command = if all {
        format!("loadtests/run --citizens {}", args.citizens)
    } else {
        format!(
            "loadtests/run --citizens {} --stages processor",
            args.citizens
        )
    };
    let mut s = format!(
        "{heading}\n\n\
         - Command: `{command}`\n\
         - Date: {date}\n\
         - Machine: {machine}; Kafka 4.3.1 single KRaft node on loopback; {partitions} partitions per topic; release build\n\
         - Events: {total} department events of {citizens} calibrated synthetic citizens (all six departments, reporting delays, {dups} re-sent), seed 1, every event evaluated against all {missions} missions\n\n\
         | stage | events/s | seconds | ratio |\n| --- | ---: | ---: | ---: |\n\
         | raw rdkafka produce (baseline) | {p:.0} | {ps:.1} | |\n\
         | raw rdkafka consume, no processing (baseline) | {c:.0} | {cs:.1} | 1.00 |\n\
         | Joinery processor (decode, join in RocksDB, evaluate, publish views) | {r:.0} | {rs:.1} | {ratio:.2} of raw consume |\n",
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine = machine(),
        partitions = args.partitions,
        citizens = args.citizens,
        dups = total as usize - population.events.iter().filter_map(|e| e.json["event_id"].as_str()).collect::<std::collections::HashSet<_>>().len(),
        missions = joinery_engine_count(&args.missions_dir),
        p = rate(total, produce_secs),
        ps = produce_secs,
        c = rate(total, consume_secs),
        cs = consume_secs,
        r = rate(total, proc_secs),
        rs = proc_secs,
        ratio = consume_secs / proc_secs.max(1e-9),
    );
    if let Some(Ok(k)) = &kstreams {
        s.push_str(&format!(
            "| Kafka Streams, opportunity outcome (RocksDB state, exactly_once_v2) | {:.0} | {:.1} | Joinery processor = {:.2}x Kafka Streams |\n",
            k.events_per_s, k.seconds, rate(total, proc_secs) / k.events_per_s.max(1e-9)
        ));
    }
    if let Some(secs) = projections_secs {
        s.push_str(&format!(
            "| Joinery projections (view updates applied to the metrics) | {:.0} updates/s | {secs:.1} | {views} view updates |\n",
            rate(views, secs)
        ));
    }
    if let Some(secs) = ingest_secs {
        s.push_str(&format!(
            "| Joinery ingest gateway (NDJSON batches of 500, 4 clients, acks=all) | {:.0} | {secs:.1} | {:.2} of raw produce |\n",
            rate(total, secs),
            rate(total, secs) / rate(total, produce_secs)
        ));
    }
    s.push_str(&format!(
        "| restore: a new instance rebuilding all state from the log | {:.0} | {restore_secs:.1} | |\n\n",
        rate(total, restore_secs)
    ));
    s.push_str(&format!(
        "- Processor state on disk: {:.0} MiB with {} citizens. Restore by replay: all {} partitions in {:.1} s on {} worker threads, so one partition's share of the log (1/{}) takes about {:.1} s of one worker (a partition is worked by one thread).\n",
        state_bytes as f64 / 1024.0 / 1024.0,
        args.citizens,
        args.partitions,
        restore_secs,
        workers(),
        args.partitions,
        restore_secs * workers() as f64 / f64::from(args.partitions)
    ));
    if let Some((offered, n, p50, p99, view99)) = fresh {
        let f = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.0} ms", v * 1000.0));
        s.push_str(&format!(
            "- Freshness at a fixed offered rate of {} events/s ({n} events over {offered:.0} s, through the gateway, processor and projections): event produced to metric updated p50 {}, p99 {}; event produced to view evaluated p99 {} (from the services' histograms, interpolated within buckets).\n",
            args.rate, f(p50), f(p99), f(view99)
        ));
    }
    match &ks_fresh {
        Some(Ok((p50, p99, n))) => s.push_str(&format!(
            "- Kafka Streams at the same offered rate ({n} outputs): event produced to output committed p50 {:.0} ms, p99 {:.0} ms (exact, from every output record).{}\n",
            p50 * 1000.0,
            p99 * 1000.0,
            fresh.and_then(|f| f.3).map_or(String::new(), |j| format!(" Joinery's p99 is {:.2}x Kafka Streams'.", j / p99.max(1e-9)))
        )),
        Some(Err(e)) => s.push_str(&format!("- Kafka Streams freshness stage failed: {e:#}\n")),
        None => {}
    }
    match &kstreams {
        Some(Ok(k)) => {
            let want = &expected.total["opportunity"].outcomes["sustained_employment_180d"];
            let c = expected.total["opportunity"].cohort;
            let same = (k.cohort, k.achieved, k.not_achieved, k.pending)
                == (c, want.achieved, want.not_achieved, want.pending);
            s.push_str(&format!(
                "- Correctness of the baselines: the generator's expected opportunity figures are cohort {c}, achieved {}, not achieved {}, pending {}; Kafka Streams computed {}, {}, {}, {} ({}).{}\n",
                want.achieved, want.not_achieved, want.pending, k.cohort, k.achieved, k.not_achieved, k.pending,
                if same { "equal" } else { "DIFFERENT" },
                joinery_opportunity.as_ref().map_or(String::new(), |j| {
                    let o = &j["total"]["outcomes"]["sustained_employment_180d"];
                    let got = (j["total"]["cohort"]["value"].as_i64(), o["achieved"]["value"].as_i64(), o["not_achieved"]["value"].as_i64(), o["pending"]["value"].as_i64());
                    let same = got == (Some(c), Some(want.achieved), Some(want.not_achieved), Some(want.pending));
                    format!(
                        " Joinery's projections show {}, {}, {}, {} ({}).",
                        got.0.unwrap_or(-1), got.1.unwrap_or(-1), got.2.unwrap_or(-1), got.3.unwrap_or(-1),
                        if same { "equal" } else { "DIFFERENT" }
                    )
                })
            ));
        }
        Some(Err(e)) => s.push_str(&format!("- Kafka Streams baseline failed: {e:#}\n")),
        None if all => s.push_str(&format!(
            "- Kafka Streams baseline skipped: {} not found.\n",
            args.kstreams.display()
        )),
        None => {}
    }
    s.push_str("\n| service | stage | peak RSS | CPU seconds | CPU (of one core) |\n| --- | --- | ---: | ---: | ---: |\n");
    for (stage, u) in &usage {
        s.push_str(&format!(
            "| {} | {stage} | {:.0} MiB | {:.1} | {:.0}% |\n",
            u.service,
            u.rss,
            u.cpu,
            100.0 * u.cpu / u.wall.max(1e-9)
        ));
    }
    s.push('\n');
    println!("{s}");
    if let Some(path) = &args.results {
        write_section(path, &s)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// Kafka Streams at a fixed offered rate: the population produced straight
/// to Kafka at `rate` events/s while the baseline runs; a read_committed
/// consumer of its output measures, for every output record, the time from
/// the input record's production (the output keeps the input's timestamp)
/// to the output being readable. Returns (p50 s, p99 s, outputs).
#[allow(clippy::too_many_arguments)]
async fn kstreams_freshness(
    args: &Args,
    kafka: &KafkaSettings,
    registry: &RegistryClient,
    registry_url: &str,
    catalog: &Catalog,
    live: &Population,
    rate: u64,
    work: &Path,
) -> Result<(f64, f64, usize)> {
    let ids = prepare(kafka, registry, catalog).await?;
    let records = joinery_loadtests::population_records(live, KEY, catalog)?;
    let n = ((rate * args.freshness_seconds) as usize).min(records.len());
    let records = &records[..n];
    let output = kafka.topic("kstreams.opportunity");
    joinery_runtime::kafka::ensure_topics(
        kafka,
        &[joinery_runtime::kafka::TopicSpec {
            name: output.clone(),
            partitions: kafka.partitions,
            kind: joinery_runtime::kafka::TopicKind::Retained,
        }],
    )
    .await?;
    let child =
        kstreams_command(args, kafka, registry_url, n as u64, &work.join("kslive")).spawn()?;
    // The reader: every committed output, its age since its input was produced.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (kafka, stop, output) = (kafka.clone(), Arc::clone(&stop), output.clone());
        std::thread::spawn(move || -> Result<Vec<f64>> {
            let c: BaseConsumer = kafka
                .consumer(
                    "joinery-bench-ks-reader",
                    &format!("{}reader", kafka.namespace),
                )
                .set("isolation.level", "read_committed")
                .create()?;
            let mut tpl = TopicPartitionList::new();
            for p in 0..kafka.partitions {
                tpl.add_partition_offset(&output, p, Offset::Beginning)?;
            }
            c.assign(&tpl)?;
            let mut ages = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    if let Some(ts) = rdkafka::Message::timestamp(&m).to_millis() {
                        let now = chrono::Utc::now().timestamp_millis();
                        ages.push((now - ts).max(0) as f64 / 1000.0);
                    }
                }
            }
            Ok(ages)
        })
    };
    // Wait for the application to start consuming before offering load.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let producer: FutureProducer = kafka.producer("joinery-bench-ks").create()?;
    let started = Instant::now();
    for (i, chunk) in records.chunks((rate / 20).max(1) as usize).enumerate() {
        let due = started + Duration::from_secs_f64(i as f64 / 20.0);
        tokio::time::sleep_until(due.into()).await;
        joinery_loadtests::produce(kafka, &producer, &ids, catalog, chunk).await?;
    }
    let status = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let _ = kstreams_result(status)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut ages = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let count = ages.len();
    let p50 = quantile(&mut ages, 0.5).context("no output records")?;
    let p99 = quantile(&mut ages, 0.99).context("no output records")?;
    Ok((p50, p99, count))
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        dir_size(&e.path())
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// A directory of `dir`'s capabilities and the missions named in `ids`
/// (comma-separated, or `all`), under `work`.
fn select_missions(dir: &Path, ids: &str, work: &Path) -> Result<PathBuf> {
    if ids == "all" {
        return Ok(dir.to_owned());
    }
    let out = work.join("missions");
    std::fs::create_dir_all(&out)?;
    for file in std::iter::once("capabilities").chain(ids.split(',').map(str::trim)) {
        let name = format!("{file}.toml");
        std::fs::copy(dir.join(&name), out.join(&name))
            .with_context(|| format!("--missions: no {name} in {}", dir.display()))?;
    }
    Ok(out)
}

fn joinery_engine_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    e.path().extension().is_some_and(|x| x == "toml")
                        && e.file_name() != "capabilities.toml"
                })
                .count()
        })
        .unwrap_or(0)
}

/// Replaces the section with the same heading, or appends it.
fn write_section(path: &Path, section: &str) -> Result<()> {
    let current =
        std::fs::read_to_string(path).unwrap_or_else(|_| "# Load test results\n\n".into());
    let heading = section.lines().next().unwrap_or_default();
    let mut out = String::new();
    let mut skipping = false;
    let mut replaced = false;
    for line in current.lines() {
        if line == heading {
            skipping = true;
            replaced = true;
            out.push_str(section);
            continue;
        }
        if skipping && line.starts_with("## ") {
            skipping = false;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !replaced {
        out.push_str(section);
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The registry, run in-process so that the benchmark needs no other binary.
mod in_process_registry {
    use super::*;

    pub(super) async fn run(
        kafka: KafkaSettings,
        listen: String,
        cancel: CancellationToken,
    ) -> Result<()> {
        let config = joinery_registry::RegistryConfig {
            listen: listen.parse()?,
            kafka,
        };
        joinery_registry::run(config, cancel).await
    }
}
