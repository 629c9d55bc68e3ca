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

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use joinery_engine::{load_missions, MissionDef};
use joinery_runtime::auth::TokenStore;
use joinery_runtime::http::{bind, ops_router};
use joinery_runtime::kafka::{KafkaSettings, RebalanceEvent, StoredOffsetsContext};
use joinery_runtime::{serve, Health, Supervisor, Telemetry};
use joinery_store::{Store, StoreOptions};
use joinery_wire::catalog::view_topic;
use joinery_wire::codec::{decode_value, view_from_value};
use joinery_wire::control::{Control, ControlKind, CONTROL_HEADER};
use joinery_wire::framing::unframe;
use joinery_wire::{Catalog, DecodeError, RegistryClient};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Contribution, MissionMetrics, Rebuilding};
use crate::disclosure::Disclosure;

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
    cohort: prometheus::IntGaugeVec,
    outcomes: prometheus::IntGaugeVec,
    snapshots: prometheus::IntGaugeVec,
    rebuilding: prometheus::IntGaugeVec,
    freshness: prometheus::HistogramVec,
    views: prometheus::IntCounterVec,
    dead_letters: prometheus::IntCounterVec,
    state_bytes: prometheus::IntGauge,
}

impl Metrics {
    fn new(t: &Telemetry) -> Metrics {
        use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};
        Metrics {
            cohort: t.register(IntGaugeVec::new(Opts::new("joinery_mission_cohort_citizens", "Citizens in each mission's cohort (exact)"), &["mission"]).expect("valid")),
            outcomes: t.register(IntGaugeVec::new(Opts::new("joinery_outcome_citizens", "Citizens by mission, outcome and status (pending, achieved, not_achieved; exact)"), &["mission", "outcome", "status"]).expect("valid")),
            snapshots: t.register(IntGaugeVec::new(Opts::new("joinery_snapshot_citizens", "Citizens in each snapshot measure at the watermark: its population, and those in the measured state (e.g. NEET), by mission and snapshot (exact)"), &["mission", "snapshot", "of"]).expect("valid")),
            rebuilding: t.register(IntGaugeVec::new(Opts::new("joinery_projections_rebuilding", "1 while a rebuild of the mission is under way (its figures are incomplete), else 0"), &["mission"]).expect("valid")),
            freshness: t.register(HistogramVec::new(HistogramOpts::new("joinery_event_to_metric_seconds", "Time from a department event being produced to Kafka to the metric reflecting it").buckets(joinery_runtime::telemetry::FRESHNESS_BUCKETS.to_vec()), &["mission"]).expect("valid")),
            views: t.register(IntCounterVec::new(Opts::new("joinery_projections_views_total", "Views consumed, by mission and result (applied, stale)"), &["mission", "result"]).expect("valid")),
            dead_letters: t.register(IntCounterVec::new(Opts::new("joinery_projections_undecodable_views_total", "View records that could not be decoded, by reason"), &["reason"]).expect("valid")),
            state_bytes: t.register(prometheus::IntGauge::new("joinery_projections_state_bytes", "Estimated live bytes of the projections' RocksDB state").expect("valid")),
        }
    }

    fn publish(&self, mission: &str, m: &MissionMetrics) {
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
}

const METRICS_PREFIX: &str = "a/";

/// Whether a view-topic record is a rebuild's control record, not a view.
fn is_control(m: &BorrowedMessage<'_>) -> bool {
    use rdkafka::message::Headers;
    m.headers()
        .is_some_and(|h| h.iter().any(|h| h.key == CONTROL_HEADER))
}

/// The first key after every key that starts with `prefix` (whose last
/// byte, here always `/`, is below 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("a non-empty prefix") += 1;
    end
}

/// `v/<mission>/`: every contribution of a mission.
fn contribution_prefix(mission: &str) -> String {
    format!("v/{mission}/")
}

