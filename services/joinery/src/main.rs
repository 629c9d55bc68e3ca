//! The `joinery` command: runs any Joinery service, and the demo department
//! feeds. Every option can also be set by an environment variable
//! (`JOINERY_...`, shown in `--help`).
//!
//! ```text
//! joinery registry | ingest | processor | projections   run one service
//! joinery demo                                          synthetic department feeds
//! joinery publish events.ndjson                         publish a file as a department
//! joinery rebuild <mission>                             backfill a mission from the log
//! ```

mod demo;
mod publish;

/// jemalloc rather than glibc's allocator, for Rust and (through the
/// `unprefixed_malloc_on_supported_platforms` feature) RocksDB and librdkafka
/// too: the processor allocates and frees many small objects per event on
/// several threads, where glibc spent about a quarter of its time (arena
/// locks, consolidation) with 1M citizens.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use joinery_domain::event::DAY_MS;
use joinery_domain::Pseudonymiser;
use joinery_runtime::kafka::KafkaSettings;
use joinery_runtime::shutdown_signal;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "joinery",
    version,
    about = "Joinery: cross-department citizen outcomes on Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone)]
struct Common {
    /// Kafka bootstrap servers.
    #[arg(long, env = "JOINERY_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    kafka_brokers: String,
    /// Partitions of every department and view topic (must match existing topics).
    #[arg(long, env = "JOINERY_PARTITIONS", default_value_t = 6)]
    partitions: i32,
    /// Replication factor of the topics Joinery creates.
    #[arg(long, env = "JOINERY_REPLICATION", default_value_t = 1)]
    replication: i32,
    /// Prefix of every topic name (for sharing a cluster between environments).
    #[arg(long, env = "JOINERY_TOPIC_NAMESPACE", default_value = "")]
    topic_namespace: String,
    /// Schema registry base URL (Joinery's own, or any Confluent-compatible one).
    #[arg(
        long,
        env = "JOINERY_REGISTRY_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    registry_url: String,
}

