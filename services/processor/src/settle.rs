//! The last step of a rebuild before its *complete* mark: make every
//! citizen's newest view the last record of that citizen in the view topic,
//! so that compaction keeps the newest.
//!
//! Compaction keeps a key's last record, not its highest version. While a
//! rebuild replays the log, the live processor goes on publishing, and its
//! views of the citizens it touches are newer (they reflect more of the
//! log) than the rebuild's views of the same citizens, which may land after
//! them. Live readers ignore the rebuild's older ones (projections keep the
//! highest version); a reader that starts from the beginning of the topic
//! once it is compacted would find only the rebuild's. So after the
//! rebuild, the records since the reset are read, and each citizen whose
//! last record is older than its newest is given its newest again. The
//! live processor may publish during this pass too, so it is repeated over
//! what arrived meanwhile (our copies included) until nothing is out of
//! order.
//!
//! This needs the live views published during the rebuild to be still in
//! the topic: Joinery creates view topics with `min.compaction.lag.ms` of a
//! day ([`joinery_runtime::kafka::MIN_COMPACTION_LAG_MS`]), and the pass
//! warns when a topic's lag is shorter than the rebuild took.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use joinery_runtime::kafka::{min_compaction_lag_ms, retry_transient, KafkaSettings};
use joinery_runtime::retry::Policy;
use joinery_wire::codec::{decode_value, view_from_value, writer_schema};
use joinery_wire::control::CONTROL_HEADER;
use joinery_wire::framing::unframe;
use joinery_wire::{Catalog, RegistryClient};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

/// Passes after which a citizen the live processor keeps changing is left
/// for its next view to settle (each pass takes well under a second of
/// live traffic).
const MAX_PASSES: usize = 10;

/// How long a read may go without reaching any record of a range before
/// the settle fails (a broker restart or leader election takes less). A
/// registry that does not answer fails it after as long
/// ([`Policy::REGISTRY_DURING_SETTLE`]).
const STALL: Duration = Duration::from_secs(60);

/// What the pass knows of one citizen's records since the reset.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// Highest version, and where its record is.
    best: i64,
    best_at: (i32, i64),
    /// Version of the last record (by offset).
    last: i64,
}

