//! The operator endpoints every service serves beside its own API:
//! `/healthz` (the process is alive), `/readyz` (it can do its job: Kafka
//! reachable, state restored) and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// How long a client may take to send a request's headers before its
/// connection is closed: a client that opens connections and trickles
/// bytes cannot hold them.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections a service holds open at once; one more is answered
/// 503 with `Retry-After` and closed.
pub const MAX_CONNECTIONS: usize = 512;

/// The limits a server holds clients to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` with the default [`Limits`] until `cancel`
/// fires, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    serve_with(listener, router, cancel, Limits::default()).await
}

/// The answer to a connection over the limit, written before closing it.
fn over_limit() -> Vec<u8> {
    let body = r#"{"error":"too many connections; retry after the indicated delay"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener`, holding clients to `limits`, until
/// `cancel` fires; then stops accepting, lets the requests in flight finish
/// and closes idle connections.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    cancel: CancellationToken,
    limits: Limits,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    use tokio::io::AsyncWriteExt;

    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only: protocol detection (for HTTP/2) waits for the first
    // bytes with no timer, so a client that connects and sends nothing
    // would hold its slot for ever. The header read timeout then covers a
    // connection from its first byte, and every idle keep-alive.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = cancel.cancelled() => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(async move {
                let _ = stream.write_all(&over_limit()).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let first_byte = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper's header timer starts at the first byte: a client that
            // connects and sends nothing is dropped here.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(first_byte, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                return;
            }
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            // A client that goes away or times out is no error of ours.
            let _ = watcher.watch(connection).await;
            drop(permit);
        });
    }
    graceful.shutdown().await;
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server with tight limits, answering `GET /` with `ok`.
    async fn limited(limits: Limits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let router = Router::new().route("/", get(|| async { "ok" }));
        tokio::spawn(serve_with(listener, router, cancel.clone(), limits));
        (addr, cancel)
    }

    /// Everything the server sends until it closes the connection (or 5 s).
    async fn read_all(s: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn get_ok(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_all(&mut s).await
    }

    #[tokio::test]
    async fn slow_clients_are_cut_off_and_cannot_hold_every_connection() {
        let (addr, cancel) = limited(Limits {
            header_read_timeout: Duration::from_millis(500),
            max_connections: 2,
        })
        .await;
        // One client opens a connection and sends nothing; another
        // trickles half a request line.
        let mut slow = vec![tokio::net::TcpStream::connect(addr).await.unwrap()];
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HT").await.unwrap();
        slow.push(s);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A third is told to come back later, not left hanging.
        let refused = get_ok(addr).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("Retry-After: 1"), "{refused}");
        let body = refused.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert!(
            serde_json::from_str::<serde_json::Value>(body).is_ok(),
            "{body}"
        );
        // The slow ones are closed once the header read timeout passes...
        for (i, s) in slow.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            let answer = read_all(s).await;
            assert!(!answer.contains("200 OK"), "{answer}");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "slow client {i} still connected after {:?}",
                started.elapsed()
            );
        }
        // An idle keep-alive connection is closed too.
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let answer = read_all(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "an idle keep-alive connection held for {:?}",
            started.elapsed()
        );
        // ... and a well-behaved client is served again.
        let served = get_ok(addr).await;
        assert!(served.starts_with("HTTP/1.1 200"), "{served}");
        cancel.cancel();
    }

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
