//! The one shape of a Joinery service: config → telemetry → named tasks →
//! wait for shutdown → drain → exit.
//!
//! A service's `run(config, cancel)` starts a [`Service`] with its name and
//! listen address (telemetry, health and the bound listener are set up),
//! does its own start-up (topics, state, clients), starts its background
//! work as named tasks ([`Service::spawn`], [`Service::spawn_blocking`]),
//! then hands its HTTP router to [`Service::run`]. That serves the router
//! merged with the operator routes (`/healthz`, `/readyz`, `/metrics`),
//! marks the service ready, and runs every task under one [`Supervisor`]:
//! the first task to fail stops the service and its error is returned; on
//! cancellation (SIGINT/SIGTERM reach `cancel` through the binary) the
//! service turns not-ready, its tasks get the drain deadline to finish, and
//! whatever is left is aborted.
//!
//! ```no_run
//! # async fn example(cancel: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
//! use joinery_runtime::Service;
//! let listen = "127.0.0.1:8080".parse()?;
//! let mut service = Service::start("example", listen, cancel).await?;
//! let stop = service.token();
//! service.spawn("ticker", async move {
//!     stop.cancelled().await;
//!     Ok(())
//! });
//! service.run(axum::Router::new()).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::http::{bind, ops_router, serve};
use crate::{Health, Supervisor, Telemetry};

/// How long tasks get to finish once the service is stopping, unless a
/// service sets its own ([`Service::with_drain`]).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(15);

/// A running service: its telemetry, health, listener and tasks.
#[derive(Debug)]
pub struct Service {
    /// The service's name, in logs and `joinery_service_up{service}`.
    name: &'static str,
    /// The service's one metrics registry.
    telemetry: Telemetry,
    /// What `/readyz` reports.
    health: Health,
    /// Bound at start, so that a taken port fails the service at once.
    listener: TcpListener,
    /// The named tasks, under a child of the caller's token: cancelling the
    /// caller's token stops the service; a failing task stops this service
    /// only, never the caller's other work.
    supervisor: Supervisor,
    /// How long tasks get to finish once stopping.
    drain: Duration,
    /// Cancels the tasks when the service is dropped before or after
    /// [`Service::run`]: an early return from a service's start-up (a `?`)
    /// stops the tasks it already started, threads included.
    stop_on_drop: DropGuard,
}

impl Service {
    /// Sets up tracing, telemetry (as `name`) and health, and binds
    /// `listen`; the service stops when `cancel` fires.
    pub async fn start(
        name: &'static str,
        listen: SocketAddr,
        cancel: CancellationToken,
    ) -> anyhow::Result<Service> {
        crate::telemetry::init_tracing();
        let listener = bind(listen).await?;
        let token = cancel.child_token();
        Ok(Service {
            name,
            telemetry: Telemetry::new(name),
            health: Health::default(),
            listener,
            supervisor: Supervisor::new(token.clone()),
            drain: DEFAULT_DRAIN,
            stop_on_drop: token.drop_guard(),
        })
    }

