//! The projections' batch loop: view records from the stateful consumer
//! become contributions and metrics, written with their offsets in one
//! RocksDB batch; a rebuild's control records reset or complete a mission,
//! and the processor's watermark records say what each partition's
//! figures are final up to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use joinery_runtime::consumer::StatefulConsumer;
use joinery_runtime::retry::Policy;
use joinery_store::Store;
use joinery_wire::codec::{decode_value, view_from_value, writer_schema};
use joinery_wire::control::{Control, ControlKind, CONTROL_HEADER};
use joinery_wire::framing::unframe;
use joinery_wire::names::{dead_letter_headers, ORIGINAL_HEADER_PREFIX};
use joinery_wire::watermark::{read_watermark, Watermark, WATERMARK_CONTROL};
use joinery_wire::{Catalog, DecodeError, RegistryClient};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{Contribution, Rebuilding};
use crate::layout::{contribution_key, partition_prefix, prefix_end, METRICS_PREFIX};
use crate::{Metrics, Shared};

/// Most view records applied in one RocksDB write.
const MAX_BATCH: usize = 1000;

/// The kind a view-topic record's control header names, when it is a
/// control record and not a view.
fn control_kind<'a>(m: &'a BorrowedMessage<'_>) -> Option<&'a [u8]> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == CONTROL_HEADER)
        .map(|h| h.value.unwrap_or_default())
}

/// Whether a view-topic record is a rebuild's control record (a reset or
/// a completion), applied on its own between batches of views.
fn is_rebuild_control(m: &BorrowedMessage<'_>) -> bool {
    control_kind(m).is_some_and(|k| k != WATERMARK_CONTROL.as_bytes())
}

/// The consumer loop and what it writes to.
pub(crate) struct ViewConsumer {
    /// The group consumer over the view topics.
    pub(crate) consumer: StatefulConsumer,
    /// Contributions, metrics and offsets.
    pub(crate) store: Arc<Store>,
    /// Missions with contributions saved before contributions kept their
    /// partition (under `p-1`): a view of such a mission must also look
    /// there for the citizen's earlier contribution.
    pub(crate) unpartitioned: HashSet<String>,
    /// The metrics the HTTP handlers read.
    pub(crate) shared: Arc<Shared>,
    /// The projections' own metrics.
    pub(crate) metrics: Metrics,
    /// Writer schemas by id.
    pub(crate) registry: RegistryClient,
    /// The reader schema of views.
    pub(crate) catalog: Catalog,
    /// Where records that cannot be used go.
    pub(crate) dead_letters: DeadLetters,
}

/// The projections' dead letters: a record on a view topic that cannot be
/// used (undecodable, of an unknown mission, an unreadable control record)
/// is copied to `joinery.deadletter` with the reason, and acknowledged,
/// before its offset is stored. Nothing refused is lost.
pub(crate) struct DeadLetters {
    /// The producer (idempotent, `acks=all`).
    pub(crate) producer: FutureProducer,
    /// The dead-letter topic (with the namespace).
    pub(crate) topic: String,
}

/// A record refused, to dead-letter: the record, the reason code and what
/// a person can act on.
type Refused<'a> = (&'a BorrowedMessage<'a>, &'static str, String);

impl DeadLetters {
    /// Sends every refused record and waits for Kafka's acknowledgement.
    async fn send(&self, refused: &[Refused<'_>], metrics: &Metrics) -> anyhow::Result<()> {
        let mut pending = Vec::with_capacity(refused.len());
        for (m, reason, error) in refused {
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), reason, error = %error, "dead-lettering view record");
            metrics.dead_letters.with_label_values(&[reason]).inc();
            use rdkafka::message::Headers;
            let mut headers = rdkafka::message::OwnedHeaders::new();
            if let Some(own) = m.headers() {
                for h in own.iter() {
                    headers = headers.insert(rdkafka::message::Header {
                        key: &format!("{ORIGINAL_HEADER_PREFIX}{}", h.key),
                        value: h.value,
                    });
                }
            }
            for (k, v) in dead_letter_headers(
                reason,
                error,
                m.topic(),
                m.partition(),
                m.offset(),
                "projections",
            ) {
                headers = headers.insert(rdkafka::message::Header {
                    key: &k,
                    value: Some(v.as_bytes()),
                });
            }
            let record = FutureRecord::to(&self.topic)
                .key(m.key().unwrap_or_default())
                .payload(m.payload().unwrap_or_default())
                .headers(headers);
            pending.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for r in futures::future::join_all(pending).await {
            r.map_err(|(e, _)| anyhow::anyhow!("a dead letter was not acknowledged: {e}; stopping so that its record is read again on restart"))?;
        }
        Ok(())
    }
}

