//! `joinery rebuild <mission>`: evaluate one mission afresh over the whole
//! retained log, replacing what its view topic said, while live processing
//! goes on.
//!
//! 1. A **reset** control record goes to every partition of
//!    `joinery.views.<mission>`: projections drop, at each partition's
//!    reset, every figure they took from that partition, and mark the
//!    mission as being rebuilt.
//! 2. A processor of its own (own consumer group, own temporary state)
//!    evaluates only that mission from the beginning of every department
//!    topic to where it ended when the rebuild started, publishing each
//!    citizen's views with log-derived versions (a citizen's final view has
//!    the version the live processor gives it, whatever the batches).
//! 3. Once every view is acknowledged, the views since the reset are
//!    settled: any citizen the live processor updated during the rebuild,
//!    whose newer view the rebuild's older one now follows, is given its
//!    newest view again, so that compaction keeps the newest (see
//!    [`crate::settle_views`]).
//! 4. Then a **complete** control record goes to every partition, and
//!    projections clear the mark.
//!
//! With unchanged definitions the figures come back identical; with
//! changed ones (a new outcome, a snapshot, another window) they are those
//! of the new definitions over the whole log. See [`joinery_wire::control`].

use std::time::Duration;

use anyhow::Context;
use joinery_engine::load_missions;
use joinery_runtime::kafka::ensure_topics;
use joinery_wire::catalog::view_topic;
use joinery_wire::control::{Control, ControlKind, CONTROL_HEADER};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::{processor_topics, run, settle_views, ProcessorConfig};

/// Rebuilds `config.only_mission` (required) and returns the rebuild's id.
/// Fails, leaving the mission marked as being rebuilt, when cancelled or
/// stopped before it has caught up; running it again completes it.
pub async fn rebuild(
    mut config: ProcessorConfig,
    cancel: CancellationToken,
) -> anyhow::Result<String> {
    let mission = config
        .only_mission
        .clone()
        .context("a rebuild names the mission to rebuild")?;
    let defs = load_missions(&config.missions_dir)?;
    let Some(def) = defs.iter().find(|m| m.id == mission.as_str()) else {
        anyhow::bail!(
            "unknown mission `{mission}`; the definitions in {} are: {}",
            config.missions_dir.display(),
            defs.iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    ensure_topics(
        &config.kafka,
        &processor_topics(&config.kafka, std::slice::from_ref(def)),
    )
    .await?;
    // Check the registry answers before the reset blanks the figures.
    let subject = format!("{}-value", config.kafka.topic(&view_topic(&mission)));
    joinery_wire::RegistryClient::new(&config.registry_url)
        .register_when_ready(
            &subject,
            joinery_wire::Catalog::load().view_schema_text(),
            None,
        )
        .await?;
    let topic = config.kafka.topic(&view_topic(&mission));
    let started_at = chrono::Utc::now();
    let partitions = config.kafka.partitions;
    let control = |kind| Control {
        kind,
        mission: mission.clone(),
        rebuild: format!("{mission}-{}", started_at.format("%Y%m%dT%H%M%S%.3fZ")),
        partitions,
        started_at: started_at.timestamp_millis(),
    };
    let id = control(ControlKind::Reset).rebuild;
    let producer: FutureProducer = config.kafka.producer("joinery-rebuild").create()?;

    let resets = mark(&producer, &topic, &control(ControlKind::Reset)).await?;
    tracing::info!(rebuild = %id, %topic, partitions, "reset marked: readers drop the mission's earlier views and show it as being rebuilt");

    let (kafka, registry_url) = (config.kafka.clone(), config.registry_url.clone());
    config.stop_at_end = true;
    // The processor stops its own token when it has caught up; only the
    // caller's token says the rebuild was interrupted.
    run(config, cancel.child_token()).await?;
    if cancel.is_cancelled() {
        anyhow::bail!(
            "rebuild {id} was stopped before it caught up: the mission stays marked as being rebuilt, with partial figures; run `joinery rebuild {mission}` again"
        );
    }
    let from = resets.into_iter().map(|(p, o)| (p, o + 1)).collect();
    let republished = settle_views(
        &kafka,
        &registry_url,
        &topic,
        &from,
        started_at.timestamp_millis(),
    )
    .await?;
    tracing::info!(rebuild = %id, republished, "views settled: each citizen's newest view is its last record");
    mark(&producer, &topic, &control(ControlKind::Complete)).await?;
    tracing::info!(rebuild = %id, "rebuild complete: every view published and acknowledged");
    Ok(id)
}

/// Writes `control` to every partition of `topic`, waits for each
/// acknowledgement and returns where each landed (partition, offset).
async fn mark(
    producer: &FutureProducer,
    topic: &str,
    control: &Control,
) -> anyhow::Result<Vec<(i32, i64)>> {
    let mut landed = Vec::with_capacity(control.partitions as usize);
    let key = control.key();
    let value = control.to_bytes();
    for p in 0..control.partitions {
        let record = FutureRecord::to(topic)
            .partition(p)
            .key(&key)
            .payload(&value)
            .headers(OwnedHeaders::new().insert(Header {
                key: CONTROL_HEADER,
                value: Some(control.kind.as_str()),
            }));
        let delivery = producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| {
                anyhow::anyhow!(
                    "writing the {} mark to {topic} partition {p}: {e}",
                    control.kind.as_str()
                )
            })?;
        landed.push((delivery.partition, delivery.offset));
    }
    Ok(landed)
}
