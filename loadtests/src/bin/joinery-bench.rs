//! The processor benchmark. On loopback, against the real broker, in a topic
//! namespace of its own, it measures in one run:
//!
//! 1. raw produce: the synthetic events produced with rdkafka (baseline);
//! 2. raw consume: the same topics read back with rdkafka, no processing
//!    (the baseline the processor is compared with);
//! 3. the processor (the release `joinery` binary as a child process,
//!    evaluating every mission): events per second from its first event to
//!    its last, and its peak RSS;
//! 4. restore: a second processor with empty state rebuilding everything
//!    from the log (state moves by replay), and the share of one partition.
//!
//! It prints a Markdown section and, with `--results`, writes it into
//! `loadtests/RESULTS.md` (replacing the previous section of the same name).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use joinery_runtime::kafka::KafkaSettings;
use joinery_wire::{Catalog, RegistryClient};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(about = "Joinery processor benchmark against raw rdkafka on the same broker")]
struct Args {
    /// Synthetic citizens (about 2.2 events each).
    #[arg(long, default_value_t = 100_000)]
    citizens: u64,
    /// Partitions of each department topic.
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
}

fn free_addr() -> Result<String> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
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

struct Processor {
    child: Child,
    url: String,
}

fn spawn_processor(
    args: &Args,
    kafka: &KafkaSettings,
    registry: &str,
    data: &Path,
    group: &str,
) -> Result<Processor> {
    let listen = free_addr()?;
    let child = Command::new(joinery_binary()?)
        .arg("processor")
        .env("JOINERY_KAFKA_BROKERS", &kafka.brokers)
        .env("JOINERY_TOPIC_NAMESPACE", &kafka.namespace)
        .env("JOINERY_PARTITIONS", kafka.partitions.to_string())
        .env("JOINERY_REGISTRY_URL", registry)
        .env("JOINERY_PROCESSOR_LISTEN", &listen)
        .env("JOINERY_PROCESSOR_DATA_DIR", data)
        .env("JOINERY_PROCESSOR_GROUP", group)
        .env("JOINERY_MISSIONS_DIR", &args.missions_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Processor {
        child,
        url: format!("http://{listen}"),
    })
}

