//! The I/O shell around the partition step: one batch of consumed records
//! becomes, per source partition, decoded events, a step, and one RocksDB
//! write of state, offsets and outbox, then records handed to the producer.
//!
//! Partitions share no state, so the batch's partitions are dealt to a pool
//! of worker threads; each partition's state and offsets stay consistent
//! whatever crashes when.

use std::collections::BTreeMap;
use std::sync::Arc;

use apache_avro::Schema;
use joinery_runtime::retry::Policy;
use joinery_wire::codec::{view_to_value, writer_schema, ValueEncoder};
use joinery_wire::framing::{frame, unframe};
use joinery_wire::names::view_topic;
use joinery_wire::watermark::{watermark_headers, watermark_value, WATERMARK_KEY};
use joinery_wire::DecodeError;
use rdkafka::message::BorrowedMessage;
use rdkafka::Message;

use crate::decode::{dead_letter, Decoder, Input};
use crate::outbox::Entry;
use crate::partition::{self, Op, StorePartition};
use crate::publish::Handed;
use crate::service::Processor;
use crate::step::Rules;

/// What one partition's share of a batch changes, before it is written.
#[derive(Default)]
struct PartitionWork {
    /// Writes in the order they were decided: `None` deletes the key.
    ops: Vec<Op>,
    /// Next offset of each source topic partition.
    offsets: BTreeMap<(String, i32), i64>,
    /// Views and dead letters to publish, in order.
    outbox: Vec<Entry>,
    /// Whether due timers are left for a step without records.
    backlog: bool,
}

/// One source partition's records in a batch.
type PartitionInputs<'a> = (i32, Vec<Input<'a>>);

/// Steps of a timer backlog worked before the consumer is polled again: a
/// backlog of millions of due timers is finished over several turns of the
/// batch loop, so that the processor never goes longer than a few seconds
/// without polling (and is not taken for dead by the group).
pub(crate) const DRAIN_STEPS_PER_TURN: usize = 8;