impl Common {
    fn kafka(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.kafka_brokers.clone(),
            partitions: self.partitions,
            replication: self.replication,
            namespace: self.topic_namespace.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Confluent-compatible schema registry (default :8081).
    Registry {
        #[command(flatten)]
        common: Common,
        /// Address to listen on.
        #[arg(
            long,
            env = "JOINERY_REGISTRY_LISTEN",
            default_value = "127.0.0.1:8081"
        )]
        listen: SocketAddr,
    },
    /// Department ingest gateway (default :8080).
    Ingest {
        #[command(flatten)]
        common: Common,
        /// Address to listen on.
        #[arg(long, env = "JOINERY_INGEST_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Token file: SHA-256 hashes of tokens and their principals.
        #[arg(
            long,
            env = "JOINERY_TOKENS_FILE",
            default_value = "deploy/local/tokens"
        )]
        tokens: PathBuf,
        /// File holding the pseudonymisation key (at least 32 bytes); or set JOINERY_PSEUDONYM_KEY.
        #[arg(long, env = "JOINERY_PSEUDONYM_KEY_FILE")]
        pseudonym_key_file: Option<PathBuf>,
        /// Largest request body, in bytes.
        #[arg(long, env = "JOINERY_INGEST_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Most events in one request.
        #[arg(long, env = "JOINERY_INGEST_MAX_BATCH", default_value_t = 5000)]
        max_batch: usize,
        /// Milliseconds Kafka may take to acknowledge an event before the request gets a 503.
        #[arg(
            long,
            env = "JOINERY_INGEST_DELIVERY_TIMEOUT_MS",
            default_value_t = 30_000
        )]
        delivery_timeout_ms: u64,
    },
    /// Stream processor (operator endpoints on :8089).
    Processor {
        #[command(flatten)]
        common: Common,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(
            long,
            env = "JOINERY_PROCESSOR_LISTEN",
            default_value = "127.0.0.1:8089"
        )]
        listen: SocketAddr,
        /// Directory of the processor's RocksDB state.
        #[arg(
            long,
            env = "JOINERY_PROCESSOR_DATA_DIR",
            default_value = ".joinery/data/processor"
        )]
        data_dir: PathBuf,
        /// Consumer group id.
        #[arg(
            long,
            env = "JOINERY_PROCESSOR_GROUP",
            default_value = "joinery-processor"
        )]
        group: String,
        /// Allowed lateness of events, in days.
        #[arg(long, env = "JOINERY_ALLOWED_LATENESS_DAYS", default_value_t = 7)]
        allowed_lateness_days: i64,
        /// Directory of the mission definitions.
        #[arg(long, env = "JOINERY_MISSIONS_DIR", default_value = "missions")]
        missions_dir: PathBuf,
        /// RocksDB block cache shared by all state, in MiB.
        #[arg(long, env = "JOINERY_PROCESSOR_BLOCK_CACHE_MB", default_value_t = 256)]
        block_cache_mb: usize,
        /// RocksDB memtable budget, in MiB.
        #[arg(long, env = "JOINERY_PROCESSOR_WRITE_BUFFER_MB", default_value_t = 128)]
        write_buffer_mb: usize,
        /// Threads working a batch's partitions in parallel (default: the machine's cores).
        #[arg(long, env = "JOINERY_PROCESSOR_WORKERS")]
        workers: Option<usize>,
        /// Most records per batch (one RocksDB write per worker, one produce round).
        #[arg(long, env = "JOINERY_PROCESSOR_MAX_BATCH", default_value_t = 40_000)]
        max_batch: usize,
    },
    /// Projections, metrics API and mission board (default :8088).
    Projections {
        #[command(flatten)]
        common: Common,
        /// Address to listen on.
        #[arg(
            long,
            env = "JOINERY_PROJECTIONS_LISTEN",
            default_value = "127.0.0.1:8088"
        )]
        listen: SocketAddr,
        /// Directory of the projections' RocksDB state.
        #[arg(
            long,
            env = "JOINERY_PROJECTIONS_DATA_DIR",
            default_value = ".joinery/data/projections"
        )]
        data_dir: PathBuf,
        /// Consumer group id.
        #[arg(
            long,
            env = "JOINERY_PROJECTIONS_GROUP",
            default_value = "joinery-projections"
        )]
        group: String,
        /// Token file: SHA-256 hashes of tokens and their principals.
        #[arg(
            long,
            env = "JOINERY_TOKENS_FILE",
            default_value = "deploy/local/tokens"
        )]
        tokens: PathBuf,
        /// Counts below this are suppressed for board readers.
        #[arg(long, env = "JOINERY_SDC_THRESHOLD", default_value_t = 10)]
        sdc_threshold: i64,
        /// Other counts are rounded to a multiple of this for board readers.
        #[arg(long, env = "JOINERY_SDC_ROUNDING", default_value_t = 5)]
        sdc_rounding: i64,
        /// Directory of the mission definitions.
        #[arg(long, env = "JOINERY_MISSIONS_DIR", default_value = "missions")]
        missions_dir: PathBuf,
        /// GOV.UK Frontend's `dist/govuk` directory, served with the board
        /// (installed by `deploy/local/setup` with `npm ci` in `web/`).
        #[arg(
            long,
            env = "JOINERY_BOARD_ASSETS",
            default_value = "web/node_modules/govuk-frontend/dist/govuk"
        )]
        board_assets: PathBuf,
    },
    /// Synthetic department feeds: citizens leaving education, some finding work.
    Demo(demo::DemoArgs),
    /// Publish an NDJSON file of events through the ingest gateway, as a department.
    Publish(publish::PublishArgs),
    /// Backfill or rebuild one mission over the whole retained log, while
    /// live processing goes on: its earlier views stop counting (projections
    /// show it as being rebuilt) and its figures become those of the current
    /// definitions over the log; exits when it has caught up.
    Rebuild {
        #[command(flatten)]
        common: Common,
        /// The mission to evaluate.
        mission: String,
        /// Directory of the mission definitions.
        #[arg(long, env = "JOINERY_MISSIONS_DIR", default_value = "missions")]
        missions_dir: PathBuf,
        /// Address of the rebuild's /metrics, /healthz and /readyz.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Allowed lateness of events, in days: the live processor's.
        #[arg(long, env = "JOINERY_ALLOWED_LATENESS_DAYS", default_value_t = 7)]
        allowed_lateness_days: i64,
    },
}

