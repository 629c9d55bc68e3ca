//! Tracing and metrics. Each service owns one `prometheus::Registry`, passed
//! explicitly to whatever registers metrics; nothing is global.

use prometheus::{Encoder, Registry, TextEncoder};

use crate::metrics::{self, MetricDef};

/// Installs the tracing subscriber: human-readable to stderr, filtered by
/// `RUST_LOG` (default `info`). Safe to call more than once (tests).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A service's metrics registry, labelled with the service name.
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// The registry `/metrics` renders.
    pub registry: Registry,
}

impl Telemetry {
    /// A fresh registry for `service` (`joinery_service_up{service=...}` is set to 1).
    pub fn new(service: &str) -> Telemetry {
        let registry = Registry::new();
        let telemetry = Telemetry { registry };
        telemetry
            .gauge_vec(&metrics::SERVICE_UP)
            .with_label_values(&[service])
            .set(1);
        telemetry
    }

    /// Registers an integer counter with labels.
    pub fn counter_vec(&self, m: &MetricDef) -> prometheus::IntCounterVec {
        self.register(prometheus::IntCounterVec::new(opts(m), m.labels).expect(VALID))
    }

    /// Registers a floating-point counter without labels (e.g. seconds).
    pub fn float_counter(&self, m: &MetricDef) -> prometheus::Counter {
        self.register(prometheus::Counter::with_opts(opts(m)).expect(VALID))
    }

    /// Registers an integer gauge with labels.
    pub fn gauge_vec(&self, m: &MetricDef) -> prometheus::IntGaugeVec {
        self.register(prometheus::IntGaugeVec::new(opts(m), m.labels).expect(VALID))
    }

    /// Registers an integer gauge without labels.
    pub fn gauge(&self, m: &MetricDef) -> prometheus::IntGauge {
        self.register(prometheus::IntGauge::with_opts(opts(m)).expect(VALID))
    }

    /// Registers a histogram without labels, with these bucket bounds.
    pub fn histogram(&self, m: &MetricDef, buckets: &[f64]) -> prometheus::Histogram {
        let o = prometheus::HistogramOpts::new(m.name, m.help).buckets(buckets.to_vec());
        self.register(prometheus::Histogram::with_opts(o).expect(VALID))
    }

    /// Registers a histogram with labels, with these bucket bounds.
    pub fn histogram_vec(&self, m: &MetricDef, buckets: &[f64]) -> prometheus::HistogramVec {
        let o = prometheus::HistogramOpts::new(m.name, m.help).buckets(buckets.to_vec());
        self.register(prometheus::HistogramVec::new(o, m.labels).expect(VALID))
    }

    /// Registers a collector; a duplicate name is a programming error.
    pub fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.registry
            .register(Box::new(c.clone()))
            .expect("each metric is registered once per service");
        c
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
    }
}

/// The definitions in [`metrics`] are static and checked by its tests.
const VALID: &str = "a metric definition from joinery_runtime::metrics is valid";

fn opts(m: &MetricDef) -> prometheus::Opts {
    prometheus::Opts::new(m.name, m.help)
}

/// Bucket bounds (seconds) of the freshness histograms (event to view, event
/// to metric): fine below a second, where a healthy stack sits, so that p50
/// and p99 read from them are close to the truth.
pub const FRESHNESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0,
];