    /// Gives tasks `drain` (instead of [`DEFAULT_DRAIN`]) to finish once
    /// the service is stopping.
    pub fn with_drain(mut self, drain: Duration) -> Service {
        self.drain = drain;
        self
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The service's metrics registry, to register its metrics in.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The service's readiness; [`Service::run`] sets it.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The address the service listens on (the port, when started on port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The token every task watches: cancelled when the caller cancels,
    /// or when a task fails or ends.
    pub fn token(&self) -> CancellationToken {
        self.supervisor.token()
    }

    /// Starts a named task. It should return once [`Service::token`] is
    /// cancelled; returning earlier (even `Ok`) stops the service, and an
    /// error is what [`Service::run`] returns.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.supervisor.spawn(name, task);
    }

    /// Starts a named task on a thread of its own where it may block (a
    /// librdkafka poll loop, file reads). It is handed the service's token
    /// and must check it between blocking calls: an abort cannot stop a
    /// thread. A plain thread rather than the runtime's blocking pool, so
    /// that a runtime shutting down (a test that failed, a process exiting)
    /// never waits on a thread still inside a blocking call.
    pub fn spawn_blocking<F>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> anyhow::Result<()> + Send + 'static,
    {
        let token = self.token();
        let (done, finished) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = done.send(task(token));
            });
        self.supervisor.spawn(name, async move {
            thread.map_err(|e| anyhow::anyhow!("cannot start the thread: {e}"))?;
            finished
                .await
                .map_err(|_| anyhow::anyhow!("the thread ended without a result (it panicked)"))?
        });
    }

    /// Serves `router` with the operator routes, marks the service ready,
    /// and waits: until cancellation (then drains) or until a task fails
    /// (then stops the others and returns its error). The service is not
    /// ready while it drains.
    pub async fn run(self, router: Router) -> anyhow::Result<()> {
        let Service {
            name,
            telemetry,
            health,
            listener,
            mut supervisor,
            drain,
            stop_on_drop,
        } = self;
        let router = router.merge(ops_router(health.clone(), telemetry));
        let token = supervisor.token();
        let http_token = token.clone();
        supervisor.spawn(
            "http",
            async move { serve(listener, router, http_token).await },
        );
        supervisor.spawn("readiness", async move {
            health.set_ready(true);
            tracing::info!(service = name, "ready");
            token.cancelled().await;
            health.set_ready(false);
            Ok(())
        });
        let result = supervisor.run(drain).await;
        drop(stop_on_drop);
        match &result {
            Ok(()) => tracing::info!(service = name, "stopped"),
            Err(e) => {
                tracing::error!(service = name, error = %format!("{e:#}"), "stopped on failure")
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn service(cancel: CancellationToken) -> Service {
        Service::start("test", SocketAddr::from(([127, 0, 0, 1], 0)), cancel)
            .await
            .expect("binds a free port")
    }

    /// The status line and body of `GET path` on `addr`.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .await
            .expect("writes");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("reads");
        out
    }

    fn status_ok(response: &str) -> bool {
        response.lines().next().is_some_and(|l| l.contains(" 200 "))
    }

    #[tokio::test]
    async fn a_failing_task_stops_the_others_and_its_error_is_returned() {
        let cancel = CancellationToken::new();
        let mut s = service(cancel.clone()).await;
        let stopped = Arc::new(AtomicBool::new(false));
        let (token, flag) = (s.token(), Arc::clone(&stopped));
        s.spawn("waits", async move {
            token.cancelled().await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let blocking_stopped = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&blocking_stopped);
        s.spawn_blocking("polls", move |token| {
            while !token.is_cancelled() {
                std::thread::sleep(Duration::from_millis(10));
            }
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        s.spawn("fails", async { anyhow::bail!("the log is gone") });
        let err = s
            .run(Router::new())
            .await
            .expect_err("the failure is returned");
        assert!(format!("{err:#}").contains("the log is gone"), "{err:#}");
        assert!(
            format!("{err:#}").contains("fails"),
            "names the task: {err:#}"
        );
        assert!(stopped.load(Ordering::SeqCst), "the other task was stopped");
        assert!(
            blocking_stopped.load(Ordering::SeqCst),
            "the thread was stopped"
        );
        assert!(!cancel.is_cancelled(), "the caller's token is left alone");
    }

    #[tokio::test]
    async fn a_blocking_task_that_panics_stops_the_service() {
        let mut s = service(CancellationToken::new()).await;
        s.spawn_blocking("panics", |_| panic!("boom"));
        assert!(s.run(Router::new()).await.is_err());
    }

    #[tokio::test]
    async fn it_serves_the_service_and_operator_routes_ready_then_drains_on_cancel() {
        let cancel = CancellationToken::new();
        let mut s = service(cancel.clone())
            .await
            .with_drain(Duration::from_secs(30));
        let addr = s.local_addr().expect("bound");
        let health = s.health().clone();
        let drained = Arc::new(AtomicBool::new(false));
        let (token, flag) = (s.token(), Arc::clone(&drained));
        s.spawn("flushes on shutdown", async move {
            token.cancelled().await;
            // Work after cancellation, within the drain deadline, completes.
            tokio::task::yield_now().await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        let router = Router::new().route("/hello", axum::routing::get(|| async { "hi" }));
        let running = tokio::spawn(s.run(router));
        // The readiness task may not have run yet: wait for the flag, not for time.
        while !health.is_ready() {
            tokio::task::yield_now().await;
        }
        let hello = get(addr, "/hello").await;
        assert!(status_ok(&hello) && hello.ends_with("hi"), "{hello}");
        let ready = get(addr, "/readyz").await;
        assert!(status_ok(&ready), "{ready}");
        assert!(get(addr, "/metrics").await.contains("joinery_service_up"));
        cancel.cancel();
        running
            .await
            .expect("run does not panic")
            .expect("a cancelled service stops cleanly");
        assert!(
            drained.load(Ordering::SeqCst),
            "the task finished its drain"
        );
        assert!(!health.is_ready(), "not ready once stopping");
    }

    #[tokio::test]
    async fn a_service_dropped_during_start_up_stops_the_tasks_it_started() {
        let mut s = service(CancellationToken::new()).await;
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::oneshot::channel();
        s.spawn_blocking("polls", move |token| {
            let _ = started_tx.send(());
            while !token.is_cancelled() {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = tx.send(());
            Ok(())
        });
        started.await.expect("the thread starts");
        // A start-up step failing with `?` drops the service.
        drop(s);
        // The timeout only keeps a regression from hanging the test run.
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("the thread saw the cancellation and stopped")
            .expect("the thread reports");
    }

    #[tokio::test]
    async fn a_task_that_ignores_cancellation_is_aborted_after_the_drain_deadline() {
        let cancel = CancellationToken::new();
        let mut s = service(cancel.clone())
            .await
            .with_drain(Duration::from_millis(50));
        s.spawn("stuck", std::future::pending());
        cancel.cancel();
        s.run(Router::new())
            .await
            .expect("aborting is not a failure");
    }
}
