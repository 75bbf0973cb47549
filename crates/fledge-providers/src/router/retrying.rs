//! Bounded retries around a router, and the bookkeeping that lets a rollout show its
//! router out of sync without ever claiming a weight it has not applied.
//!
//! [`RetryingRouter::set_weights`] tries the inner router up to `attempts` times with
//! exponential backoff. A newer `set_weights` (an abort arriving while a stage change
//! is still retrying) supersedes the older one: the older call stops before its next
//! attempt and returns an error, so an abort is never overtaken by a stale increase.
//! Calls to the inner router never overlap.
//!
//! [`RetryingRouter::status`] says what the data plane was last seen to serve
//! (`applied`), what the controller wants (`desired`), and whether they agree
//! (`in_sync`). `applied` only ever changes on a successful set or read.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    AppliedWeights, Desired, Endpoints, EndpointsApplied, RouterError, RoutingRules, TrafficRouter,
};

/// Exponential backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the second attempt.
    #[serde(with = "fledge_spec::duration::required")]
    pub initial: Duration,
    /// The longest delay between two attempts.
    #[serde(with = "fledge_spec::duration::required")]
    pub max: Duration,
    /// Attempts per call, at least 1.
    pub attempts: u32,
}

impl Default for Backoff {
    /// 5 attempts, 200 ms doubling to 2 s: about 3 s before a call gives up.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
            attempts: 5,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Whether the data plane serves what the controller asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// The router kind.
    pub router: String,
    /// `applied` equals `desired`.
    pub in_sync: bool,
    /// The canary weight last asked for.
    pub desired: Option<u8>,
    /// The split last confirmed by the data plane; `None` until the first success.
    pub applied: Option<AppliedWeights>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// The last error, when the latest call failed.
    pub last_error: Option<String>,
}

/// A router with bounded retries and sync tracking.
#[derive(Debug)]
pub struct RetryingRouter<R> {
    inner: R,
    backoff: Backoff,
    status: Mutex<SyncStatus>,
    /// Incremented by every `set_weights`; a call whose number is no longer the
    /// latest stops retrying.
    generation: AtomicU64,
    /// Keeps calls to the inner router from overlapping.
    serial: tokio::sync::Mutex<()>,
}

// === impl RetryingRouter ===

