//! Kafka settings shared by every client, topic creation with co-partitioning
//! checked, and a consumer context that resumes from offsets a service keeps
//! in its own state store (written in the same batch as the state).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::retry::{retry, Policy};

/// Where Kafka is and how clients identify themselves.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Partitions of every department topic (must be equal: co-partitioning).
    pub partitions: i32,
    /// Replication factor of the topics Joinery creates.
    pub replication: i32,
    /// Prefix of every topic name (empty in production; tests use a unique
    /// one so that they can share a broker).
    pub namespace: String,
}

impl KafkaSettings {
    /// Settings for a broker list with the default partition count (6) and replication 1.
    pub fn new(brokers: impl Into<String>) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.into(),
            partitions: 6,
            replication: 1,
            namespace: String::new(),
        }
    }

    /// The real name of a Joinery topic: the namespace, then `name`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.namespace)
    }

    /// The Joinery name of a real topic (the namespace stripped).
    pub fn joinery_name<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(self.namespace.as_str())
    }

    /// A client configuration with the bootstrap servers set.
    pub fn client(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", client_id)
            .set("socket.keepalive.enable", "true");
        c
    }

    /// A durable producer: idempotent, `acks=all`, and the Java client's
    /// murmur2 partitioner so that any client puts a citizen on the same partition.
    pub fn producer(&self, client_id: &str) -> ClientConfig {
        let mut c = self.client(client_id);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000");
        c
    }

    /// A consumer that never auto-commits or auto-stores offsets: the service
    /// keeps its offsets with its state and commits to Kafka only for lag
    /// monitoring. Reads only committed records of transactional producers.
    pub fn consumer(&self, client_id: &str, group: &str) -> ClientConfig {
        let mut c = self.client(client_id);
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // Prefetch at most 32 MiB (librdkafka's default is 64 MiB). For
            // a group consumer this bounds its one queue, whatever the
            // partition count. 4 MiB, tried before, is less than two of the
            // processor's batches: it drained the queue every batch and the
            // processor waited on fetches 28% of the time.
            .set("queued.max.messages.kbytes", "32768");
        c
    }
}

/// A topic Joinery needs.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: i32,
    /// How it keeps its records.
    pub kind: TopicKind,
}

/// How a topic keeps its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Department events: kept forever, and a record whose timestamp is
    /// more than [`MAX_FUTURE_TIMESTAMP_MS`] ahead of the broker's clock is
    /// refused (`message.timestamp.after.max.ms`), so that no producer can
    /// date a record's arrival in the future: the processor's event time
    /// never passes a record's timestamp by more than the clock skew.
    Events,
    /// Compacted: the last record per key (views, schemas).
    Compacted,
    /// Kept forever (dead letters, benchmark output).
    Retained,
}

/// How far ahead of the broker's clock a department record's timestamp may
/// be: one hour, for producers' clock drift.
pub const MAX_FUTURE_TIMESTAMP_MS: &str = "3600000";

/// Whether a Kafka error is transient: a broker that has just started (or
/// restarted) answers with these until partition leaders are elected.
pub fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e.rdkafka_error_code(),
        Some(
            NotLeaderForPartition
                | LeaderNotAvailable
                | BrokerTransportFailure
                | AllBrokersDown
                | OperationTimedOut
                | RequestTimedOut
                | UnknownTopicOrPartition
                | NotCoordinator
                | CoordinatorLoadInProgress
                | CoordinatorNotAvailable
        )
    )
}