/// Makes each citizen's highest-versioned view since `from` (each
/// partition's first offset after the reset) its last record in `topic`;
/// returns how many views it republished. `started_at` (ms since the
/// epoch) is when the rebuild began, to check that compaction cannot have
/// dropped a view published since.
pub async fn settle_views(
    kafka: &KafkaSettings,
    registry_url: &str,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    started_at: i64,
) -> anyhow::Result<u64> {
    let lag = min_compaction_lag_ms(kafka, topic).await?;
    let took = chrono::Utc::now().timestamp_millis() - started_at;
    if lag < took {
        tracing::warn!(
            topic,
            min_compaction_lag_ms = lag,
            rebuild_ms = took,
            "the topic may have compacted away live views published during the rebuild, so a reader starting from its beginning may see an older view of those citizens until they change again; set min.compaction.lag.ms={} on it (kafka-configs.sh --alter --entity-type topics --entity-name {topic} --add-config min.compaction.lag.ms={})",
            joinery_runtime::kafka::MIN_COMPACTION_LAG_MS,
            joinery_runtime::kafka::MIN_COMPACTION_LAG_MS
        );
    }
    let reader = Reader {
        consumer: kafka
            .consumer("joinery-rebuild-settle", "joinery-rebuild-settle")
            .create()?,
        registry: RegistryClient::new(registry_url),
        catalog: Catalog::load(),
        topic,
    };
    let producer: FutureProducer = kafka.producer("joinery-rebuild-settle").create()?;
    let mut seen: FxHashMap<Vec<u8>, Seen> = FxHashMap::default();
    let mut position = from.clone();
    let mut republished = 0;
    for pass in 1..=MAX_PASSES {
        let ends = reader.ends(position.keys().copied()).await?;
        reader
            .scan(&position, &ends, |p, m, version| {
                let (Some(key), Some(version)) = (m.key(), version) else {
                    return;
                };
                let at = (p, m.offset());
                seen.entry(key.to_vec())
                    .and_modify(|s| {
                        if version > s.best {
                            s.best = version;
                            s.best_at = at;
                        }
                        s.last = version;
                    })
                    .or_insert(Seen {
                        best: version,
                        best_at: at,
                        last: version,
                    });
            })
            .await?;
        position = ends;
        let mut wanted: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
        for s in seen.values().filter(|s| s.last < s.best) {
            wanted.entry(s.best_at.0).or_default().insert(s.best_at.1);
        }
        let count: usize = wanted.values().map(BTreeSet::len).sum();
        if count == 0 {
            return Ok(republished);
        }
        tracing::info!(
            pass,
            views = count,
            "republishing views the rebuild's older ones would hide after compaction"
        );
        let mut records = Vec::with_capacity(count);
        let starts = wanted
            .iter()
            .map(|(p, offsets)| (*p, *offsets.first().expect("non-empty")))
            .collect();
        let stops = wanted
            .iter()
            .map(|(p, offsets)| (*p, offsets.last().expect("non-empty") + 1))
            .collect();
        reader
            .scan(&starts, &stops, |p, m, _| {
                if wanted.get(&p).is_some_and(|o| o.contains(&m.offset())) {
                    records.push((
                        p,
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                }
            })
            .await?;
        if records.len() != count {
            anyhow::bail!(
                "read back {} of the {count} views to republish in {topic}; run the rebuild again",
                records.len()
            );
        }
        let mut acks = Vec::with_capacity(records.len());
        for (p, key, payload) in &records {
            let record = FutureRecord::to(topic)
                .partition(*p)
                .key(key)
                .payload(payload);
            acks.push(producer.send(record, Duration::from_secs(30)));
        }
        for ack in futures::future::join_all(acks).await {
            ack.map_err(|(e, _)| anyhow::anyhow!("republishing a view to {topic}: {e}"))?;
        }
        republished += records.len() as u64;
    }
    tracing::warn!(
        passes = MAX_PASSES,
        "some citizens' views kept changing while the rebuild settled; their next view settles them"
    );
    Ok(republished)
}

/// Reads a view topic by partition and offset, outside any consumer group.
struct Reader<'a> {
    consumer: StreamConsumer,
    registry: RegistryClient,
    catalog: Catalog,
    topic: &'a str,
}

impl Reader<'_> {
    /// The end (next offset) of each partition now.
    async fn ends(
        &self,
        partitions: impl Iterator<Item = i32>,
    ) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut ends = BTreeMap::new();
        for p in partitions {
            // As the processor reads its log ends: retrying a broker that
            // is electing leaders, off the async threads.
            let (_, high) = retry_transient("view topic end offsets", || {
                tokio::task::block_in_place(|| {
                    self.consumer
                        .fetch_watermarks(self.topic, p, Duration::from_secs(10))
                })
            })
            .await
            .with_context(|| format!("reading the end of {} partition {p}", self.topic))?;
            ends.insert(p, high);
        }
        Ok(ends)
    }

    /// Calls `f` on every view record (control records skipped) of each
    /// partition from `from` up to `to` (exclusive), with its version
    /// (`None`, after a warning, for a record that does not decode as a
    /// view). Fails when no record of an unfinished range arrives for
    /// [`STALL`]: the producers are not transactional, so no range ends in
    /// a gap, and a record compacted away has a newer one of its key after it.
    async fn scan(
        &self,
        from: &BTreeMap<i32, i64>,
        to: &BTreeMap<i32, i64>,
        mut f: impl FnMut(i32, &BorrowedMessage<'_>, Option<i64>),
    ) -> anyhow::Result<()> {
        // Partition -> (first offset, end) still to read.
        let mut open: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for (p, start) in from {
            let end = to.get(p).copied().unwrap_or(*start);
            if *start < end {
                tpl.add_partition_offset(self.topic, *p, Offset::Offset(*start))?;
                open.insert(*p, (*start, end));
            }
        }
        if open.is_empty() {
            return Ok(());
        }
        self.consumer.assign(&tpl)?;
        // A partition paused when an earlier scan finished it reads again.
        self.consumer.resume(&tpl)?;
        let mut progress = Instant::now();
        while !open.is_empty() {
            if progress.elapsed() > STALL {
                anyhow::bail!(
                    "no record of {} arrived for {} s while reading partitions {:?} (from, end); run the rebuild again",
                    self.topic,
                    STALL.as_secs(),
                    open
                );
            }
            let Ok(m) = tokio::time::timeout(Duration::from_secs(1), self.consumer.recv()).await
            else {
                continue;
            };
            let m = m?;
            let p = m.partition();
            let Some(&(start, end)) = open.get(&p) else {
                continue;
            };
            if m.offset() < start {
                // Fetched for an earlier assignment.
                continue;
            }
            progress = Instant::now();
            if m.offset() < end {
                let control = m
                    .headers()
                    .is_some_and(|h| h.iter().any(|h| h.key == CONTROL_HEADER));
                if !control {
                    let version = self.version(&m).await;
                    f(p, &m, version);
                }
            }
            if m.offset() + 1 >= end {
                open.remove(&p);
                // Stop fetching the live traffic after the range.
                let mut done = TopicPartitionList::new();
                done.add_partition(self.topic, p);
                self.consumer.pause(&done)?;
            }
        }
        self.consumer.unassign()?;
        Ok(())
    }

    /// The version of a view record; `None` (with a warning) when it does
    /// not decode. Waits out a registry that is briefly unreachable.
    async fn version(&self, m: &BorrowedMessage<'_>) -> Option<i64> {
        match self.decode_version(m).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(topic = self.topic, partition = m.partition(), offset = m.offset(), error = %e, "undecodable view left as it is");
                None
            }
        }
    }

    async fn decode_version(&self, m: &BorrowedMessage<'_>) -> anyhow::Result<i64> {
        let (id, body) = unframe(m.payload().unwrap_or_default())?;
        // The registry client caches schemas: only the first record of a
        // schema asks the registry.
        let writer = writer_schema(&self.registry, id, &Policy::REGISTRY_DURING_SETTLE).await?;
        Ok(view_from_value(decode_value(&writer, self.catalog.view_schema(), body)?)?.version)
    }
}
