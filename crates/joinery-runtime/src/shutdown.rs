//! Shutdown and task supervision: named tasks share one cancellation token;
//! the first task to fail cancels the rest; shutdown waits a drain deadline
//! and then aborts what is left.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Runs named tasks under one cancellation token.
#[derive(Debug)]
pub struct Supervisor {
    /// Cancelled on shutdown or when any task fails.
    cancel: CancellationToken,
    /// The running tasks, each returning its name and result.
    tasks: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Supervisor {
    /// A supervisor whose tasks stop when `cancel` (or a child of it) fires.
    pub fn new(cancel: CancellationToken) -> Supervisor {
        Supervisor {
            cancel,
            tasks: JoinSet::new(),
        }
    }

    /// The token tasks watch.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Starts a named task.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Waits until every task ends. The first error cancels the others; once
    /// cancelled, tasks get `drain` to finish before they are aborted.
    pub async fn run(mut self, drain: Duration) -> anyhow::Result<()> {
        let mut first_error = None;
        loop {
            let next = tokio::select! {
                n = self.tasks.join_next() => n,
                () = self.cancel.cancelled() => break,
            };
            match next {
                None => return Ok(()),
                Some(Ok((name, Ok(())))) => {
                    tracing::info!(task = name, "task finished");
                    // A task finishing on its own (not on cancellation) ends the service.
                    self.cancel.cancel();
                }
                Some(Ok((name, Err(e)))) => {
                    tracing::error!(task = name, error = %format!("{e:#}"), "task failed; stopping the service");
                    first_error.get_or_insert(e.context(format!("task `{name}` failed")));
                    self.cancel.cancel();
                }
                Some(Err(join)) => {
                    tracing::error!(error = %join, "task panicked; stopping the service");
                    first_error.get_or_insert(anyhow::anyhow!("a task panicked: {join}"));
                    self.cancel.cancel();
                }
            }
        }
        let deadline = tokio::time::sleep(drain);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                n = self.tasks.join_next() => match n {
                    None => break,
                    Some(Ok((name, Err(e)))) => {
                        tracing::error!(task = name, error = %format!("{e:#}"), "task failed while draining");
                        first_error.get_or_insert(e);
                    }
                    Some(Err(join)) if join.is_panic() => {
                        tracing::error!(error = %join, "task panicked while draining");
                        first_error.get_or_insert(anyhow::anyhow!("a task panicked while draining: {join}"));
                    }
                    Some(_) => {}
                },
                () = &mut deadline => {
                    tracing::warn!(remaining = self.tasks.len(), "drain deadline passed; aborting tasks");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
