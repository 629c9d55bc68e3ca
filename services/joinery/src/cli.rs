//! The command line: the subcommands, and each service's flags, which are
//! the top layer of its settings (see [`crate::config`]). A flag that is
//! not given leaves the value of the layers below.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::settings::{
    IngestTable, KafkaTable, ProcessorTable, ProjectionsTable, RegistryTable, Table,
};
use crate::config::Entry;
use crate::{demo, publish};

#[derive(Debug, Parser)]
#[command(
    name = "joinery",
    version,
    about = "Joinery: cross-department citizen outcomes on Kafka"
)]
pub(crate) struct Cli {
    /// TOML file of settings over the embedded defaults (`joinery config
    /// show <service>` prints the result).
    #[arg(long, global = true, env = "JOINERY_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Parses the process's arguments, exiting with clap's message on error.
    pub(crate) fn parse_with_env_help() -> Cli {
        let matches = command().get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// The command, with each service's environment variables at the end of
/// its `--help`.
pub(crate) fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand(RegistryTable::NAME, |c| {
            c.after_help(env_help::<RegistryTable>())
        })
        .mut_subcommand(IngestTable::NAME, |c| {
            c.after_help(env_help::<IngestTable>())
        })
        .mut_subcommand(ProcessorTable::NAME, |c| {
            c.after_help(env_help::<ProcessorTable>())
        })
        .mut_subcommand(ProjectionsTable::NAME, |c| {
            c.after_help(env_help::<ProjectionsTable>())
        })
}

fn env_help<T: Table>() -> String {
    let mut help = format!(
        "Flags override environment variables, which override the --config file's \
         [kafka] and [{}] tables, which override the defaults \
         (`joinery config show {}` prints the result).\n\nEnvironment variables:",
        T::NAME,
        T::NAME
    );
    for (table, pairs) in [(KafkaTable::NAME, KafkaTable::ENV), (T::NAME, T::ENV)] {
        for (key, var) in pairs {
            help.push_str(&format!("\n  {var:<36} {table}.{key}"));
        }
    }
    help
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    #[command(flatten)]
    Service(Service),
    /// Backfill or rebuild one mission over the whole retained log, while
    /// live processing goes on: its earlier views stop counting (projections
    /// show it as being rebuilt) and its figures become those of the current
    /// definitions over the log; exits when it has caught up. Reads the
    /// [processor] settings.
    Rebuild(RebuildArgs),
    /// Synthetic department feeds: citizens leaving education, some finding work.
    Demo(demo::DemoArgs),
    /// Publish an NDJSON file of events through the ingest gateway, as a department.
    Publish(publish::PublishArgs),
    /// List the records the processor and projections refused, and replay
    /// them to their source topics once the cause is fixed. Reads the
    /// [kafka] settings.
    Deadletter(DeadletterArgs),
    /// The services' settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Mission definitions.
    Missions {
        #[command(subcommand)]
        command: MissionsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MissionsCommand {
    /// Load a missions directory as the services will, checking every
    /// capability, event type, field and value, and describe each mission;
    /// exits non-zero with the file, line and reason of the first mistake.
    Check {
        /// The directory (`capabilities.toml` and one file per mission).
        #[arg(default_value = "missions", env = "JOINERY_MISSIONS_DIR")]
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the settings a service would run with, and where each came
    /// from (secrets redacted); takes the service's flags too.
    Show {
        #[command(subcommand)]
        service: Service,
    },
}

/// The services, each with its flags.
#[derive(Debug, Subcommand)]
pub(crate) enum Service {
    /// Confluent-compatible schema registry (default :8081).
    Registry(RegistryFlags),
    /// Department ingest gateway (default :8080).
    Ingest(IngestFlags),
    /// Stream processor (operator endpoints on :8089).
    Processor(ProcessorFlags),
    /// Projections, metrics API and mission board (default :8088).
    Projections(ProjectionsFlags),
}

impl Service {
    /// The values given on the command line.
    pub(crate) fn flags(&self) -> Vec<Entry> {
        let mut out = Overrides::default();
        match self {
            Service::Registry(f) => {
                f.common.add(&mut out, None);
                out.set("registry.listen", "--listen", &f.listen);
            }
            Service::Ingest(f) => {
                f.common.add(&mut out, Some("ingest"));
                let t = "ingest";
                out.set(&format!("{t}.listen"), "--listen", &f.listen);
                out.path(&format!("{t}.tokens_file"), "--tokens", &f.tokens);
                out.path(
                    &format!("{t}.pseudonym_key_file"),
                    "--pseudonym-key-file",
                    &f.pseudonym_key_file,
                );
                out.set(
                    &format!("{t}.max_body_bytes"),
                    "--max-body-bytes",
                    &f.max_body_bytes,
                );
                out.set(&format!("{t}.max_batch"), "--max-batch", &f.max_batch);
                out.set(
                    &format!("{t}.delivery_timeout_ms"),
                    "--delivery-timeout-ms",
                    &f.delivery_timeout_ms,
                );
            }
            Service::Processor(f) => {
                f.common.add(&mut out, Some("processor"));
                let t = "processor";
                out.set(&format!("{t}.listen"), "--listen", &f.listen);
                out.path(&format!("{t}.data_dir"), "--data-dir", &f.data_dir);
                out.set(&format!("{t}.group"), "--group", &f.group);
                out.set(
                    &format!("{t}.allowed_lateness_days"),
                    "--allowed-lateness-days",
                    &f.allowed_lateness_days,
                );
                out.path(
                    &format!("{t}.missions_dir"),
                    "--missions-dir",
                    &f.missions_dir,
                );
                out.set(
                    &format!("{t}.block_cache_mb"),
                    "--block-cache-mb",
                    &f.block_cache_mb,
                );
                out.set(
                    &format!("{t}.write_buffer_mb"),
                    "--write-buffer-mb",
                    &f.write_buffer_mb,
                );
                out.set(&format!("{t}.workers"), "--workers", &f.workers);
                out.set(&format!("{t}.max_batch"), "--max-batch", &f.max_batch);
            }
            Service::Projections(f) => {
                f.common.add(&mut out, Some("projections"));
                let t = "projections";
                out.set(&format!("{t}.listen"), "--listen", &f.listen);
                out.path(&format!("{t}.data_dir"), "--data-dir", &f.data_dir);
                out.set(&format!("{t}.group"), "--group", &f.group);
                out.path(&format!("{t}.tokens_file"), "--tokens", &f.tokens);
                out.set(
                    &format!("{t}.sdc_threshold"),
                    "--sdc-threshold",
                    &f.sdc_threshold,
                );
                out.set(
                    &format!("{t}.sdc_rounding"),
                    "--sdc-rounding",
                    &f.sdc_rounding,
                );
                out.path(
                    &format!("{t}.missions_dir"),
                    "--missions-dir",
                    &f.missions_dir,
                );
                out.path(
                    &format!("{t}.board_assets"),
                    "--board-assets",
                    &f.board_assets,
                );
            }
        }
        out.0
    }
}

/// The flags given, as layer entries.
#[derive(Debug, Default)]
struct Overrides(Vec<Entry>);

impl Overrides {
    fn set<V: ToString>(&mut self, key: &str, flag: &str, value: &Option<V>) {
        if let Some(v) = value {
            self.0.push(Entry {
                key: key.to_owned(),
                label: flag.to_owned(),
                value: v.to_string(),
            });
        }
    }

    fn path(&mut self, key: &str, flag: &str, value: &Option<PathBuf>) {
        self.set(key, flag, &value.as_ref().map(|p| p.display()));
    }
}

/// Flags every service takes: Kafka, and the schema registry's URL.
#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    /// Kafka bootstrap servers [kafka.brokers].
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// Partitions of every department and view topic (must match existing
    /// topics) [kafka.partitions].
    #[arg(long)]
    partitions: Option<i32>,
    /// Replication factor of the topics Joinery creates [kafka.replication].
    #[arg(long)]
    replication: Option<i32>,
    /// Prefix of every topic name, for sharing a cluster between
    /// environments [kafka.topic_namespace].
    #[arg(long)]
    topic_namespace: Option<String>,
    /// Schema registry base URL (Joinery's own, or any Confluent-compatible
    /// one) [<service>.registry_url]; the registry itself does not use it.
    #[arg(long)]
    registry_url: Option<String>,
}

impl Common {
    /// Adds the flags given; the registry URL to `table`, if it has one.
    fn add(&self, out: &mut Overrides, table: Option<&str>) {
        out.set("kafka.brokers", "--kafka-brokers", &self.kafka_brokers);
        out.set("kafka.partitions", "--partitions", &self.partitions);
        out.set("kafka.replication", "--replication", &self.replication);
        out.set(
            "kafka.topic_namespace",
            "--topic-namespace",
            &self.topic_namespace,
        );
        if let Some(t) = table {
            out.set(
                &format!("{t}.registry_url"),
                "--registry-url",
                &self.registry_url,
            );
        }
    }
}

/// Flags of `joinery registry`.
#[derive(Debug, Args)]
pub(crate) struct RegistryFlags {
    #[command(flatten)]
    common: Common,
    /// Address to listen on [registry.listen].
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// Flags of `joinery ingest`.
#[derive(Debug, Args)]
pub(crate) struct IngestFlags {
    #[command(flatten)]
    common: Common,
    /// Address to listen on [ingest.listen].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Token file: SHA-256 hashes of tokens and their principals [ingest.tokens_file].
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// File holding the pseudonymisation key (at least 32 bytes), readable
    /// by its owner only [ingest.pseudonym_key_file]; or set JOINERY_PSEUDONYM_KEY.
    #[arg(long)]
    pseudonym_key_file: Option<PathBuf>,
    /// Largest request body, in bytes [ingest.max_body_bytes].
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// Most events in one request [ingest.max_batch].
    #[arg(long)]
    max_batch: Option<usize>,
    /// Milliseconds Kafka may take to acknowledge an event before the
    /// request gets a 503 [ingest.delivery_timeout_ms].
    #[arg(long)]
    delivery_timeout_ms: Option<u64>,
}

/// Flags of `joinery processor`.
#[derive(Debug, Args)]
pub(crate) struct ProcessorFlags {
    #[command(flatten)]
    common: Common,
    /// Address of /metrics, /healthz and /readyz [processor.listen].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the processor's RocksDB state [processor.data_dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Consumer group id [processor.group].
    #[arg(long)]
    group: Option<String>,
    /// Allowed lateness of events, in days [processor.allowed_lateness_days].
    #[arg(long)]
    allowed_lateness_days: Option<i64>,
    /// Directory of the mission definitions [processor.missions_dir].
    #[arg(long)]
    missions_dir: Option<PathBuf>,
    /// RocksDB block cache shared by all state, in MiB [processor.block_cache_mb].
    #[arg(long)]
    block_cache_mb: Option<usize>,
    /// RocksDB memtable budget, in MiB [processor.write_buffer_mb].
    #[arg(long)]
    write_buffer_mb: Option<usize>,
    /// Threads working a batch's partitions in parallel (default: the
    /// machine's cores) [processor.workers].
    #[arg(long)]
    workers: Option<usize>,
    /// Most records per batch (one RocksDB write per worker, one produce
    /// round) [processor.max_batch].
    #[arg(long)]
    max_batch: Option<usize>,
}

/// Flags of `joinery projections`.
#[derive(Debug, Args)]
pub(crate) struct ProjectionsFlags {
    #[command(flatten)]
    common: Common,
    /// Address to listen on [projections.listen].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the projections' RocksDB state [projections.data_dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Consumer group id [projections.group].
    #[arg(long)]
    group: Option<String>,
    /// Token file: SHA-256 hashes of tokens and their principals [projections.tokens_file].
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Counts below this are suppressed for board readers [projections.sdc_threshold].
    #[arg(long)]
    sdc_threshold: Option<i64>,
    /// Other counts are rounded to a multiple of this for board readers
    /// [projections.sdc_rounding].
    #[arg(long)]
    sdc_rounding: Option<i64>,
    /// Directory of the mission definitions [projections.missions_dir].
    #[arg(long)]
    missions_dir: Option<PathBuf>,
    /// GOV.UK Frontend's `dist/govuk` directory, served with the board
    /// (installed by `deploy/local/setup` with `npm ci` in `web/`)
    /// [projections.board_assets].
    #[arg(long)]
    board_assets: Option<PathBuf>,
}

/// Arguments of `joinery rebuild`.
#[derive(Debug, Args)]
pub(crate) struct RebuildArgs {
    #[command(flatten)]
    common: Common,
    /// The mission to evaluate.
    pub(crate) mission: String,
    /// Directory of the mission definitions [processor.missions_dir].
    #[arg(long)]
    missions_dir: Option<PathBuf>,
    /// Address of the rebuild's /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
    /// Allowed lateness of events, in days: the live processor's
    /// [processor.allowed_lateness_days].
    #[arg(long)]
    allowed_lateness_days: Option<i64>,
}

/// `joinery deadletter`: Kafka flags, then what to do.
#[derive(Debug, Args)]
pub(crate) struct DeadletterArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    pub(crate) what: crate::deadletter::DeadLetterArgs,
}

impl DeadletterArgs {
    /// The values given on the command line, over the [processor] table.
    pub(crate) fn flags(&self) -> Vec<Entry> {
        let mut out = Overrides::default();
        self.common.add(&mut out, Some("processor"));
        out.0
    }
}

impl RebuildArgs {
    /// The values given on the command line, over the [processor] table.
    pub(crate) fn flags(&self) -> Vec<Entry> {
        let mut out = Overrides::default();
        self.common.add(&mut out, Some("processor"));
        out.path(
            "processor.missions_dir",
            "--missions-dir",
            &self.missions_dir,
        );
        out.set(
            "processor.allowed_lateness_days",
            "--allowed-lateness-days",
            &self.allowed_lateness_days,
        );
        out.0
    }
}
