//! Producing what the partition steps decided: the outbox entries a worker
//! wrote with its state go to Kafka, and leave the outbox once acknowledged.
//!
//! Place in the data flow: after a worker's RocksDB write (state, offsets
//! and outbox together), [`Publisher::hand`] gives its entries to the
//! producer in order; [`Publisher::await_deliveries`] waits for them in the
//! background while later batches are worked; [`Publisher::reap`] deletes
//! acknowledged entries in batch order. At start-up
//! [`Publisher::flush_outbox`] republishes what a previous run left.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use joinery_store::Store;
use parking_lot::Mutex;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::outbox::{self, Entry};

/// Batches whose views may await Kafka's acknowledgement while later
/// batches are worked.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// A batch whose views await Kafka's acknowledgement, and its outbox
/// ranges (first sequence number, count), deleted once it is acknowledged.
struct InFlight {
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    ranges: Vec<(u64, u64)>,
}

/// What a worker handed to the producer: the outbox sequence numbers from
/// `first_seq` and their pending deliveries.
pub(crate) struct Handed {
    first_seq: u64,
    deliveries: Vec<DeliveryFuture>,
}

/// The processor's producer and its outbox bookkeeping.
pub(crate) struct Publisher {
    /// The idempotent producer views and dead letters go through.
    producer: FutureProducer,
    /// The store holding the outbox.
    store: Arc<Store>,
    /// The next outbox sequence number.
    next_seq: AtomicU64,
    /// Batches awaiting acknowledgement, oldest first.
    in_flight: Mutex<VecDeque<InFlight>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

fn record<'a>(e: &'a Entry) -> FutureRecord<'a, [u8], [u8]> {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &e.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    let record = FutureRecord::to(&e.topic)
        .key(e.key.as_slice())
        .payload(e.payload.as_slice())
        .headers(headers);
    match e.partition {
        Some(p) => record.partition(p),
        None => record,
    }
}

impl Publisher {
    /// A publisher over `store`'s outbox, numbering after its last entry.
    pub(crate) fn new(producer: FutureProducer, store: Arc<Store>) -> anyhow::Result<Publisher> {
        let next_seq = store
            .scan(outbox::PREFIX, None)?
            .last()
            .and_then(|(k, _)| outbox::seq_of(k))
            .map_or(0, |s| s + 1);
        Ok(Publisher {
            producer,
            store,
            next_seq: next_seq.into(),
            in_flight: Mutex::default(),
        })
    }

    /// Reserves `n` outbox sequence numbers; returns the first.
    pub(crate) fn reserve(&self, n: usize) -> u64 {
        self.next_seq.fetch_add(n as u64, Ordering::SeqCst)
    }

    /// Hands `entries` (numbered from `first_seq`, already in the outbox)
    /// to the producer in order, waiting while its queue is full.
    pub(crate) fn hand(&self, first_seq: u64, entries: &[Entry]) -> anyhow::Result<Handed> {
        let mut deliveries = Vec::with_capacity(entries.len());
        for e in entries {
            let mut r = record(e);
            loop {
                match self.producer.send_result(r) {
                    Ok(d) => {
                        deliveries.push(d);
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        back,
                    )) => {
                        r = back;
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

    /// Waits in the background for the acknowledgements of what a batch's
    /// workers handed to the producer, while the next batches are worked (at
    /// most [`MAX_BATCHES_IN_FLIGHT`] batches wait at once). Entries leave the
    /// outbox only in batch order ([`Publisher::reap`]), so after a crash the
    /// outbox holds every view from the oldest unacknowledged batch on, and
    /// republishing it sends each citizen's views in their original order
    /// (the newest view stays the last, and so the compacted one). A failed
    /// delivery stops the processor: its entries stay in the outbox and the
    /// restart republishes them.
    pub(crate) fn await_deliveries(&self, shares: Vec<Handed>) {
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
        self.in_flight.lock().push_back(InFlight { handle, ranges });
    }

    /// Collects acknowledged batches in order, oldest first (all of them
    /// with `all`; otherwise those done, and enough to keep at most
    /// [`MAX_BATCHES_IN_FLIGHT`] waiting), deleting their outbox entries;
    /// returns the first failure.
    pub(crate) async fn reap(&self, all: bool) -> anyhow::Result<()> {
        loop {
            let next = {
                let mut q = self.in_flight.lock();
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
        let pending: Vec<_> = entries
            .iter()
            .map(|e| self.producer.send(record(e), Duration::from_secs(60)))
            .collect();
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
    pub(crate) async fn flush_outbox(&self) -> anyhow::Result<()> {
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
