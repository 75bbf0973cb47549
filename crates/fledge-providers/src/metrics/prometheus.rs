//! Prometheus as a metric source, through its HTTP API (`GET /api/v1/query`).
//!
//! For each arm the source runs four instant queries (requests, errors, latency
//! buckets, latency sum) with `{{version}}` set to that arm's version, and one per
//! custom metric. The defaults read the usual instrumentation of an HTTP service:
//!
//! ```text
//! requests: sum(http_requests_total{app="{{app}}",version="{{version}}"})
//! errors:   sum(http_requests_total{app="{{app}}",version="{{version}}",code=~"5.."})
//! buckets:  sum by (le) (http_request_duration_seconds_bucket{app="{{app}}",version="{{version}}"})
//! sum:      sum(http_request_duration_seconds_sum{app="{{app}}",version="{{version}}"})
//! ```
//!
//! **Counters, not rates.** The queries return the counters' current totals; the
//! engine differences two observations. When a process restarts its counter drops,
//! the summed total drops, and the engine treats the drop as a reset (the new total is
//! the increase, as `increase()` does for one series). With many instances per version
//! a restart then over-counts one interval; teams for whom that matters write
//! `sum(increase(http_requests_total{...}[{{window}}]))`, which Prometheus computes
//! per series with its own reset handling over the time since the rollout started
//! (`{{window}}`), and which is still a total that only grows.
//!
//! **Empty results.** An empty requests result is [`MetricError::NoData`], never a
//! pass. An empty errors result, while requests has data, is zero errors: Prometheus
//! only has a `code="5xx"` series once the first 5xx was counted. An empty bucket
//! result gives an empty latency histogram, which the judge treats as no latency data.
//!
//! **Custom metrics** run their PromQL once per arm (`{{arm}}` is `canary` or
//! `stable`), a ratio's `bad` and `total` queries likewise; a `NaN` (e.g. `0/0`) or an empty
//! result is "no data" for that arm.
//!
//! All queries of one observation are evaluated at the same instant (`time=`), so
//! requests, errors and buckets describe one moment.
//!
//! HTTPS needs a rustls crypto provider; [`crate::tls`] installs ring when the process
//! has none.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use fledge_stats::{ArmCounters, LatencyHistogram, Observation};
use serde::{Deserialize, Serialize};

use super::instant::{InstantApi, Sample, parse_float, total};
use super::{
    Arm, MetricError, MetricSource, ObserveQuery, arm_counters, buckets, check_templates,
    header_list, observe_arms, render_arm, source_client, unix_now,
};

const KIND: &str = "prometheus";

/// Settings of the Prometheus metric source (`metrics: {prometheus: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusSettings {
    /// Base URL of the Prometheus server (or of a compatible API: Thanos, Mimir,
    /// VictoriaMetrics), e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// How long one query may take before the source reports Prometheus unreachable.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// PromQL for an arm's total requests. Placeholders: `{{app}}`, `{{version}}`,
    /// `{{arm}}` (`canary` or `stable`), `{{window}}` (time since the rollout started,
    /// e.g. `300s`).
    #[serde(default = "default_requests")]
    pub requests: String,
    /// PromQL for an arm's total failed requests (5xx and upstream failures).
    #[serde(default = "default_errors")]
    pub errors: String,
    /// PromQL for an arm's latency histogram: cumulative counts by `le` label.
    #[serde(default = "default_latency_buckets")]
    pub latency_buckets: String,
    /// PromQL for the sum of an arm's latencies in seconds (for the mean). When it
    /// returns nothing the sum is estimated from the buckets.
    #[serde(default = "default_latency_sum")]
    pub latency_sum: String,
    /// Extra HTTP headers sent with every query (e.g. `X-Scope-OrgID` for a
    /// multi-tenant Mimir).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_requests() -> String {
    r#"sum(http_requests_total{app="{{app}}",version="{{version}}"})"#.to_owned()
}

fn default_errors() -> String {
    r#"sum(http_requests_total{app="{{app}}",version="{{version}}",code=~"5.."})"#.to_owned()
}

fn default_latency_buckets() -> String {
    r#"sum by (le) (http_request_duration_seconds_bucket{app="{{app}}",version="{{version}}"})"#
        .to_owned()
}

fn default_latency_sum() -> String {
    r#"sum(http_request_duration_seconds_sum{app="{{app}}",version="{{version}}"})"#.to_owned()
}

