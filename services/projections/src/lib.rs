//! # joinery-projections
//!
//! The last box of the data flow: consumes `joinery.views.<mission>`, keeps
//! each mission's outcome metrics incrementally in RocksDB (offsets in the
//! same batch), and serves them: the JSON API for mission boards, the board
//! itself as HTML, and the figures as Prometheus gauges for operators.
//!
//! # Layout
//!
//! - [`aggregate`]: contributions and incremental metrics.
//! - [`disclosure`]: the 10-5 rule for board readers.
//! - `api`: the JSON metrics API.
//! - `board`: the mission board (GOV.UK Design System HTML pages).

pub mod aggregate;
pub mod disclosure;

mod api;
mod board;
mod consume;
mod layout;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::Duration;

use joinery_engine::{load_missions, MissionDef};
use joinery_runtime::auth::TokenStore;
use joinery_runtime::consumer::{ConsumerSpec, StatefulConsumer};
use joinery_runtime::kafka::KafkaSettings;
use joinery_runtime::{Service, Telemetry};
use joinery_store::{Store, StoreOptions};
use joinery_wire::names::view_topic;
use joinery_wire::{Catalog, RegistryClient};
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Contribution, MissionMetrics};
use crate::consume::ViewConsumer;
use crate::disclosure::Disclosure;
use crate::layout::{
    contribution_prefix, migrate_contribution_keys, partition_prefix, prefix_end, METRICS_PREFIX,
};

/// Projections configuration.
#[derive(Debug, Clone)]
pub struct ProjectionsConfig {
    /// Address of the API, board and operator endpoints (default `127.0.0.1:8088`).
    pub listen: SocketAddr,
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Schema registry base URL.
    pub registry_url: String,
    /// Directory of the RocksDB state.
    pub data_dir: PathBuf,
    /// Consumer group id.
    pub group: String,
    /// Token file (hashes and principals).
    pub tokens: PathBuf,
    /// Disclosure control for board readers.
    pub disclosure: Disclosure,
    /// Directory of the mission definitions.
    pub missions_dir: PathBuf,
    /// GOV.UK Frontend's `dist/govuk` directory (stylesheet, scripts, fonts,
    /// images) served with the board; `web/node_modules/govuk-frontend/dist/govuk`
    /// after `npm ci` in `web/`. Without it the board is served unstyled.
    pub board_assets: PathBuf,
}

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) cohort: prometheus::IntGaugeVec,
    pub(crate) outcomes: prometheus::IntGaugeVec,
    pub(crate) snapshots: prometheus::IntGaugeVec,
    pub(crate) rebuilding: prometheus::IntGaugeVec,
    pub(crate) freshness: prometheus::HistogramVec,
    pub(crate) views: prometheus::IntCounterVec,
    pub(crate) dead_letters: prometheus::IntCounterVec,
    pub(crate) state_bytes: prometheus::IntGauge,
}

impl Metrics {
    fn new(t: &Telemetry) -> Metrics {
        use joinery_runtime::metrics;
        Metrics {
            cohort: t.gauge_vec(&metrics::MISSION_COHORT),
            outcomes: t.gauge_vec(&metrics::OUTCOME_CITIZENS),
            snapshots: t.gauge_vec(&metrics::SNAPSHOT_CITIZENS),
            rebuilding: t.gauge_vec(&metrics::PROJECTIONS_REBUILDING),
            freshness: t.histogram_vec(
                &metrics::EVENT_TO_METRIC,
                joinery_runtime::telemetry::FRESHNESS_BUCKETS,
            ),
            views: t.counter_vec(&metrics::PROJECTIONS_VIEWS),
            dead_letters: t.counter_vec(&metrics::PROJECTIONS_UNDECODABLE),
            state_bytes: t.gauge(&metrics::PROJECTIONS_STATE_BYTES),
        }
    }

    pub(crate) fn publish(&self, mission: &str, m: &MissionMetrics) {
        self.rebuilding
            .with_label_values(&[mission])
            .set(i64::from(m.rebuilding.is_some()));
        self.cohort
            .with_label_values(&[mission])
            .set(m.total.cohort);
        for (name, o) in &m.total.outcomes {
            for (status, n) in [
                ("pending", o.pending),
                ("achieved", o.achieved),
                ("not_achieved", o.not_achieved),
            ] {
                self.outcomes
                    .with_label_values(&[mission, name, status])
                    .set(n);
            }
        }
        for (name, s) in &m.snapshots {
            for (of, n) in [
                ("population", s.total.population),
                ("counted", s.total.holds),
            ] {
                self.snapshots
                    .with_label_values(&[mission, name, of])
                    .set(n);
            }
        }
    }
}

/// Shared between the consumer and the HTTP handlers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) metrics: RwLock<HashMap<String, MissionMetrics>>,
    pub(crate) missions: Vec<String>,
    pub(crate) defs: Vec<MissionDef>,
    pub(crate) tokens: TokenStore,
    pub(crate) disclosure: Disclosure,
    pub(crate) coverage: ViewCoverage,
}

/// Which partitions of a mission's view topic this instance has read
/// through, so that the figures' watermark leaves none out
/// ([`MissionMetrics::watermark_covers`]).
pub(crate) struct ViewCoverage {
    /// Partitions of each view topic.
    pub(crate) partitions: i32,
    /// Whether (mission, partition) has been read up to the log end it had
    /// when this instance was given it.
    pub(crate) read_through: ReadThrough,
}

