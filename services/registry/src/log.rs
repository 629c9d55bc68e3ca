//! Persistence of the registry in the compacted topic `_joinery_schemas`.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::state::{SchemaRecord, State};
use crate::SCHEMAS_TOPIC;
use joinery_runtime::kafka::KafkaSettings;

pub(crate) struct SchemaLog {
    producer: FutureProducer,
    topic: String,
}

pub(crate) fn canonical(schema: &str) -> Result<String, apache_avro::Error> {
    Ok(apache_avro::Schema::parse_str(schema)?.canonical_form())
}

impl SchemaLog {
    pub(crate) fn new(kafka: &KafkaSettings) -> anyhow::Result<SchemaLog> {
        Ok(SchemaLog {
            producer: kafka.producer("joinery-registry").create()?,
            topic: kafka.topic(SCHEMAS_TOPIC),
        })
    }

    /// Reads the whole topic into a fresh state.
    pub(crate) async fn restore(&self, kafka: &KafkaSettings) -> anyhow::Result<State> {
        let kafka = kafka.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = kafka
                .consumer("joinery-registry-restore", "joinery-registry-restore")
                .create()?;
            let (_, high) = consumer.fetch_watermarks(&topic, 0, Duration::from_secs(10))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
            consumer.assign(&tpl)?;
            let mut state = State::default();
            let mut next = 0;
            while next < high {
                let Some(msg) = consumer.poll(Duration::from_secs(10)) else {
                    anyhow::bail!("timed out reading {SCHEMAS_TOPIC} at offset {next} of {high}");
                };
                let msg = msg?;
                next = msg.offset() + 1;
                let Some(payload) = msg.payload() else {
                    continue;
                };
                let record: SchemaRecord = serde_json::from_slice(payload).map_err(|e| {
                    anyhow::anyhow!(
                        "{SCHEMAS_TOPIC} offset {} is not a schema record: {e}",
                        msg.offset()
                    )
                })?;
                let canon = canonical(&record.schema).map_err(|e| {
                    anyhow::anyhow!(
                        "{SCHEMAS_TOPIC} offset {} holds an invalid schema: {e}",
                        msg.offset()
                    )
                })?;
                state.apply(record, canon);
            }
            Ok(state)
        })
        .await?
    }

    /// Appends a record and waits until Kafka has it (acks=all).
    pub(crate) async fn append(&self, record: &SchemaRecord) -> anyhow::Result<()> {
        let key = serde_json::json!({
            "keytype": "SCHEMA", "subject": record.subject, "version": record.version, "magic": 1
        })
        .to_string();
        let value = serde_json::to_string(record)?;
        self.producer
            .send(
                FutureRecord::to(&self.topic).key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("writing to {SCHEMAS_TOPIC}: {e}"))?;
        Ok(())
    }
}
