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

pub mod compat;

mod api;
mod log;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use joinery_runtime::http::{bind, ops_router};
use joinery_runtime::kafka::{ensure_topics, KafkaSettings, TopicSpec};
use joinery_runtime::{serve, Health, Telemetry};
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

/// Runs the registry until `cancel` fires.
pub async fn run(config: RegistryConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    let telemetry = Telemetry::new("registry");
    let health = Health::default();
    let listener = bind(config.listen).await?;
    ensure_topics(
        &config.kafka,
        &[TopicSpec {
            name: config.kafka.topic(SCHEMAS_TOPIC),
            partitions: 1,
            compacted: true,
        }],
    )
    .await?;
    let log = log::SchemaLog::open(&config.kafka, config.kafka.topic(SCHEMAS_TOPIC)).await?;
    let count = log.state.lock().schema_count();
    tracing::info!(schemas = count, "restored schemas from {SCHEMAS_TOPIC}");
    let shared = Arc::new(api::Shared { log });
    health.set_ready(true);
    let router = api::router(shared).merge(ops_router(health, telemetry));
    serve(listener, router, cancel).await
}
