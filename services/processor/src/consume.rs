//! The processor's batch loop: batches from the stateful consumer go to the
//! workers ([`crate::worker`]); a rebuild's processor stops once it has
//! consumed every department partition up to where it ended at start-up.

use std::time::{Duration, Instant};

use joinery_domain::Department;
use rdkafka::consumer::Consumer as _;
use tokio_util::sync::CancellationToken;

use crate::service::Processor;

/// A department partition's bounds when a rebuild started.
#[derive(Debug, Clone)]
pub(crate) struct LogEnd {
    topic: String,
    partition: i32,
    low: i64,
    high: i64,
}

impl Processor {
    /// Each department partition's bounds, for a rebuild's end.
    async fn log_ends(&self) -> anyhow::Result<Vec<LogEnd>> {
        let mut ends = Vec::new();
        for d in Department::ALL {
            let topic = self.config.kafka.topic(&d.topic());
            for partition in 0..self.config.kafka.partitions {
                let (low, high) =
                    joinery_runtime::kafka::retry_transient("log end offsets", || {
                        tokio::task::block_in_place(|| {
                            self.consumer.inner().fetch_watermarks(
                                &topic,
                                partition,
                                Duration::from_secs(10),
                            )
                        })
                    })
                    .await?;
                ends.push(LogEnd {
                    topic: topic.clone(),
                    partition,
                    low,
                    high,
                });
            }
        }
        Ok(ends)
    }

    /// (records consumed, records to consume) towards the ends.
    fn progress(&self, ends: &[LogEnd]) -> anyhow::Result<(i64, i64)> {
        let (mut done, mut total) = (0, 0);
        for e in ends {
            let at = self
                .store
                .offset(&e.topic, e.partition)?
                .unwrap_or(e.low)
                .min(e.high);
            done += at - e.low;
            total += e.high - e.low;
        }
        Ok((done, total))
    }

    /// Reports a rebuild's progress; whether it has caught up.
    fn caught_up(&self, ends: &[LogEnd], last_report: &mut Instant) -> anyhow::Result<bool> {
        let (done, total) = self.progress(ends)?;
        if last_report.elapsed() > Duration::from_secs(2) || done >= total {
            let pct = if total == 0 {
                100.0
            } else {
                100.0 * done as f64 / total as f64
            };
            tracing::info!(
                done,
                total,
                "rebuild progress: {done} of {total} records ({pct:.0}%)"
            );
            *last_report = Instant::now();
        }
        Ok(done >= total)
    }

    /// Works batches until `cancel` fires (or, for a rebuild, until it has
    /// caught up), then waits for the views already handed to the producer.
    pub(crate) async fn consume(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut last_gauges = Instant::now();
        let ends = if self.config.stop_at_end {
            Some(self.log_ends().await?)
        } else {
            None
        };
        let mut last_report = Instant::now();
        loop {
            if let Some(ends) = &ends {
                // (Caught up with the log, and with every timer it set due.)
                if self.caught_up(ends, &mut last_report)? && self.backlogged.lock().is_empty() {
                    self.publisher.reap(true).await?;
                    tracing::info!(
                        "rebuild complete: every partition consumed to where it ended at start-up"
                    );
                    return Ok(());
                }
            }
            // While an earlier run's timer backlog waits for its partition
            // to be assigned here, or deliveries are still to be reaped (an
            // entry Kafka refused is quarantined then, and counted), come
            // back between records too.
            let mut more_here = false;
            if !self.backlogged.lock().is_empty() {
                more_here = self.drain_assigned_backlogs().await?;
            }
            let idle = if more_here {
                // Poll, then work the backlog's next steps.
                Some(Duration::ZERO)
            } else if self.publisher.in_flight() {
                Some(Duration::from_millis(200))
            } else if !self.backlogged.lock().is_empty() {
                // A backlog of a partition another instance owns: looked
                // for again now and then, until a rebalance brings it here.
                Some(Duration::from_secs(5))
            } else {
                None
            };
            let Some(batch) = self
                .consumer
                .next_batch_within(self.config.max_batch, &cancel, idle)
                .await?
            else {
                break;
            };
            self.metrics.idle_seconds.inc_by(batch.waited.as_secs_f64());
            if batch.messages.is_empty() {
                self.publisher.reap(false).await?;
                continue;
            }
            let started = Instant::now();
            self.process(&batch.messages).await?;
            self.consumer.commit_for_lag(&batch.messages);
            // Observed once the batch's state is written (the benchmark reads
            // its sum as the records fully processed).
            self.metrics
                .batch_records
                .observe(batch.messages.len() as f64);
            self.metrics
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
            if last_gauges.elapsed() > Duration::from_secs(5) {
                self.update_gauges();
                last_gauges = Instant::now();
            }
        }
        // Stopping: wait for the views already handed to the producer.
        self.publisher.reap(true).await
    }

    /// Works the timer backlogs of the partitions assigned here now (an
    /// earlier run's, or a batch's too long to finish in one turn), a few
    /// steps each; returns whether any is left of them.
    async fn drain_assigned_backlogs(&self) -> anyhow::Result<bool> {
        let assigned: Vec<i32> = match self.consumer.inner().assignment() {
            Ok(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "assignment not known yet");
                return Ok(false);
            }
        };
        let mine: Vec<i32> = {
            let mut backlogged = self.backlogged.lock();
            let mine = backlogged
                .iter()
                .copied()
                .filter(|p| assigned.contains(p))
                .collect();
            backlogged.retain(|p| !assigned.contains(p));
            mine
        };
        if mine.is_empty() {
            return Ok(false);
        }
        tracing::debug!(partitions = ?mine, "working timer backlogs");
        let left = self
            .drain_backlogs(Some(&mine), crate::worker::DRAIN_STEPS_PER_TURN)
            .await?;
        let more = !left.is_empty();
        self.backlogged.lock().extend(left);
        Ok(more)
    }

    fn update_gauges(&self) {
        self.metrics
            .store_bytes
            .set(self.store.live_data_bytes() as i64);
        self.metrics
            .block_cache_bytes
            .set(self.store.block_cache_usage() as i64);
    }
}
