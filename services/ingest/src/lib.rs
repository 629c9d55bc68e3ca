//! # joinery-ingest
//!
//! The department ingest gateway, Joinery's front door for departments that
//! do not run their own Kafka producers. `POST /v1/events` takes JSON events,
//! checks the bearer token's department against each event type, validates
//! each event against its Avro schema, replaces the raw identifier with the
//! HMAC `citizen_key`, and produces it to `joinery.events.<department>` in the
//! Confluent wire format. It answers 202 only once Kafka has acknowledged
//! every accepted event (idempotent producer, `acks=all`).
//!
//! # Layout
//!
//! - [`convert`]: JSON to Avro with per-field errors, and pseudonymisation.
//! - `api`: the HTTP handlers.
//! - `error`: why a request is refused, as status codes and bodies.

pub mod convert;

mod api;
mod error;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use joinery_domain::{EventType, Millis, Pseudonymiser};
use joinery_runtime::auth::TokenStore;
use joinery_runtime::kafka::{ensure_topics, KafkaSettings};
use joinery_runtime::{Service, Telemetry};
pub use joinery_wire::names::department_topics;
use joinery_wire::{catalog::event_subject, Catalog, RegistryClient};
use rdkafka::producer::FutureProducer;
use tokio_util::sync::CancellationToken;

/// Gateway configuration.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Address of the HTTP API (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Kafka connection and department topic partition count.
    pub kafka: KafkaSettings,
    /// Schema registry base URL.
    pub registry_url: String,
    /// Token file (hashes and principals).
    pub tokens: PathBuf,
    /// The pseudonymisation key (at least 32 bytes).
    pub pseudonymiser: Pseudonymiser,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events accepted in one request.
    pub max_batch: usize,
    /// How long Kafka may take to acknowledge an event before the request
    /// is answered 503 (the producer's `message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// How far ahead of the time of receipt an event may be dated (default
    /// 366 days); later dates, and dates before 1900, are refused with 400.
    pub event_time_horizon: Millis,
}

/// Metrics of the gateway.
#[derive(Debug, Clone)]
pub(crate) struct IngestMetrics {
    pub(crate) events: prometheus::IntCounterVec,
    pub(crate) request_seconds: prometheus::HistogramVec,
    pub(crate) queue_depth: prometheus::IntGauge,
}

impl IngestMetrics {
    fn new(t: &Telemetry) -> IngestMetrics {
        use joinery_runtime::metrics;
        IngestMetrics {
            events: t.counter_vec(&metrics::INGEST_EVENTS),
            queue_depth: t.gauge(&metrics::INGEST_QUEUE),
            request_seconds: t.histogram_vec(
                &metrics::INGEST_REQUEST_SECONDS,
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            ),
        }
    }
}

/// What the handlers share.
pub(crate) struct Gateway {
    pub(crate) catalog: Catalog,
    pub(crate) schema_ids: HashMap<EventType, u32>,
    pub(crate) producer: FutureProducer,
    pub(crate) tokens: TokenStore,
    pub(crate) pseudonymiser: Pseudonymiser,
    pub(crate) metrics: IngestMetrics,
    pub(crate) max_batch: usize,
    pub(crate) kafka: KafkaSettings,
    pub(crate) delivery_timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) event_time_horizon: Millis,
}

/// Registers every event schema, retrying while the registry starts. Each
/// event subject is set to FULL_TRANSITIVE first: department topics are read
/// by consumers that upgrade independently of the producers, so a schema
/// change must be readable both ways.
pub async fn register_event_schemas(
    kafka: &KafkaSettings,
    registry: &RegistryClient,
    catalog: &Catalog,
) -> anyhow::Result<HashMap<EventType, u32>> {
    let mut ids = HashMap::new();
    for t in EventType::ALL {
        let subject = event_subject(&kafka.topic(&t.department().topic()), t);
        let id = registry
            .register_when_ready(
                &subject,
                catalog.event_schema_text(t),
                Some("FULL_TRANSITIVE"),
            )
            .await?;
        ids.insert(t, id);
    }
    Ok(ids)
}

/// How often the token file is checked for changes.
const TOKEN_RELOAD: Duration = Duration::from_secs(2);

/// How long shutdown waits for Kafka to acknowledge what is still queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the gateway until `cancel` fires. On shutdown, once the requests in
/// flight are answered, it flushes the producer so that nothing queued is lost.
pub async fn run(config: IngestConfig, cancel: CancellationToken) -> anyhow::Result<()> {
    // Requests may wait for Kafka's acknowledgement up to the delivery
    // timeout: shutdown lets them finish rather than cut them off.
    let mut service = Service::start("ingest", config.listen, cancel)
        .await?
        .with_drain(config.delivery_timeout + Duration::from_secs(5));
    let tokens = TokenStore::load(&config.tokens)?;
    let (reloading, stop) = (tokens.clone(), service.token());
    service.spawn("token-reloader", async move {
        reloading.reload_every(TOKEN_RELOAD, stop).await
    });
    ensure_topics(&config.kafka, &department_topics(&config.kafka)).await?;
    let catalog = Catalog::load();
    let registry = RegistryClient::new(&config.registry_url);
    let schema_ids = register_event_schemas(&config.kafka, &registry, &catalog).await?;
    let producer: FutureProducer = config
        .kafka
        .producer("joinery-ingest")
        .set("queue.buffering.max.messages", "100000")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        .create()?;
    let gateway = Arc::new(Gateway {
        catalog,
        schema_ids,
        producer,
        tokens,
        pseudonymiser: config.pseudonymiser,
        metrics: IngestMetrics::new(service.telemetry()),
        max_batch: config.max_batch,
        kafka: config.kafka.clone(),
        delivery_timeout: config.delivery_timeout,
        max_body: config.max_body_bytes,
        event_time_horizon: config.event_time_horizon,
    });
    let served = service.run(api::router(Arc::clone(&gateway))).await;
    // Flush what is queued so that nothing acknowledged is lost on shutdown,
    // also when the service stopped on a failure.
    let flushed = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        gateway.producer.flush(FLUSH_TIMEOUT)
    })
    .await?;
    served?;
    Ok(flushed?)
}
