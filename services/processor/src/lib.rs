//! # joinery-processor
//!
//! The stream processor: a consumer group over every department topic that
//! joins each citizen's events in RocksDB, runs the mission engine over
//! them, and publishes each changed view to `joinery.views.<mission>`.
//!
//! Per batch of records it: decodes each (bad ones become dead letters with
//! the reason, source topic, partition and offset); applies each event to
//! its citizen (duplicates by `event_id` change nothing); advances each
//! partition's watermark (greatest event time minus the allowed lateness) and
//! fires the timers it passes; evaluates the changed citizens; and writes
//! state, timers, offsets and the outbox of views and dead letters in one
//! RocksDB batch. Only then are the outbox records produced. After a crash it
//! resumes from its own stored offsets and republishes the outbox, so views
//! equal those of a clean replay (effectively once).
//!
//! # Layout
//!
//! - `state`: per-citizen records, timers and watermarks in RocksDB.
//! - `outbox`: records written with the state and produced after it.
//! - [`rebuild()`]: `joinery rebuild <mission>`, one mission afresh over the log.

mod outbox;
mod rebuild;
mod settle;
mod state;

pub use rebuild::rebuild;
pub use settle::settle_views;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use joinery_domain::event::DAY_MS;
use joinery_domain::{CitizenKey, Department, Event, EventType, Millis, MissionView};
use joinery_engine::{load_missions, Mission, MissionDef};
use joinery_runtime::http::{bind, ops_router};
use joinery_runtime::kafka::{
    ensure_topics, KafkaSettings, RebalanceEvent, StoredOffsetsContext, TopicSpec,
};
use joinery_runtime::{serve, Health, Supervisor, Telemetry};
use joinery_store::{Store, StoreOptions};
use joinery_wire::catalog::view_topic;
use joinery_wire::codec::{
    event_from_value, record_name, view_to_value, ValueDecoder, ValueEncoder,
};
use joinery_wire::framing::{frame, unframe};
use joinery_wire::{Catalog, DecodeError, RegistryClient};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, TopicPartitionList};
use rustc_hash::{FxHashMap, FxHashSet};
use tokio_util::sync::CancellationToken;

use crate::outbox::Entry;
use crate::state::CitizenRecord;

/// The dead-letter topic every service writes undecodable records to.
pub const DEAD_LETTER_TOPIC: &str = "joinery.deadletter";

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
    /// How late an event may arrive and still be on time: deadlines resolve
    /// at the greatest event time seen minus this (default 7 days).
    pub allowed_lateness: Millis,
    /// Most records per batch (one RocksDB write, one produce round).
    pub max_batch: usize,
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
            allowed_lateness: 7 * DAY_MS,
            max_batch: 40_000,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            missions_dir: PathBuf::from("missions"),
            store: StoreOptions::default(),
            only_mission: None,
            stop_at_end: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::view_version;

    #[test]
    fn versions_grow_with_the_watermark_then_with_events() {
        assert!(view_version(1_000, 1) < view_version(1_000, 2));
        assert!(view_version(1_000, 9) < view_version(1_001, 1));
        assert_eq!(view_version(-5, 3), view_version(0, 3));
        assert!(
            view_version(4_102_444_800_000, 1) > 0,
            "positive until well past 2100"
        );
    }
}

#[derive(Debug, Clone)]
struct Metrics {
    events: prometheus::IntCounterVec,
    dead_letters: prometheus::IntCounterVec,
    views: prometheus::IntCounterVec,
    event_to_view: prometheus::HistogramVec,
    batch_seconds: prometheus::Histogram,
    batch_records: prometheus::Histogram,
    idle_seconds: prometheus::Counter,
    watermark: prometheus::IntGaugeVec,
    rebalances: prometheus::IntCounterVec,
    store_bytes: prometheus::IntGauge,
    block_cache_bytes: prometheus::IntGauge,
}