impl Processor {
    /// The rules the partition step works by.
    fn rules(&self) -> Rules<'_> {
        Rules {
            missions: &self.missions,
            mission_lateness: &self.mission_lateness,
            lateness: &self.config.lateness,
            max_clock_skew: self.config.max_clock_skew,
            max_events_per_citizen: self
                .config
                .max_events_per_citizen
                .min(crate::config::MAX_EVENTS_PER_CITIZEN_LIMIT),
            max_timers: self.config.max_timers_per_batch.max(1),
        }
    }

    /// Counts and builds the dead letter of a record that cannot be used:
    /// `reason` is the stable code, `error` what a person can act on.
    fn dead_letter(&self, input: &Input<'_>, reason: &'static str, error: &str) -> Entry {
        self.metrics
            .dead_letters
            .with_label_values(&[input.topic, reason])
            .inc();
        dead_letter(&self.config.kafka, input, reason, error)
    }

    /// The writer schema of a record (the only step that may wait: while the
    /// registry is unreachable; cached after the first record of each schema).
    async fn writer_of(&self, m: &BorrowedMessage<'_>) -> Result<Arc<Schema>, DecodeError> {
        let (id, _) = unframe(m.payload().unwrap_or_default())?;
        writer_schema(&self.registry, id, &Policy::REGISTRY_UNREACHABLE).await
    }

    /// Processes one batch. The records are grouped by source partition
    /// (their writer schemas fetched first: the only step that waits), and
    /// the partitions are dealt to the workers. Each worker, on its own
    /// thread, works its partitions (see [`Processor::work_share`]).
    pub(crate) async fn process(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let mut inputs: BTreeMap<i32, Vec<Input<'_>>> = BTreeMap::new();
        for m in messages {
            let writer = match self.writer_of(m).await {
                Err(e) if !e.is_poison() => anyhow::bail!(
                    "cannot resolve the writer schema of {}/{}@{}: {e}; stopping so that the record is read again on restart",
                    m.topic(),
                    m.partition(),
                    m.offset()
                ),
                other => other,
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
        let handed: Vec<anyhow::Result<Vec<Handed>>> = if workers <= 1 {
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
            shares.extend(h?);
        }
        self.publisher.await_deliveries(shares);
        self.publisher.reap(false).await
    }

    /// One worker's share of a batch: works each of its partitions, writes
    /// their state, offsets and outbox in one RocksDB batch, then hands the
    /// outbox to the producer in order (so each citizen's views keep their
    /// order; the next batch starts only when every worker is done).
    ///
    /// A partition whose step left due timers (more than
    /// `max_timers_per_batch`) is then stepped again without records, each
    /// step written and handed on its own, for at most
    /// [`DRAIN_STEPS_PER_TURN`] steps; the batch loop works the rest.
    fn work_share(&self, parts: Vec<PartitionInputs<'_>>) -> anyhow::Result<Vec<Handed>> {
        let mut batch = self.store.batch();
        let mut outbox = Vec::new();
        let mut backlog = Vec::new();
        for (p, inputs) in parts {
            let work = self.work_partition(p, inputs)?;
            if work.backlog {
                backlog.push(p);
            }
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
        let first_seq = self.publisher.reserve(outbox.len());
        for (i, entry) in outbox.iter().enumerate() {
            batch.put(crate::outbox::key(first_seq + i as u64), entry.encode());
        }
        self.store.write(batch)?;
        let mut handed = vec![self.publisher.hand(first_seq, &outbox)?];
        for p in backlog {
            let (steps, more) = self.drain(p, DRAIN_STEPS_PER_TURN)?;
            handed.extend(steps);
            if more {
                self.backlogged.lock().insert(p);
            }
        }
        Ok(handed)
    }

    /// The source partitions whose due timers an earlier run left (it
    /// stopped between the steps of a partition's backlog).
    pub(crate) fn backlog_partitions(&self) -> anyhow::Result<Vec<i32>> {
        Ok(self
            .store
            .scan(crate::state::FIRED_UPTO_PREFIX, None)?
            .iter()
            .filter_map(|(k, _)| Some(i32::from_be_bytes(k.get(2..6)?.try_into().ok()?)))
            .collect())
    }

    /// Fires the due timers left of the partitions in `only` (all of them
    /// when `None`), at most `max_steps` steps each; returns those with
    /// timers still due.
    pub(crate) async fn drain_backlogs(
        &self,
        only: Option<&[i32]>,
        max_steps: usize,
    ) -> anyhow::Result<Vec<i32>> {
        let mut left = Vec::new();
        for p in self.backlog_partitions()? {
            if only.is_some_and(|only| !only.contains(&p)) {
                continue;
            }
            let (handed, more) = tokio::task::block_in_place(|| self.drain(p, max_steps))?;
            self.publisher.await_deliveries(handed);
            if more {
                left.push(p);
            }
        }
        self.publisher.reap(true).await?;
        Ok(left)
    }

    /// Steps partition `p` without records until no due timer is left, or
    /// `max_steps` steps, writing and handing each step on its own, so that
    /// however many deadlines event time passed at once, at most
    /// `max_timers_per_batch` citizens are worked in memory at a time;
    /// returns the steps and whether due timers are left.
    pub(crate) fn drain(&self, p: i32, max_steps: usize) -> anyhow::Result<(Vec<Handed>, bool)> {
        let mut handed = Vec::new();
        let mut steps = 0usize;
        let more = loop {
            let work = self.work_partition(p, Vec::new())?;
            let mut batch = self.store.batch();
            for (k, v) in work.ops {
                match v {
                    Some(v) => batch.put(k, v),
                    None => batch.delete(k),
                }
            }
            let first_seq = self.publisher.reserve(work.outbox.len());
            for (i, entry) in work.outbox.iter().enumerate() {
                batch.put(crate::outbox::key(first_seq + i as u64), entry.encode());
            }
            self.store.write(batch)?;
            handed.push(self.publisher.hand(first_seq, &work.outbox)?);
            steps += 1;
            if !work.backlog || steps >= max_steps {
                break work.backlog;
            }
        };
        tracing::info!(
            partition = p,
            steps,
            more,
            "fired due timers in steps of at most max_timers_per_batch"
        );
        Ok((handed, more))
    }

    /// One source partition's share of a batch: decodes its records
    /// (dead-lettering the bad ones), runs the partition step over its
    /// state, and returns the writes, offsets and outbox. Reads the store
    /// but writes nothing; touches no other partition's keys.
    fn work_partition(&self, p: i32, inputs: Vec<Input<'_>>) -> anyhow::Result<PartitionWork> {
        let mut out = PartitionWork::default();
        let mut decoder = Decoder::new(
            &self.catalog,
            &self.config.kafka,
            self.config.event_time_horizon,
            self.config.max_clock_skew,
        );
        let mut arrivals = Vec::with_capacity(inputs.len());
        for (source, input) in inputs.iter().enumerate() {
            out.offsets
                .insert((input.topic.to_owned(), p), input.offset + 1);
            let refused = match &input.writer {
                Ok(w) => match decoder.arrival(input, w) {
                    Ok(mut a) => {
                        a.source = source;
                        arrivals.push(a);
                        continue;
                    }
                    Err(e) => e,
                },
                Err(e) => {
                    out.outbox
                        .push(self.dead_letter(input, e.reason(), &e.to_string()));
                    continue;
                }
            };
            out.outbox
                .push(self.dead_letter(input, refused.reason(), &refused.to_string()));
        }
        let reader = StorePartition {
            store: &self.store,
            partition: p,
        };
        let step = partition::work(&reader, &self.rules(), arrivals)?;
        for (source, refusal) in &step.refused {
            let input = &inputs[*source];
            out.outbox
                .push(self.dead_letter(input, refusal.reason(), &refusal.to_string()));
        }
        for ((event_type, applied), n) in &step.counts.by_type {
            let result = if *applied { "applied" } else { "duplicate" };
            self.metrics
                .events
                .with_label_values(&[&event_type.to_string(), result])
                .inc_by(*n);
        }
        for (department, n) in &step.counts.late {
            self.metrics
                .late_events
                .with_label_values(&[department.code()])
                .inc_by(*n);
        }
        for (i, n) in &step.counts.revisions {
            self.metrics
                .final_revisions
                .with_label_values(&[self.missions[*i].id.as_str()])
                .inc_by(*n);
        }
        out.ops = partition::write_ops(p, &step)?;
        out.backlog = step.backlog();
        let view_encoder = ValueEncoder::new(self.catalog.view_schema())?;
        let now = chrono::Utc::now().timestamp_millis();
        for view in &step.views {
            let body = view_encoder.encode(view_to_value(view))?;
            out.outbox.push(Entry {
                topic: self.config.kafka.topic(&view_topic(&view.mission)),
                key: view.citizen_key.as_str().as_bytes().to_vec(),
                payload: frame(self.view_schema_id, &body),
                headers: vec![],
                // The partition the citizen's events are in, whatever the
                // partitioner, so that the partition's watermark record
                // follows every view it covers.
                partition: Some(p),
            });
            self.metrics.views.with_label_values(&[&view.mission]).inc();
            if !inputs.is_empty() {
                // (A step without records, finishing a timer backlog, has
                // no record that caused its views: not a freshness.)
                self.metrics
                    .event_to_view
                    .with_label_values(&[&view.mission])
                    .observe((now - view.ingested_at).max(0) as f64 / 1000.0);
            }
        }
        if !out.backlog {
            // Once every due timer has fired: the views it announces cover them.
            self.announce(p, step.max_time, &view_encoder, &mut out.outbox)?;
        }
        Ok(out)
    }

    /// Each mission's watermark in partition `p`, after the partition's
    /// views, whenever it moved (and on this instance's first batch of the
    /// partition): a reader that has applied the partition's records up to
    /// it holds the partition's figures final up to that watermark (see
    /// [`joinery_wire::watermark`]).
    fn announce(
        &self,
        p: i32,
        max_time: joinery_domain::Millis,
        encoder: &ValueEncoder<'_>,
        outbox: &mut Vec<Entry>,
    ) -> anyhow::Result<()> {
        if max_time == joinery_domain::Millis::MIN {
            // No event yet: nothing is final.
            return Ok(());
        }
        let mut announced = self.announced.lock();
        if announced.get(&p) == Some(&max_time) {
            return Ok(());
        }
        let rules = self.rules();
        for (i, m) in self.missions.iter().enumerate() {
            let watermark = rules.watermark(i, max_time);
            self.metrics
                .watermark
                .with_label_values(&[&p.to_string(), m.id.as_str()])
                .set(watermark / 1000);
            let body = encoder.encode(watermark_value(&m.id, watermark))?;
            outbox.push(Entry {
                topic: self.config.kafka.topic(&view_topic(&m.id)),
                key: WATERMARK_KEY.as_bytes().to_vec(),
                payload: frame(self.view_schema_id, &body),
                headers: watermark_headers(m.id.as_str(), watermark),
                partition: Some(p),
            });
        }
        announced.insert(p, max_time);
        Ok(())
    }
}
