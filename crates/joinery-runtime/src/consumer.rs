//! The stateful consumer: the one way a service that keeps state per
//! partition (the processor over department topics, projections over view
//! topics) joins its consumer group.
//!
//! Place in the data flow: between Kafka and a service's batch loop. It
//! resumes each assigned partition from the offset kept in the service's own
//! state store ([`StoredOffsetsContext`]), times rebalances and restores
//! ([`RestoreTracker`]), exports lag from librdkafka's statistics, hands out
//! batches of records, and commits offsets to Kafka for lag monitoring only.
//! Errors are classified once here: a failed rebalance or a fatal consumer
//! error ends [`StatefulConsumer::next_batch`] with the reason, so that the
//! service stops instead of stalling in silence; transient broker trouble is
//! logged, counted and retried by librdkafka.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::kafka::{
    KafkaSettings, OffsetLookup, RebalanceEvent, RebalanceHook, StoredOffsetsContext,
};
use crate::rebalance::RestoreTracker;
use crate::Telemetry;

/// What a service tells the stateful consumer about itself.
#[derive(Clone)]
pub struct ConsumerSpec<'a> {
    /// Kafka connection.
    pub kafka: &'a KafkaSettings,
    /// The client id (`joinery-processor`, ...).
    pub client_id: &'a str,
    /// The consumer group.
    pub group: &'a str,
    /// Where each partition resumes: the next offset stored with the state.
    pub offsets: OffsetLookup,
    /// Also called after each rebalance (e.g. to count them).
    pub on_rebalance: Option<RebalanceHook>,
}

impl<'a> ConsumerSpec<'a> {
    /// A member of `group` on `kafka`, resuming from `offsets`.
    pub fn new(
        kafka: &'a KafkaSettings,
        client_id: &'a str,
        group: &'a str,
        offsets: OffsetLookup,
    ) -> ConsumerSpec<'a> {
        ConsumerSpec {
            kafka,
            client_id,
            group,
            offsets,
            on_rebalance: None,
        }
    }

    /// Also calls `hook` after each rebalance.
    pub fn on_rebalance(mut self, hook: RebalanceHook) -> ConsumerSpec<'a> {
        self.on_rebalance = Some(hook);
        self
    }
}

impl std::fmt::Debug for ConsumerSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSpec")
            .field("client_id", &self.client_id)
            .field("group", &self.group)
            .finish()
    }
}

/// Why the consumer cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// A rebalance could not be completed (for example a partition's
    /// stored offset could not be read): going on would leave partitions
    /// unconsumed.
    #[error("rebalance failed: {0}")]
    Rebalance(String),
    /// Kafka refused the consumer for good (authorisation, a fatal error).
    #[error("consumer error that retrying cannot fix: {0}")]
    Fatal(#[source] KafkaError),
    /// Creating or subscribing the consumer failed.
    #[error("cannot set up the consumer: {0}")]
    Setup(#[source] KafkaError),
}

/// Whether a consumer error means this consumer cannot go on: librdkafka
/// retries transport and leadership trouble itself and reports it only for
/// information, but not authorisation failures or fatal errors.
pub fn is_fatal(e: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    if matches!(e, KafkaError::MessageConsumptionFatal(_)) {
        return true;
    }
    matches!(
        e.rdkafka_error_code(),
        Some(
            Fatal
                | TopicAuthorizationFailed
                | GroupAuthorizationFailed
                | ClusterAuthorizationFailed
                | SaslAuthenticationFailed
                | Authentication
                | InvalidGroupId
                | InconsistentGroupProtocol
        )
    )
}

/// A batch of records and how long the consumer waited for its first.
#[derive(Debug)]
pub struct Batch<'a> {
    /// The records, in the order librdkafka delivered them.
    pub messages: Vec<BorrowedMessage<'a>>,
    /// Time spent waiting for the first record.
    pub waited: Duration,
}

/// The first failure the rebalance hook reported, and a token fired with it.
#[derive(Debug, Default)]
struct Failure {
    /// Why, as the hook said.
    reason: Mutex<Option<String>>,
    /// Fired on the first failure (its own token: a service stopping is
    /// not a failed rebalance).
    fired: CancellationToken,
}

impl Failure {
    fn record(&self, why: &str) {
        self.reason.lock().get_or_insert_with(|| why.to_owned());
        self.fired.cancel();
    }

    fn error(&self) -> ConsumerError {
        ConsumerError::Rebalance(
            self.reason
                .lock()
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        )
    }
}