impl Metrics {
    fn new(t: &Telemetry) -> Metrics {
        use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
        Metrics {
            events: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_processor_events_total",
                        "Department events applied, by event type and result (applied, duplicate)",
                    ),
                    &["event_type", "result"],
                )
                .expect("valid"),
            ),
            dead_letters: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_dead_letters_total",
                        "Records sent to the dead-letter topic, by source topic and reason",
                    ),
                    &["topic", "reason"],
                )
                .expect("valid"),
            ),
            event_to_view: t.register(
                prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new(
                        "joinery_event_to_view_seconds",
                        "Time from a department event being produced to Kafka to the changed view being written by the processor",
                    )
                    .buckets(joinery_runtime::telemetry::FRESHNESS_BUCKETS.to_vec()),
                    &["mission"],
                )
                .expect("valid"),
            ),
            views: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_processor_views_published_total",
                        "Changed mission views published, by mission",
                    ),
                    &["mission"],
                )
                .expect("valid"),
            ),
            batch_seconds: t.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "joinery_processor_batch_duration_seconds",
                        "Time to process, persist and publish one batch",
                    )
                    .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid")),
                )
                .expect("valid"),
            ),
            batch_records: t.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "joinery_processor_batch_records",
                        "Records per processed batch",
                    )
                    .buckets(vec![
                        1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0,
                    ]),
                )
                .expect("valid"),
            ),
            idle_seconds: t.register(
                prometheus::Counter::new(
                    "joinery_processor_idle_seconds_total",
                    "Time spent waiting for the first record of a batch",
                )
                .expect("valid"),
            ),
            watermark: t.register(
                IntGaugeVec::new(
                    Opts::new(
                        "joinery_processor_watermark_seconds",
                        "Event-time watermark of each partition (Unix seconds)",
                    ),
                    &["partition"],
                )
                .expect("valid"),
            ),
            rebalances: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_processor_rebalances_total",
                        "Consumer group rebalances, by kind (assigned, revoked, failed)",
                    ),
                    &["kind"],
                )
                .expect("valid"),
            ),
            store_bytes: t.register(
                IntGauge::new(
                    "joinery_processor_state_bytes",
                    "Estimated live data in the processor's RocksDB",
                )
                .expect("valid"),
            ),
            block_cache_bytes: t.register(
                IntGauge::new(
                    "joinery_processor_block_cache_bytes",
                    "Bytes in use in the RocksDB block cache",
                )
                .expect("valid"),
            ),
        }
    }
}

struct Processor {
    config: ProcessorConfig,
    catalog: Catalog,
    registry: RegistryClient,
    missions: Vec<MissionDef>,
    view_schema_id: u32,
    store: Arc<Store>,
    consumer: StreamConsumer<StoredOffsetsContext>,
    producer: FutureProducer,
    metrics: Metrics,
    next_seq: std::sync::atomic::AtomicU64,
    /// The threads that work a batch's partitions (kept for the process's
    /// life: threads made per batch fragmented the heap).
    workers: rayon::ThreadPool,
    /// Deliveries of published batches still awaiting acknowledgement.
    in_flight: std::sync::Mutex<std::collections::VecDeque<InFlight>>,
}

/// Batches whose views may await Kafka's acknowledgement while later
/// batches are worked.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// The topics the processor needs: department topics, one view topic per
/// mission (compacted, same partition count) and the dead-letter topic.
pub fn processor_topics(kafka: &KafkaSettings, missions: &[MissionDef]) -> Vec<TopicSpec> {
    let mut t: Vec<TopicSpec> = Department::ALL
        .into_iter()
        .map(|d| TopicSpec {
            name: kafka.topic(&d.topic()),
            partitions: kafka.partitions,
            compacted: false,
        })
        .collect();
    t.extend(missions.iter().map(|m| TopicSpec {
        name: kafka.topic(&view_topic(m.id())),
        partitions: kafka.partitions,
        compacted: true,
    }));
    t.push(TopicSpec {
        name: kafka.topic(DEAD_LETTER_TOPIC),
        partitions: 1,
        compacted: false,
    });
    t
}

/// Key of the description of the definitions (missions and lateness) the
/// state was computed with.
const DEFINITIONS_KEY: &[u8] = b"d/definitions";

/// Opens the state. When it was computed with other definitions (a mission
/// added, removed or changed, or another lateness), its stored evaluations
/// and timers are those of the old rules: it is deleted, and the processor
/// rebuilds it from the beginning of the department log. State from before
/// the description was kept is taken to match.
fn open_state(config: &ProcessorConfig, missions: &[MissionDef]) -> anyhow::Result<Store> {
    let description = format!(
        "allowed_lateness={}\n{missions:#?}",
        config.allowed_lateness
    );
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Store::open(&config.data_dir, &config.store)?;
    // A partition's watermark is written with its first batch.
    let fresh = store.scan(b"w/", None)?.is_empty();
    let store = match store.get(DEFINITIONS_KEY)? {
        Some(d) if d == description.as_bytes() => return Ok(store),
        Some(_) => {
            tracing::warn!(dir = %config.data_dir.display(), "the mission definitions or the allowed lateness changed since this state was computed: deleting it and rebuilding it from the beginning of the department log (run `joinery rebuild <mission>` for each changed mission so that its earlier views stop counting)");
            drop(store);
            std::fs::remove_dir_all(&config.data_dir)?;
            std::fs::create_dir_all(&config.data_dir)?;
            Store::open(&config.data_dir, &config.store)?
        }
        None if !fresh => {
            tracing::info!(
                "state from a version that did not record its definitions: taken to match them"
            );
            store
        }
        None => store,
    };
    let mut b = store.batch();
    b.put(DEFINITIONS_KEY, description.as_bytes());
    store.write(b)?;
    Ok(store)
}