fn pseudonymiser(file: Option<PathBuf>) -> anyhow::Result<Pseudonymiser> {
    let key = match (file, std::env::var("JOINERY_PSEUDONYM_KEY")) {
        (Some(path), _) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the pseudonymisation key file {}", path.display()))?,
        (None, Ok(k)) => k,
        (None, Err(_)) => anyhow::bail!("no pseudonymisation key: set --pseudonym-key-file (JOINERY_PSEUDONYM_KEY_FILE) or JOINERY_PSEUDONYM_KEY"),
    };
    Ok(Pseudonymiser::new(key.trim().as_bytes().to_vec())?)
}

async fn run_until_signal<F, Fut>(f: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.cancel();
    });
    f(cancel).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    joinery_runtime::telemetry::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Registry { common, listen } => {
            let config = joinery_registry::RegistryConfig {
                listen,
                kafka: common.kafka(),
            };
            run_until_signal(|c| joinery_registry::run(config, c)).await
        }
        Command::Ingest {
            common,
            delivery_timeout_ms,
            listen,
            tokens,
            pseudonym_key_file,
            max_body_bytes,
            max_batch,
        } => {
            let config = joinery_ingest::IngestConfig {
                listen,
                kafka: common.kafka(),
                registry_url: common.registry_url.clone(),
                tokens,
                pseudonymiser: pseudonymiser(pseudonym_key_file)?,
                max_body_bytes,
                max_batch,
                delivery_timeout: Duration::from_millis(delivery_timeout_ms),
            };
            run_until_signal(|c| joinery_ingest::run(config, c)).await
        }
        Command::Processor {
            common,
            missions_dir,
            block_cache_mb,
            write_buffer_mb,
            workers,
            max_batch,
            listen,
            data_dir,
            group,
            allowed_lateness_days,
        } => {
            let mut config = joinery_processor::ProcessorConfig::local(
                common.kafka(),
                common.registry_url.clone(),
                data_dir,
            );
            config.listen = listen;
            config.group = group;
            config.allowed_lateness = allowed_lateness_days * DAY_MS;
            config.missions_dir = missions_dir;
            if let Some(w) = workers {
                config.workers = w;
            }
            config.max_batch = max_batch.max(1);
            config.store.block_cache_bytes = block_cache_mb << 20;
            config.store.write_buffer_bytes = write_buffer_mb << 20;
            run_until_signal(|c| joinery_processor::run(config, c)).await
        }
        Command::Projections {
            common,
            missions_dir,
            listen,
            data_dir,
            group,
            tokens,
            sdc_threshold,
            sdc_rounding,
            board_assets,
        } => {
            let config = joinery_projections::ProjectionsConfig {
                listen,
                kafka: common.kafka(),
                registry_url: common.registry_url.clone(),
                data_dir,
                group,
                tokens,
                disclosure: joinery_projections::disclosure::Disclosure {
                    threshold: sdc_threshold,
                    rounding: sdc_rounding,
                },
                missions_dir,
                board_assets,
            };
            run_until_signal(|c| joinery_projections::run(config, c)).await
        }
        Command::Rebuild {
            allowed_lateness_days,
            common,
            mission,
            missions_dir,
            listen,
        } => {
            let data = tempfile::tempdir()?;
            let mut config = joinery_processor::ProcessorConfig::local(
                common.kafka(),
                common.registry_url.clone(),
                data.path().to_owned(),
            );
            config.listen = listen;
            config.group = format!(
                "joinery-rebuild-{mission}-{}",
                chrono::Utc::now().format("%Y%m%d%H%M%S")
            );
            config.missions_dir = missions_dir;
            config.allowed_lateness = allowed_lateness_days * DAY_MS;
            config.only_mission = Some(mission);
            run_until_signal(
                |c| async move { joinery_processor::rebuild(config, c).await.map(|_| ()) },
            )
            .await
        }
        Command::Publish(args) => {
            if publish::run(args).await?.all_accepted() {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Demo(args) => {
            run_until_signal(|c| demo::run(args, c, Duration::from_secs(1))).await
        }
    }
}
