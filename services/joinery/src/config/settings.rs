//! The settings of each service, as an operator writes them: one table of
//! the config file per service (`config/default.toml` holds them all, with
//! their defaults and documentation), and the environment variable of each
//! key. Each table becomes its service's own config struct here, and
//! nowhere else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use joinery_domain::event::DAY_MS;
use joinery_domain::{Department, Pseudonymiser};
use joinery_runtime::kafka::KafkaSettings;
use joinery_runtime::secret::Secret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One table of the config file.
pub(crate) trait Table: DeserializeOwned + Serialize {
    /// Its name in the file, `[name]`.
    const NAME: &'static str;
    /// Each key's environment variable, `(key, variable)`: the names the
    /// services have always read, so that deployments keep working.
    const ENV: &'static [(&'static str, &'static str)];
    /// Keys holding secrets: a config file that sets one must be readable
    /// by its owner only, like a key file.
    const SECRETS: &'static [&'static str] = &[];
}

/// Kafka, shared by every service: `[kafka]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaTable {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub(crate) brokers: String,
    /// Partitions of every department and view topic; must match existing topics.
    pub(crate) partitions: i32,
    /// Replication factor of the topics Joinery creates.
    pub(crate) replication: i32,
    /// Prefix of every topic name, for sharing a cluster between environments.
    pub(crate) topic_namespace: String,
}

impl Table for KafkaTable {
    const NAME: &'static str = "kafka";
    const ENV: &'static [(&'static str, &'static str)] = &[
        ("brokers", "JOINERY_KAFKA_BROKERS"),
        ("partitions", "JOINERY_PARTITIONS"),
        ("replication", "JOINERY_REPLICATION"),
        ("topic_namespace", "JOINERY_TOPIC_NAMESPACE"),
    ];
}

impl KafkaTable {
    /// The settings every Kafka client takes.
    pub(crate) fn settings(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.brokers.clone(),
            partitions: self.partitions,
            replication: self.replication,
            namespace: self.topic_namespace.clone(),
        }
    }
}

/// The schema registry: `[registry]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryTable {
    /// Address of the Confluent-compatible API.
    pub(crate) listen: SocketAddr,
}

impl Table for RegistryTable {
    const NAME: &'static str = "registry";
    const ENV: &'static [(&'static str, &'static str)] = &[("listen", "JOINERY_REGISTRY_LISTEN")];
}

impl RegistryTable {
    /// The registry's config.
    pub(crate) fn config(&self, kafka: &KafkaTable) -> joinery_registry::RegistryConfig {
        joinery_registry::RegistryConfig {
            listen: self.listen,
            kafka: kafka.settings(),
        }
    }
}

/// The ingest gateway: `[ingest]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IngestTable {
    /// Address of the HTTP API.
    pub(crate) listen: SocketAddr,
    /// Schema registry base URL.
    pub(crate) registry_url: String,
    /// Token file: SHA-256 hashes of tokens and their principals.
    pub(crate) tokens_file: PathBuf,
    /// File holding the pseudonymisation key, readable by its owner only;
    /// takes precedence over `pseudonym_key`. No default.
    pub(crate) pseudonym_key_file: Option<PathBuf>,
    /// The pseudonymisation key itself, when there is no key file. No default.
    pub(crate) pseudonym_key: Option<Secret<String>>,
    /// Largest request body, in bytes.
    pub(crate) max_body_bytes: usize,
    /// Most events in one request.
    pub(crate) max_batch: usize,
    /// Milliseconds Kafka may take to acknowledge an event before the
    /// request is answered 503.
    pub(crate) delivery_timeout_ms: u64,
    /// How far ahead of the time of receipt an event may be dated, in days.
    pub(crate) event_time_horizon_days: i64,
}

