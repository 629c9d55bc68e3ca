//! From consumed department records to events, or to dead letters.
//!
//! Place in the data flow: the consume loop resolves each record's writer
//! schema with the registry (the only step that may wait) and hands the
//! records, grouped by partition, to the workers; each worker decodes its
//! records here into [`Arrival`]s for the partition step, and turns what
//! cannot be decoded into a dead letter with the reason, the source topic,
//! partition and offset.

use std::sync::Arc;

use apache_avro::Schema;
use joinery_domain::event::check_event_time;
use joinery_domain::{Department, Event, EventType, Millis};
use joinery_runtime::kafka::KafkaSettings;
use joinery_wire::codec::{event_from_value, record_name, ValueDecoder};
use joinery_wire::framing::unframe;
use joinery_wire::{Catalog, DecodeError};
use rustc_hash::FxHashMap;

use crate::outbox::Entry;
use crate::step::Arrival;
use joinery_wire::names::{
    dead_letter_headers, DEAD_LETTER_TOPIC, MAX_DEAD_LETTER_BYTES, PAYLOAD_OMITTED_HEADER,
};

/// A consumed record's parts, borrowed for the batch, that the partition
/// workers share.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    /// Source topic (with the namespace).
    pub(crate) topic: &'a str,
    /// Source partition.
    pub(crate) partition: i32,
    /// Offset in the source partition.
    pub(crate) offset: i64,
    /// Kafka timestamp: when the record was produced.
    pub(crate) timestamp: Millis,
    /// The record's key.
    pub(crate) key: &'a [u8],
    /// The record's value (Confluent-framed Avro).
    pub(crate) payload: &'a [u8],
    /// The writer schema, or why there is none (the record is a dead letter).
    pub(crate) writer: Result<Arc<Schema>, DecodeError>,
}

/// Decodes a partition's records, keeping one Avro decoder per writer
/// schema for the batch.
pub(crate) struct Decoder<'s> {
    /// The reader schemas.
    catalog: &'s Catalog,
    /// Topic names (the namespace).
    kafka: &'s KafkaSettings,
    /// How far ahead of its Kafka timestamp an event may be dated.
    horizon: Millis,
    /// How far ahead of its Kafka timestamp an event may be recorded.
    skew: Millis,
    /// One decoder per writer schema met in this batch.
    decoders: FxHashMap<*const Schema, ValueDecoder<'s>>,
}

impl std::fmt::Debug for Decoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("schemas", &self.decoders.len())
            .finish()
    }
}

impl<'s> Decoder<'s> {
    /// A decoder with no writer schema met yet, refusing events dated more
    /// than `horizon` after their Kafka timestamp.
    pub(crate) fn new(
        catalog: &'s Catalog,
        kafka: &'s KafkaSettings,
        horizon: Millis,
        skew: Millis,
    ) -> Decoder<'s> {
        Decoder {
            catalog,
            kafka,
            horizon,
            skew,
            decoders: FxHashMap::default(),
        }
    }

    /// The event a record written with `writer` carries, or why it cannot
    /// be used (including event times that cannot be true).
    pub(crate) fn arrival(
        &mut self,
        input: &Input<'_>,
        writer: &'s Arc<Schema>,
    ) -> Result<Arrival, DecodeError> {
        let event = self.decode(input, writer)?;
        // `recorded_at` orders an event's versions, so it may not lie ahead
        // of the record's timestamp beyond clock skew.
        for (field, t, ahead) in [
            ("occurred_at", event.occurred_at, self.horizon),
            ("recorded_at", event.recorded_at, self.skew),
        ] {
            check_event_time(t, input.timestamp, ahead)
                .map_err(|error| DecodeError::EventTime { field, error })?;
        }
        Ok(Arrival {
            event,
            timestamp: input.timestamp,
            source: 0,
        })
    }

    /// Decodes a department record with the decoder of its writer schema
    /// (built the first time the batch meets that schema).
    fn decode(&mut self, input: &Input<'_>, writer: &'s Arc<Schema>) -> Result<Event, DecodeError> {
        let (_, body) = unframe(input.payload)?;
        let name = record_name(writer).unwrap_or_default();
        let event_type =
            EventType::from_avro_full_name(&name).ok_or(DecodeError::UnknownRecordType(name))?;
        let department = self
            .kafka
            .joinery_name(input.topic)
            .and_then(Department::from_topic);
        if department != Some(event_type.department()) {
            return Err(DecodeError::WrongTopic {
                event_type,
                topic: input.topic.into(),
            });
        }
        let decoder = match self.decoders.entry(Arc::as_ptr(writer)) {
            std::collections::hash_map::Entry::Occupied(d) => d.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => v.insert(ValueDecoder::new(
                writer,
                self.catalog.event_schema(event_type),
            )?),
        };
        event_from_value(event_type, decoder.decode(body)?)
    }
}

/// The dead letter of a record that could not be used: its key and value
/// as they were, and headers saying why and where it came from.
pub(crate) fn dead_letter(
    kafka: &KafkaSettings,
    m: &Input<'_>,
    reason: &'static str,
    error: &str,
) -> Entry {
    tracing::warn!(
        topic = m.topic,
        partition = m.partition,
        offset = m.offset,
        reason,
        error,
        "dead-lettering record"
    );
    let mut headers =
        dead_letter_headers(reason, error, m.topic, m.partition, m.offset, "processor");
    let size = m.key.len() + m.payload.len();
    let payload = if size > MAX_DEAD_LETTER_BYTES {
        // Kafka would refuse the copy: the dead letter says where the
        // record is instead.
        headers.push((PAYLOAD_OMITTED_HEADER.into(), format!("{size} bytes")));
        Vec::new()
    } else {
        m.payload.to_vec()
    };
    Entry {
        topic: kafka.topic(DEAD_LETTER_TOPIC),
        key: if size > MAX_DEAD_LETTER_BYTES {
            Vec::new()
        } else {
            m.key.to_vec()
        },
        payload,
        headers,
        partition: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(key: &'a [u8], payload: &'a [u8]) -> Input<'a> {
        Input {
            topic: "joinery.events.dfe",
            partition: 2,
            offset: 41,
            timestamp: 0,
            key,
            payload,
            writer: Err(DecodeError::UnknownSchemaId(9)),
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_record_unless_kafka_could_not_take_the_copy() {
        let kafka = KafkaSettings::new("127.0.0.1:1");
        let small = dead_letter(&kafka, &input(b"k", b"v"), "corrupt_avro", "bad");
        assert_eq!(
            (small.key.as_slice(), small.payload.as_slice()),
            (&b"k"[..], &b"v"[..])
        );
        assert!(small
            .headers
            .iter()
            .all(|(k, _)| k != PAYLOAD_OMITTED_HEADER));

        // With its headers the copy would pass the largest record Kafka
        // takes: the dead letter says where the record is instead.
        let big = vec![7u8; MAX_DEAD_LETTER_BYTES];
        let letter = dead_letter(&kafka, &input(b"k", &big), "corrupt_avro", "bad");
        assert!(letter.payload.is_empty() && letter.key.is_empty());
        let header = |name: &str| {
            letter
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header(PAYLOAD_OMITTED_HEADER), Some("900001 bytes"));
        assert_eq!(
            header(joinery_wire::names::SOURCE_OFFSET_HEADER),
            Some("41")
        );
        assert_eq!(
            header(joinery_wire::names::SOURCE_PARTITION_HEADER),
            Some("2")
        );
    }
}
