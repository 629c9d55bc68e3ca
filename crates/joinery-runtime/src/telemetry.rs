//! Tracing and metrics. Each service owns one `prometheus::Registry`, passed
//! explicitly to whatever registers metrics; nothing is global.

use prometheus::{Encoder, Registry, TextEncoder};

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
        let up = prometheus::IntGaugeVec::new(
            prometheus::Opts::new("joinery_service_up", "1 while the service runs"),
            &["service"],
        )
        .expect("static metric definition is valid");
        registry
            .register(Box::new(up.clone()))
            .expect("first registration in a fresh registry");
        up.with_label_values(&[service]).set(1);
        Telemetry { registry }
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

/// Bucket bounds (seconds) of the freshness histograms (event to view, event
/// to metric): fine below a second, where a healthy stack sits, so that p50
/// and p99 read from them are close to the truth.
pub const FRESHNESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0,
];
