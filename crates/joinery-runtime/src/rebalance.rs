//! Rebalance and restore timing, for the services that keep state per
//! partition (processor, projections).
//!
//! When partitions move between instances, the gaining instance resumes each
//! one from the offset in its own state store, replaying the log from there
//! (restore by replay). Operators want to know how long that takes, so the
//! [`RestoreTracker`] measures:
//!
//! - `joinery_rebalance_pause_seconds`: from partitions being revoked to the
//!   next assignment (the time the group processes nothing);
//! - `joinery_partition_restore_seconds`: from a partition's assignment until
//!   the state has caught up with the log end it had at assignment;
//! - `joinery_partitions_restoring`: partitions still catching up.
//!
//! The log ends are queried once per assigned partition, on a thread of its
//! own with its own client, never in the consume loop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{Histogram, IntGauge};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, OffsetLookup, RebalanceEvent};
use crate::{metrics, Telemetry};

/// A partition's (first offset, end offset).
type LogBounds = (i64, i64);

#[derive(Debug, Default)]
struct Tracker {
    revoked_at: Option<Instant>,
    /// Partition → (assigned at, (log start, log end) at assignment once known).
    restoring: HashMap<(String, i32), (Instant, Option<LogBounds>)>,
    /// Partitions assigned here whose state has caught up with the log end
    /// they had at assignment (until revoked).
    caught_up: HashSet<(String, i32)>,
}

/// Measures rebalance pauses and restore times; see the module docs.
#[derive(Debug, Clone)]
pub struct RestoreTracker {
    state: Arc<Mutex<Tracker>>,
    pause: Histogram,
    restore: Histogram,
    restoring: IntGauge,
}

impl RestoreTracker {
    /// Registers the metrics with the service's telemetry.
    pub fn new(t: &Telemetry) -> RestoreTracker {
        let buckets = [
            0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
        ];
        RestoreTracker {
            state: Arc::default(),
            pause: t.histogram(&metrics::REBALANCE_PAUSE, &buckets),
            restore: t.histogram(&metrics::PARTITION_RESTORE, &buckets),
            restoring: t.gauge(&metrics::PARTITIONS_RESTORING),
        }
    }

    /// Records a rebalance; call it from the consumer's rebalance hook.
    pub fn observe(&self, event: &RebalanceEvent) {
        let mut s = self.state.lock();
        let now = Instant::now();
        match event {
            RebalanceEvent::Revoked(parts) => {
                s.revoked_at = Some(now);
                for (t, p) in parts {
                    s.restoring.remove(&(t.clone(), *p));
                    s.caught_up.remove(&(t.clone(), *p));
                }
            }
            RebalanceEvent::Assigned(parts) => {
                if let Some(at) = s.revoked_at.take() {
                    self.pause.observe(now.duration_since(at).as_secs_f64());
                }
                for (t, p, _) in parts {
                    s.restoring.insert((t.clone(), *p), (now, None));
                    s.caught_up.remove(&(t.clone(), *p));
                }
            }
            RebalanceEvent::Failed(_) => {}
        }
        self.restoring.set(s.restoring.len() as i64);
    }

    /// Whether `topic`'s partition `p` is assigned here and its state has
    /// caught up with the log end it had at assignment: everything in it
    /// before this instance was given it has been read.
    pub fn caught_up(&self, topic: &str, p: i32) -> bool {
        self.state.lock().caught_up.contains(&(topic.to_owned(), p))
    }

    /// Watches restoring partitions until `cancel` fires or the returned
    /// guard is dropped (which also waits for the thread, so that it no
    /// longer holds the service's store): asks for each partition's log
    /// bounds once, then polls `offsets` (the state store's next offset)
    /// until it reaches the end.
    pub fn spawn(
        &self,
        kafka: &KafkaSettings,
        offsets: OffsetLookup,
        cancel: &CancellationToken,
    ) -> anyhow::Result<RestoreWatch> {
        let client: BaseConsumer = kafka.client("joinery-restore-watch").create()?;
        let me = self.clone();
        let cancel = cancel.child_token();
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("restore-watch".into())
            .spawn(move || me.poll_until(&client, &offsets, &stop))?;
        Ok(RestoreWatch {
            cancel,
            thread: Some(thread),
        })
    }

    /// Watches restoring partitions, blocking, until `cancel` fires: the
    /// body of [`RestoreTracker::spawn`]'s thread, for a service to run as
    /// a named blocking task instead ([`crate::Service::spawn_blocking`]).
    pub fn watch(
        &self,
        kafka: &KafkaSettings,
        offsets: &OffsetLookup,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let client: BaseConsumer = kafka.client("joinery-restore-watch").create()?;
        self.poll_until(&client, offsets, cancel);
        Ok(())
    }

    fn poll_until(
        &self,
        client: &BaseConsumer,
        offsets: &OffsetLookup,
        cancel: &CancellationToken,
    ) {
        while !cancel.is_cancelled() {
            self.poll(client, offsets);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn poll(&self, client: &BaseConsumer, offsets: &OffsetLookup) {
        let unknown: Vec<(String, i32)> = {
            let s = self.state.lock();
            s.restoring
                .iter()
                .filter(|(_, (_, end))| end.is_none())
                .map(|(k, _)| k.clone())
                .collect()
        };
        for (t, p) in unknown {
            match client.fetch_watermarks(&t, p, Duration::from_secs(5)) {
                Ok(bounds) => {
                    if let Some(e) = self.state.lock().restoring.get_mut(&(t, p)) {
                        e.1 = Some(bounds);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "log end not known yet"),
            }
        }
        let mut s = self.state.lock();
        let now = Instant::now();
        let mut done = Vec::new();
        s.restoring.retain(|(t, p), (since, end)| {
            let Some((start, end)) = *end else {
                return true;
            };
            // An empty log (or one emptied by retention) has nothing to restore.
            let caught_up = end <= start || offsets(t, *p).ok().flatten().is_some_and(|o| o >= end);
            if caught_up {
                let secs = now.duration_since(*since).as_secs_f64();
                self.restore.observe(secs);
                tracing::info!(topic = %t, partition = p, seconds = secs, "partition restored");
                done.push((t.clone(), *p));
            }
            !caught_up
        });
        s.caught_up.extend(done);
        self.restoring.set(s.restoring.len() as i64);
    }
}

/// The restore watch's thread: stopped and joined when dropped.
#[derive(Debug)]
pub struct RestoreWatch {
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RestoreWatch {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoke_then_assign_is_one_pause_and_assigned_partitions_are_restoring() {
        let t = Telemetry::new("test");
        let r = RestoreTracker::new(&t);
        r.observe(&RebalanceEvent::Assigned(vec![("a".into(), 0, None)]));
        assert_eq!(
            r.pause.get_sample_count(),
            0,
            "a first assignment is not a pause"
        );
        assert_eq!(r.restoring.get(), 1);
        r.observe(&RebalanceEvent::Revoked(vec![("a".into(), 0)]));
        assert_eq!(
            r.restoring.get(),
            0,
            "a revoked partition is no longer restoring here"
        );
        r.observe(&RebalanceEvent::Assigned(vec![
            ("a".into(), 0, Some(5)),
            ("a".into(), 1, None),
        ]));
        assert_eq!(r.pause.get_sample_count(), 1);
        assert_eq!(r.restoring.get(), 2);
    }
}