impl Table for IngestTable {
    const NAME: &'static str = "ingest";
    const ENV: &'static [(&'static str, &'static str)] = &[
        ("listen", "JOINERY_INGEST_LISTEN"),
        ("registry_url", "JOINERY_REGISTRY_URL"),
        ("tokens_file", "JOINERY_TOKENS_FILE"),
        ("pseudonym_key_file", "JOINERY_PSEUDONYM_KEY_FILE"),
        ("pseudonym_key", "JOINERY_PSEUDONYM_KEY"),
        ("max_body_bytes", "JOINERY_INGEST_MAX_BODY_BYTES"),
        ("max_batch", "JOINERY_INGEST_MAX_BATCH"),
        ("delivery_timeout_ms", "JOINERY_INGEST_DELIVERY_TIMEOUT_MS"),
        ("event_time_horizon_days", "JOINERY_EVENT_TIME_HORIZON_DAYS"),
    ];
    const SECRETS: &'static [&'static str] = &["pseudonym_key"];
}

impl IngestTable {
    /// The pseudonymisation key: from its file if one is named (which must
    /// be readable by its owner only), else the key itself.
    pub(crate) fn pseudonym_key(&self) -> anyhow::Result<Secret<String>> {
        match (&self.pseudonym_key_file, &self.pseudonym_key) {
            (Some(path), _) => Ok(Secret::read_file(path)?),
            (None, Some(key)) => Ok(Secret::new(key.expose().trim().to_owned())),
            (None, None) => anyhow::bail!(
                "no pseudonymisation key: set ingest.pseudonym_key_file \
                 (--pseudonym-key-file, JOINERY_PSEUDONYM_KEY_FILE) or JOINERY_PSEUDONYM_KEY"
            ),
        }
    }

    /// The gateway's config; reads the pseudonymisation key.
    pub(crate) fn config(
        &self,
        kafka: &KafkaTable,
    ) -> anyhow::Result<joinery_ingest::IngestConfig> {
        let key = self.pseudonym_key()?;
        let pseudonymiser = Pseudonymiser::new(key.expose().as_bytes().to_vec())
            .context("the pseudonymisation key is unusable")?;
        Ok(joinery_ingest::IngestConfig {
            listen: self.listen,
            kafka: kafka.settings(),
            registry_url: self.registry_url.clone(),
            tokens: self.tokens_file.clone(),
            pseudonymiser,
            max_body_bytes: self.max_body_bytes,
            max_batch: self.max_batch,
            delivery_timeout: Duration::from_millis(self.delivery_timeout_ms),
            event_time_horizon: self.event_time_horizon_days.saturating_mul(DAY_MS),
        })
    }
}

/// The stream processor: `[processor]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProcessorTable {
    /// Address of /metrics, /healthz and /readyz.
    pub(crate) listen: SocketAddr,
    /// Schema registry base URL.
    pub(crate) registry_url: String,
    /// Directory of the processor's RocksDB state.
    pub(crate) data_dir: PathBuf,
    /// Consumer group id.
    pub(crate) group: String,
    /// How late an event may arrive and still be on time, in days, for a
    /// department without a lateness of its own.
    pub(crate) allowed_lateness_days: i64,
    /// Departments' own lateness, in days: `[processor.lateness_days]`.
    #[serde(default)]
    pub(crate) lateness_days: LatenessDays,
    /// How far a record's event time may be ahead of its Kafka timestamp
    /// and still move event time, in seconds.
    pub(crate) max_clock_skew_seconds: i64,
    /// How far ahead of its Kafka timestamp an event may be dated, in days.
    pub(crate) event_time_horizon_days: i64,
    /// The most events one citizen may have; later ones are dead-lettered.
    pub(crate) max_events_per_citizen: usize,
    /// Directory of the mission definitions.
    pub(crate) missions_dir: PathBuf,
    /// RocksDB block cache shared by all state, in MiB.
    pub(crate) block_cache_mb: usize,
    /// RocksDB memtable budget, in MiB.
    pub(crate) write_buffer_mb: usize,
    /// Threads working a batch's partitions in parallel; default (unset):
    /// the machine's cores.
    pub(crate) workers: Option<usize>,
    /// Most records per batch (one RocksDB write per worker, one produce round).
    pub(crate) max_batch: usize,
    /// The most timers one partition step fires; more due at once fire in
    /// further steps.
    pub(crate) max_timers_per_batch: usize,
}

