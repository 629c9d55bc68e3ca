//! Every metric Joinery exports, in one place: its name, its help text and
//! its labels. Services register them through [`crate::Telemetry`]'s typed
//! constructors (`telemetry.counter_vec(&metrics::DEAD_LETTERS)`), so that a
//! name cannot drift between the service that exports it, the alert rules
//! and dashboards in `deploy/` and the README's operations table (a test
//! checks all three against [`ALL`]).

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// The Prometheus name.
    pub name: &'static str,
    /// The `# HELP` text: what it counts, and its labels' values.
    pub help: &'static str,
    /// Label names; empty for a metric without labels.
    pub labels: &'static [&'static str],
}

macro_rules! metrics {
    ($($(#[$doc:meta])* $id:ident = $name:literal, $help:literal, [$($label:literal),*];)*) => {
        $(
            $(#[$doc])*
            pub const $id: MetricDef = MetricDef { name: $name, help: $help, labels: &[$($label),*] };
        )*
        /// Every metric above.
        pub const ALL: &[MetricDef] = &[$($id),*];
    };
}

metrics! {
    // Every service.
    /// Set to 1 by every service while it runs.
    SERVICE_UP = "joinery_service_up", "1 while the service runs", ["service"];

    // Consumers (processor and projections).
    /// Consumer lag from librdkafka's statistics.
    CONSUMER_LAG = "joinery_consumer_lag_records", "Records behind the end of each partition", ["group", "topic", "partition"];
    /// Consumer errors by kind.
    CONSUMER_ERRORS = "joinery_consumer_errors_total", "Errors reported by a Kafka consumer, by kind (transient: retried by the client; fatal: the service stops)", ["kind"];
    /// Rebalance pauses.
    REBALANCE_PAUSE = "joinery_rebalance_pause_seconds", "Time from partitions being revoked to the next assignment", [];
    /// Restore times.
    PARTITION_RESTORE = "joinery_partition_restore_seconds", "Time from a partition's assignment until its state caught up with the log end it had then (restore by replay)", [];
    /// Partitions still restoring.
    PARTITIONS_RESTORING = "joinery_partitions_restoring", "Assigned partitions whose state has not yet caught up with the log end they had at assignment", [];

    // Ingest gateway.
    /// Events received by the gateway.
    INGEST_EVENTS = "joinery_ingest_events_total", "Events received by the gateway, by department, event type, outcome (accepted or rejected) and reason", ["department", "event_type", "outcome", "reason"];
    /// The gateway's producer queue.
    INGEST_QUEUE = "joinery_ingest_producer_queue_messages", "Events handed to the Kafka producer and not yet acknowledged", [];
    /// Gateway request latency.
    INGEST_REQUEST_SECONDS = "joinery_ingest_request_duration_seconds", "Time from request to response of POST /v1/events, by status code", ["status"];

    // Processor.
    /// Events applied.
    PROCESSOR_EVENTS = "joinery_processor_events_total", "Department events applied, by event type and result (applied, duplicate)", ["event_type", "result"];
    /// Dead letters.
    DEAD_LETTERS = "joinery_dead_letters_total", "Records sent to the dead-letter topic, by source topic and reason", ["topic", "reason"];
    /// Freshness at the processor.
    EVENT_TO_VIEW = "joinery_event_to_view_seconds", "Time from a department event being produced to Kafka to the changed view being written by the processor", ["mission"];
    /// Views published.
    PROCESSOR_VIEWS = "joinery_processor_views_published_total", "Changed mission views published, by mission", ["mission"];
    /// Batch time.
    PROCESSOR_BATCH_SECONDS = "joinery_processor_batch_duration_seconds", "Time to process, persist and publish one batch", [];
    /// Batch size.
    PROCESSOR_BATCH_RECORDS = "joinery_processor_batch_records", "Records per processed batch", [];
    /// Idle time.
    PROCESSOR_IDLE = "joinery_processor_idle_seconds_total", "Time spent waiting for the first record of a batch", [];
    /// Watermarks.
    PROCESSOR_WATERMARK = "joinery_processor_watermark_seconds", "Watermark of each mission in each partition: the event time its statuses are final up to (Unix seconds)", ["partition", "mission"];
    /// Quarantined outbox entries.
    OUTBOX_QUARANTINED = "joinery_outbox_quarantined_total", "Views and dead letters Kafka refused for good (too large, an invalid record), moved from the processor's outbox to its quarantine so that the partition goes on, by topic and reason", ["topic", "reason"];
    /// Late events.
    PROCESSOR_LATE_EVENTS = "joinery_processor_late_events_total", "Events applied after their department's allowed lateness had passed (they may revise figures already reported final), by department", ["department"];
    /// Revisions of final statuses.
    PROCESSOR_FINAL_REVISIONS = "joinery_processor_final_revisions_total", "Views that changed an outcome status already reported final (late data, corrections, retractions), by mission", ["mission"];
    /// Rebalances.
    PROCESSOR_REBALANCES = "joinery_processor_rebalances_total", "Consumer group rebalances, by kind (assigned, revoked, failed)", ["kind"];
    /// State size.
    PROCESSOR_STATE_BYTES = "joinery_processor_state_bytes", "Estimated live data in the processor's RocksDB", [];
    /// Block cache.
    PROCESSOR_BLOCK_CACHE = "joinery_processor_block_cache_bytes", "Bytes in use in the RocksDB block cache", [];

    // Projections.
    /// Cohort sizes (exact).
    MISSION_COHORT = "joinery_mission_cohort_citizens", "Citizens in each mission's cohort (exact)", ["mission"];
    /// Outcome counts (exact).
    OUTCOME_CITIZENS = "joinery_outcome_citizens", "Citizens by mission, outcome and status (pending, achieved, not_achieved; exact)", ["mission", "outcome", "status"];
    /// Snapshot counts (exact).
    SNAPSHOT_CITIZENS = "joinery_snapshot_citizens", "Citizens in each snapshot measure at the watermark: its population, and those in the measured state (e.g. NEET), by mission and snapshot (exact)", ["mission", "snapshot", "of"];
    /// Rebuilds under way.
    PROJECTIONS_REBUILDING = "joinery_projections_rebuilding", "1 while a rebuild of the mission is under way (its figures are incomplete), else 0", ["mission"];
    /// Freshness at projections.
    EVENT_TO_METRIC = "joinery_event_to_metric_seconds", "Time from a department event being produced to Kafka to the metric reflecting it", ["mission"];
    /// Views consumed.
    PROJECTIONS_VIEWS = "joinery_projections_views_total", "Views consumed, by mission and result (applied, stale)", ["mission", "result"];
    /// Undecodable views.
    PROJECTIONS_UNDECODABLE = "joinery_projections_undecodable_views_total", "Records on a view topic that projections could not use and dead-lettered, by reason", ["reason"];
    /// State size.
    PROJECTIONS_STATE_BYTES = "joinery_projections_state_bytes", "Estimated live bytes of the projections' RocksDB state", [];
}

/// The metric a Prometheus series name belongs to: the name itself, or a
/// histogram's `_bucket`, `_count` or `_sum` series of it.
pub fn find(series: &str) -> Option<&'static MetricDef> {
    ALL.iter().find(|m| {
        series == m.name
            || ["_bucket", "_count", "_sum"]
                .iter()
                .any(|s| series.strip_suffix(s) == Some(m.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every `joinery_...` word in a file that looks like a metric series.
    fn series_in(path: &Path) -> BTreeSet<String> {
        let text = std::fs::read_to_string(path).expect("readable");
        let mut out = BTreeSet::new();
        for (i, _) in text.match_indices("joinery_") {
            if text[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let word: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            out.insert(word);
        }
        out
    }

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("a directory") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                files(&p, out);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yml" | "yaml" | "json")
            ) {
                out.push(p);
            }
        }
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let names: BTreeSet<_> = ALL.iter().map(|m| m.name).collect();
        assert_eq!(names.len(), ALL.len(), "a metric is listed twice");
        for m in ALL {
            assert!(m.name.starts_with("joinery_"), "{}", m.name);
            assert!(!m.help.is_empty(), "{}", m.name);
        }
    }

    #[test]
    fn every_metric_the_alerts_and_dashboards_use_is_exported() {
        let mut paths = Vec::new();
        files(&repo().join("deploy/prometheus"), &mut paths);
        files(&repo().join("deploy/grafana"), &mut paths);
        assert!(paths.len() >= 3, "found {paths:?}");
        for p in paths {
            for s in series_in(&p) {
                assert!(
                    find(&s).is_some(),
                    "{} uses `{s}`, which no service exports",
                    p.display()
                );
            }
        }
    }

    #[test]
    fn the_readme_documents_every_metric_and_no_other() {
        let readme = series_in(&repo().join("README.md"));
        for m in ALL {
            assert!(
                readme.contains(m.name),
                "README's operations section does not mention {}",
                m.name
            );
        }
        for s in readme.iter().filter(|s| {
            s.ends_with("_total")
                || s.ends_with("_seconds")
                || s.ends_with("_records")
                || s.ends_with("_bytes")
                || s.ends_with("_citizens")
        }) {
            assert!(
                find(s).is_some(),
                "README names `{s}`, which no service exports"
            );
        }
    }
}