/// `v/<mission>/p<partition>/`: the contributions taken from one partition
/// of the mission's view topic (`p-1` for those saved before contributions
/// kept their partition), so that a rebuild's reset of a partition reads
/// only that partition's.
fn partition_prefix(mission: &str, partition: Option<i32>) -> String {
    format!(
        "{}p{}/",
        contribution_prefix(mission),
        partition.unwrap_or(-1)
    )
}

fn contribution_key(mission: &str, partition: Option<i32>, citizen: &str) -> Vec<u8> {
    format!("{}{citizen}", partition_prefix(mission, partition)).into_bytes()
}

/// Moves the contributions an earlier version saved as
/// `v/<mission>/<citizen>` under their partition's prefix, once; returns how
/// many it moved. (Citizen keys are lowercase hex, so all such keys sort
/// before `v/<mission>/p`.)
fn migrate_contribution_keys(store: &Store, mission: &str) -> anyhow::Result<usize> {
    let prefix = contribution_prefix(mission);
    let end = format!("{prefix}p");
    let mut moved = 0;
    loop {
        // In chunks, each written (moved keys deleted) before the next read.
        let old = store.scan_range_limit(prefix.as_bytes(), end.as_bytes(), 10_000)?;
        if old.is_empty() {
            return Ok(moved);
        }
        let mut batch = store.batch();
        for (k, v) in &old {
            let c: Contribution = serde_json::from_slice(v)?;
            let citizen = std::str::from_utf8(&k[prefix.len()..])?;
            batch.put(contribution_key(mission, c.partition, citizen), v);
            batch.delete(k);
        }
        store.write(batch)?;
        moved += old.len();
    }
}

/// Runs projections until `cancel` fires.
pub async fn run(config: ProjectionsConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let telemetry = Telemetry::new("projections");
    let health = Health::default();
    let listener = bind(config.listen).await?;
    let tokens = TokenStore::load(&config.tokens)?;
    tokens.spawn_reloader(Duration::from_secs(2));
    let defs = load_missions(&config.missions_dir)?;
    let missions: Vec<String> = defs.iter().map(|m| m.id.clone()).collect();
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Arc::new(Store::open(&config.data_dir, &StoreOptions::default())?);
    let metrics = Metrics::new(&telemetry);
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
        let mut current: MissionMetrics = match store.get(format!("{METRICS_PREFIX}{m}"))? {
            Some(b) => serde_json::from_slice(&b)?,
            None => MissionMetrics::default(),
        };
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
    let shared = Arc::new(Shared {
        metrics: RwLock::new(restored),
        missions: missions.clone(),
        defs,
        tokens,
        disclosure: config.disclosure,
    });

    let lookup_store = Arc::clone(&store);
    let offsets: joinery_runtime::kafka::OffsetLookup =
        Arc::new(move |t, p| Ok(lookup_store.offset(t, p)?));
    let restores = joinery_runtime::rebalance::RestoreTracker::new(&telemetry);
    let hook_restores = restores.clone();
    let context = StoredOffsetsContext::new(
        Arc::clone(&offsets),
        Arc::new(move |e| {
            hook_restores.observe(e);
            match e {
                RebalanceEvent::Failed(why) => tracing::error!(error = %why, "rebalance failed"),
                other => tracing::info!(event = ?other, "rebalance"),
            }
        }),
    );
    let context = context.with_lag_gauge(&telemetry, &config.group);
    let consumer: StreamConsumer<StoredOffsetsContext> = config
        .kafka
        .consumer("joinery-projections", &config.group)
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    let _restore_watch = restores.spawn(&config.kafka, offsets, &cancel)?;
    let topics: Vec<String> = missions
        .iter()
        .map(|m| config.kafka.topic(&view_topic(m)))
        .collect();
    // The processor creates the view topics; wait for them rather than fail.
    wait_for_topics(&consumer, &topics, &cancel).await?;
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    health.set_ready(true);

    let consumer_loop = ViewConsumer {
        consumer,
        store,
        unpartitioned,
        shared: Arc::clone(&shared),
        metrics,
        registry: RegistryClient::new(&config.registry_url),
        catalog: Catalog::load(),
    };
    let mut sup = Supervisor::new(cancel.clone());
    let router = api::router(Arc::clone(&shared))
        .merge(board::router(Arc::clone(&shared), &config.board_assets))
        .merge(ops_router(health, telemetry));
    let http_cancel = cancel.clone();
    sup.spawn(
        "http",
        async move { serve(listener, router, http_cancel).await },
    );
    let c = cancel.clone();
    sup.spawn("consume", async move { consumer_loop.run(c).await });
    sup.run(Duration::from_secs(15)).await
}