/// Runs the processor until `cancel` fires.
pub async fn run(config: ProcessorConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let telemetry = Telemetry::new("processor");
    let health = Health::default();
    let listener = bind(config.listen).await?;
    let mut missions = load_missions(&config.missions_dir)?;
    if let Some(only) = &config.only_mission {
        let known: Vec<String> = missions.iter().map(|m| m.id.clone()).collect();
        missions.retain(|m| &m.id == only);
        if missions.is_empty() {
            anyhow::bail!(
                "unknown mission `{only}`; the definitions in {} are: {}",
                config.missions_dir.display(),
                known.join(", ")
            );
        }
    }
    tracing::info!(missions = ?missions.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), "loaded mission definitions");
    ensure_topics(&config.kafka, &processor_topics(&config.kafka, &missions)).await?;
    let catalog = Catalog::load();
    let registry = RegistryClient::new(&config.registry_url);
    let mut view_schema_id = 0;
    for m in &missions {
        let subject = format!("{}-value", config.kafka.topic(&view_topic(m.id())));
        view_schema_id = registry
            .register_when_ready(&subject, catalog.view_schema_text(), None)
            .await?;
    }
    let store = Arc::new(open_state(&config, &missions)?);
    let metrics = Metrics::new(&telemetry);

    let lookup_store = Arc::clone(&store);
    let offsets: joinery_runtime::kafka::OffsetLookup =
        Arc::new(move |topic, p| Ok(lookup_store.offset(topic, p)?));
    let restores = joinery_runtime::rebalance::RestoreTracker::new(&telemetry);
    let hook_restores = restores.clone();
    let hook_metrics = metrics.clone();
    let context = StoredOffsetsContext::new(
        Arc::clone(&offsets),
        Arc::new(move |e| {
            hook_restores.observe(e);
            let kind = match e {
                RebalanceEvent::Assigned(a) => {
                    tracing::info!(
                        partitions = a.len(),
                        "partitions assigned; resuming from stored offsets"
                    );
                    "assigned"
                }
                RebalanceEvent::Revoked(r) => {
                    tracing::info!(partitions = r.len(), "partitions revoked");
                    "revoked"
                }
                RebalanceEvent::Failed(why) => {
                    tracing::error!(error = %why, "rebalance failed");
                    "failed"
                }
            };
            hook_metrics.rebalances.with_label_values(&[kind]).inc();
        }),
    );
    let context = context.with_lag_gauge(&telemetry, &config.group);
    let consumer: StreamConsumer<StoredOffsetsContext> = config
        .kafka
        .consumer("joinery-processor", &config.group)
        .set("statistics.interval.ms", "5000")
        .create_with_context(context)?;
    let topics: Vec<String> = Department::ALL
        .iter()
        .map(|d| config.kafka.topic(&d.topic()))
        .collect();
    consumer.subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())?;
    let producer: FutureProducer = config.kafka.producer("joinery-processor").create()?;
    let next_seq = store
        .scan(outbox::PREFIX, None)?
        .last()
        .and_then(|(k, _)| outbox::seq_of(k))
        .map_or(0, |s| s + 1);

    let _restore_watch = restores.spawn(&config.kafka, offsets, &cancel)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.workers.max(1))
        .thread_name(|i| format!("partition-worker-{i}"))
        .build()?;
    let p = Processor {
        config,
        catalog,
        registry,
        missions,
        view_schema_id,
        store,
        consumer,
        producer,
        metrics,
        next_seq: next_seq.into(),
        workers: pool,
        in_flight: Default::default(),
    };
    p.flush_outbox().await?;
    health.set_ready(true);

    let mut sup = Supervisor::new(cancel.clone());
    let ops_cancel = cancel.clone();
    let router = ops_router(health, telemetry);
    sup.spawn("ops-http", async move {
        serve(listener, router, ops_cancel).await
    });
    let loop_cancel = cancel.clone();
    sup.spawn("consume", async move { p.consume(loop_cancel).await });
    sup.run(Duration::from_secs(15)).await
}

/// A view's version: the watermark it was evaluated at (ms, 42 bits) then
/// the number of distinct events behind it (21 bits). A visible change needs
/// a new event or a higher watermark, so versions strictly increase per
/// citizen; and they depend only on the log, so an instance that rebuilds a
/// partition from the log (after a crash, a rebalance or a rebuild) produces
/// the same versions, and projections keep the newest view whoever sent it.
pub fn view_version(watermark: Millis, distinct_events: usize) -> i64 {
    let w = watermark.clamp(0, (1 << 42) - 1);
    let n = (distinct_events as i64).min((1 << 21) - 1);
    (w << 21) | n
}

/// What one partition's share of a batch changes, before it is written.
#[derive(Default)]
struct PartitionWork {
    /// Writes in the order they were decided: `None` deletes the key.
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    offsets: BTreeMap<(String, i32), i64>,
    outbox: Vec<Entry>,
}