/// Runs a (blocking) Kafka call, retrying transient errors
/// ([`is_transient`]) under [`Policy::KAFKA_NOT_READY`], so that a service
/// starting beside a broker that is still electing leaders waits instead of
/// failing. The waits between attempts yield to the runtime.
pub async fn retry_transient<T>(
    what: &str,
    mut call: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> rdkafka::error::KafkaResult<T> {
    retry(&Policy::KAFKA_NOT_READY, what, is_transient, || {
        std::future::ready(call())
    })
    .await
}

/// How long a record of a compacted topic stays before compaction may drop
/// it for a newer one of its key (one day), set when Joinery creates the
/// topic. A rebuild relies on it: it reads back the live views published
/// while it ran, which compaction must not have dropped yet (see
/// `joinery_processor::settle_views`).
pub const MIN_COMPACTION_LAG_MS: &str = "86400000";

/// The `min.compaction.lag.ms` of `topic`, in milliseconds (0, Kafka's
/// default, when not set).
pub async fn min_compaction_lag_ms(settings: &KafkaSettings, topic: &str) -> anyhow::Result<i64> {
    use rdkafka::admin::ResourceSpecifier;
    let admin: AdminClient<DefaultClientContext> = settings.client("joinery-admin").create()?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(topic)], &opts)
        .await?;
    let resource = described
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no configuration returned for topic {topic}"))?
        .map_err(|code| {
            anyhow::anyhow!("cannot read the configuration of topic {topic}: {code}")
        })?;
    Ok(resource
        .get("min.compaction.lag.ms")
        .and_then(|e| e.value.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Creates the topics that do not exist yet and checks that existing ones
/// have the expected partition count (a mismatch would break co-partitioning).
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[TopicSpec]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings.client("joinery-admin").create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            let nt = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(settings.replication),
            );
            match t.kind {
                TopicKind::Compacted => nt
                    .set("cleanup.policy", "compact")
                    .set("min.compaction.lag.ms", MIN_COMPACTION_LAG_MS),
                TopicKind::Events => nt
                    .set("retention.ms", "-1")
                    .set("message.timestamp.after.max.ms", MAX_FUTURE_TIMESTAMP_MS),
                TopicKind::Retained => nt.set("retention.ms", "-1"),
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    // A topic just created may take a moment to appear in metadata with its partitions.
    let admin = &admin;
    let check = move || async move {
        let metadata = retry_transient("topic metadata", || {
            admin.inner().fetch_metadata(None, Duration::from_secs(10))
        })
        .await?;
        let mut missing = Vec::new();
        for t in topics {
            let found = metadata.topics().iter().find(|m| m.name() == t.name);
            let count = found.map(|m| m.partitions().len() as i32).unwrap_or(0);
            if count == 0 {
                missing.push(t.name.clone());
            } else if count != t.partitions {
                return Err(TopicsCheck::Failed(anyhow::anyhow!(
                    "topic {} has {count} partitions but Joinery expects {}: all department topics must share one partition count so that a citizen's events meet in one partition",
                    t.name,
                    t.partitions
                )));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TopicsCheck::Appearing(missing))
        }
    };
    let appearing = |e: &TopicsCheck| matches!(e, TopicsCheck::Appearing(_));
    match retry(&Policy::TOPICS_APPEARING, "topic partitions", appearing, check).await {
        Ok(()) => Ok(()),
        Err(TopicsCheck::Failed(e)) => Err(e),
        Err(TopicsCheck::Appearing(missing)) => anyhow::bail!(
            "topics {missing:?} were created but have no partitions in the cluster metadata after {} s",
            Policy::TOPICS_APPEARING
                .give_up_after
                .unwrap_or_default()
                .as_secs()
        ),
    }
}

/// Why the topics [`ensure_topics`] created are not usable yet.
#[derive(Debug)]
enum TopicsCheck {
    /// These have no partitions in the metadata yet (retried).
    Appearing(Vec<String>),
    /// A lookup failed or a partition count is wrong (not retried).
    Failed(anyhow::Error),
}

impl From<rdkafka::error::KafkaError> for TopicsCheck {
    fn from(e: rdkafka::error::KafkaError) -> Self {
        TopicsCheck::Failed(e.into())
    }
}

impl std::fmt::Display for TopicsCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicsCheck::Appearing(missing) => {
                write!(f, "no partitions in the metadata yet for {missing:?}")
            }
            TopicsCheck::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

/// Looks up the next offset to consume from the service's own state store.
pub type OffsetLookup = Arc<dyn Fn(&str, i32) -> anyhow::Result<Option<i64>> + Send + Sync>;

/// Called after partitions are assigned or revoked (e.g. to count rebalances).
pub type RebalanceHook = Arc<dyn Fn(&RebalanceEvent) + Send + Sync>;

/// Called with librdkafka's statistics (every `statistics.interval.ms`),
/// e.g. to export consumer lag without blocking broker round trips.
pub type StatsHook = Arc<dyn Fn(&rdkafka::statistics::Statistics) + Send + Sync>;

/// What a rebalance did.
#[derive(Debug, Clone)]
pub enum RebalanceEvent {
    /// These (topic, partition, resume offset) were assigned.
    Assigned(Vec<(String, i32, Option<i64>)>),
    /// These (topic, partition) were revoked.
    Revoked(Vec<(String, i32)>),
    /// The rebalance failed.
    Failed(String),
}

/// A consumer context that, on assignment, starts each partition at the
/// offset stored with the service's state (or the beginning of the log),
/// ignoring Kafka's committed offsets: the state store is the truth.
pub struct StoredOffsetsContext {
    lookup: OffsetLookup,
    hook: RebalanceHook,
    stats: Option<StatsHook>,
}

impl std::fmt::Debug for StoredOffsetsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredOffsetsContext")
    }
}

