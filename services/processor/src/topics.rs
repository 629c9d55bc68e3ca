//! The topics the processor reads and writes (names from
//! [`joinery_wire::names`]).

use joinery_domain::Department;
use joinery_engine::MissionDef;
use joinery_runtime::kafka::{KafkaSettings, TopicSpec};
use joinery_wire::names::view_topic;

pub use joinery_wire::names::DEAD_LETTER_TOPIC;

/// The topics the processor needs: department topics, one view topic per
/// mission (compacted, same partition count) and the dead-letter topic.
pub fn processor_topics(kafka: &KafkaSettings, missions: &[MissionDef]) -> Vec<TopicSpec> {
    let mut t: Vec<TopicSpec> = Department::ALL
        .into_iter()
        .map(|d| TopicSpec {
            name: kafka.topic(&d.topic()),
            partitions: kafka.partitions,
            compacted: false,
        })
        .collect();
    t.extend(missions.iter().map(|m| TopicSpec {
        name: kafka.topic(&view_topic(&m.id)),
        partitions: kafka.partitions,
        compacted: true,
    }));
    t.push(TopicSpec {
        name: kafka.topic(DEAD_LETTER_TOPIC),
        partitions: 1,
        compacted: false,
    });
    t
}
