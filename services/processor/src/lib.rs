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

mod outbox;
mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use joinery_domain::event::DAY_MS;
use joinery_domain::{CitizenKey, Department, EventType, Millis, MissionView};
use joinery_engine::{load_missions, Mission, MissionDef};
use joinery_runtime::http::{bind, ops_router};
use joinery_runtime::kafka::{
    ensure_topics, KafkaSettings, RebalanceEvent, StoredOffsetsContext, TopicSpec,
};
use joinery_runtime::{serve, Health, Supervisor, Telemetry};
use joinery_store::{Store, StoreOptions};
use joinery_wire::catalog::view_topic;
use joinery_wire::codec::{
    decode_value, encode_value, event_from_value, record_name, view_to_value,
};
use joinery_wire::framing::{frame, unframe};
use joinery_wire::{Catalog, DecodeError, RegistryClient};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, TopicPartitionList};
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
            max_batch: 1000,
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
    lag: prometheus::IntGaugeVec,
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
            lag: t.register(
                IntGaugeVec::new(
                    Opts::new(
                        "joinery_consumer_lag_records",
                        "Records behind the end of each partition",
                    ),
                    &["group", "topic", "partition"],
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
}

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
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Arc::new(Store::open(&config.data_dir, &config.store)?);
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
    let lag = metrics.lag.clone();
    let lag_group = config.group.clone();
    let context = context.with_stats(Arc::new(move |stats| {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                // Partition -1 is librdkafka's internal one; a lag of -1 is not known yet.
                if *p >= 0 && part.consumer_lag >= 0 {
                    lag.with_label_values(&[&lag_group, topic, &p.to_string()])
                        .set(part.consumer_lag);
                }
            }
        }
    }));
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

    let _restore_watch = restores.spawn(&config.kafka, offsets, cancel.clone())?;
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

/// What one batch changes, before it is written.
#[derive(Default)]
struct BatchWork {
    citizens: HashMap<(i32, CitizenKey), CitizenRecord>,
    dirty: HashSet<(i32, CitizenKey)>,
    offsets: BTreeMap<(String, i32), i64>,
    max_time: HashMap<i32, Millis>,
    /// Kafka timestamp (produce time) of the record holding each partition's
    /// greatest event time in this batch: the cause of the timers it fires.
    watermark_cause: HashMap<i32, Millis>,
    /// Citizens re-evaluated because a timer fired.
    fired: HashSet<(i32, CitizenKey)>,
    outbox: Vec<Entry>,
}

impl Processor {
    /// (topic, partition, low, high) of every department partition, for a rebuild's end.
    fn log_ends(&self) -> anyhow::Result<Vec<(String, i32, i64, i64)>> {
        let mut ends = Vec::new();
        for d in Department::ALL {
            let topic = self.config.kafka.topic(&d.topic());
            for p in 0..self.config.kafka.partitions {
                let (low, high) =
                    joinery_runtime::kafka::retry_transient("log end offsets", || {
                        self.consumer
                            .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    })?;
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
            Some(tokio::task::block_in_place(|| self.log_ends())?)
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
                match tokio::time::timeout(Duration::from_millis(5), self.consumer.recv()).await {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
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
            self.metrics.batch_records.observe(messages.len() as f64);
            if !messages.is_empty() {
                self.process(&messages).await?;
                self.commit_for_lag(&messages);
            }
            self.metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
            if last_gauges.elapsed() > Duration::from_secs(5) {
                self.update_gauges();
                last_gauges = Instant::now();
            }
        }
        Ok(())
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

    fn load(
        &self,
        work: &mut BatchWork,
        partition: i32,
        citizen: &CitizenKey,
    ) -> anyhow::Result<()> {
        let k = (partition, citizen.clone());
        if work.citizens.contains_key(&k) {
            return Ok(());
        }
        let record = match self.store.get(state::citizen_key(partition, citizen))? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => CitizenRecord::default(),
        };
        work.citizens.insert(k, record);
        Ok(())
    }

    fn dead_letter(&self, work: &mut BatchWork, m: &BorrowedMessage<'_>, err: &DecodeError) {
        self.metrics
            .dead_letters
            .with_label_values(&[m.topic(), err.reason()])
            .inc();
        tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), reason = err.reason(), error = %err, "dead-lettering record");
        work.outbox.push(Entry {
            topic: self.config.kafka.topic(DEAD_LETTER_TOPIC),
            key: m.key().unwrap_or_default().to_vec(),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: vec![
                ("joinery.reason".into(), err.reason().into()),
                ("joinery.error".into(), err.to_string()),
                ("joinery.source.topic".into(), m.topic().into()),
                ("joinery.source.partition".into(), m.partition().to_string()),
                ("joinery.source.offset".into(), m.offset().to_string()),
                ("joinery.service".into(), "processor".into()),
            ],
        });
    }

    async fn decode(&self, m: &BorrowedMessage<'_>) -> Result<joinery_domain::Event, DecodeError> {
        let (id, body) = unframe(m.payload().unwrap_or_default())?;
        let writer = match self.registry.schema(id).await {
            Ok(s) => s,
            Err(e) if e.is_unknown_schema() => return Err(DecodeError::UnknownSchemaId(id)),
            Err(e) => return Err(e.into()),
        };
        let name = record_name(&writer).unwrap_or_default();
        let event_type =
            EventType::from_avro_full_name(&name).ok_or(DecodeError::UnknownRecordType(name))?;
        let department = self
            .config
            .kafka
            .joinery_name(m.topic())
            .and_then(Department::from_topic);
        if department != Some(event_type.department()) {
            return Err(DecodeError::WrongTopic {
                event_type,
                topic: m.topic().into(),
            });
        }
        let value = decode_value(&writer, self.catalog.event_schema(event_type), body)?;
        event_from_value(event_type, value)
    }