impl StoredOffsetsContext {
    /// A context reading offsets with `lookup` and reporting to `hook`.
    pub fn new(lookup: OffsetLookup, hook: RebalanceHook) -> StoredOffsetsContext {
        StoredOffsetsContext {
            lookup,
            hook,
            stats: None,
        }
    }

    /// Also reports librdkafka's statistics to `stats` (set
    /// `statistics.interval.ms` on the consumer).
    pub fn with_stats(mut self, stats: StatsHook) -> StoredOffsetsContext {
        self.stats = Some(stats);
        self
    }

    /// Exports `joinery_consumer_lag_records{group,topic,partition}` from
    /// librdkafka's statistics (set `statistics.interval.ms` on the
    /// consumer): lag without blocking broker round trips.
    pub fn with_lag_gauge(self, telemetry: &crate::Telemetry, group: &str) -> StoredOffsetsContext {
        let lag = telemetry.gauge_vec(&crate::metrics::CONSUMER_LAG);
        let group = group.to_owned();
        self.with_stats(Arc::new(move |stats| {
            for (topic, t) in &stats.topics {
                for (p, part) in &t.partitions {
                    // Partition -1 is librdkafka's internal one; a lag of -1 is not known yet.
                    if *p >= 0 && part.consumer_lag >= 0 {
                        lag.with_label_values(&[&group, topic, &p.to_string()])
                            .set(part.consumer_lag);
                    }
                }
            }
        }))
    }
}

impl ClientContext for StoredOffsetsContext {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        if let Some(hook) = &self.stats {
            hook(&statistics);
        }
    }
}

impl ConsumerContext for StoredOffsetsContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assigned = Vec::new();
                for elem in tpl.elements() {
                    let (topic, p) = (elem.topic().to_owned(), elem.partition());
                    let stored = match (self.lookup)(&topic, p) {
                        Ok(o) => o,
                        Err(e) => {
                            // Without its offset the partition cannot be resumed safely.
                            (self.hook)(&RebalanceEvent::Failed(format!(
                                "offset lookup for {topic}/{p}: {e:#}"
                            )));
                            return;
                        }
                    };
                    assigned.push((topic, p, stored));
                }
                for (topic, p, stored) in &assigned {
                    let offset = stored.map_or(Offset::Beginning, Offset::Offset);
                    if let Err(e) = tpl.set_partition_offset(topic, *p, offset) {
                        (self.hook)(&RebalanceEvent::Failed(format!("{topic}/{p}: {e}")));
                        return;
                    }
                }
                if let Err(e) = base.assign(tpl) {
                    (self.hook)(&RebalanceEvent::Failed(format!("assign: {e}")));
                    return;
                }
                (self.hook)(&RebalanceEvent::Assigned(assigned));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                if let Err(e) = base.unassign() {
                    (self.hook)(&RebalanceEvent::Failed(format!("unassign: {e}")));
                }
                (self.hook)(&RebalanceEvent::Revoked(revoked));
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                (self.hook)(&RebalanceEvent::Failed(
                    KafkaError::Rebalance(code).to_string(),
                ));
            }
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {}
}
