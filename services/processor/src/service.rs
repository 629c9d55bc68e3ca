//! The processor service: loads the definitions, makes sure the topics and
//! view schemas exist, opens the state, republishes the outbox a previous
//! run left, then runs the batch loop and the operator endpoints under one
//! supervisor.

use std::sync::Arc;

use joinery_engine::{load_missions, MissionDef};
use joinery_runtime::consumer::{ConsumerSpec, StatefulConsumer};
use joinery_runtime::kafka::{ensure_topics, RebalanceEvent};
use joinery_runtime::Service;
use joinery_store::Store;
use joinery_wire::names::view_topic;
use joinery_wire::{Catalog, RegistryClient};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

use crate::definitions::open_state;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::{processor_topics, ProcessorConfig};

/// Everything the batch loop and the workers share.
pub(crate) struct Processor {
    /// The configuration it was started with.
    pub(crate) config: ProcessorConfig,
    /// The reader schemas.
    pub(crate) catalog: Catalog,
    /// Writer schemas by id.
    pub(crate) registry: RegistryClient,
    /// The missions evaluated.
    pub(crate) missions: Vec<MissionDef>,
    /// Each mission's allowed lateness: the greatest of the departments it
    /// reads.
    pub(crate) mission_lateness: Vec<joinery_domain::Millis>,
    /// The registry id of the view schema, framed into every view.
    pub(crate) view_schema_id: u32,
    /// Per-citizen state, timers, watermarks, offsets and the outbox.
    pub(crate) store: Arc<Store>,
    /// The group consumer over the department topics.
    pub(crate) consumer: StatefulConsumer,
    /// The producer and its outbox bookkeeping.
    pub(crate) publisher: Publisher,
    /// The processor's metrics.
    pub(crate) metrics: Metrics,
    /// The threads that work a batch's partitions (kept for the process's
    /// life: threads made per batch fragmented the heap).
    pub(crate) workers: rayon::ThreadPool,
    /// The event time of each source partition whose watermarks this
    /// instance last announced on the view topics (see
    /// `joinery_wire::control`).
    pub(crate) announced:
        parking_lot::Mutex<std::collections::HashMap<i32, joinery_domain::Millis>>,
    /// Source partitions whose due timers an earlier run left unfired,
    /// finished once this instance is given them (never before: another
    /// instance may own them now, and this state would be stale).
    pub(crate) backlogged: parking_lot::Mutex<std::collections::BTreeSet<i32>>,
}

/// The missions to evaluate: all of them, or the one a rebuild names.
fn missions(config: &ProcessorConfig) -> anyhow::Result<Vec<MissionDef>> {
    let mut missions = load_missions(&config.missions_dir)?;
    if let Some(only) = &config.only_mission {
        let known: Vec<String> = missions.iter().map(|m| m.id.to_string()).collect();
        missions.retain(|m| m.id == only.as_str());
        if missions.is_empty() {
            anyhow::bail!(
                "unknown mission `{only}`; the definitions in {} are: {}",
                config.missions_dir.display(),
                known.join(", ")
            );
        }
    }
    Ok(missions)
}

/// Runs the processor until `cancel` fires.
pub async fn run(config: ProcessorConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut service = Service::start("processor", config.listen, cancel).await?;
    let missions = missions(&config)?;
    tracing::info!(missions = ?missions.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), "loaded mission definitions");
    ensure_topics(&config.kafka, &processor_topics(&config.kafka, &missions)).await?;
    let catalog = Catalog::load();
    let registry = RegistryClient::new(&config.registry_url);
    let mut view_schema_id = 0;
    for m in &missions {
        let subject = format!("{}-value", config.kafka.topic(&view_topic(m.id.as_str())));
        view_schema_id = registry
            .register_when_ready(&subject, catalog.view_schema_text(), None)
            .await?;
    }
    let store = Arc::new(open_state(&config, &missions)?);
    let metrics = Metrics::new(service.telemetry());

    let lookup_store = Arc::clone(&store);
    let rebalances = metrics.rebalances.clone();
    let offsets = Arc::new(move |t: &str, p| Ok(lookup_store.offset(t, p)?));
    let spec = ConsumerSpec::new(&config.kafka, "joinery-processor", &config.group, offsets)
        .on_rebalance(Arc::new(move |e| {
            let kind = match e {
                RebalanceEvent::Assigned(_) => "assigned",
                RebalanceEvent::Revoked(_) => "revoked",
                RebalanceEvent::Failed(_) => "failed",
            };
            rebalances.with_label_values(&[kind]).inc();
        }));
    let consumer = StatefulConsumer::new(spec, service.telemetry())?;
    service.spawn_blocking("restore-watch", consumer.restore_watch(&config.kafka));
    let topics: Vec<String> = joinery_domain::Department::ALL
        .iter()
        .map(|d| config.kafka.topic(&d.topic()))
        .collect();
    consumer.subscribe(&topics)?;
    let producer: FutureProducer = config.kafka.producer("joinery-processor").create()?;
    let publisher = Publisher::new(producer, Arc::clone(&store), metrics.quarantined.clone())?;
    let workers = rayon::ThreadPoolBuilder::new()
        .num_threads(config.workers.max(1))
        .thread_name(|i| format!("partition-worker-{i}"))
        .build()?;
    let mission_lateness = missions
        .iter()
        .map(|m| config.lateness.of_mission(m))
        .collect();
    let p = Processor {
        config,
        catalog,
        registry,
        missions,
        mission_lateness,
        view_schema_id,
        store,
        consumer,
        publisher,
        metrics,
        workers,
        announced: parking_lot::Mutex::default(),
        backlogged: parking_lot::Mutex::default(),
    };
    p.publisher.flush_outbox().await?;
    if p.config.stop_at_end {
        // A rebuild owns every partition: finish them all now.
        p.drain_backlogs(None, usize::MAX).await?;
    } else {
        // Another instance may own a partition by now: each one's backlog
        // is finished once this instance is given it.
        p.backlogged.lock().extend(p.backlog_partitions()?);
    }
    let token = service.token();
    service.spawn("consume", async move { p.consume(token).await });
    service.run(axum::Router::new()).await
}
