//! The reviewed Avro schemas from `schemas/`, embedded in the binary so that a
//! service always knows the reader schemas it was built against.

use std::collections::HashMap;

use apache_avro::Schema;
use joinery_domain::EventType;

/// The subject of the view topic's value schema for `mission`.
pub fn view_subject(mission: &str) -> String {
    format!("{}-value", view_topic(mission))
}

pub use crate::names::view_topic;

/// The registry subject of an event type on `topic`, its department's topic
/// (TopicRecordNameStrategy: `<topic>-<record full name>`).
pub fn event_subject(topic: &str, event_type: EventType) -> String {
    format!("{topic}-{}", event_type.avro_full_name())
}

fn source(event_type: EventType) -> &'static str {
    event_type.schema_source()
}

const VIEW_SOURCE: &str = include_str!("../../../schemas/views/MissionView.avsc");

/// The parsed schemas, one per event type plus the mission view.
#[derive(Debug)]
pub struct Catalog {
    events: HashMap<EventType, (Schema, &'static str)>,
    view: Schema,
}

impl Catalog {
    /// Parses every embedded schema. The schemas are checked by the test
    /// suite, so a failure here is a build defect, not a runtime condition.
    pub fn load() -> Catalog {
        let events = EventType::ALL
            .into_iter()
            .map(|t| {
                let text = source(t);
                let schema = Schema::parse_str(text)
                    .unwrap_or_else(|e| panic!("embedded schema of {t} is invalid: {e}"));
                (t, (schema, text))
            })
            .collect();
        let view = Schema::parse_str(VIEW_SOURCE)
            .unwrap_or_else(|e| panic!("embedded MissionView schema is invalid: {e}"));
        Catalog { events, view }
    }

    /// The reader schema of an event type.
    pub fn event_schema(&self, event_type: EventType) -> &Schema {
        &self.events[&event_type].0
    }

    /// The `.avsc` text of an event type, as registered with the registry.
    pub fn event_schema_text(&self, event_type: EventType) -> &'static str {
        self.events[&event_type].1
    }

    /// The mission view schema.
    pub fn view_schema(&self) -> &Schema {
        &self.view
    }

    /// The mission view `.avsc` text.
    pub fn view_schema_text(&self) -> &'static str {
        VIEW_SOURCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::schema::Schema as S;

    #[test]
    fn every_schema_parses_and_names_its_event_type() {
        let c = Catalog::load();
        for t in EventType::ALL {
            match c.event_schema(t) {
                S::Record(r) => assert_eq!(r.name.fullname(None), t.avro_full_name()),
                other => panic!("{t} is not a record: {other:?}"),
            }
        }
    }

    #[test]
    fn every_field_is_documented() {
        for t in EventType::ALL {
            let json: serde_json::Value = serde_json::from_str(source(t)).expect("schema is JSON");
            for f in json["fields"].as_array().expect("fields") {
                assert!(
                    f["doc"].as_str().is_some_and(|d| d.len() > 10),
                    "{t}.{} has no doc",
                    f["name"]
                );
            }
        }
    }

    #[test]
    fn subjects_follow_topic_record_name_strategy() {
        assert_eq!(
            event_subject("joinery.events.dfe", EventType::EducationExited),
            "joinery.events.dfe-gov.joinery.dfe.EducationExited"
        );
        assert_eq!(
            view_subject("opportunity"),
            "joinery.views.opportunity-value"
        );
    }
}