/// Whether (mission, partition) has been read through.
pub(crate) type ReadThrough = Box<dyn Fn(&str, i32) -> bool + Send + Sync>;

impl std::fmt::Debug for ViewCoverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewCoverage")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Runs projections until `cancel` fires.
pub async fn run(config: ProjectionsConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut service = Service::start("projections", config.listen, cancel).await?;
    let tokens = TokenStore::load(&config.tokens)?;
    let reloading = tokens.clone();
    let token = service.token();
    service.spawn("token-reloader", async move {
        reloading.reload_every(Duration::from_secs(2), token).await
    });
    let defs = load_missions(&config.missions_dir)?;
    let missions: Vec<String> = defs.iter().map(|m| m.id.to_string()).collect();
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Arc::new(Store::open(&config.data_dir, &StoreOptions::default())?);
    let metrics = Metrics::new(service.telemetry());
    let mut restored = HashMap::new();
    let mut unpartitioned = HashSet::new();
    for m in &missions {
        let moved = migrate_contribution_keys(&store, m)?;
        if moved > 0 {
            tracing::info!(mission = %m, contributions = moved, "contributions moved under their partition's prefix");
        }
        let none = partition_prefix(m, None);
        if !store
            .scan_range_limit(none.as_bytes(), &prefix_end(none.as_bytes()), 1)?
            .is_empty()
        {
            unpartitioned.insert(m.clone());
        }
        let stored = store.get(format!("{METRICS_PREFIX}{m}"))?;
        let mut current: MissionMetrics = match &stored {
            Some(b) => serde_json::from_slice(b)?,
            None => MissionMetrics::default(),
        };
        let saved_without_partitions = match &stored {
            Some(b) => serde_json::from_slice::<serde_json::Value>(b)?
                .get("partitions_with_views")
                .is_none(),
            None => false,
        };
        if saved_without_partitions {
            // Saved before the partitions holding views were kept: found
            // from the contributions, so that none of them counts as empty.
            for p in 0..config.kafka.partitions {
                let prefix = partition_prefix(m, Some(p));
                if !store
                    .scan_range_limit(prefix.as_bytes(), &prefix_end(prefix.as_bytes()), 1)?
                    .is_empty()
                {
                    current.saw_view(p);
                }
            }
        }
        if !current.by_area.is_empty() && current.by_area_month.is_empty() {
            // Saved before the area x month breakdown existed: rebuild it.
            let prefix = contribution_prefix(m);
            let mut contributions = Vec::new();
            for (_, v) in store.scan(prefix.as_bytes(), None)? {
                contributions.push(serde_json::from_slice::<Contribution>(&v)?);
            }
            tracing::info!(mission = %m, citizens = contributions.len(), "rebuilding the area x cohort-month breakdown");
            current.rebuild_area_month(contributions);
        }
        metrics.publish(m, &current);
        restored.insert((*m).to_owned(), current);
    }
    let lookup_store = Arc::clone(&store);
    let offsets = Arc::new(move |t: &str, p| Ok(lookup_store.offset(t, p)?));
    let spec = ConsumerSpec::new(&config.kafka, "joinery-projections", &config.group, offsets);
    let consumer = StatefulConsumer::new(spec, service.telemetry())?;
    service.spawn_blocking("restore-watch", consumer.restore_watch(&config.kafka));
    let restores = consumer.restores();
    let kafka = config.kafka.clone();
    let shared = Arc::new(Shared {
        metrics: RwLock::new(restored),
        missions: missions.clone(),
        defs,
        tokens,
        disclosure: config.disclosure,
        coverage: ViewCoverage {
            partitions: config.kafka.partitions,
            read_through: Box::new(move |mission, p| {
                restores.caught_up(&kafka.topic(&view_topic(mission)), p)
            }),
        },
    });

    let topics: Vec<String> = missions
        .iter()
        .map(|m| config.kafka.topic(&view_topic(m)))
        .collect();
    // The processor creates the view topics; wait for them rather than fail.
    consumer.wait_for_topics(&topics, &service.token()).await?;
    consumer.subscribe(&topics)?;

    // What cannot be used goes to the dead-letter topic, which a
    // projections started before any processor creates itself.
    let dead_letter_topic = joinery_wire::names::dead_letter_topic(&config.kafka);
    joinery_runtime::kafka::ensure_topics(&config.kafka, std::slice::from_ref(&dead_letter_topic))
        .await?;
    let consumer_loop = ViewConsumer {
        consumer,
        store,
        unpartitioned,
        shared: Arc::clone(&shared),
        metrics,
        registry: RegistryClient::new(&config.registry_url),
        catalog: Catalog::load(),
        dead_letters: consume::DeadLetters {
            producer: config
                .kafka
                .producer("joinery-projections-deadletters")
                .create()?,
            topic: dead_letter_topic.name,
        },
    };
    let router = api::router(Arc::clone(&shared))
        .merge(board::router(Arc::clone(&shared), &config.board_assets));
    let token = service.token();
    service.spawn("consume", async move { consumer_loop.run(token).await });
    service.run(router).await
}