impl Table for ProcessorTable {
    const NAME: &'static str = "processor";
    const ENV: &'static [(&'static str, &'static str)] = &[
        ("listen", "JOINERY_PROCESSOR_LISTEN"),
        ("registry_url", "JOINERY_REGISTRY_URL"),
        ("data_dir", "JOINERY_PROCESSOR_DATA_DIR"),
        ("group", "JOINERY_PROCESSOR_GROUP"),
        ("allowed_lateness_days", "JOINERY_ALLOWED_LATENESS_DAYS"),
        ("lateness_days.dfe", "JOINERY_LATENESS_DAYS_DFE"),
        ("lateness_days.dwp", "JOINERY_LATENESS_DAYS_DWP"),
        ("lateness_days.hmrc", "JOINERY_LATENESS_DAYS_HMRC"),
        ("lateness_days.dhsc", "JOINERY_LATENESS_DAYS_DHSC"),
        ("lateness_days.moj", "JOINERY_LATENESS_DAYS_MOJ"),
        ("lateness_days.mhclg", "JOINERY_LATENESS_DAYS_MHCLG"),
        ("max_clock_skew_seconds", "JOINERY_MAX_CLOCK_SKEW_SECONDS"),
        ("event_time_horizon_days", "JOINERY_EVENT_TIME_HORIZON_DAYS"),
        ("max_events_per_citizen", "JOINERY_MAX_EVENTS_PER_CITIZEN"),
        ("missions_dir", "JOINERY_MISSIONS_DIR"),
        ("block_cache_mb", "JOINERY_PROCESSOR_BLOCK_CACHE_MB"),
        ("write_buffer_mb", "JOINERY_PROCESSOR_WRITE_BUFFER_MB"),
        ("workers", "JOINERY_PROCESSOR_WORKERS"),
        ("max_batch", "JOINERY_PROCESSOR_MAX_BATCH"),
        (
            "max_timers_per_batch",
            "JOINERY_PROCESSOR_MAX_TIMERS_PER_BATCH",
        ),
    ];
}

impl ProcessorTable {
    /// The processor's config.
    pub(crate) fn config(&self, kafka: &KafkaTable) -> joinery_processor::ProcessorConfig {
        let mut config = joinery_processor::ProcessorConfig::local(
            kafka.settings(),
            self.registry_url.clone(),
            self.data_dir.clone(),
        );
        config.listen = self.listen;
        config.group = self.group.clone();
        self.rules_into(&mut config);
        config.missions_dir = self.missions_dir.clone();
        if let Some(w) = self.workers {
            config.workers = w;
        }
        config.max_batch = self.max_batch.max(1);
        config.max_timers_per_batch = self.max_timers_per_batch.max(1);
        config.store.block_cache_bytes = self.block_cache_mb << 20;
        config.store.write_buffer_bytes = self.write_buffer_mb << 20;
        config
    }

    /// The settings that decide what the processor computes from the log:
    /// the live processor and a rebuild must share them.
    fn rules_into(&self, config: &mut joinery_processor::ProcessorConfig) {
        config.lateness = self.lateness();
        config.max_clock_skew = self.max_clock_skew_seconds.saturating_mul(1000);
        config.event_time_horizon = self.event_time_horizon_days.saturating_mul(DAY_MS);
        config.max_events_per_citizen = self
            .max_events_per_citizen
            .clamp(1, joinery_processor::MAX_EVENTS_PER_CITIZEN_LIMIT);
    }