async fn wait_for_topics(
    consumer: &StreamConsumer<StoredOffsetsContext>,
    topics: &[String],
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let md = joinery_runtime::kafka::retry_transient("view topic metadata", || {
            consumer.fetch_metadata(None, Duration::from_secs(5))
        })
        .await?;
        let missing: Vec<&String> = topics
            .iter()
            .filter(|t| {
                !md.topics()
                    .iter()
                    .any(|m| m.name() == t.as_str() && !m.partitions().is_empty())
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        tracing::info!(
            ?missing,
            "waiting for the processor to create the view topics"
        );
        tokio::select! {
            () = cancel.cancelled() => anyhow::bail!("cancelled while waiting for view topics"),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

struct ViewConsumer {
    consumer: StreamConsumer<StoredOffsetsContext>,
    store: Arc<Store>,
    /// Missions with contributions saved before contributions kept their
    /// partition (under `p-1`): a view of such a mission must also look
    /// there for the citizen's earlier contribution.
    unpartitioned: HashSet<String>,
    shared: Arc<Shared>,
    metrics: Metrics,
    registry: RegistryClient,
    catalog: Catalog,
}

impl ViewConsumer {
    async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        loop {
            let first = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                m = self.consumer.recv() => m,
            };
            let mut batch = vec![first];
            while batch.len() < 1000 {
                match tokio::time::timeout(Duration::from_millis(5), self.consumer.recv()).await {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let messages: Vec<BorrowedMessage<'_>> = batch
                .into_iter()
                .filter_map(|m| {
                    m.map_err(|e| tracing::warn!(error = %e, "consumer error"))
                        .ok()
                })
                .collect();
            if !messages.is_empty() {
                self.apply(&messages).await?;
            }
        }
    }

    async fn decode(
        &self,
        m: &BorrowedMessage<'_>,
    ) -> Result<joinery_domain::MissionView, DecodeError> {
        let (id, body) = unframe(m.payload().unwrap_or_default())?;
        let writer = loop {
            match self.registry.schema(id).await {
                Ok(s) => break s,
                Err(e) if e.is_unknown_schema() => return Err(DecodeError::UnknownSchemaId(id)),
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "registry unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        view_from_value(decode_value(&writer, self.catalog.view_schema(), body)?)
    }

    /// Applies a batch: views in batches of their own, each control record
    /// (a rebuild's reset or completion) on its own between them.
    async fn apply(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let mut start = 0;
        for (i, m) in messages.iter().enumerate() {
            if is_control(m) {
                self.apply_views(&messages[start..i]).await?;
                self.apply_control(m)?;
                start = i + 1;
            }
        }
        self.apply_views(&messages[start..]).await
    }

    /// A rebuild's control record on partition `p` of a view topic. A reset
    /// takes out every contribution that came from `p` (and any whose
    /// partition was not kept) and marks the mission as being rebuilt; a
    /// completion clears the mark once every partition has had one.
    fn apply_control(&self, m: &BorrowedMessage<'_>) -> anyhow::Result<()> {
        let mut batch = self.store.batch();
        batch.set_offset(m.topic(), m.partition(), m.offset() + 1);
        let control = match Control::from_bytes(m.payload().unwrap_or_default()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "unreadable control record skipped");
                self.metrics
                    .dead_letters
                    .with_label_values(&["bad_control_record"])
                    .inc();
                self.store.write(batch)?;
                return Ok(());
            }
        };
        let mut working = self.shared.metrics.read().expect("lock").clone();
        let Some(mission) = working.get_mut(&control.mission) else {
            self.store.write(batch)?;
            return Ok(());
        };
        let p = m.partition();
        match control.kind {
            ControlKind::Reset => {
                let mut dropped = 0u64;
                for partition in [Some(p), None] {
                    let prefix = partition_prefix(&control.mission, partition);
                    for (k, v) in self
                        .store
                        .scan_range(prefix.as_bytes(), &prefix_end(prefix.as_bytes()))?
                    {
                        let c: Contribution = serde_json::from_slice(&v)?;
                        mission.withdraw(&c);
                        batch.delete(&k);
                        dropped += 1;
                    }
                }
                let r = mission.rebuilding.get_or_insert_with(Default::default);
                if r.id != control.rebuild {
                    *r = Rebuilding {
                        id: control.rebuild.clone(),
                        started_at: control.started_at,
                        partitions: control.partitions,
                        ..Rebuilding::default()
                    };
                }
                r.reset.insert(p);
                tracing::info!(mission = %control.mission, rebuild = %control.rebuild, partition = p, dropped, "rebuild reset: earlier views of this partition no longer count");
            }
            ControlKind::Complete => match &mut mission.rebuilding {
                Some(r) if r.id == control.rebuild => {
                    r.complete.insert(p);
                    if r.complete.len() as i32 >= r.partitions {
                        mission.rebuilding = None;
                        tracing::info!(mission = %control.mission, rebuild = %control.rebuild, "rebuild complete");
                    }
                }
                // A completion of an earlier or superseded rebuild.
                _ => {}
            },
        }
        mission.updated_at = chrono::Utc::now().timestamp_millis();
        batch.put(
            format!("{METRICS_PREFIX}{}", control.mission),
            serde_json::to_vec(&*mission)?,
        );
        self.store.write(batch)?;
        self.metrics.publish(&control.mission, mission);
        *self.shared.metrics.write().expect("lock") = working;
        Ok(())
    }

    async fn apply_views(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut working = self.shared.metrics.read().expect("lock").clone();
        let mut contributions: HashMap<Vec<u8>, Contribution> = HashMap::new();
        let mut batch = self.store.batch();
        let mut touched = std::collections::BTreeSet::new();
        let mut fresh: Vec<(String, f64)> = Vec::new();
        for m in messages {
            batch.set_offset(m.topic(), m.partition(), m.offset() + 1);
            let view = match self.decode(m).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "undecodable view skipped");
                    self.metrics
                        .dead_letters
                        .with_label_values(&[e.reason()])
                        .inc();
                    continue;
                }
            };
            let Some(mission) = working.get_mut(&view.mission) else {
                continue;
            };
            let citizen = view.citizen_key.as_str();
            let key = contribution_key(&view.mission, Some(m.partition()), citizen);
            let mut old = match contributions.get(&key) {
                Some(c) => Some(c.clone()),
                None => self
                    .store
                    .get(&key)?
                    .map(|b| serde_json::from_slice::<Contribution>(&b))
                    .transpose()?,
            };
            if old.is_none() && self.unpartitioned.contains(&view.mission) {
                // Saved before contributions kept their partition: the
                // citizen's contribution moves to its partition's key.
                let legacy = contribution_key(&view.mission, None, citizen);
                if let Some(b) = self.store.get(&legacy)? {
                    let c: Contribution = serde_json::from_slice(&b)?;
                    batch.delete(&legacy);
                    batch.put(&key, &b);
                    contributions.insert(key.clone(), c.clone());
                    old = Some(c);
                }
            }
            let new = Contribution {
                partition: Some(m.partition()),
                ..Contribution::from(&view)
            };
            if mission.apply(old.as_ref(), &new, view.watermark) {
                mission.updated_at = now;
                batch.put(&key, serde_json::to_vec(&new)?);
                contributions.insert(key, new);
                touched.insert(view.mission.clone());
                fresh.push((
                    view.mission.clone(),
                    (now - view.ingested_at).max(0) as f64 / 1000.0,
                ));
                self.metrics
                    .views
                    .with_label_values(&[&view.mission, "applied"])
                    .inc();
            } else {
                self.metrics
                    .views
                    .with_label_values(&[&view.mission, "stale"])
                    .inc();
            }
        }
        for m in &touched {
            batch.put(
                format!("{METRICS_PREFIX}{m}"),
                serde_json::to_vec(&working[m])?,
            );
        }
        self.store.write(batch)?;
        for m in &touched {
            self.metrics.publish(m, &working[m]);
        }
        self.metrics
            .state_bytes
            .set(self.store.live_data_bytes() as i64);
        for (m, secs) in fresh {
            self.metrics
                .freshness
                .with_label_values(&[&m])
                .observe(secs);
        }
        *self.shared.metrics.write().expect("lock") = working;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contribution(partition: Option<i32>, version: i64) -> Vec<u8> {
        serde_json::to_vec(&Contribution {
            version,
            in_cohort: true,
            area_code: Some("E08000025".into()),
            cohort_month: Some("2026-01".into()),
            outcomes: vec![],
            snapshots: vec![],
            partition,
        })
        .expect("serialises")
    }

    #[test]
    fn contributions_saved_without_their_partition_move_under_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &StoreOptions::default()).expect("opens");
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let mut batch = store.batch();
        // As an earlier version saved them: no partition in the key, and
        // for `b` none in the contribution either.
        batch.put(format!("v/opportunity/{a}"), contribution(Some(2), 5));
        batch.put(format!("v/opportunity/{b}"), contribution(None, 6));
        batch.put(format!("v/safer_streets/{a}"), contribution(Some(2), 7));
        batch.put(
            contribution_key("opportunity", Some(0), &c),
            contribution(Some(0), 8),
        );
        store.write(batch).expect("writes");

        assert_eq!(
            migrate_contribution_keys(&store, "opportunity").expect("migrates"),
            2
        );
        let get = |k: Vec<u8>| store.get(k).expect("reads");
        assert_eq!(
            get(contribution_key("opportunity", Some(2), &a)),
            Some(contribution(Some(2), 5))
        );
        assert_eq!(
            get(contribution_key("opportunity", None, &b)),
            Some(contribution(None, 6))
        );
        assert_eq!(get(format!("v/opportunity/{a}").into_bytes()), None);
        assert_eq!(get(format!("v/opportunity/{b}").into_bytes()), None);
        assert_eq!(
            get(contribution_key("opportunity", Some(0), &c)),
            Some(contribution(Some(0), 8))
        );
        assert_eq!(
            get(format!("v/safer_streets/{a}").into_bytes()),
            Some(contribution(Some(2), 7)),
            "another mission's are its own to move"
        );
        assert_eq!(
            migrate_contribution_keys(&store, "opportunity").expect("migrates"),
            0
        );
    }

    #[test]
    fn a_partitions_prefix_holds_its_contributions_and_no_other_partitions() {
        let c = "c".repeat(64);
        let one = partition_prefix("opportunity", Some(1));
        let end = prefix_end(one.as_bytes());
        let inside = |k: &[u8]| k >= one.as_bytes() && k < end.as_slice();
        assert!(inside(&contribution_key("opportunity", Some(1), &c)));
        for other in [Some(0), Some(10), Some(11), Some(2), None] {
            assert!(
                !inside(&contribution_key("opportunity", other, &c)),
                "{other:?}"
            );
        }
    }
}
