//! The processor's configuration: where Kafka, the registry, the state and
//! the definitions are, and how batches are worked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use joinery_domain::event::DAY_MS;
use joinery_domain::{Department, Millis};
use joinery_engine::MissionDef;
use joinery_runtime::kafka::KafkaSettings;
use joinery_store::StoreOptions;

/// The largest `max_events_per_citizen` allowed (larger values are taken
/// as this): a view's version counts a citizen's event versions in 21 bits.
pub const MAX_EVENTS_PER_CITIZEN_LIMIT: usize = (1 << 21) - 1;

/// Processor configuration.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Address of the operator endpoints (default `127.0.0.1:8089`).
    pub listen: SocketAddr,
    /// Kafka connection and partition count.
    pub kafka: KafkaSettings,
    /// Schema registry base URL.
    pub registry_url: String,
    /// Directory of the RocksDB state.
    pub data_dir: PathBuf,
    /// Consumer group id.
    pub group: String,
    /// How late each department's events may arrive and still be on time
    /// (default 7 days for every department): a mission's statuses resolve
    /// at the partition's event time minus the greatest lateness of the
    /// departments it reads, so that a status reported as final cannot be
    /// changed by data within any of their lateness.
    pub lateness: Lateness,
    /// How far an event's time may be ahead of its record's Kafka timestamp
    /// and still move the watermark (default 5 minutes of clock skew): a
    /// record moves it at most to its timestamp plus this, so no producer
    /// can push event time past the moment its records reached the log.
    pub max_clock_skew: Millis,
    /// How far ahead of its Kafka timestamp an event may be dated at all
    /// (default 366 days); a record dated further ahead, or before 1900, is
    /// dead-lettered (`event_time_out_of_range`).
    pub event_time_horizon: Millis,
    /// The most events one citizen may have (default 2,000): a department
    /// sending more for one identifier is likely sending other people's
    /// events under it, and would otherwise make that citizen's every
    /// evaluation slow. Events past it are dead-lettered
    /// (`citizen_event_cap`).
    pub max_events_per_citizen: usize,
    /// Most records per batch (one RocksDB write, one produce round).
    pub max_batch: usize,
    /// The most timers one partition step fires (default 40,000): when
    /// event time passes more deadlines at once, the rest fire in further
    /// steps, each written on its own, so that memory stays bounded.
    pub max_timers_per_batch: usize,
    /// Threads working a batch's source partitions in parallel (default:
    /// the machine's cores). Partitions share no state, so results do not
    /// depend on it.
    pub workers: usize,
    /// RocksDB memory: shared block cache and memtable budget.
    pub store: StoreOptions,
    /// Evaluate only this mission (a rebuild or backfill); `None` = all.
    pub only_mission: Option<String>,
    /// Stop once every department partition is consumed up to where it
    /// ended at start-up (a rebuild), reporting progress as it goes.
    pub stop_at_end: bool,
    /// Directory of the mission definitions (`capabilities.toml` and one file per mission).
    pub missions_dir: PathBuf,
}

impl ProcessorConfig {
    /// Defaults for the local stack.
    pub fn local(kafka: KafkaSettings, registry_url: String, data_dir: PathBuf) -> ProcessorConfig {
        ProcessorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8089)),
            kafka,
            registry_url,
            data_dir,
            group: "joinery-processor".into(),
            lateness: Lateness::uniform(7 * DAY_MS),
            max_clock_skew: joinery_domain::event::DEFAULT_MAX_CLOCK_SKEW,
            event_time_horizon: joinery_domain::event::DEFAULT_EVENT_TIME_HORIZON,
            max_events_per_citizen: 2_000,
            max_batch: 40_000,
            max_timers_per_batch: 40_000,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            missions_dir: PathBuf::from("missions"),
            store: StoreOptions::default(),
            only_mission: None,
            stop_at_end: false,
        }
    }
}

/// How late each department's events may arrive and still be on time.
/// Payroll data arrives weeks late, learner returns months late: each
/// department has its own, and a mission waits for the slowest department
/// it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lateness {
    /// The lateness of a department not in `departments`.
    pub default: Millis,
    /// Departments with a lateness of their own.
    pub departments: BTreeMap<Department, Millis>,
}

impl Lateness {
    /// The same lateness for every department.
    pub const fn uniform(lateness: Millis) -> Lateness {
        Lateness {
            default: lateness,
            departments: BTreeMap::new(),
        }
    }

    /// A department's allowed lateness (never negative).
    pub fn of(&self, department: Department) -> Millis {
        self.departments
            .get(&department)
            .copied()
            .unwrap_or(self.default)
            .max(0)
    }

    /// A mission's: the greatest of the departments it reads (the default
    /// when it reads none).
    pub fn of_mission(&self, mission: &MissionDef) -> Millis {
        mission
            .departments()
            .into_iter()
            .map(|d| self.of(d))
            .max()
            .unwrap_or(self.default.max(0))
    }

    /// A stable description for the state's description of its rules:
    /// every department's lateness in ms, in department order.
    pub fn describe(&self) -> String {
        Department::ALL
            .iter()
            .map(|d| format!("{}={}", d.code(), self.of(*d)))
            .collect::<Vec<_>>()
            .join(",")
    }
}