impl<R: TrafficRouter> RetryingRouter<R> {
    /// Wraps `inner`.
    pub fn new(inner: R, backoff: Backoff) -> Self {
        let status = SyncStatus {
            router: inner.kind().to_owned(),
            ..Default::default()
        };
        RetryingRouter {
            inner,
            backoff: Backoff {
                attempts: backoff.attempts.max(1),
                ..backoff
            },
            status: Mutex::new(status),
            generation: AtomicU64::new(0),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// A snapshot of the sync state.
    pub fn status(&self) -> SyncStatus {
        self.lock_status().clone()
    }

    /// The wrapped router.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Sets `canary_weight` through `op` (a `set_weights` or an `apply` of the inner
    /// router) with retries; stops when a newer weight arrives.
    async fn retry_weights<'a, F, Fut>(
        &'a self,
        canary_weight: u8,
        op: F,
    ) -> Result<AppliedWeights, RouterError>
    where
        F: Fn(&'a R) -> Fut,
        Fut: Future<Output = Result<AppliedWeights, RouterError>>,
    {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut s = self.lock_status();
            s.desired = Some(canary_weight.min(100));
            s.in_sync = s
                .applied
                .is_some_and(|a| a.canary == canary_weight.min(100));
        }
        let call = Call::Weights {
            canary: canary_weight,
            generation,
        };
        self.retry(call, op, |applied| Some(*applied)).await
    }

    /// Calls `op` on the inner router (never two calls at once) until it succeeds,
    /// fails with a settings error (retrying cannot fix those), runs out of attempts,
    /// or a newer weight supersedes `call`; records every outcome, with the split
    /// `applied` says the data plane reported.
    async fn retry<'a, T, F, Fut>(
        &'a self,
        call: Call,
        op: F,
        applied: fn(&T) -> Option<AppliedWeights>,
    ) -> Result<T, RouterError>
    where
        F: Fn(&'a R) -> Fut,
        Fut: Future<Output = Result<T, RouterError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = {
                let _serial = self.serial.lock().await;
                if let Call::Weights { canary, generation } = call
                    && self.generation.load(Ordering::SeqCst) != generation
                {
                    return Err(superseded(self.kind(), canary));
                }
                op(&self.inner).await
            };
            self.record(result.as_ref().map(applied));
            let e = match result {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            // Settings and rules the router cannot express do not get better by
            // asking again.
            let give_up = attempt >= self.backoff.attempts
                || matches!(
                    e,
                    RouterError::Config { .. } | RouterError::Unsupported { .. }
                );
            match (call, give_up) {
                (Call::Weights { canary, .. }, true) => {
                    tracing::warn!(router = self.kind(), canary, attempts = attempt, error = %e, "router out of sync");
                }
                (Call::Endpoints, true) => {
                    tracing::warn!(router = self.kind(), attempts = attempt, error = %e, "router endpoints not set");
                }
                (Call::Weights { canary, .. }, false) => {
                    tracing::info!(router = self.kind(), canary, attempt, error = %e, delay = ?self.backoff.delay(attempt), "router failed, retrying");
                }
                (Call::Endpoints, false) => {}
            }
            if give_up {
                return Err(e);
            }
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        }
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, SyncStatus> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a call's outcome; `Ok(None)` is a success that reported no split.
    fn record(&self, result: Result<Option<AppliedWeights>, &RouterError>) {
        let mut s = self.lock_status();
        match result {
            Ok(applied) => {
                if applied.is_some() {
                    s.applied = applied;
                }
                s.consecutive_failures = 0;
                s.last_error = None;
            }
            Err(e) => {
                s.consecutive_failures += 1;
                s.last_error = Some(e.to_string());
            }
        }
        s.in_sync = matches!((s.desired, s.applied), (Some(d), Some(a)) if a.canary == d);
    }
}

#[async_trait]
impl<R: TrafficRouter> TrafficRouter for RetryingRouter<R> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError> {
        self.retry_weights(canary_weight, |r| r.set_weights(canary_weight))
            .await
    }

    async fn apply(
        &self,
        endpoints: &Endpoints,
        canary_weight: u8,
    ) -> Result<AppliedWeights, RouterError> {
        self.retry_weights(canary_weight, |r| r.apply(endpoints, canary_weight))
            .await
    }

    fn supports(&self, rules: &RoutingRules) -> Result<(), RouterError> {
        self.inner.supports(rules)
    }

    /// The inner router's own `serve` (which carries the rules), with retries.
    async fn serve(&self, desired: &Desired) -> Result<AppliedWeights, RouterError> {
        self.inner.supports(&desired.rules)?;
        self.retry_weights(desired.weight(), |r| r.serve(desired))
            .await
    }

    async fn current(&self) -> Result<AppliedWeights, RouterError> {
        let result = {
            let _serial = self.serial.lock().await;
            self.inner.current().await
        };
        self.record(result.as_ref().map(|a| Some(*a)));
        result
    }

    async fn set_endpoints(&self, endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError> {
        self.retry(Call::Endpoints, |r| r.set_endpoints(endpoints), |_| None)
            .await
    }
}

/// What a retried call does, for supersession and logs.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Sets the canary weight; number `generation` of such calls.
    Weights { canary: u8, generation: u64 },
    /// Points the data plane at new endpoints.
    Endpoints,
}