impl ViewConsumer {
    pub(crate) async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        while let Some(batch) = self.consumer.next_batch(MAX_BATCH, &cancel).await? {
            self.apply(&batch.messages).await?;
            self.consumer.commit_for_lag(&batch.messages);
        }
        Ok(())
    }

    async fn decode(
        &self,
        m: &BorrowedMessage<'_>,
    ) -> Result<joinery_domain::MissionView, DecodeError> {
        let (id, body) = unframe(m.payload().unwrap_or_default())?;
        let writer = writer_schema(&self.registry, id, &Policy::REGISTRY_UNREACHABLE).await?;
        view_from_value(decode_value(&writer, self.catalog.view_schema(), body)?)
    }

    /// Applies a batch: views (and the watermark records among them) in
    /// batches of their own, each rebuild control record (a reset or
    /// completion) on its own between them.
    async fn apply(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        let mut start = 0;
        for (i, m) in messages.iter().enumerate() {
            if is_rebuild_control(m) {
                self.apply_views(&messages[start..i]).await?;
                self.apply_control(m).await?;
                start = i + 1;
            }
        }
        self.apply_views(&messages[start..]).await
    }

    /// A rebuild's control record on partition `p` of a view topic. A reset
    /// takes out every contribution that came from `p` (and any whose
    /// partition was not kept) and marks the mission as being rebuilt; a
    /// completion clears the mark once every partition has had one.
    async fn apply_control(&self, m: &BorrowedMessage<'_>) -> anyhow::Result<()> {
        let mut batch = self.store.batch();
        batch.set_offset(m.topic(), m.partition(), m.offset() + 1);
        let control = match Control::from_bytes(m.payload().unwrap_or_default()) {
            Ok(c) => c,
            Err(e) => {
                let refused = [(m, "bad_control_record", e.to_string())];
                self.dead_letters.send(&refused, &self.metrics).await?;
                self.store.write(batch)?;
                return Ok(());
            }
        };
        let mut working = self.shared.metrics.read().clone();
        let Some(mission) = working.get_mut(&control.mission) else {
            let refused = [(
                m,
                "unknown_mission",
                format!(
                    "a control record for mission `{}`, which these projections do not define",
                    control.mission
                ),
            )];
            self.dead_letters.send(&refused, &self.metrics).await?;
            self.store.write(batch)?;
            return Ok(());
        };
        let p = m.partition();
        match control.kind {
            ControlKind::Reset => {
                let mut dropped = 0u64;
                for partition in [Some(p), None] {
                    let prefix = partition_prefix(&control.mission, partition);
                    for (k, v) in self
                        .store
                        .scan_range(prefix.as_bytes(), &prefix_end(prefix.as_bytes()))?
                    {
                        let c: Contribution = serde_json::from_slice(&v)?;
                        mission.withdraw(&c);
                        batch.delete(&k);
                        dropped += 1;
                    }
                }
                let r = mission.rebuilding.get_or_insert_with(Default::default);
                if r.id != control.rebuild {
                    *r = Rebuilding {
                        id: control.rebuild.clone(),
                        started_at: control.started_at,
                        partitions: control.partitions,
                        ..Rebuilding::default()
                    };
                }
                r.reset.insert(p);
                mission.reset_partition(p);
                tracing::info!(mission = %control.mission, rebuild = %control.rebuild, partition = p, dropped, "rebuild reset: earlier views of this partition no longer count");
            }
            ControlKind::Complete => match &mut mission.rebuilding {
                Some(r) if r.id == control.rebuild => {
                    r.complete.insert(p);
                    if r.complete.len() as i32 >= r.partitions {
                        mission.rebuilding = None;
                        tracing::info!(mission = %control.mission, rebuild = %control.rebuild, "rebuild complete");
                    }
                }
                // A completion of an earlier or superseded rebuild.
                _ => {}
            },
        }
        mission.updated_at = chrono::Utc::now().timestamp_millis();
        batch.put(
            format!("{METRICS_PREFIX}{}", control.mission),
            serde_json::to_vec(&*mission)?,
        );
        self.store.write(batch)?;
        self.metrics.publish(&control.mission, mission);
        *self.shared.metrics.write() = working;
        Ok(())
    }

    async fn apply_views(&self, messages: &[BorrowedMessage<'_>]) -> anyhow::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp_millis();
        let mut working = self.shared.metrics.read().clone();
        let mut contributions: HashMap<Vec<u8>, Contribution> = HashMap::new();
        let mut batch = self.store.batch();
        let mut touched = std::collections::BTreeSet::new();
        let mut fresh: Vec<(String, f64)> = Vec::new();
        let mut refused: Vec<Refused<'_>> = Vec::new();
        for m in messages {
            batch.set_offset(m.topic(), m.partition(), m.offset() + 1);
            if control_kind(m).is_some() {
                // A watermark record: the partition's views before it are
                // applied, so its figures are final up to it.
                use rdkafka::message::Headers;
                let headers = m.headers().map(|h| {
                    h.iter()
                        .map(|h| (h.key, h.value.unwrap_or_default()))
                        .collect::<Vec<_>>()
                });
                match read_watermark(headers.unwrap_or_default()) {
                    Some(Ok(Watermark { mission, watermark })) => match working.get_mut(&mission) {
                        Some(metrics) => {
                            metrics.partition_watermark(m.partition(), watermark);
                            touched.insert(mission);
                        }
                        None => refused.push((
                            m,
                            "unknown_mission",
                            format!("a watermark record for mission `{mission}`, which these projections do not define"),
                        )),
                    },
                    Some(Err(e)) => refused.push((m, "bad_control_record", e)),
                    None => refused.push((
                        m,
                        "bad_control_record",
                        "a control record of an unknown kind".to_owned(),
                    )),
                }
                continue;
            }
            let view = match self.decode(m).await {
                Ok(v) => v,
                Err(e) if !e.is_poison() => anyhow::bail!(
                    "cannot decode the view at {}/{}@{}: {e}; stopping so that it is read again on restart",
                    m.topic(),
                    m.partition(),
                    m.offset()
                ),
                Err(e) => {
                    refused.push((m, e.reason(), e.to_string()));
                    continue;
                }
            };
            let Some(mission) = working.get_mut(view.mission.as_str()) else {
                refused.push((
                    m,
                    "unknown_mission",
                    format!(
                        "a view of mission `{}`, which these projections do not define",
                        view.mission
                    ),
                ));
                continue;
            };
            if mission.saw_view(m.partition()) {
                // Kept with the figures, even when the view itself is stale.
                touched.insert(view.mission.to_string());
            }
            let citizen = view.citizen_key.as_str();
            let key = contribution_key(&view.mission, Some(m.partition()), citizen);
            let mut old = match contributions.get(&key) {
                Some(c) => Some(c.clone()),
                None => self
                    .store
                    .get(&key)?
                    .map(|b| serde_json::from_slice::<Contribution>(&b))
                    .transpose()?,
            };
            if old.is_none() && self.unpartitioned.contains(view.mission.as_str()) {
                // Saved before contributions kept their partition: the
                // citizen's contribution moves to its partition's key.
                let legacy = contribution_key(&view.mission, None, citizen);
                if let Some(b) = self.store.get(&legacy)? {
                    let c: Contribution = serde_json::from_slice(&b)?;
                    batch.delete(&legacy);
                    batch.put(&key, &b);
                    contributions.insert(key.clone(), c.clone());
                    old = Some(c);
                }
            }
            let new = Contribution {
                partition: Some(m.partition()),
                ..Contribution::from(&view)
            };
            if mission.apply(old.as_ref(), &new) {
                batch.put(&key, serde_json::to_vec(&new)?);
                contributions.insert(key, new);
                touched.insert(view.mission.to_string());
                fresh.push((
                    view.mission.to_string(),
                    (now - view.ingested_at).max(0) as f64 / 1000.0,
                ));
                self.metrics
                    .views
                    .with_label_values(&[&view.mission, "applied"])
                    .inc();
            } else {
                self.metrics
                    .views
                    .with_label_values(&[&view.mission, "stale"])
                    .inc();
            }
        }
        for m in &touched {
            working
                .get_mut(m.as_str())
                .expect("only held missions are touched")
                .updated_at = now;
            batch.put(
                format!("{METRICS_PREFIX}{m}"),
                serde_json::to_vec(&working[m.as_str()])?,
            );
        }
        // Dead letters are acknowledged before the offsets that pass them
        // are stored.
        self.dead_letters.send(&refused, &self.metrics).await?;
        self.store.write(batch)?;
        for m in &touched {
            self.metrics.publish(m, &working[m.as_str()]);
        }
        self.metrics
            .state_bytes
            .set(self.store.live_data_bytes() as i64);
        for (m, secs) in fresh {
            self.metrics
                .freshness
                .with_label_values(&[&m])
                .observe(secs);
        }
        *self.shared.metrics.write() = working;
        Ok(())
    }
}
