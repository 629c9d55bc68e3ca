//! `_joinery_schemas`: the registry's only storage. A producer appends
//! records; a tail (one thread, polling the single partition from the
//! beginning) applies every record, its own and other instances', to the
//! shared state, and reports the offset it has applied so that a writer can
//! wait to read its own write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::state::{LogRecord, State};
use joinery_runtime::kafka::KafkaSettings;

/// The shared state and the log behind it.
pub(crate) struct SchemaLog {
    pub(crate) state: Arc<Mutex<State>>,
    producer: FutureProducer,
    topic: String,
    /// Next offset the tail will apply.
    applied: watch::Receiver<i64>,
    stop: Arc<AtomicBool>,
}

impl Drop for SchemaLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl SchemaLog {
    /// Starts the tail and waits until it has applied the whole topic as it
    /// was at start-up.
    pub(crate) async fn open(kafka: &KafkaSettings, topic: String) -> anyhow::Result<SchemaLog> {
        let consumer: BaseConsumer = kafka
            .consumer("joinery-registry-tail", &format!("{topic}-tail-unused"))
            .create()?;
        let (_, high) = joinery_runtime::kafka::retry_transient("schema log end", || {
            consumer.fetch_watermarks(&topic, 0, Duration::from_secs(10))
        })
        .await?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
        consumer.assign(&tpl)?;
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, mut applied) = watch::channel(0i64);
        let stop = Arc::new(AtomicBool::new(false));
        let (tail_state, tail_stop, tail_topic) =
            (Arc::clone(&state), Arc::clone(&stop), topic.clone());
        std::thread::Builder::new()
            .name("registry-tail".into())
            .spawn(move || tail(consumer, tail_state, tx, tail_stop, tail_topic))?;
        let wait = applied.wait_for(|next| *next >= high);
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .map_err(|_| {
                anyhow::anyhow!("could not read {topic} to its end ({high} records) within 60 s")
            })?
            .map_err(|_| anyhow::anyhow!("the {topic} reader stopped"))?;
        Ok(SchemaLog {
            state,
            producer: kafka.producer("joinery-registry").create()?,
            topic,
            applied,
            stop,
        })
    }

    /// Appends a record, then waits until the tail has applied it, so that
    /// the caller reads its own write (and whatever landed before it).
    pub(crate) async fn append(&self, record: &LogRecord) -> anyhow::Result<()> {
        let key = record.key();
        let value = serde_json::to_string(record)?;
        let offset = self
            .producer
            .send(
                FutureRecord::to(&self.topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("writing to {}: {e}", self.topic))?
            .offset;
        let mut applied = self.applied.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            applied.wait_for(|next| *next > offset),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} record {offset} was written but not read back within 10 s",
                self.topic
            )
        })?
        .map_err(|_| anyhow::anyhow!("the {} reader stopped", self.topic))?;
        Ok(())
    }
}

fn tail(
    consumer: BaseConsumer,
    state: Arc<Mutex<State>>,
    applied: watch::Sender<i64>,
    stop: Arc<AtomicBool>,
    topic: String,
) {
    // An empty topic is fully applied from the start.
    applied.send_replace(0);
    while !stop.load(Ordering::SeqCst) {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "error reading {topic}; retrying");
                continue;
            }
        };
        if let Some(payload) = msg.payload() {
            match serde_json::from_slice::<LogRecord>(payload) {
                Ok(record) => {
                    if !state.lock().apply(record) {
                        tracing::info!(
                            offset = msg.offset(),
                            "ignored a conflicting record (another registration won the race)"
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(offset = msg.offset(), error = %e, "{topic} holds a record this registry cannot read; skipped")
                }
            }
        }
        applied.send_replace(msg.offset() + 1);
    }
}
