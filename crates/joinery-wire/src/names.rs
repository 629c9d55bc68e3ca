//! Every name Joinery gives to things in Kafka, in one place: topics and
//! record headers. Services add their namespace prefix
//! (`KafkaSettings::topic`) to the topic names.

pub use joinery_domain::department::EVENTS_TOPIC_PREFIX;
use joinery_domain::Department;
use joinery_runtime::kafka::{KafkaSettings, TopicKind, TopicSpec};

/// Prefix of every mission's compacted view topic: `joinery.views.<mission>`.
pub const VIEWS_TOPIC_PREFIX: &str = "joinery.views.";

/// Where every service sends the records it could not use, with headers
/// saying why ([`dead_letter_headers`]).
pub const DEAD_LETTER_TOPIC: &str = "joinery.deadletter";

/// The compacted topic holding every registered schema.
pub const SCHEMAS_TOPIC: &str = "_joinery_schemas";

/// Header naming a control record's kind on a view topic: a rebuild's
/// `reset` or `complete` ([`crate::control`]), or a `watermark`
/// ([`crate::watermark`]).
pub const CONTROL_HEADER: &str = "joinery.control";

/// Header of a watermark record naming its mission; see [`crate::watermark`].
pub const MISSION_HEADER: &str = "joinery.mission";
/// Header of a watermark record holding its watermark (ms since the epoch,
/// decimal); see [`crate::watermark`].
pub const WATERMARK_HEADER: &str = "joinery.watermark";

/// Dead-letter header: a short, stable reason code (`corrupt_avro`, ...).
pub const REASON_HEADER: &str = "joinery.reason";
/// Dead-letter header: the full error, for a person to act on.
pub const ERROR_HEADER: &str = "joinery.error";
/// Dead-letter header: the topic the record was read from.
pub const SOURCE_TOPIC_HEADER: &str = "joinery.source.topic";
/// Dead-letter header: the partition the record was read from.
pub const SOURCE_PARTITION_HEADER: &str = "joinery.source.partition";
/// Dead-letter header: the record's offset in that partition.
pub const SOURCE_OFFSET_HEADER: &str = "joinery.source.offset";
/// Prefix of a dead letter's copy of each of the refused record's own
/// headers (e.g. a control record's `joinery.control`), restored on replay.
pub const ORIGINAL_HEADER_PREFIX: &str = "joinery.original.";
/// Dead-letter header, set when the refused record was too large to copy
/// into a dead letter (with its headers it would exceed the largest record
/// Kafka takes): its size. The record is still at its source offset.
pub const PAYLOAD_OMITTED_HEADER: &str = "joinery.payload_omitted";
/// The most bytes (key, value and headers) a dead letter copies of a
/// refused record; below librdkafka's default `message.max.bytes`
/// (1,000,000) with room for the dead letter's own headers.
pub const MAX_DEAD_LETTER_BYTES: usize = 900_000;
/// Dead-letter header: the service that refused the record.
pub const SERVICE_HEADER: &str = "joinery.service";

/// The department topics (`joinery.events.<department>`, with the
/// namespace), all with the same partition count so that a citizen's events
/// meet in one partition, and timestamps bounded by the broker
/// ([`TopicKind::Events`]).
pub fn department_topics(kafka: &KafkaSettings) -> Vec<TopicSpec> {
    Department::ALL
        .into_iter()
        .map(|d| TopicSpec {
            name: kafka.topic(&d.topic()),
            partitions: kafka.partitions,
            kind: TopicKind::Events,
        })
        .collect()
}

/// The dead-letter topic (kept forever, one partition), which the
/// processor and projections both write.
pub fn dead_letter_topic(kafka: &KafkaSettings) -> TopicSpec {
    TopicSpec {
        name: kafka.topic(DEAD_LETTER_TOPIC),
        partitions: 1,
        kind: TopicKind::Retained,
    }
}

/// The compacted Kafka topic carrying `mission`'s per-citizen views.
pub fn view_topic(mission: &str) -> String {
    format!("{VIEWS_TOPIC_PREFIX}{mission}")
}

/// The headers of a dead letter: why (`reason` code and `error` text), where
/// it was read (source topic, partition, offset) and who refused it.
pub fn dead_letter_headers(
    reason: &str,
    error: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    service: &str,
) -> Vec<(String, String)> {
    vec![
        (REASON_HEADER.into(), reason.into()),
        (ERROR_HEADER.into(), error.into()),
        (SOURCE_TOPIC_HEADER.into(), topic.into()),
        (SOURCE_PARTITION_HEADER.into(), partition.to_string()),
        (SOURCE_OFFSET_HEADER.into(), offset.to_string()),
        (SERVICE_HEADER.into(), service.into()),
    ]
}
