//! # joinery-runtime
//!
//! The skeleton every Joinery service shares, so that each looks the same to
//! an operator: tracing set up once, one injected Prometheus registry,
//! `/healthz`, `/readyz` and `/metrics` on the service's HTTP port, a
//! shutdown signal (SIGINT/SIGTERM) that cancels every task, and the Kafka
//! settings every client uses.
//!
//! # Layout
//!
//! - [`auth`]: bearer tokens, stored hashed, and the principals they stand for.
//! - [`telemetry`]: tracing subscriber and the metrics registry.
//! - [`metrics`]: every metric Joinery exports, by name, help and labels.
//! - [`http`]: the operator endpoints and a server that drains on shutdown.
//! - [`service`]: the skeleton every service runs in: telemetry, health,
//!   listener, named tasks under a supervisor, drain on shutdown.
//! - [`shutdown`]: the signal future and task supervision.
//! - [`kafka`]: client configuration, topic creation, and a consumer context
//!   that resumes from offsets kept in the service's own state store.
//! - [`rebalance`]: rebalance pause and partition restore timing.
//! - [`retry`]: the named retry policies and the one retry loop.
//! - [`consumer`]: the stateful consumer processor and projections share.
//! - [`secret`]: values (keys) that never print, and owner-only key files.

pub mod auth;
pub mod consumer;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod rebalance;
pub mod retry;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod telemetry;

pub use http::{serve, Health};
pub use service::Service;
pub use shutdown::{shutdown_signal, Supervisor};
pub use telemetry::Telemetry;
