//! The processor's metrics, registered with the service's telemetry.

use joinery_runtime::Telemetry;

/// The processor's metrics.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) events: prometheus::IntCounterVec,
    pub(crate) dead_letters: prometheus::IntCounterVec,
    pub(crate) views: prometheus::IntCounterVec,
    pub(crate) event_to_view: prometheus::HistogramVec,
    pub(crate) batch_seconds: prometheus::Histogram,
    pub(crate) batch_records: prometheus::Histogram,
    pub(crate) idle_seconds: prometheus::Counter,
    pub(crate) watermark: prometheus::IntGaugeVec,
    pub(crate) rebalances: prometheus::IntCounterVec,
    pub(crate) store_bytes: prometheus::IntGauge,
    pub(crate) block_cache_bytes: prometheus::IntGauge,
}

impl Metrics {
    pub(crate) fn new(t: &Telemetry) -> Metrics {
        use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};
        Metrics {
            events: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_processor_events_total",
                        "Department events applied, by event type and result (applied, duplicate)",
                    ),
                    &["event_type", "result"],
                )
                .expect("valid"),
            ),
            dead_letters: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_dead_letters_total",
                        "Records sent to the dead-letter topic, by source topic and reason",
                    ),
                    &["topic", "reason"],
                )
                .expect("valid"),
            ),
            event_to_view: t.register(
                prometheus::HistogramVec::new(
                    prometheus::HistogramOpts::new(
                        "joinery_event_to_view_seconds",
                        "Time from a department event being produced to Kafka to the changed view being written by the processor",
                    )
                    .buckets(joinery_runtime::telemetry::FRESHNESS_BUCKETS.to_vec()),
                    &["mission"],
                )
                .expect("valid"),
            ),
            views: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_processor_views_published_total",
                        "Changed mission views published, by mission",
                    ),
                    &["mission"],
                )
                .expect("valid"),
            ),
            batch_seconds: t.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "joinery_processor_batch_duration_seconds",
                        "Time to process, persist and publish one batch",
                    )
                    .buckets(prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid")),
                )
                .expect("valid"),
            ),
            batch_records: t.register(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "joinery_processor_batch_records",
                        "Records per processed batch",
                    )
                    .buckets(vec![
                        1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0,
                    ]),
                )
                .expect("valid"),
            ),
            idle_seconds: t.register(
                prometheus::Counter::new(
                    "joinery_processor_idle_seconds_total",
                    "Time spent waiting for the first record of a batch",
                )
                .expect("valid"),
            ),
            watermark: t.register(
                IntGaugeVec::new(
                    Opts::new(
                        "joinery_processor_watermark_seconds",
                        "Event-time watermark of each partition (Unix seconds)",
                    ),
                    &["partition"],
                )
                .expect("valid"),
            ),
            rebalances: t.register(
                IntCounterVec::new(
                    Opts::new(
                        "joinery_processor_rebalances_total",
                        "Consumer group rebalances, by kind (assigned, revoked, failed)",
                    ),
                    &["kind"],
                )
                .expect("valid"),
            ),
            store_bytes: t.register(
                IntGauge::new(
                    "joinery_processor_state_bytes",
                    "Estimated live data in the processor's RocksDB",
                )
                .expect("valid"),
            ),
            block_cache_bytes: t.register(
                IntGauge::new(
                    "joinery_processor_block_cache_bytes",
                    "Bytes in use in the RocksDB block cache",
                )
                .expect("valid"),
            ),
        }
    }
}
