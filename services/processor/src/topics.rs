//! The topics the processor reads and writes (names from
//! [`joinery_wire::names`]).

use joinery_engine::MissionDef;
use joinery_runtime::kafka::{KafkaSettings, TopicKind, TopicSpec};
use joinery_wire::names::{dead_letter_topic, department_topics, view_topic};

pub use joinery_wire::names::DEAD_LETTER_TOPIC;

/// The topics the processor needs: department topics, one view topic per
/// mission (compacted, same partition count) and the dead-letter topic.
pub fn processor_topics(kafka: &KafkaSettings, missions: &[MissionDef]) -> Vec<TopicSpec> {
    let mut t = department_topics(kafka);
    t.extend(missions.iter().map(|m| TopicSpec {
        name: kafka.topic(&view_topic(&m.id)),
        partitions: kafka.partitions,
        kind: TopicKind::Compacted,
    }));
    t.push(dead_letter_topic(kafka));
    t
}
