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
//! This first version serves registration, lookup by id, and subject and
//! version listing. Compatibility enforcement, deletion and the config and
//! mode endpoints are tracked in issue 3.

mod api;
mod log;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use joinery_runtime::http::{bind, ops_router};
use joinery_runtime::kafka::{ensure_topics, KafkaSettings, TopicSpec};
use joinery_runtime::{serve, Health, Telemetry};
use tokio::sync::Mutex;
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
    let log = log::SchemaLog::new(&config.kafka)?;
    let state = log.restore(&config.kafka).await?;
    tracing::info!(
        schemas = state.schema_count(),
        "restored schemas from {SCHEMAS_TOPIC}"
    );
    let shared = Arc::new(api::Shared {
        state: Mutex::new(state),
        log,
    });
    health.set_ready(true);
    let router = api::router(shared).merge(ops_router(health, telemetry));
    serve(listener, router, cancel).await
}