/// A consumer-group member whose offsets live with its state; see the
/// module docs.
pub struct StatefulConsumer {
    /// The group consumer.
    consumer: StreamConsumer<StoredOffsetsContext>,
    /// What the rebalance hook reported as failed.
    failure: Arc<Failure>,
    /// Consumer errors by kind (`transient`, `fatal`).
    errors: prometheus::IntCounterVec,
    /// Rebalance pauses and restore times.
    restores: RestoreTracker,
    /// Where each partition's state stands, for the restore watch.
    offsets: OffsetLookup,
}

impl std::fmt::Debug for StatefulConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatefulConsumer").finish_non_exhaustive()
    }
}

impl StatefulConsumer {
    /// Creates the consumer (not yet subscribed), with its lag gauge,
    /// restore tracking and rebalance logging registered in `telemetry`.
    /// Run [`StatefulConsumer::restore_watch`] beside it.
    pub fn new(
        spec: ConsumerSpec<'_>,
        telemetry: &Telemetry,
    ) -> Result<StatefulConsumer, ConsumerError> {
        let restores = RestoreTracker::new(telemetry);
        let failure: Arc<Failure> = Arc::default();
        let hook = {
            let (restores, failure) = (restores.clone(), Arc::clone(&failure));
            let extra = spec.on_rebalance.clone();
            Arc::new(move |e: &RebalanceEvent| {
                restores.observe(e);
                match e {
                    RebalanceEvent::Assigned(a) => tracing::info!(
                        partitions = a.len(),
                        "partitions assigned; resuming from stored offsets"
                    ),
                    RebalanceEvent::Revoked(r) => {
                        tracing::info!(partitions = r.len(), "partitions revoked")
                    }
                    RebalanceEvent::Failed(why) => {
                        tracing::error!(error = %why, "rebalance failed; stopping the consumer");
                        failure.record(why);
                    }
                }
                if let Some(extra) = &extra {
                    extra(e);
                }
            })
        };
        let context = StoredOffsetsContext::new(Arc::clone(&spec.offsets), hook)
            .with_lag_gauge(telemetry, spec.group);
        let consumer: StreamConsumer<StoredOffsetsContext> = spec
            .kafka
            .consumer(spec.client_id, spec.group)
            .set("statistics.interval.ms", "5000")
            .create_with_context(context)
            .map_err(ConsumerError::Setup)?;
        let errors = telemetry.counter_vec(&crate::metrics::CONSUMER_ERRORS);
        Ok(StatefulConsumer {
            consumer,
            failure,
            errors,
            restores,
            offsets: spec.offsets,
        })
    }