fn superseded(router: &'static str, canary: u8) -> RouterError {
    RouterError::Rejected {
        router,
        target: "(retry)".to_owned(),
        reason: format!("setting {canary}% was superseded by a newer weight before it applied"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use super::*;

    /// Fails its first `failures` calls (or every call when `failures` is `u32::MAX`),
    /// then applies.
    #[derive(Debug, Default)]
    struct Flaky {
        failures: AtomicU32,
        calls: AtomicU32,
        applied: Mutex<Vec<u8>>,
    }

    impl Flaky {
        fn failing(n: u32) -> Arc<Self> {
            Arc::new(Flaky {
                failures: AtomicU32::new(n),
                ..Default::default()
            })
        }
    }

    #[async_trait]
    impl TrafficRouter for Flaky {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        async fn set_weights(&self, canary: u8) -> Result<AppliedWeights, RouterError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                if left != u32::MAX {
                    self.failures.store(left - 1, Ordering::SeqCst);
                }
                return Err(RouterError::Unreachable {
                    router: "flaky",
                    target: "/run/flaky.sock".into(),
                    reason: "connection refused".into(),
                });
            }
            self.applied.lock().unwrap().push(canary);
            Ok(AppliedWeights::canary(canary))
        }
        async fn current(&self) -> Result<AppliedWeights, RouterError> {
            let last = self.applied.lock().unwrap().last().copied().unwrap_or(0);
            Ok(AppliedWeights::canary(last))
        }
        async fn set_endpoints(&self, _: &Endpoints) -> Result<EndpointsApplied, RouterError> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                return Err(RouterError::Config {
                    router: "flaky",
                    reason: "bad endpoint".into(),
                });
            }
            Ok(EndpointsApplied::Applied)
        }
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            attempts: 4,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn settings_errors_are_not_retried() {
        let flaky = Flaky::failing(1);
        let r = RetryingRouter::new(flaky.clone(), backoff());
        let err = r.set_endpoints(&Endpoints::default()).await.unwrap_err();
        assert!(matches!(err, RouterError::Config { .. }));
        assert!(r.status().last_error.unwrap().contains("bad endpoint"));
    }

    #[test]
    fn backoff_doubles_up_to_the_bound() {
        let b = backoff();
        let delays: Vec<_> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_it_applies() {
        let flaky = Flaky::failing(2);
        let r = RetryingRouter::new(flaky.clone(), backoff());
        assert_eq!(r.set_weights(20).await.unwrap(), AppliedWeights::canary(20));
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 3);
        let s = r.status();
        assert!(s.in_sync);
        assert_eq!(s.applied, Some(AppliedWeights::canary(20)));
        assert_eq!(s.consecutive_failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_out_of_sync_keeping_the_last_applied_weight() {
        let flaky = Flaky::failing(0);
        let r = RetryingRouter::new(flaky.clone(), backoff());
        r.set_weights(10).await.unwrap();
        flaky.failures.store(u32::MAX, Ordering::SeqCst);
        let err = r.set_weights(50).await.unwrap_err();
        assert!(err.to_string().contains("/run/flaky.sock"), "{err}");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 1 + 4);
        let s = r.status();
        assert!(!s.in_sync);
        assert_eq!(s.desired, Some(50));
        assert_eq!(
            s.applied,
            Some(AppliedWeights::canary(10)),
            "never reports 50"
        );
        assert_eq!(s.consecutive_failures, 4);
        assert!(s.last_error.unwrap().contains("connection refused"));

        // The data plane comes back: the next reconcile brings it in sync.
        flaky.failures.store(0, Ordering::SeqCst);
        r.set_weights(50).await.unwrap();
        assert!(r.status().in_sync);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_weight_supersedes_a_retrying_one() {
        let flaky = Flaky::failing(u32::MAX);
        let r = Arc::new(RetryingRouter::new(flaky.clone(), backoff()));
        let raising = tokio::spawn({
            let r = r.clone();
            async move { r.set_weights(50).await }
        });
        // Let the first attempt fail and the retry loop go to sleep.
        tokio::time::sleep(Duration::from_millis(50)).await;
        flaky.failures.store(0, Ordering::SeqCst);
        assert_eq!(r.set_weights(0).await.unwrap(), AppliedWeights::canary(0));
        let err = raising.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("superseded"), "{err}");
        assert_eq!(
            *flaky.applied.lock().unwrap(),
            vec![0],
            "the stale 50% never applied"
        );
        let s = r.status();
        assert!(s.in_sync);
        assert_eq!(s.desired, Some(0));
    }
}