/// A consumed record's parts, borrowed for the batch, that the partition
/// workers share.
struct Input<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    /// Kafka timestamp: when the record was produced.
    timestamp: Millis,
    key: &'a [u8],
    payload: &'a [u8],
    /// The writer schema, or why there is none (the record is a dead letter).
    writer: Result<Arc<Schema>, DecodeError>,
}

/// A batch whose views await Kafka's acknowledgement, and its outbox
/// ranges (first sequence number, count), deleted once it is acknowledged.
struct InFlight {
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    ranges: Vec<(u64, u64)>,
}

/// One source partition's records in a batch.
type PartitionInputs<'a> = (i32, Vec<Input<'a>>);

/// What a worker handed to the producer: the outbox sequence numbers from
/// `first_seq` and their pending deliveries.
struct Handed {
    first_seq: u64,
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
}

impl Processor {
    /// (topic, partition, low, high) of every department partition, for a rebuild's end.
    async fn log_ends(&self) -> anyhow::Result<Vec<(String, i32, i64, i64)>> {
        let mut ends = Vec::new();
        for d in Department::ALL {
            let topic = self.config.kafka.topic(&d.topic());
            for p in 0..self.config.kafka.partitions {
                let (low, high) =
                    joinery_runtime::kafka::retry_transient("log end offsets", || {
                        tokio::task::block_in_place(|| {
                            self.consumer
                                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                        })
                    })
                    .await?;
                ends.push((topic.clone(), p, low, high));
            }
        }
        Ok(ends)
    }

    /// (records consumed, records to consume) towards the ends.
    fn progress(&self, ends: &[(String, i32, i64, i64)]) -> anyhow::Result<(i64, i64)> {
        let (mut done, mut total) = (0, 0);
        for (topic, p, low, high) in ends {
            let at = self.store.offset(topic, *p)?.unwrap_or(*low).min(*high);
            done += at - low;
            total += high - low;
        }
        Ok((done, total))
    }

    async fn consume(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut last_gauges = Instant::now();
        let ends = if self.config.stop_at_end {
            Some(self.log_ends().await?)
        } else {
            None
        };
        let mut last_progress = Instant::now();
        loop {
            if let Some(ends) = &ends {
                let (done, total) = self.progress(ends)?;
                if last_progress.elapsed() > Duration::from_secs(2) || done >= total {
                    let pct = if total == 0 {
                        100.0
                    } else {
                        100.0 * done as f64 / total as f64
                    };
                    tracing::info!(
                        done,
                        total,
                        "rebuild progress: {done} of {total} records ({pct:.0}%)"
                    );
                    last_progress = Instant::now();
                }
                if done >= total {
                    self.reap(true).await?;
                    tracing::info!(
                        "rebuild complete: every partition consumed to where it ended at start-up"
                    );
                    return Ok(());
                }
            }
            let waiting = Instant::now();
            let first = tokio::select! {
                () = cancel.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            self.metrics
                .idle_seconds
                .inc_by(waiting.elapsed().as_secs_f64());
            let started = Instant::now();
            let mut batch = vec![first];
            while batch.len() < self.config.max_batch {
                // Take what librdkafka has already fetched without arming a
                // timer per record; wait (up to 5 ms) only when it has none.
                let ready = {
                    let recv = self.consumer.recv();
                    tokio::pin!(recv);
                    match futures::FutureExt::now_or_never(&mut recv) {
                        Some(m) => Some(m),
                        None => tokio::time::timeout(Duration::from_millis(5), recv)
                            .await
                            .ok(),
                    }
                };
                match ready {
                    Some(m) => batch.push(m),
                    None => break,
                }
            }
            let mut messages = Vec::with_capacity(batch.len());
            for m in batch {
                match m {
                    Ok(m) => messages.push(m),
                    Err(e) => {
                        // Consumer errors are transient broker trouble: the next poll retries.
                        tracing::warn!(error = %e, "consumer error");
                    }
                }
            }
            if !messages.is_empty() {
                self.process(&messages).await?;
                self.commit_for_lag(&messages);
            }
            // Observed once the batch's state is written (the benchmark reads
            // its sum as the records fully processed).
            self.metrics.batch_records.observe(messages.len() as f64);
            self.metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
            if last_gauges.elapsed() > Duration::from_secs(5) {
                self.update_gauges();
                last_gauges = Instant::now();
            }
        }
        // Stopping: wait for the views already handed to the producer.
        self.reap(true).await
    }

    fn commit_for_lag(&self, messages: &[BorrowedMessage<'_>]) {
        let mut tpl = TopicPartitionList::new();
        let mut latest: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in messages {
            latest.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
        }
        for ((t, p), o) in latest {
            let _ = tpl.add_partition_offset(&t, p, rdkafka::Offset::Offset(o));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit for lag monitoring failed; state offsets are unaffected");
        }
    }

    fn update_gauges(&self) {
        self.metrics
            .store_bytes
            .set(self.store.live_data_bytes() as i64);
        self.metrics
            .block_cache_bytes
            .set(self.store.block_cache_usage() as i64);
    }

    /// The citizen's record, read from the store the first time in a batch.
    fn load<'a>(
        &self,
        citizens: &'a mut FxHashMap<CitizenKey, CitizenRecord>,
        partition: i32,
        citizen: &CitizenKey,
    ) -> anyhow::Result<&'a mut CitizenRecord> {
        if !citizens.contains_key(citizen) {
            let record = match self.store.get(state::citizen_key(partition, citizen))? {
                Some(bytes) => state::decode_record(&bytes, citizen)?,
                None => CitizenRecord::default(),
            };
            citizens.insert(citizen.clone(), record);
        }
        Ok(citizens.get_mut(citizen).expect("inserted above"))
    }

