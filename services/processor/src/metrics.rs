//! The processor's metrics, registered with the service's telemetry.

use joinery_runtime::metrics;
use joinery_runtime::telemetry::FRESHNESS_BUCKETS;
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
    pub(crate) late_events: prometheus::IntCounterVec,
    pub(crate) quarantined: prometheus::IntCounterVec,
    pub(crate) final_revisions: prometheus::IntCounterVec,
    pub(crate) rebalances: prometheus::IntCounterVec,
    pub(crate) store_bytes: prometheus::IntGauge,
    pub(crate) block_cache_bytes: prometheus::IntGauge,
}

impl Metrics {
    pub(crate) fn new(t: &Telemetry) -> Metrics {
        Metrics {
            events: t.counter_vec(&metrics::PROCESSOR_EVENTS),
            dead_letters: t.counter_vec(&metrics::DEAD_LETTERS),
            event_to_view: t.histogram_vec(&metrics::EVENT_TO_VIEW, FRESHNESS_BUCKETS),
            views: t.counter_vec(&metrics::PROCESSOR_VIEWS),
            batch_seconds: t.histogram(
                &metrics::PROCESSOR_BATCH_SECONDS,
                &prometheus::exponential_buckets(0.001, 2.0, 14).expect("valid buckets"),
            ),
            batch_records: t.histogram(
                &metrics::PROCESSOR_BATCH_RECORDS,
                &[1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0],
            ),
            idle_seconds: t.float_counter(&metrics::PROCESSOR_IDLE),
            watermark: t.gauge_vec(&metrics::PROCESSOR_WATERMARK),
            late_events: t.counter_vec(&metrics::PROCESSOR_LATE_EVENTS),
            quarantined: t.counter_vec(&metrics::OUTBOX_QUARANTINED),
            final_revisions: t.counter_vec(&metrics::PROCESSOR_FINAL_REVISIONS),
            rebalances: t.counter_vec(&metrics::PROCESSOR_REBALANCES),
            store_bytes: t.gauge(&metrics::PROCESSOR_STATE_BYTES),
            block_cache_bytes: t.gauge(&metrics::PROCESSOR_BLOCK_CACHE),
        }
    }
}