impl PrometheusSettings {
    /// Settings with the default queries for the Prometheus at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        PrometheusSettings {
            url: url.into(),
            timeout: default_timeout(),
            requests: default_requests(),
            errors: default_errors(),
            latency_buckets: default_latency_buckets(),
            latency_sum: default_latency_sum(),
            headers: BTreeMap::new(),
        }
    }
}

/// Reads per-version counters from Prometheus.
#[derive(Debug, Clone)]
pub struct PrometheusSource {
    settings: PrometheusSettings,
    api: InstantApi,
}

// === impl PrometheusSource ===

impl PrometheusSource {
    /// A source for `settings`; checks the templates' placeholders now, so a typo is a
    /// configuration error and not a failure at every tick.
    pub fn new(settings: PrometheusSettings) -> Result<Self, MetricError> {
        check_templates(
            KIND,
            &[
                ("requests", &settings.requests),
                ("errors", &settings.errors),
                ("latencyBuckets", &settings.latency_buckets),
                ("latencySum", &settings.latency_sum),
            ],
        )?;
        let client = source_client(KIND, settings.timeout)?;
        let query_url = format!("{}/api/v1/query", settings.url.trim_end_matches('/'));
        let api = InstantApi::new(KIND, query_url, header_list(&settings.headers), client);
        Ok(PrometheusSource { settings, api })
    }

    /// The query URL (`.../api/v1/query`).
    pub fn query_url(&self) -> &str {
        self.api.url()
    }

    /// Fills a template for one arm: `{{app}}` and `{{version}}` escaped for a PromQL
    /// string, `{{arm}}`, `{{window}}`.
    fn render(&self, template: &str, q: &ObserveQuery, arm: Arm) -> Result<String, MetricError> {
        render_arm(KIND, template, q, arm, escape)
    }

    /// The cumulative counters of one arm.
    async fn arm(&self, q: &ObserveQuery, arm: Arm, at: &str) -> Result<ArmCounters, MetricError> {
        let requests_q = self.render(&self.settings.requests, q, arm)?;
        let errors_q = self.render(&self.settings.errors, q, arm)?;
        let buckets_q = self.render(&self.settings.latency_buckets, q, arm)?;
        let sum_q = self.render(&self.settings.latency_sum, q, arm)?;
        // Every query of one observation is evaluated at the same instant, so
        // requests, errors and buckets describe the same moment.
        let (requests, errors, buckets, sum) = futures::try_join!(
            self.api.query(&requests_q, at),
            self.api.query(&errors_q, at),
            self.api.query(&buckets_q, at),
            self.api.query(&sum_q, at),
        )?;
        let latency = self.histogram(&buckets, &sum, &buckets_q)?;
        arm_counters(
            KIND,
            self.api.url(),
            (self.api.total(&requests, &requests_q)?, &requests_q),
            (self.api.total(&errors, &errors_q)?, &errors_q),
            latency,
        )
    }

    fn histogram(
        &self,
        buckets: &Sample,
        sum: &Sample,
        query: &str,
    ) -> Result<LatencyHistogram, MetricError> {
        let bad = |reason: String| self.api.bad(&reason, query);
        let Sample::Vector(series) = buckets else {
            return Err(bad("latency buckets must be a vector by `le`".to_owned()));
        };
        let mut pairs = Vec::with_capacity(series.len());
        for (labels, value) in series {
            let le = labels
                .get("le")
                .ok_or_else(|| bad("a latency bucket series has no `le` label".to_owned()))?;
            let le = parse_float(le).map_err(|e| bad(format!("le {e}")))?;
            pairs.push((le, *value));
        }
        let sum = total(sum).ok().flatten();
        buckets::from_cumulative(&pairs, sum).map_err(bad)
    }

    /// The value of one custom-metric query for one arm.
    async fn gauge(
        &self,
        template: &str,
        q: &ObserveQuery,
        arm: Arm,
        at: &str,
    ) -> Result<Option<f64>, MetricError> {
        self.api.value(&self.render(template, q, arm)?, at).await
    }
}

#[async_trait]
impl MetricSource for PrometheusSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn observe(&self, q: &ObserveQuery) -> Result<Observation, MetricError> {
        let at = unix_now().as_secs_f64();
        let at = format!("{at:.3}");
        let at = at.as_str();
        observe_arms(
            KIND,
            q,
            |arm| self.arm(q, arm, at),
            |t, arm, _| self.gauge(t, q, arm, at),
        )
        .await
    }
}

/// Escapes a value for use inside a PromQL double-quoted string.
pub(crate) fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', r#"\""#)
}

#[cfg(test)]
mod tests;
