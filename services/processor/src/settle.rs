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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use apache_avro::Schema;
use joinery_runtime::kafka::KafkaSettings;
use joinery_wire::codec::{decode_value, view_from_value};
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
/// returns how many views it republished.
pub async fn settle_views(
    kafka: &KafkaSettings,
    registry_url: &str,
    topic: &str,
    from: &BTreeMap<i32, i64>,
) -> anyhow::Result<u64> {
    let reader = Reader {
        consumer: kafka
            .consumer("joinery-rebuild-settle", "joinery-rebuild-settle")
            .create()?,
        registry: RegistryClient::new(registry_url),
        schemas: Mutex::new(FxHashMap::default()),
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
            .scan(&position, &ends, |p, m| {
                let Some(key) = m.key() else { return Ok(()) };
                let version = reader.version(m)?;
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
                Ok(())
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
            .scan(&starts, &stops, |p, m| {
                if wanted.get(&p).is_some_and(|o| o.contains(&m.offset())) {
                    records.push((
                        p,
                        m.key().unwrap_or_default().to_vec(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                }
                Ok(())
            })
            .await?;
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
    /// Writer schemas met so far, by id (fetched before a record is handed on).
    schemas: Mutex<FxHashMap<u32, Arc<Schema>>>,
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
            let (_, high) = self
                .consumer
                .fetch_watermarks(self.topic, p, Duration::from_secs(10))
                .with_context(|| format!("reading the end of {} partition {p}", self.topic))?;
            ends.insert(p, high);
        }
        Ok(ends)
    }

    /// Calls `f` on every view record (control records skipped) of each
    /// partition from `from` up to `to` (exclusive).
    async fn scan(
        &self,
        from: &BTreeMap<i32, i64>,
        to: &BTreeMap<i32, i64>,
        mut f: impl FnMut(i32, &BorrowedMessage<'_>) -> anyhow::Result<()>,
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
        let mut quiet = 0;
        while !open.is_empty() {
            let m = match tokio::time::timeout(Duration::from_secs(2), self.consumer.recv()).await {
                Ok(m) => m?,
                Err(_) => {
                    // Nothing to read for a while: the rest of a range was
                    // compacted away (or ends in records no reader sees).
                    quiet += 1;
                    if quiet >= 3 {
                        tracing::warn!(topic = self.topic, partitions = ?open.keys().collect::<Vec<_>>(), "no more records before the end offsets; taking the ranges as read");
                        open.clear();
                    }
                    continue;
                }
            };
            quiet = 0;
            let p = m.partition();
            let Some(&(start, end)) = open.get(&p) else {
                continue;
            };
            if m.offset() < start {
                // Fetched for an earlier assignment.
                continue;
            }
            if m.offset() >= end {
                open.remove(&p);
                continue;
            }
            let control = m
                .headers()
                .is_some_and(|h| h.iter().any(|h| h.key == CONTROL_HEADER));
            if !control {
                self.fetch_schema(&m).await?;
                f(p, &m)?;
            }
            if m.offset() + 1 >= end {
                open.remove(&p);
            }
        }
        self.consumer.unassign()?;
        Ok(())
    }

    /// Fetches the writer schema of a view record, the first time its id is met.
    async fn fetch_schema(&self, m: &BorrowedMessage<'_>) -> anyhow::Result<()> {
        let (id, _) = unframe(m.payload().unwrap_or_default())?;
        if !self.schemas.lock().expect("lock").contains_key(&id) {
            let schema = self
                .registry
                .schema(id)
                .await
                .with_context(|| format!("the schema of a view in {}", self.topic))?;
            self.schemas.lock().expect("lock").insert(id, schema);
        }
        Ok(())
    }

    /// The version of a view record whose schema [`Reader::scan`] fetched.
    fn version(&self, m: &BorrowedMessage<'_>) -> anyhow::Result<i64> {
        let (id, body) = unframe(m.payload().unwrap_or_default())?;
        let writer = self.schemas.lock().expect("lock")[&id].clone();
        Ok(view_from_value(decode_value(&writer, self.catalog.view_schema(), body)?)?.version)
    }
}
