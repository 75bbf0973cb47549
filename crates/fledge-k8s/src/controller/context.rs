//! What every reconcile shares: the API client, the injected clock and the factory of
//! metric sources.

use std::sync::Arc;

use fledge_engine::Timestamp;
use fledge_providers::metrics::{MetricSource, PrometheusSettings, PrometheusSource};

use crate::crd::MetricsSpec;
use crate::error::Error;

/// The wall clock, injected so tests choose the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// Makes the metric source a CanaryRollout names (tests hand in a fake).
pub trait MetricsFactory: Send + Sync + std::fmt::Debug {
    /// The source for `spec`.
    fn source(&self, spec: &MetricsSpec) -> Result<Arc<dyn MetricSource>, Error>;
}

/// Builds [`PrometheusSource`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrometheusFactory;

impl MetricsFactory for PrometheusFactory {
    fn source(&self, spec: &MetricsSpec) -> Result<Arc<dyn MetricSource>, Error> {
        let p = &spec.prometheus;
        let mut settings = PrometheusSettings::new(p.address.clone());
        if let Some(q) = &p.requests {
            settings.requests = q.clone();
        }
        if let Some(q) = &p.errors {
            settings.errors = q.clone();
        }
        if let Some(q) = &p.latency_buckets {
            settings.latency_buckets = q.clone();
        }
        if let Some(q) = &p.latency_sum {
            settings.latency_sum = q.clone();
        }
        let source = PrometheusSource::new(settings)
            .map_err(|e| Error::InvalidSpec(format!("spec.metrics.prometheus: {e}")))?;
        Ok(Arc::new(source))
    }
}

/// What every reconcile shares.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Metric sources.
    pub metrics: Arc<dyn MetricsFactory>,
    /// This replica's identity (pod name), in Events.
    pub identity: String,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("clock", &self.clock)
            .field("metrics", &self.metrics)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}
