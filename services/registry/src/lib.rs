//! # joinery-registry
//!
//! A schema registry speaking the Confluent Schema Registry REST API, so that
//! any standard Kafka client's Avro serializer works against Joinery. Schemas
//! and their ids live in the compacted Kafka topic `_joinery_schemas`: a
//! restarted registry reads the topic back and serves the same ids.
//!
//! Place in the data flow: every producer (the ingest gateway, departments'
//! own producers) registers or looks up writer schemas here; every consumer
//! (processor, projections) resolves schema ids here.
//!
//! Compatibility is enforced on registration (BACKWARD_TRANSITIVE unless
//! configured otherwise, per subject or globally), and the rejection names
//! the field and the rule it breaks. Every instance folds the same log with
//! the same rules, so instances agree on ids.
//!
//! # Layout
//!
//! - [`compat`]: the compatibility levels and checks.
//! - `state`: the fold over the log.
//! - `log`: the topic: append, and a tail that applies every record.
//! - `api`: the REST endpoints.
//! - `error`: what a request can fail with, as status and Confluent code.

pub mod compat;

mod api;
mod error;
mod log;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use joinery_runtime::kafka::{ensure_topics, KafkaSettings, TopicKind, TopicSpec};
use joinery_runtime::Service;
use tokio_util::sync::CancellationToken;

/// The compacted topic holding every registered schema.
pub const SCHEMAS_TOPIC: &str = "_joinery_schemas";

/// Registry configuration.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Address of the REST API (default `127.0.0.1:8081`).
    pub listen: SocketAddr,
    /// Kafka connection.
    pub kafka: KafkaSettings,
}

/// Runs the registry until `cancel` fires or its log tail fails.
pub async fn run(config: RegistryConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let mut service = Service::start("registry", config.listen, cancel).await?;
    ensure_topics(
        &config.kafka,
        &[TopicSpec {
            name: config.kafka.topic(SCHEMAS_TOPIC),
            partitions: 1,
            kind: TopicKind::Compacted,
        }],
    )
    .await?;
    let (log, tail) =
        log::SchemaLog::open(&config.kafka, config.kafka.topic(SCHEMAS_TOPIC)).await?;
    service.spawn_blocking("schema-log-tail", move |cancel| tail.run(&cancel));
    log.restored().await?;
    let count = log.state.lock().schema_count();
    tracing::info!(schemas = count, "restored schemas from {SCHEMAS_TOPIC}");
    let shared = Arc::new(api::Shared { log });
    service.run(api::router(shared)).await
}
