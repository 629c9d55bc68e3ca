//! Producing what the partition steps decided: the outbox entries a worker
//! wrote with its state go to Kafka, and leave the outbox once acknowledged.
//!
//! Place in the data flow: after a worker's RocksDB write (state, offsets
//! and outbox together), [`Publisher::hand`] gives its entries to the
//! producer in order; [`Publisher::await_deliveries`] waits for them in the
//! background while later batches are worked; [`Publisher::reap`] deletes
//! acknowledged entries in batch order. At start-up
//! [`Publisher::flush_outbox`] republishes what a previous run left.
//!
//! An entry Kafka refuses for good (larger than the largest record it
//! takes, an invalid record) would otherwise stop the processor on every
//! start: it is moved to a quarantine in the state store instead, counted
//! (`joinery_outbox_quarantined_total{topic,reason}`, which an alert
//! watches) and logged, and the partition goes on. Any other failure stops
//! the processor with the entries kept, and the restart republishes them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use joinery_store::Store;
use parking_lot::Mutex;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::outbox::{self, Entry};

/// Batches whose views may await Kafka's acknowledgement while later
/// batches are worked.
const MAX_BATCHES_IN_FLIGHT: usize = 4;

/// An entry Kafka refused for good: its outbox sequence number, the reason
/// code and Kafka's error.
type Refused = (u64, &'static str, String);

/// A batch whose views await Kafka's acknowledgement, and its outbox
/// ranges (first sequence number, count), deleted once it is acknowledged;
/// the task returns the entries Kafka refused for good.
struct InFlight {
    handle: tokio::task::JoinHandle<anyhow::Result<Vec<Refused>>>,
    ranges: Vec<(u64, u64)>,
}

/// What a worker handed to the producer: the outbox sequence numbers from
/// `first_seq`, their pending deliveries, and those the producer refused
/// for good at once.
pub(crate) struct Handed {
    first_seq: u64,
    count: u64,
    deliveries: Vec<(u64, DeliveryFuture)>,
    refused: Vec<Refused>,
}

/// Why Kafka will never take a record, when `err` says so: the reason code
/// of its quarantine. Other errors (the broker unreachable, a timeout, no
/// authorisation) are not the record's fault.
pub(crate) fn undeliverable(err: &KafkaError) -> Option<&'static str> {
    match err.rdkafka_error_code()? {
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::MessageBatchTooLarge
        | RDKafkaErrorCode::InvalidMessageSize => Some("too_large"),
        RDKafkaErrorCode::InvalidMessage
        | RDKafkaErrorCode::InvalidRecord
        | RDKafkaErrorCode::InvalidTimestamp
        | RDKafkaErrorCode::PolicyViolation => Some("invalid_record"),
        _ => None,
    }
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
    /// Entries Kafka refused for good, by topic and reason.
    quarantined: prometheus::IntCounterVec,
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
    /// A publisher over `store`'s outbox, numbering after its last entry
    /// (or quarantined entry); `quarantined` counts what Kafka refuses for
    /// good, by topic and reason.
    pub(crate) fn new(
        producer: FutureProducer,
        store: Arc<Store>,
        quarantined: prometheus::IntCounterVec,
    ) -> anyhow::Result<Publisher> {
        let last = |prefix: &[u8]| -> anyhow::Result<Option<u64>> {
            Ok(store.scan(prefix, None)?.last().and_then(|(k, _)| {
                k.strip_prefix(prefix)
                    .and_then(|s| s.try_into().ok())
                    .map(u64::from_be_bytes)
            }))
        };
        let next_seq = last(outbox::PREFIX)?
            .max(last(outbox::QUARANTINE_PREFIX)?)
            .map_or(0, |s| s + 1);
        Ok(Publisher {
            producer,
            store,
            next_seq: next_seq.into(),
            in_flight: Mutex::default(),
            quarantined,
        })
    }

    /// Moves the entries Kafka refused for good from the outbox to the
    /// quarantine, with the reason, and counts them.
    fn quarantine(&self, refused: &[Refused]) -> anyhow::Result<()> {
        if refused.is_empty() {
            return Ok(());
        }
        let mut batch = self.store.batch();
        for (seq, reason, error) in refused {
            let Some(entry) = self.store.get(outbox::key(*seq))? else {
                continue;
            };
            let topic = Entry::decode(&entry).map_or_else(String::new, |e| e.topic);
            tracing::error!(seq, topic = %topic, reason, error = %error, bytes = entry.len(), "Kafka refused an outbox entry for good; quarantined in the processor's state (q/), the partition goes on");
            self.quarantined
                .with_label_values(&[topic.as_str(), reason])
                .inc();
            let mut kept = entry;
            kept.extend_from_slice(format!("\n{reason}: {error}").as_bytes());
            batch.put(outbox::quarantine_key(*seq), kept);
            batch.delete(outbox::key(*seq));
        }
        self.store.write(batch)?;
        Ok(())
    }

    /// Reserves `n` outbox sequence numbers; returns the first.
    pub(crate) fn reserve(&self, n: usize) -> u64 {
        self.next_seq.fetch_add(n as u64, Ordering::SeqCst)
    }

    /// Hands `entries` (numbered from `first_seq`, already in the outbox)
    /// to the producer in order, waiting while its queue is full.
    pub(crate) fn hand(&self, first_seq: u64, entries: &[Entry]) -> anyhow::Result<Handed> {
        let mut deliveries = Vec::with_capacity(entries.len());
        let mut refused = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let seq = first_seq + i as u64;
            let mut r = record(e);
            loop {
                match self.producer.send_result(r) {
                    Ok(d) => {
                        deliveries.push((seq, d));
                        break;
                    }
                    Err((err, _)) if undeliverable(&err).is_some() => {
                        let reason = undeliverable(&err).expect("checked");
                        refused.push((seq, reason, err.to_string()));
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
            count: entries.len() as u64,
            deliveries,
            refused,
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
    /// restart republishes them; one Kafka refuses for good is quarantined.
    pub(crate) fn await_deliveries(&self, shares: Vec<Handed>) {
        let ranges: Vec<(u64, u64)> = shares.iter().map(|h| (h.first_seq, h.count)).collect();
        let mut refused: Vec<Refused> = Vec::new();
        let mut deliveries = Vec::new();
        for h in shares {
            refused.extend(h.refused);
            deliveries.extend(h.deliveries);
        }
        let handle = tokio::spawn(async move {
            for (seq, d) in deliveries {
                match d.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((err, _))) if undeliverable(&err).is_some() => {
                        let reason = undeliverable(&err).expect("checked");
                        refused.push((seq, reason, err.to_string()));
                    }
                    Ok(Err((err, msg))) => anyhow::bail!(
                        "producing to {} failed: {err}; stopping so that the outbox is republished on restart",
                        rdkafka::Message::topic(&msg)
                    ),
                    Err(_) => anyhow::bail!("a delivery was cancelled; stopping so that the outbox is republished on restart"),
                }
            }
            Ok(refused)
        });
        self.in_flight.lock().push_back(InFlight { handle, ranges });
    }

    /// Whether any handed batch has not been reaped yet.
    pub(crate) fn in_flight(&self) -> bool {
        !self.in_flight.lock().is_empty()
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
            let refused = batch.handle.await??;
            self.quarantine(&refused)?;
            let mut deletes = self.store.batch();
            for (first, count) in batch.ranges {
                for seq in first..first + count {
                    deletes.delete(outbox::key(seq));
                }
            }
            self.store.write(deletes)?;
        }
    }

    /// Produces entries (with their sequence numbers) in order and waits
    /// for every acknowledgement; returns those Kafka refused for good.
    async fn publish(&self, entries: &[(u64, Entry)]) -> anyhow::Result<Vec<Refused>> {
        let pending: Vec<_> = entries
            .iter()
            .map(|(_, e)| self.producer.send(record(e), Duration::from_secs(60)))
            .collect();
        let mut refused = Vec::new();
        for (r, (seq, e)) in futures::future::join_all(pending)
            .await
            .into_iter()
            .zip(entries)
        {
            match r {
                Ok(_) => {}
                Err((err, _)) => match undeliverable(&err) {
                    Some(reason) => refused.push((*seq, reason, err.to_string())),
                    // The entries stay in the outbox; the restart publishes them.
                    None => anyhow::bail!("producing to {} failed: {err}; stopping so that the outbox is republished on restart", e.topic),
                },
            }
        }
        Ok(refused)
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
        let mut corrupt = Vec::new();
        for (k, v) in &pending {
            let seq = outbox::seq_of(k)
                .ok_or_else(|| anyhow::anyhow!("an outbox key of the wrong shape: {k:?}"))?;
            match Entry::decode(v) {
                Some(entry) => entries.push((seq, entry)),
                None => {
                    corrupt.push((seq, "corrupt_entry", "the entry does not decode".to_owned()))
                }
            }
        }
        // In sequence order: each citizen's views go out in their order.
        let refused = self.publish(&entries).await?;
        self.quarantine(&corrupt)?;
        self.quarantine(&refused)?;
        let mut batch = self.store.batch();
        for (k, _) in &pending {
            batch.delete(k);
        }
        self.store.write(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_that_no_retry_can_change_quarantines_an_entry() {
        let produce = |code| KafkaError::MessageProduction(code);
        assert_eq!(
            undeliverable(&produce(RDKafkaErrorCode::MessageSizeTooLarge)),
            Some("too_large")
        );
        assert_eq!(
            undeliverable(&produce(RDKafkaErrorCode::InvalidRecord)),
            Some("invalid_record")
        );
        // The broker away, a full queue, a timeout or a missing ACL are not
        // the record's fault: the processor stops and republishes on restart.
        for code in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ] {
            assert_eq!(undeliverable(&produce(code)), None, "{code:?}");
        }
    }
}