    /// The config of a rebuild of `mission` beside the live processor: the
    /// same log, registry, missions and lateness, its own group, listener
    /// and throwaway state in `data_dir`; the store's default memory.
    pub(crate) fn rebuild_config(
        &self,
        kafka: &KafkaTable,
        mission: String,
        listen: SocketAddr,
        data_dir: PathBuf,
    ) -> joinery_processor::ProcessorConfig {
        let mut config = joinery_processor::ProcessorConfig::local(
            kafka.settings(),
            self.registry_url.clone(),
            data_dir,
        );
        config.listen = listen;
        config.group = format!(
            "joinery-rebuild-{mission}-{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        );
        config.missions_dir = self.missions_dir.clone();
        self.rules_into(&mut config);
        config.only_mission = Some(mission);
        config
    }
}

/// Each department's own allowed lateness, in days (`[processor.lateness_days]`);
/// a department not named has `allowed_lateness_days`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LatenessDays {
    /// Department for Education.
    pub(crate) dfe: Option<i64>,
    /// Department for Work and Pensions.
    pub(crate) dwp: Option<i64>,
    /// HM Revenue and Customs.
    pub(crate) hmrc: Option<i64>,
    /// Department of Health and Social Care.
    pub(crate) dhsc: Option<i64>,
    /// Ministry of Justice.
    pub(crate) moj: Option<i64>,
    /// Ministry of Housing, Communities and Local Government.
    pub(crate) mhclg: Option<i64>,
}

impl LatenessDays {
    /// The days set for `department`, if any.
    fn of(&self, department: Department) -> Option<i64> {
        match department {
            Department::Dfe => self.dfe,
            Department::Dwp => self.dwp,
            Department::Hmrc => self.hmrc,
            Department::Dhsc => self.dhsc,
            Department::Moj => self.moj,
            Department::Mhclg => self.mhclg,
        }
    }
}

impl ProcessorTable {
    /// Each department's lateness (a negative number of days is taken as
    /// none).
    fn lateness(&self) -> joinery_processor::Lateness {
        let ms = |days: i64| days.max(0).saturating_mul(DAY_MS);
        joinery_processor::Lateness {
            default: ms(self.allowed_lateness_days),
            departments: Department::ALL
                .into_iter()
                .filter_map(|d| self.lateness_days.of(d).map(|days| (d, ms(days))))
                .collect(),
        }
    }
}

/// Projections, metrics API and mission board: `[projections]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProjectionsTable {
    /// Address of the API and board.
    pub(crate) listen: SocketAddr,
    /// Schema registry base URL.
    pub(crate) registry_url: String,
    /// Directory of the projections' RocksDB state.
    pub(crate) data_dir: PathBuf,
    /// Consumer group id.
    pub(crate) group: String,
    /// Token file: SHA-256 hashes of tokens and their principals.
    pub(crate) tokens_file: PathBuf,
    /// Counts below this are suppressed for board readers.
    pub(crate) sdc_threshold: i64,
    /// Other counts are rounded to a multiple of this for board readers.
    pub(crate) sdc_rounding: i64,
    /// Directory of the mission definitions.
    pub(crate) missions_dir: PathBuf,
    /// GOV.UK Frontend's `dist/govuk` directory, served with the board.
    pub(crate) board_assets: PathBuf,
}

impl Table for ProjectionsTable {
    const NAME: &'static str = "projections";
    const ENV: &'static [(&'static str, &'static str)] = &[
        ("listen", "JOINERY_PROJECTIONS_LISTEN"),
        ("registry_url", "JOINERY_REGISTRY_URL"),
        ("data_dir", "JOINERY_PROJECTIONS_DATA_DIR"),
        ("group", "JOINERY_PROJECTIONS_GROUP"),
        ("tokens_file", "JOINERY_TOKENS_FILE"),
        ("sdc_threshold", "JOINERY_SDC_THRESHOLD"),
        ("sdc_rounding", "JOINERY_SDC_ROUNDING"),
        ("missions_dir", "JOINERY_MISSIONS_DIR"),
        ("board_assets", "JOINERY_BOARD_ASSETS"),
    ];
}

impl ProjectionsTable {
    /// The projections' config.
    pub(crate) fn config(&self, kafka: &KafkaTable) -> joinery_projections::ProjectionsConfig {
        joinery_projections::ProjectionsConfig {
            listen: self.listen,
            kafka: kafka.settings(),
            registry_url: self.registry_url.clone(),
            data_dir: self.data_dir.clone(),
            group: self.group.clone(),
            tokens: self.tokens_file.clone(),
            disclosure: joinery_projections::disclosure::Disclosure {
                threshold: self.sdc_threshold,
                rounding: self.sdc_rounding,
            },
            missions_dir: self.missions_dir.clone(),
            board_assets: self.board_assets.clone(),
        }
    }
}
