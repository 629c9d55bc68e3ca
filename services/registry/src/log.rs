//! `_joinery_schemas`: the registry's only storage. A producer appends
//! records; a tail (a blocking task of the service, polling the single
//! partition from the beginning) applies every record, its own and other
//! instances', to the shared state, and reports the offset it has applied
//! so that a writer can wait to read its own write.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::LogError;
use crate::state::{LogRecord, State};
use joinery_runtime::kafka::KafkaSettings;

/// How long start-up may take to read the topic to the end it had.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a write may take to be acknowledged and read back.
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared state and the log behind it.
pub(crate) struct SchemaLog {
    pub(crate) state: Arc<Mutex<State>>,
    producer: FutureProducer,
    topic: String,
    /// Next offset the tail will apply.
    applied: watch::Receiver<i64>,
    /// The end of the topic at start-up: the state is restored once the
    /// tail has applied up to it.
    end_at_start: i64,
}

/// Reads the topic and applies every record to the state; run it with
/// [`Tail::run`] as a blocking task of the service.
pub(crate) struct Tail {
    consumer: BaseConsumer,
    state: Arc<Mutex<State>>,
    applied: watch::Sender<i64>,
    topic: String,
}

impl SchemaLog {
    /// Opens the topic: the log, and the tail that must run for the log to
    /// advance (see [`SchemaLog::restored`]).
    pub(crate) async fn open(
        kafka: &KafkaSettings,
        topic: String,
    ) -> anyhow::Result<(SchemaLog, Tail)> {
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
        let (tx, applied) = watch::channel(0i64);
        let tail = Tail {
            consumer,
            state: Arc::clone(&state),
            applied: tx,
            topic: topic.clone(),
        };
        let log = SchemaLog {
            state,
            producer: kafka.producer("joinery-registry").create()?,
            topic,
            applied,
            end_at_start: high,
        };
        Ok((log, tail))
    }

    /// Waits until the tail has applied the whole topic as it was at start-up.
    pub(crate) async fn restored(&self) -> anyhow::Result<()> {
        let (topic, high) = (&self.topic, self.end_at_start);
        let mut applied = self.applied.clone();
        let wait = applied.wait_for(|next| *next >= high);
        tokio::time::timeout(RESTORE_TIMEOUT, wait)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "could not read {topic} to its end ({high} records) within {} s",
                    RESTORE_TIMEOUT.as_secs()
                )
            })?
            .map_err(|_| anyhow::anyhow!("the {topic} reader stopped"))?;
        Ok(())
    }

    /// Appends a record, then waits until the tail has applied it, so that
    /// the caller reads its own write (and whatever landed before it).
    pub(crate) async fn append(&self, record: &LogRecord) -> Result<(), LogError> {
        let key = record.key();
        let value = serde_json::to_string(record).map_err(LogError::Encode)?;
        let offset = self
            .producer
            .send(
                FutureRecord::to(&self.topic).key(&key).payload(&value),
                APPEND_TIMEOUT,
            )
            .await
            .map_err(|(source, _)| LogError::Write {
                topic: self.topic.clone(),
                source,
            })?
            .offset;
        let mut applied = self.applied.clone();
        tokio::time::timeout(APPEND_TIMEOUT, applied.wait_for(|next| *next > offset))
            .await
            .map_err(|_| LogError::NotReadBack {
                topic: self.topic.clone(),
                offset,
                within: APPEND_TIMEOUT,
            })?
            .map_err(|_| LogError::ReaderStopped {
                topic: self.topic.clone(),
            })?;
        Ok(())
    }
}

impl Tail {
    /// Applies every record until `cancel` fires. A read error is logged
    /// and the read goes on (librdkafka recovers from broker trouble by
    /// itself); a record this registry cannot read is skipped.
    pub(crate) fn run(self, cancel: &CancellationToken) -> anyhow::Result<()> {
        let Tail {
            consumer,
            state,
            applied,
            topic,
        } = self;
        // An empty topic is fully applied from the start.
        applied.send_replace(0);
        while !cancel.is_cancelled() {
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
        Ok(())
    }
}
