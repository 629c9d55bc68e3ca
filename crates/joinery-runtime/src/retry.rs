//! Retrying what fails for a while: a broker electing leaders, a schema
//! registry that is starting or briefly unreachable, a gateway that is
//! busy. Every wait-and-try-again in Joinery goes through [`retry`] with
//! one of the named [`Policy`] constants, so that an operator reading
//! `retrying` in the logs finds which situation it is (`policy`), what is
//! being retried (`what`) and how many times (`retry`), and so that each
//! situation's patience is decided in one place.
//!
//! A policy either gives up after a deadline, returning the last error, or
//! retries until the caller stops waiting: dropping the future (a
//! `tokio::select!` on the service's cancellation token, or the supervisor
//! aborting the task) cancels the retry cleanly, since between attempts it
//! only sleeps.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How one kind of failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The situation, as logged (`policy = ...`); snake_case.
    pub name: &'static str,
    /// The wait before the first retry.
    pub first_delay: Duration,
    /// The longest wait between attempts: each wait doubles the previous
    /// one up to this (equal to `first_delay` for a fixed interval).
    pub max_delay: Duration,
    /// How long after the first attempt a retryable error is still retried;
    /// the first error after that is returned. `None`: retried until the
    /// caller drops the future.
    pub give_up_after: Option<Duration>,
}

impl Policy {
    /// Kafka at start-up or during a broker restart: partition leaders are
    /// being elected, the coordinator is loading ([`crate::kafka::is_transient`]).
    /// A broker takes well under a minute.
    pub const KAFKA_NOT_READY: Policy = Policy {
        name: "kafka_not_ready",
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_millis(500),
        give_up_after: Some(Duration::from_secs(60)),
    };

    /// Topics just created that do not show their partitions in the
    /// cluster metadata yet.
    pub const TOPICS_APPEARING: Policy = Policy {
        name: "topics_appearing",
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_millis(200),
        give_up_after: Some(Duration::from_secs(30)),
    };

    /// The schema registry at a service's start-up, when the service
    /// registers its schemas: the registry may be starting beside it.
    pub const REGISTRY_STARTING: Policy = Policy {
        name: "registry_starting",
        first_delay: Duration::from_millis(500),
        max_delay: Duration::from_millis(500),
        give_up_after: Some(Duration::from_secs(30)),
    };

    /// The schema registry unreachable (or failing) while a consumer
    /// resolves a writer schema: the record is not at fault, so the
    /// consumer waits, until the registry answers or the service is
    /// cancelled, rather than dead-letter a good record.
    pub const REGISTRY_UNREACHABLE: Policy = Policy {
        name: "registry_unreachable",
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        give_up_after: None,
    };

    /// The schema registry unreachable while a rebuild settles its view
    /// topic: as long as the settle waits for a stalled read (60 s), then
    /// the rebuild fails and can be run again.
    pub const REGISTRY_DURING_SETTLE: Policy = Policy {
        name: "registry_during_settle",
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        give_up_after: Some(Duration::from_secs(60)),
    };

    /// Topics another service creates (projections waiting for the
    /// processor to create the view topics): checked until they exist or
    /// the service is cancelled.
    pub const TOPICS_PENDING: Policy = Policy {
        name: "topics_pending",
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        give_up_after: None,
    };

    /// The ingest gateway answering 429 or 503 (Kafka slow or down) to the
    /// demo's feeds: they wait for it as long as they run.
    pub const GATEWAY_BUSY: Policy = Policy {
        name: "gateway_busy",
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        give_up_after: None,
    };

    /// The wait before retry number `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Whether an error met `elapsed` after the first attempt is retried.
    fn still_retrying(&self, elapsed: Duration) -> bool {
        self.give_up_after.is_none_or(|limit| elapsed < limit)
    }
}

/// A retry about to wait, logged with its policy. Counted per call (the
/// `retry` number), never in global state.
#[derive(Debug)]
struct Retrying<'a, E> {
    policy: &'a Policy,
    what: &'a str,
    retry: u32,
    delay: Duration,
    error: &'a E,
}

impl<E: Display> Retrying<'_, E> {
    fn emit(&self) {
        tracing::warn!(
            policy = self.policy.name,
            what = self.what,
            retry = self.retry,
            delay_ms = self.delay.as_millis() as u64,
            error = %self.error,
            "retrying"
        );
    }
}

/// Runs `op` until it succeeds, fails with an error `retryable` refuses, or
/// `policy` gives up (the last error is then returned). `what` names the
/// operation in the logs. Each retry is logged with the policy's name.
pub async fn retry<T, E, F, Fut>(
    policy: &Policy,
    what: &str,
    retryable: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let started = Instant::now();
    let mut retries = 0u32;
    loop {
        match op().await {
            Ok(v) => {
                if retries > 0 {
                    tracing::info!(
                        policy = policy.name,
                        what,
                        retries,
                        "succeeded after retrying"
                    );
                }
                return Ok(v);
            }
            Err(e) if retryable(&e) && policy.still_retrying(started.elapsed()) => {
                let delay = policy.delay(retries);
                retries += 1;
                Retrying {
                    policy,
                    what,
                    retry: retries,
                    delay,
                    error: &e,
                }
                .emit();
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                if retries > 0 {
                    tracing::warn!(policy = policy.name, what, retries, error = %e, "giving up");
                }
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[derive(Debug, PartialEq)]
    enum Failure {
        Transient(u32),
        Fatal,
    }

    impl Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    fn transient(e: &Failure) -> bool {
        matches!(e, Failure::Transient(_))
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_error_is_retried_until_the_operation_succeeds() {
        let calls = Cell::new(0);
        let got = retry(&Policy::REGISTRY_UNREACHABLE, "test", transient, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 5 {
                    Err(Failure::Transient(n))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got, Ok(5));
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_the_classifier_refuses_is_returned_at_once() {
        let calls = Cell::new(0);
        let got: Result<(), Failure> = retry(&Policy::KAFKA_NOT_READY, "test", transient, || {
            calls.set(calls.get() + 1);
            async { Err(Failure::Fatal) }
        })
        .await;
        assert_eq!((got, calls.get()), (Err(Failure::Fatal), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_with_a_deadline_gives_up_with_the_last_error() {
        let calls = Cell::new(0);
        let got: Result<(), Failure> = retry(&Policy::KAFKA_NOT_READY, "test", transient, || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move { Err(Failure::Transient(n)) }
        })
        .await;
        assert!(calls.get() > 1, "retried before giving up");
        assert_eq!(got, Err(Failure::Transient(calls.get())));
    }

    #[test]
    fn waits_double_up_to_the_policy_maximum() {
        let p = Policy {
            name: "test",
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            give_up_after: None,
        };
        let waits: Vec<u128> = (0..5).map(|r| p.delay(r).as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350, 350]);
        assert_eq!(p.delay(u32::MAX), Duration::from_millis(350));
        assert_eq!(
            Policy::KAFKA_NOT_READY.delay(7),
            Policy::KAFKA_NOT_READY.first_delay
        );
    }
}