    fn dead_letter(&self, m: &Input<'_>, err: &DecodeError) -> Entry {
        self.metrics
            .dead_letters
            .with_label_values(&[m.topic, err.reason()])
            .inc();
        tracing::warn!(topic = m.topic, partition = m.partition, offset = m.offset, reason = err.reason(), error = %err, "dead-lettering record");
        Entry {
            topic: self.config.kafka.topic(DEAD_LETTER_TOPIC),
            key: m.key.to_vec(),
            payload: m.payload.to_vec(),
            headers: vec![
                ("joinery.reason".into(), err.reason().into()),
                ("joinery.error".into(), err.to_string()),
                ("joinery.source.topic".into(), m.topic.into()),
                ("joinery.source.partition".into(), m.partition.to_string()),
                ("joinery.source.offset".into(), m.offset.to_string()),
                ("joinery.service".into(), "processor".into()),
            ],
        }
    }

    /// The writer schema of a record (the only step that may wait, on the
    /// registry; cached after the first record of each schema).
    async fn writer_of(&self, m: &BorrowedMessage<'_>) -> Result<Arc<Schema>, DecodeError> {
        let (id, _) = unframe(m.payload().unwrap_or_default())?;
        match self.registry.schema(id).await {
            Ok(s) => Ok(s),
            Err(e) if e.is_unknown_schema() => Err(DecodeError::UnknownSchemaId(id)),
            Err(e) => Err(e.into()),
        }
    }