    async fn process(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let mut work = BatchWork::default();
        for m in messages {
            work.offsets
                .insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            let event = loop {
                match self.decode(m).await {
                    Err(e) if !e.is_poison() => {
                        tracing::warn!(error = %e, "cannot decode yet (registry unavailable); retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    other => break other,
                }
            };
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    self.dead_letter(&mut work, m, &e);
                    continue;
                }
            };
            let p = m.partition();
            let ts = m.timestamp().to_millis().unwrap_or(0);
            let max = work.max_time.entry(p).or_insert(i64::MIN);
            if event.occurred_at > *max {
                *max = event.occurred_at;
                // The record that moves the watermark (the first with the
                // greatest event time): deterministic for any batching.
                work.watermark_cause.insert(p, ts);
            }
            let label = event.event_type.to_string();
            let citizen = event.citizen_key.clone();
            self.load(&mut work, p, &citizen)?;
            let record = work
                .citizens
                .get_mut(&(p, citizen.clone()))
                .expect("loaded above");
            if record.events.insert(event) {
                record.ingested_at = record.ingested_at.max(ts);
                work.dirty.insert((p, citizen));
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

        let mut batch = self.store.batch();
        // Advance each touched partition's watermark and fire its timers.
        let mut watermarks: HashMap<i32, Millis> = HashMap::new();
        let seen_times: Vec<(i32, Millis)> = work.max_time.iter().map(|(p, t)| (*p, *t)).collect();
        for (p, seen) in seen_times {
            let stored = match self.store.get(state::max_time_key(p))? {
                Some(b) => i64::from_be_bytes(
                    b.as_slice()
                        .try_into()
                        .map_err(|_| anyhow::anyhow!("corrupt watermark of partition {p}"))?,
                ),
                None => i64::MIN,
            };
            let max_time = stored.max(seen);
            batch.put(state::max_time_key(p), max_time.to_be_bytes());
            let wm = max_time.saturating_sub(self.config.allowed_lateness);
            watermarks.insert(p, wm);
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
                    batch.delete(&k);
                    if let Some(c) = state::timer_citizen(&k, p) {
                        self.load(&mut work, p, &c)?;
                        if let Some(r) = work.citizens.get_mut(&(p, c.clone())) {
                            r.timer = None;
                        }
                        work.fired.insert((p, c.clone()));
                        work.dirty.insert((p, c));
                    }
                }
            }
        }

        for (p, citizen) in &work.dirty {
            let wm = match watermarks.get(p) {
                Some(w) => *w,
                None => continue,
            };
            let record = work
                .citizens
                .get_mut(&(*p, citizen.clone()))
                .expect("dirty citizens are loaded");
            // What a changed view reflects: the citizen's own newest event,
            // or, when a timer fired, the record that moved the watermark.
            let cause = if work.fired.contains(&(*p, citizen.clone())) {
                record
                    .ingested_at
                    .max(work.watermark_cause.get(p).copied().unwrap_or(0))
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
                    None => eval.in_cohort,
                    Some(prev) => {
                        let (a, b) = (&prev.evaluation, &eval);
                        (a.in_cohort, &a.area_code, &a.cohort_month, &a.outcomes)
                            != (b.in_cohort, &b.area_code, &b.cohort_month, &b.outcomes)
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
                    ingested_at: cause,
                };
                let body = encode_value(self.catalog.view_schema(), view_to_value(&view))?;
                work.outbox.push(Entry {
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
                    batch.delete(state::timer_key(*p, old, citizen));
                }
                if let Some(new) = next_timer {
                    batch.put(state::timer_key(*p, new, citizen), []);
                }
                record.timer = next_timer;
            }
        }
        for ((p, citizen), record) in &work.citizens {
            if work.dirty.contains(&(*p, citizen.clone())) {
                batch.put(state::citizen_key(*p, citizen), serde_json::to_vec(record)?);
            }
        }
        for ((topic, p), next) in &work.offsets {
            batch.set_offset(topic, *p, *next);
        }
        use std::sync::atomic::Ordering;
        let first_seq = self
            .next_seq
            .fetch_add(work.outbox.len() as u64, Ordering::SeqCst);
        for (i, entry) in work.outbox.iter().enumerate() {
            batch.put(outbox::key(first_seq + i as u64), entry.encode());
        }
        self.store.write(batch)?;
        self.publish(first_seq, work.outbox).await
    }

    /// Produces outbox entries (sequence numbers from `first_seq`), waits for
    /// every acknowledgement, then deletes them from the outbox.
    async fn publish(&self, first_seq: u64, entries: Vec<Entry>) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pending = Vec::with_capacity(entries.len());
        for e in &entries {
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
            .zip(&entries)
        {
            if let Err((err, _)) = r {
                // The entries stay in the outbox; the restart publishes them.
                anyhow::bail!("producing to {} failed: {err}; stopping so that the outbox is republished on restart", e.topic);
            }
        }
        let mut batch = self.store.batch();
        for seq in first_seq..first_seq + entries.len() as u64 {
            batch.delete(outbox::key(seq));
        }
        self.store.write(batch)?;
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
        let first = pending
            .first()
            .and_then(|(k, _)| outbox::seq_of(k))
            .unwrap_or(0);
        let mut entries = Vec::with_capacity(pending.len());
        for (k, v) in &pending {
            let entry = Entry::decode(v)
                .ok_or_else(|| anyhow::anyhow!("corrupt outbox entry {:?}", outbox::seq_of(k)))?;
            entries.push(entry);
        }
        // Sequence numbers are contiguous: entries are written and deleted in runs.
        self.publish(first, entries).await
    }
}