/// Events the processor has handled (applied, duplicate or dead-lettered).
async fn handled(http: &reqwest::Client, url: &str) -> u64 {
    let Ok(resp) = http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    let Ok(text) = resp.text().await else {
        return 0;
    };
    text.lines()
        .filter(|l| {
            l.starts_with("joinery_processor_events_total{")
                || l.starts_with("joinery_dead_letters_total{")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
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

/// Runs a processor until it has handled `total` events; returns (seconds
/// from its first event to its last, peak RSS MiB).
async fn run_processor(
    args: &Args,
    kafka: &KafkaSettings,
    registry: &str,
    data: &Path,
    group: &str,
    total: u64,
) -> Result<(f64, f64)> {
    let mut p = spawn_processor(args, kafka, registry, data, group)?;
    let http = reqwest::Client::new();
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut peak = 0.0f64;
    loop {
        if let Some(status) = p.child.try_wait()? {
            bail!("processor exited early: {status}");
        }
        let n = handled(&http, &p.url).await;
        peak = peak.max(peak_rss_mib(p.child.id()).unwrap_or(0.0));
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("processor handled {n} of {total} events in 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    if let Ok(text) = http
        .get(format!("{}/metrics", p.url))
        .send()
        .await?
        .text()
        .await
    {
        for l in text.lines().filter(|l| {
            l.starts_with("joinery_processor_batch_duration_seconds_sum")
                || l.starts_with("joinery_processor_batch_records_count")
                || l.starts_with("joinery_processor_idle_seconds_total")
                || l.starts_with("joinery_processor_gauge_refresh_seconds_total")
        }) {
            eprintln!("bench: processor {l}");
        }
    }
    peak = peak.max(peak_rss_mib(p.child.id()).unwrap_or(0.0));
    p.child.kill()?;
    p.child.wait()?;
    Ok((secs, peak))
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

#[tokio::main]
async fn main() -> Result<()> {
    joinery_runtime::telemetry::init_tracing();
    let args = Args::parse();
    let namespace = format!("bench-{}.", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let kafka = KafkaSettings {
        brokers: args.brokers.clone(),
        partitions: args.partitions,
        replication: 1,
        namespace,
    };
    let work = tempfile::tempdir()?;

    // The registry runs in-process; the processor is a separate process.
    let registry_addr = free_addr()?;
    let cancel = CancellationToken::new();
    let registry_task = tokio::spawn(in_process_registry::run(
        kafka.clone(),
        registry_addr.clone(),
        cancel.clone(),
    ));
    let registry_url = format!("http://{registry_addr}");
    let registry = RegistryClient::new(&registry_url);
    let catalog = Catalog::load();
    let ids = loop {
        match joinery_loadtests::register_schemas(&kafka, &registry, &catalog).await {
            Ok(ids) => break ids,
            Err(_) if !registry_task.is_finished() => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e),
        }
    };
    joinery_runtime::kafka::ensure_topics(
        &kafka,
        &joinery_domain::Department::ALL.map(|d| joinery_runtime::kafka::TopicSpec {
            name: kafka.topic(&d.topic()),
            partitions: kafka.partitions,
            compacted: false,
        }),
    )
    .await?;

    eprintln!("bench: generating {} citizens", args.citizens);
    let records = joinery_loadtests::education_journeys(
        args.citizens,
        1,
        b"benchmark-pseudonymisation-key-32-bytes",
    )?;
    let total = records.len() as u64;
    let producer: FutureProducer = kafka
        .producer("joinery-bench")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .create()?;
    eprintln!("bench: producing {total} events");
    let t = Instant::now();
    joinery_loadtests::produce(&kafka, &producer, &ids, &catalog, &records).await?;
    let produce_secs = t.elapsed().as_secs_f64();
    drop(records);

    eprintln!("bench: raw consume");
    let consume_secs = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        move || raw_consume(&kafka, total)
    })
    .await??;

    eprintln!("bench: processor");
    let (proc_secs, rss) = run_processor(
        &args,
        &kafka,
        &registry_url,
        &work.path().join("p1"),
        &format!("{}processor", kafka.namespace),
        total,
    )
    .await?;
    let state_bytes = dir_size(&work.path().join("p1"));
    eprintln!("bench: restore by replay into empty state");
    let (restore_secs, _) = run_processor(
        &args,
        &kafka,
        &registry_url,
        &work.path().join("p2"),
        &format!("{}restore", kafka.namespace),
        total,
    )
    .await?;
    cancel.cancel();
    let _ = registry_task.await;

    let rate = |secs: f64| total as f64 / secs.max(1e-9);
    let section = format!(
        "## Processor benchmark ({citizens} citizens)\n\n\
         - Command: `loadtests/run-bench --citizens {citizens}`\n\
         - Date: {date}\n\
         - Machine: {machine}; Kafka 4.3.1 single KRaft node on loopback; {partitions} partitions per topic; release build\n\
         - Events: {total} (department records of {citizens} citizens: education leavers, employment starts and ends, 5% re-sent), every event evaluated against all {missions} missions\n\n\
         | measure | events/s | seconds | ratio |\n| --- | ---: | ---: | ---: |\n\
         | raw rdkafka produce (baseline) | {p:.0} | {ps:.1} | |\n\
         | raw rdkafka consume, no processing (baseline) | {c:.0} | {cs:.1} | 1.00 |\n\
         | Joinery processor (decode, join in RocksDB, evaluate, publish views) | {r:.0} | {rs:.1} | {ratio:.2} of raw consume |\n\
         | restore: a new instance rebuilding all state from the log | {rr:.0} | {rrs:.1} | |\n\n\
         - Processor peak RSS: {rss:.0} MiB with {citizens} citizens in state; state on disk {state:.0} MiB.\n\
         - Restore time for one partition (1/{partitions} of the log, by replay): {part:.1} s.\n\n",
        citizens = args.citizens,
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine = machine(),
        partitions = args.partitions,
        missions = joinery_engine_count(&args.missions_dir),
        p = rate(produce_secs),
        ps = produce_secs,
        c = rate(consume_secs),
        cs = consume_secs,
        r = rate(proc_secs),
        rs = proc_secs,
        ratio = consume_secs / proc_secs.max(1e-9),
        rr = rate(restore_secs),
        rrs = restore_secs,
        state = state_bytes as f64 / 1024.0 / 1024.0,
        part = restore_secs / f64::from(args.partitions),
    );
    println!("{section}");
    if let Some(path) = &args.results {
        write_section(path, &section)?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
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