    /// Decodes a record with its writer schema into an event of the topic's department.
    /// Decodes a department record with the decoder of its writer schema
    /// (built the first time the batch meets that schema).
    fn decode_with<'s>(
        &'s self,
        input: &Input<'_>,
        writer: &'s Arc<Schema>,
        decoders: &mut FxHashMap<*const Schema, ValueDecoder<'s>>,
    ) -> Result<Event, DecodeError> {
        let (_, body) = unframe(input.payload)?;
        let name = record_name(writer).unwrap_or_default();
        let event_type =
            EventType::from_avro_full_name(&name).ok_or(DecodeError::UnknownRecordType(name))?;
        let department = self
            .config
            .kafka
            .joinery_name(input.topic)
            .and_then(Department::from_topic);
        if department != Some(event_type.department()) {
            return Err(DecodeError::WrongTopic {
                event_type,
                topic: input.topic.into(),
            });
        }
        let decoder = match decoders.entry(Arc::as_ptr(writer)) {
            std::collections::hash_map::Entry::Occupied(d) => d.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(ValueDecoder::new(
                writer,
                self.catalog.event_schema(event_type),
            )?),
        };
        event_from_value(event_type, decoder.decode(body)?)
    }

    /// Processes one batch. The records are grouped by source partition
    /// (their writer schemas fetched first: the only step that waits), and
    /// the partitions are dealt to the workers. Each worker, on its own
    /// thread, decodes its partitions' records (dead-lettering the bad ones),
    /// works their state, watermarks, timers and views, writes that state
    /// with those partitions' offsets and outbox in one RocksDB batch, and
    /// hands the outbox to the producer. Partitions share nothing, so each
    /// partition's state and offsets stay consistent whatever crashes when.
    async fn process(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let mut inputs: BTreeMap<i32, Vec<Input<'_>>> = BTreeMap::new();
        for m in messages {
            let writer = loop {
                match self.writer_of(m).await {
                    Err(e) if !e.is_poison() => {
                        tracing::warn!(error = %e, "cannot decode yet (registry unavailable); retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    other => break other,
                }
            };
            inputs.entry(m.partition()).or_default().push(Input {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                timestamp: m.timestamp().to_millis().unwrap_or(0),
                key: m.key().unwrap_or_default(),
                payload: m.payload().unwrap_or_default(),
                writer,
            });
        }
        let inputs: Vec<PartitionInputs<'_>> = inputs.into_iter().collect();
        let workers = self.config.workers.max(1).min(inputs.len().max(1));
        let handed: Vec<anyhow::Result<Handed>> = if workers <= 1 {
            vec![self.work_share(inputs)]
        } else {
            // Deal partitions to workers by load, biggest first.
            let mut shares: Vec<(usize, Vec<PartitionInputs<'_>>)> =
                (0..workers).map(|_| (0, Vec::new())).collect();
            let mut inputs = inputs;
            inputs.sort_by_key(|(_, e)| std::cmp::Reverse(e.len()));
            for part in inputs {
                let lightest = shares
                    .iter_mut()
                    .min_by_key(|(n, _)| *n)
                    .expect("at least one worker");
                lightest.0 += part.1.len();
                lightest.1.push(part);
            }
            tokio::task::block_in_place(|| {
                use rayon::prelude::*;
                self.workers.install(|| {
                    shares
                        .into_par_iter()
                        .map(|(_, parts)| self.work_share(parts))
                        .collect()
                })
            })
        };
        let mut shares = Vec::with_capacity(handed.len());
        for h in handed {
            shares.push(h?);
        }
        self.await_deliveries(shares);
        self.reap(false).await
    }

    /// One worker's share of a batch: works each of its partitions, writes
    /// their state, offsets and outbox in one RocksDB batch, then hands the
    /// outbox to the producer in order (so each citizen's views keep their
    /// order; the next batch starts only when every worker is done).
    fn work_share(&self, parts: Vec<PartitionInputs<'_>>) -> anyhow::Result<Handed> {
        let mut batch = self.store.batch();
        let mut outbox = Vec::new();
        for (p, inputs) in parts {
            let work = self.work_partition(p, inputs)?;
            for (k, v) in work.ops {
                match v {
                    Some(v) => batch.put(k, v),
                    None => batch.delete(k),
                }
            }
            for ((topic, p), next) in &work.offsets {
                batch.set_offset(topic, *p, *next);
            }
            outbox.extend(work.outbox);
        }
        use std::sync::atomic::Ordering;
        let first_seq = self
            .next_seq
            .fetch_add(outbox.len() as u64, Ordering::SeqCst);
        for (i, entry) in outbox.iter().enumerate() {
            batch.put(outbox::key(first_seq + i as u64), entry.encode());
        }
        self.store.write(batch)?;
        let mut deliveries = Vec::with_capacity(outbox.len());
        for e in &outbox {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &e.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&e.topic)
                .key(&e.key)
                .payload(&e.payload)
                .headers(headers);
            loop {
                match self.producer.send_result(record) {
                    Ok(d) => {
                        deliveries.push(d);
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        r,
                    )) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((err, _)) => anyhow::bail!("producing to {} failed: {err}; stopping so that the outbox is republished on restart", e.topic),
                }
            }
        }
        Ok(Handed {
            first_seq,
            deliveries,
        })
    }

    /// One source partition's share of a batch: loads its citizens, applies
    /// the events, advances its watermark, fires its due timers, evaluates
    /// every changed citizen and returns the writes and views. Reads the
    /// store but writes nothing; touches no other partition's keys.
    fn work_partition(&self, p: i32, inputs: Vec<Input<'_>>) -> anyhow::Result<PartitionWork> {
        let mut out = PartitionWork::default();
        // Keys are pseudonyms (uniform hex): a fast non-keyed hash is enough.
        let mut citizens: FxHashMap<CitizenKey, CitizenRecord> = FxHashMap::default();
        let mut events = Vec::with_capacity(inputs.len());
        let mut decoders = FxHashMap::default();
        let view_encoder = ValueEncoder::new(self.catalog.view_schema())?;
        for input in &inputs {
            out.offsets
                .insert((input.topic.to_owned(), p), input.offset + 1);
            let decoded = match &input.writer {
                Ok(w) => self.decode_with(input, w, &mut decoders),
                Err(e) => {
                    out.outbox.push(self.dead_letter(input, e));
                    continue;
                }
            };
            match decoded {
                Ok(e) => events.push((e, input.timestamp)),
                Err(e) => out.outbox.push(self.dead_letter(input, &e)),
            }
        }
        // Read every citizen of the batch in one sorted multi-get.
        let mut wanted: Vec<&CitizenKey> = events.iter().map(|(e, _)| &e.citizen_key).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let keys: Vec<Vec<u8>> = wanted.iter().map(|c| state::citizen_key(p, c)).collect();
        for (c, value) in wanted.into_iter().zip(self.store.multi_get(&keys, true)?) {
            let record = match value {
                Some(bytes) => state::decode_record(&bytes, c)?,
                None => CitizenRecord::default(),
            };
            citizens.insert(c.clone(), record);
        }
        // Changed citizens, in first-touched order, and the same as a set.
        let mut dirty: Vec<CitizenKey> = Vec::new();
        let mut is_dirty: FxHashSet<CitizenKey> = FxHashSet::default();
        let mut fired: FxHashSet<CitizenKey> = FxHashSet::default();
        let mut seen = i64::MIN;
        // The record that moves the watermark (the first consumed with the
        // greatest event time): the cause of the timers it fires, for
        // freshness. Only `ingested_at` depends on it; which record it is can
        // differ between runs when topics interleave differently.
        let mut watermark_cause = 0;
        for (event, ts) in events {
            if event.occurred_at > seen {
                seen = event.occurred_at;
                watermark_cause = ts;
            }
            let label = event.event_type.to_string();
            let citizen = event.citizen_key.clone();
            let record = self.load(&mut citizens, p, &citizen)?;
            if record.events.insert(event) {
                record.ingested_at = record.ingested_at.max(ts);
                if is_dirty.insert(citizen.clone()) {
                    dirty.push(citizen);
                }
                self.metrics
                    .events
                    .with_label_values(&[&label, "applied"])
                    .inc();
            } else {
                self.metrics
                    .events
                    .with_label_values(&[&label, "duplicate"])
                    .inc();
            }
        }

        // Advance the partition's watermark and fire its due timers.
        let stored = match self.store.get(state::max_time_key(p))? {
            Some(b) => i64::from_be_bytes(
                b.as_slice()
                    .try_into()
                    .map_err(|_| anyhow::anyhow!("corrupt watermark of partition {p}"))?,
            ),
            None => i64::MIN,
        };
        let max_time = stored.max(seen);
        out.ops.push((
            state::max_time_key(p),
            Some(max_time.to_be_bytes().to_vec()),
        ));
        let wm = max_time.saturating_sub(self.config.allowed_lateness);
        self.metrics
            .watermark
            .with_label_values(&[&p.to_string()])
            .set(wm / 1000);
        let previous_wm = stored.saturating_sub(self.config.allowed_lateness);
        if wm > previous_wm {
            // Timers at or before the previous watermark have fired and
            // every new timer lies after the watermark it was set at, so
            // only (previous, current] can hold due timers; starting there
            // also skips the tombstones of timers already fired.
            let due = self
                .store
                .scan_range(&state::timer_end(p, previous_wm), &state::timer_end(p, wm))?;
            for (k, _) in due {
                out.ops.push((k.to_vec(), None));
                if let Some(c) = state::timer_citizen(&k, p) {
                    self.load(&mut citizens, p, &c)?.timer = None;
                    fired.insert(c.clone());
                    if is_dirty.insert(c.clone()) {
                        dirty.push(c);
                    }
                }
            }
        }

        for citizen in &dirty {
            let record = citizens
                .get_mut(citizen)
                .expect("dirty citizens are loaded");
            // What a changed view reflects: the citizen's own newest event,
            // or, when a timer fired, the record that moved the watermark.
            let cause = if fired.contains(citizen) {
                record.ingested_at.max(watermark_cause)
            } else {
                record.ingested_at
            };
            let mut next_timer: Option<Millis> = None;
            for mission in &self.missions {
                let eval = mission.evaluate(&record.events, wm);
                next_timer = match (next_timer, eval.next_deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let previous = record.views.get(mission.id());
                let visible_change = match previous {
                    None => eval.in_cohort || !eval.snapshots.is_empty(),
                    Some(prev) => {
                        let (a, b) = (&prev.evaluation, &eval);
                        (
                            a.in_cohort,
                            &a.area_code,
                            &a.cohort_month,
                            &a.outcomes,
                            &a.snapshots,
                        ) != (
                            b.in_cohort,
                            &b.area_code,
                            &b.cohort_month,
                            &b.outcomes,
                            &b.snapshots,
                        )
                    }
                };
                if !visible_change {
                    continue;
                }
                let version = view_version(wm, record.events.len());
                if previous.is_some_and(|p| p.version >= version) {
                    // Cannot happen: a visible change needs a new event or a higher watermark.
                    tracing::error!(citizen = %citizen, version, "view version did not increase; view not published");
                    continue;
                }
                let view = MissionView {
                    mission: mission.id().into(),
                    citizen_key: citizen.clone(),
                    version,
                    watermark: wm,
                    in_cohort: eval.in_cohort,
                    area_code: eval.area_code.clone(),
                    cohort_month: eval.cohort_month.clone(),
                    outcomes: eval.outcomes.clone(),
                    snapshots: eval.snapshots.clone(),
                    ingested_at: cause,
                };
                let body = view_encoder.encode(view_to_value(&view))?;
                out.outbox.push(Entry {
                    topic: self.config.kafka.topic(&view_topic(mission.id())),
                    key: citizen.as_str().as_bytes().to_vec(),
                    payload: frame(self.view_schema_id, &body),
                    headers: vec![],
                });
                self.metrics.views.with_label_values(&[mission.id()]).inc();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                self.metrics
                    .event_to_view
                    .with_label_values(&[mission.id()])
                    .observe((now - cause).max(0) as f64 / 1000.0);
                record.views.insert(
                    mission.id().into(),
                    state::Published {
                        version,
                        evaluation: eval,
                    },
                );
            }
            if record.timer != next_timer {
                if let Some(old) = record.timer {
                    out.ops.push((state::timer_key(p, old, citizen), None));
                }
                if let Some(new) = next_timer {
                    out.ops
                        .push((state::timer_key(p, new, citizen), Some(Vec::new())));
                }
                record.timer = next_timer;
            }
            out.ops.push((
                state::citizen_key(p, citizen),
                Some(state::encode_record(record)?),
            ));
        }
        Ok(out)
    }

    /// Waits in the background for the acknowledgements of what a batch's
    /// workers handed to the producer, while the next batches are worked (at
    /// most [`MAX_BATCHES_IN_FLIGHT`] batches wait at once). Entries leave the
    /// outbox only in batch order ([`Processor::reap`]), so after a crash the
    /// outbox holds every view from the oldest unacknowledged batch on, and
    /// republishing it sends each citizen's views in their original order
    /// (the newest view stays the last, and so the compacted one). A failed
    /// delivery stops the processor: its entries stay in the outbox and the
    /// restart republishes them.
    fn await_deliveries(&self, shares: Vec<Handed>) {
        let ranges: Vec<(u64, u64)> = shares
            .iter()
            .map(|h| (h.first_seq, h.deliveries.len() as u64))
            .collect();
        let deliveries: Vec<_> = shares.into_iter().flat_map(|h| h.deliveries).collect();
        let handle = tokio::spawn(async move {
            for d in deliveries {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((err, msg))) => anyhow::bail!(
                        "producing to {} failed: {err}; stopping so that the outbox is republished on restart",
                        rdkafka::Message::topic(&msg)
                    ),
                    Err(_) => anyhow::bail!("a delivery was cancelled; stopping so that the outbox is republished on restart"),
                }
            }
            Ok(())
        });
        self.in_flight
            .lock()
            .expect("lock")
            .push_back(InFlight { handle, ranges });
    }

    /// Collects acknowledged batches in order, oldest first (all of them
    /// with `all`; otherwise those done, and enough to keep at most
    /// [`MAX_BATCHES_IN_FLIGHT`] waiting), deleting their outbox entries;
    /// returns the first failure.
    async fn reap(&self, all: bool) -> anyhow::Result<()> {
        loop {
            let next = {
                let mut q = self.in_flight.lock().expect("lock");
                let due = q.front().is_some_and(|b| {
                    all || b.handle.is_finished() || q.len() > MAX_BATCHES_IN_FLIGHT
                });
                if due {
                    q.pop_front()
                } else {
                    None
                }
            };
            let Some(batch) = next else {
                return Ok(());
            };
            batch.handle.await??;
            let mut deletes = self.store.batch();
            for (first, count) in batch.ranges {
                for seq in first..first + count {
                    deletes.delete(outbox::key(seq));
                }
            }
            self.store.write(deletes)?;
        }
    }

    /// Produces entries in order and waits for every acknowledgement.
    async fn publish(&self, entries: &[Entry]) -> anyhow::Result<()> {
        let mut pending = Vec::with_capacity(entries.len());
        for e in entries {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &e.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let record = FutureRecord::to(&e.topic)
                .key(&e.key)
                .payload(&e.payload)
                .headers(headers);
            pending.push(self.producer.send(record, Duration::from_secs(60)));
        }
        for (r, e) in futures::future::join_all(pending)
            .await
            .into_iter()
            .zip(entries)
        {
            if let Err((err, _)) = r {
                // The entries stay in the outbox; the restart publishes them.
                anyhow::bail!("producing to {} failed: {err}; stopping so that the outbox is republished on restart", e.topic);
            }
        }
        Ok(())
    }

    /// Publishes what a previous run wrote but may not have produced.
    async fn flush_outbox(&self) -> anyhow::Result<()> {
        let pending = self.store.scan(outbox::PREFIX, None)?;
        if pending.is_empty() {
            return Ok(());
        }
        tracing::info!(
            records = pending.len(),
            "republishing the outbox left by the previous run"
        );
        let mut entries = Vec::with_capacity(pending.len());
        for (k, v) in &pending {
            let entry = Entry::decode(v)
                .ok_or_else(|| anyhow::anyhow!("corrupt outbox entry {:?}", outbox::seq_of(k)))?;
            entries.push(entry);
        }
        // In sequence order: each citizen's views go out in their order.
        self.publish(&entries).await?;
        let mut batch = self.store.batch();
        for (k, _) in &pending {
            batch.delete(k);
        }
        self.store.write(batch)?;
        Ok(())
    }
}