    /// The restore watch, to run as a blocking task of the service
    /// ([`crate::Service::spawn_blocking`]): it times each assigned
    /// partition's restore until the state catches up with the log end.
    pub fn restore_watch(
        &self,
        kafka: &KafkaSettings,
    ) -> impl FnOnce(CancellationToken) -> anyhow::Result<()> + Send + 'static {
        let (restores, offsets, kafka) = (
            self.restores.clone(),
            Arc::clone(&self.offsets),
            kafka.clone(),
        );
        move |cancel| restores.watch(&kafka, &offsets, &cancel)
    }

    /// The rebalance and restore tracker: which assigned partitions have
    /// caught up with their log end ([`RestoreTracker::caught_up`]).
    pub fn restores(&self) -> RestoreTracker {
        self.restores.clone()
    }

    /// The underlying consumer, for metadata and log-end queries.
    pub fn inner(&self) -> &StreamConsumer<StoredOffsetsContext> {
        &self.consumer
    }

    /// Subscribes to `topics`.
    pub fn subscribe(&self, topics: &[String]) -> Result<(), ConsumerError> {
        self.consumer
            .subscribe(&topics.iter().map(String::as_str).collect::<Vec<_>>())
            .map_err(ConsumerError::Setup)
    }

    /// Waits until every topic in `topics` exists with partitions (another
    /// service may create them), checking each second; fails when `cancel`
    /// fires first.
    pub async fn wait_for_topics(
        &self,
        topics: &[String],
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let md = crate::kafka::retry_transient("topic metadata", || {
                self.consumer.fetch_metadata(None, Duration::from_secs(5))
            })
            .await?;
            let missing: Vec<&String> = topics
                .iter()
                .filter(|t| {
                    !md.topics()
                        .iter()
                        .any(|m| m.name() == t.as_str() && !m.partitions().is_empty())
                })
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            tracing::info!(?missing, "waiting for topics to be created");
            tokio::select! {
                () = cancel.cancelled() => anyhow::bail!("cancelled while waiting for topics {missing:?}"),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Sorts a consumer error: fatal ones end the batch loop, the others
    /// are logged and counted.
    fn check(&self, e: KafkaError) -> Result<(), ConsumerError> {
        if is_fatal(&e) {
            self.errors.with_label_values(&["fatal"]).inc();
            return Err(ConsumerError::Fatal(e));
        }
        self.errors.with_label_values(&["transient"]).inc();
        tracing::warn!(error = %e, "consumer error; the client retries");
        Ok(())
    }

    /// The next batch: waits for a first record (`None` once `cancel`
    /// fires), then takes up to `max` records that are already fetched or
    /// arrive within 5 ms. Fails when a rebalance failed or the consumer
    /// met a fatal error.
    pub async fn next_batch(
        &self,
        max: usize,
        cancel: &CancellationToken,
    ) -> Result<Option<Batch<'_>>, ConsumerError> {
        self.next_batch_within(max, cancel, None).await
    }

    /// As [`StatefulConsumer::next_batch`], but when `idle` is given and no
    /// record arrives within it, returns an empty batch (for a service that
    /// has work of its own to do between records).
    pub async fn next_batch_within(
        &self,
        max: usize,
        cancel: &CancellationToken,
        idle: Option<Duration>,
    ) -> Result<Option<Batch<'_>>, ConsumerError> {
        let waiting = Instant::now();
        // One deadline for the whole wait, however many transient errors
        // come in between.
        let until = idle.map(|idle| tokio::time::Instant::from_std(waiting + idle));
        let first = loop {
            let tick = async {
                match until {
                    Some(until) => tokio::time::sleep_until(until).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                biased;
                () = self.failure.fired.cancelled() => return Err(self.failure.error()),
                () = cancel.cancelled() => return Ok(None),
                m = self.consumer.recv() => m,
                () = tick => return Ok(Some(Batch { messages: Vec::new(), waited: waiting.elapsed() })),
            };
            match next {
                Ok(m) => break m,
                Err(e) => self.check(e)?,
            }
        };
        let waited = waiting.elapsed();
        let mut messages = vec![first];
        while messages.len() < max {
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
                Some(Ok(m)) => messages.push(m),
                Some(Err(e)) => self.check(e)?,
                None => break,
            }
        }
        if self.failure.fired.is_cancelled() {
            return Err(self.failure.error());
        }
        Ok(Some(Batch { messages, waited }))
    }

    /// Commits the batch's offsets to Kafka, asynchronously, for lag
    /// monitoring only: the service resumes from the offsets in its state.
    pub fn commit_for_lag(&self, messages: &[BorrowedMessage<'_>]) {
        let mut latest: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for m in messages {
            latest.insert((m.topic(), m.partition()), m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in latest {
            let _ = tpl.add_partition_offset(t, p, rdkafka::Offset::Offset(o));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "offset commit for lag monitoring failed; state offsets are unaffected");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stopping_service_is_not_a_failed_rebalance_and_a_failed_one_stops_the_loop() {
        let telemetry = Telemetry::new("test");
        let kafka = KafkaSettings::new("127.0.0.1:1");
        let spec = ConsumerSpec::new(
            &kafka,
            "test",
            "test-group",
            Arc::new(|_: &str, _| Ok(None)),
        );
        let consumer = StatefulConsumer::new(spec, &telemetry).expect("created without a broker");
        let stopping = CancellationToken::new();
        stopping.cancel();
        assert!(
            matches!(consumer.next_batch(10, &stopping).await, Ok(None)),
            "cancellation ends the loop cleanly"
        );
        consumer
            .failure
            .record("offset lookup for joinery.events.dfe/3: disk full");
        let running = CancellationToken::new();
        let err = consumer
            .next_batch(10, &running)
            .await
            .expect_err("a failed rebalance ends the loop");
        assert!(err.to_string().contains("disk full"), "{err}");
    }

    #[test]
    fn authorisation_and_fatal_errors_stop_a_consumer_and_broker_trouble_does_not() {
        let auth = KafkaError::MessageConsumption(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(is_fatal(&auth));
        assert!(is_fatal(&KafkaError::MessageConsumptionFatal(
            RDKafkaErrorCode::Fatal
        )));
        for transient in [
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::NotCoordinator,
        ] {
            assert!(
                !is_fatal(&KafkaError::MessageConsumption(transient)),
                "{transient:?}"
            );
        }
    }
}
