//! The operator endpoints every service serves beside its own API:
//! `/healthz` (the process is alive), `/readyz` (it can do its job: Kafka
//! reachable, state restored) and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Telemetry;

/// Readiness flag a service flips once it can serve.
#[derive(Debug, Clone, Default)]
pub struct Health {
    ready: Arc<AtomicBool>,
}

impl Health {
    /// Marks the service ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct OpsState {
    health: Health,
    telemetry: Telemetry,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<OpsState>) -> impl IntoResponse {
    if s.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: still starting (connecting to Kafka or restoring state)\n",
        )
    }
}

async fn metrics(State(s): State<OpsState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.telemetry.render(),
    )
}

/// The operator routes, to merge into a service's router.
pub fn ops_router(health: Health, telemetry: Telemetry) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(OpsState { health, telemetry })
}

/// Binds `addr`, failing with the address in the message when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Serves `router` on `listener` until `cancel` fires, then finishes the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    Ok(())
}

/// The first of `count` consecutive loopback ports that nothing listens on,
/// for a test or benchmark to hand to the services it starts.
///
/// `bind("127.0.0.1:0")` is not good enough for that: the port it returns
/// comes from the kernel's ephemeral range, and between dropping it and the
/// service binding it, any outgoing connection (a Kafka client's, an HTTP
/// client's) or another test's `bind(0)` may take it. So the ports come from
/// outside that range (read from `/proc/sys/net/ipv4/ip_local_port_range`,
/// 32768–60999 when unreadable): from 10000 up to it, or from above it when
/// that leaves more room; the kernel never hands out those ports by itself. A process-wide counter keeps one process's calls apart, a start
/// derived from the process id spreads concurrent processes apart, and each
/// port is checked free before it is returned.
pub fn spare_loopback_ports(count: u16) -> std::io::Result<u16> {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, span) = spare_port_window(ephemeral_range());
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(u32::from(count), Ordering::Relaxed);
        let first = low + (start + n) % span;
        if first + u32::from(count) > low + span {
            continue;
        }
        let free = (first..first + u32::from(count))
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p as u16)).is_ok());
        if free {
            return Ok(first as u16);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no spare loopback port below the ephemeral range",
    ))
}

/// The kernel's ephemeral port range (first, last).
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32_768, 60_999))
}

/// The ports (first, count) [`spare_loopback_ports`] draws from, outside
/// the ephemeral range `(first, last)`.
fn spare_port_window((first, last): (u32, u32)) -> (u32, u32) {
    const LOW: u32 = 10_000;
    let below = first.saturating_sub(LOW);
    let above = 65_535u32.saturating_sub(last);
    if below >= above && below >= 100 {
        (LOW, below)
    } else if above >= 100 {
        (last + 1, above)
    } else {
        // No room outside the range: the top 1000 ports, checked free.
        (64_535, 1_000)
    }
}

/// A loopback address nothing listens on, outside the kernel's ephemeral
/// range: see [`spare_loopback_ports`].
pub fn spare_loopback_addr() -> std::io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], spare_loopback_ports(1)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_ports_are_distinct_free_and_outside_the_ephemeral_range() {
        let (first, last) = ephemeral_range();
        let a = spare_loopback_ports(2).unwrap();
        let b = spare_loopback_addr().unwrap().port();
        assert!(b < a || b > a + 1, "{a} and its successor, then {b}");
        for p in [a, a + 1, b] {
            if first >= 10_100 || last <= 65_435 {
                let p = u32::from(p);
                assert!(p < first || p > last, "{p} is in the ephemeral range");
            }
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("the port is free");
        }
    }

    #[test]
    fn the_spare_window_lies_outside_any_ephemeral_range_that_leaves_room() {
        for range in [
            (32_768, 60_999),
            (1_024, 65_000),
            (11_000, 65_535),
            (15_000, 20_000),
        ] {
            let (low, span) = spare_port_window(range);
            let high = low + span - 1;
            assert!(high <= 65_535, "{range:?}");
            assert!(
                high < range.0 || low > range.1,
                "{range:?} gives {low}..={high}"
            );
            assert!(span >= 535, "{range:?}");
        }
    }
}
