//! Datadog as a metric source, through the metrics query API
//! (`GET /api/v1/query?from=&to=&query=`, headers `DD-API-KEY` and
//! `DD-APPLICATION-KEY`).
//!
//! **Counters from counts.** Datadog stores per-interval values, not ever-growing
//! counters. The source asks for the points from the start of the rollout
//! (`now - window`) to now, with `.as_count()` queries, and adds up every point of
//! every series: that sum is the arm's total since the rollout started, which only
//! grows, as the engine expects. Datadog may still revise the newest interval as late
//! data arrives; the next observation simply sees the corrected total.
//!
//! The defaults read APM trace metrics:
//!
//! ```text
//! requests: sum:trace.http.request.hits{service:{{app}},version:{{version}}}.as_count()
//! errors:   sum:trace.http.request.errors{service:{{app}},version:{{version}}}.as_count()
//! ```
//!
//! An empty `series` for requests is "no data"; for errors (while requests has data)
//! it is zero errors, since Datadog has no points until the first error.
//!
//! **Latency.** The query API returns aggregated percentiles, not the buckets of a
//! histogram, so this source leaves the latency histogram empty: built-in
//! `latency_*` criteria then have no data (they never pass). Write latency criteria on
//! a custom metric instead, e.g. `metrics: {dd_p95: {query:
//! "p95:trace.http.request{service:{{app}},version:{{version}}}", unit: seconds}}`. A
//! gauge's value is the last non-null point of its one series; a ratio's `bad` and
//! `total` are each summed over the window like the request counts.
//!
//! Keys are read from environment variables named in the settings (by default
//! `DD_API_KEY` and `DD_APP_KEY`), never from the configuration file, and never
//! appear in errors or logs.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use fledge_stats::Observation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Arm, MetricError, MetricSource, ObserveQuery, Role, Secret, counting_client, observe_counting,
    query_api, render_arm, unix_now,
};

const KIND: &str = "datadog";

/// Settings of the Datadog metric source (`metrics: {datadog: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DatadogSettings {
    /// The Datadog site: `datadoghq.com` (default), `datadoghq.eu`,
    /// `us3.datadoghq.com`, `us5.datadoghq.com`, `ap1.datadoghq.com`, `ddog-gov.com`.
    /// The API is at `https://api.<site>`.
    #[serde(default = "default_site")]
    pub site: String,
    /// A base URL that replaces `https://api.<site>` (a proxy, or a test server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable holding the API key.
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// The environment variable holding the application key.
    #[serde(default = "default_app_key_env")]
    pub app_key_env: String,
    /// How long one query may take.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// Datadog query for an arm's request count per interval (summed over the
    /// rollout). Placeholders: `{{app}}`, `{{version}}`, `{{window}}`.
    #[serde(default = "default_requests")]
    pub requests: String,
    /// Datadog query for an arm's error count per interval.
    #[serde(default = "default_errors")]
    pub errors: String,
}

fn default_site() -> String {
    "datadoghq.com".to_owned()
}
fn default_api_key_env() -> String {
    "DD_API_KEY".to_owned()
}
fn default_app_key_env() -> String {
    "DD_APP_KEY".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_requests() -> String {
    "sum:trace.http.request.hits{service:{{app}},version:{{version}}}.as_count()".to_owned()
}
fn default_errors() -> String {
    "sum:trace.http.request.errors{service:{{app}},version:{{version}}}.as_count()".to_owned()
}

impl Default for DatadogSettings {
    fn default() -> Self {
        DatadogSettings {
            site: default_site(),
            base_url: None,
            api_key_env: default_api_key_env(),
            app_key_env: default_app_key_env(),
            timeout: default_timeout(),
            requests: default_requests(),
            errors: default_errors(),
        }
    }
}

impl DatadogSettings {
    /// The API base URL: `base_url`, or `https://api.<site>`.
    pub fn api_base(&self) -> String {
        match &self.base_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("https://api.{}", self.site),
        }
    }
}

/// The API and application keys. `Debug` does not show them.
#[derive(Clone)]
pub struct DatadogKeys {
    /// Sent as `DD-API-KEY`.
    pub api_key: String,
    /// Sent as `DD-APPLICATION-KEY`.
    pub app_key: String,
}

impl fmt::Debug for DatadogKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatadogKeys { api_key: <redacted>, app_key: <redacted> }")
    }
}

impl DatadogKeys {
    /// Reads the keys from the environment variables the settings name; the error
    /// names the variable that is missing or empty.
    pub fn from_env(settings: &DatadogSettings) -> Result<DatadogKeys, MetricError> {
        let read = |name: &str| {
            Secret::from_env(KIND, name, "a Datadog key").map(|s| s.expose().to_owned())
        };
        Ok(DatadogKeys {
            api_key: read(&settings.api_key_env)?,
            app_key: read(&settings.app_key_env)?,
        })
    }
}

/// Reads per-version counters from Datadog.
#[derive(Debug, Clone)]
pub struct DatadogSource {
    settings: DatadogSettings,
    query_url: String,
    keys: DatadogKeys,
    client: reqwest::Client,
}

// === impl DatadogSource ===

impl DatadogSource {
    /// A source for `settings` authenticating with `keys`.
    pub fn new(settings: DatadogSettings, keys: DatadogKeys) -> Result<Self, MetricError> {
        let client = counting_client(KIND, &settings.requests, &settings.errors, settings.timeout)?;
        let query_url = format!("{}/api/v1/query", settings.api_base());
        Ok(DatadogSource {
            settings,
            query_url,
            keys,
            client,
        })
    }

    /// Runs one query over `[from, to]` (Unix seconds) and returns its series'
    /// non-null points.
    async fn query(&self, query: &str, from: u64, to: u64) -> Result<Vec<Vec<f64>>, MetricError> {
        let headers = [
            ("DD-API-KEY".to_owned(), self.keys.api_key.clone()),
            ("DD-APPLICATION-KEY".to_owned(), self.keys.app_key.clone()),
        ];
        let params = [
            ("from", from.to_string()),
            ("to", to.to_string()),
            ("query", query.to_owned()),
        ];
        query_api(
            &self.client,
            KIND,
            &self.query_url,
            &params,
            &headers,
            query,
            parse_response,
        )
        .await
    }

    /// Fills a template for one arm; Datadog queries take the names as they are.
    fn render(&self, t: &str, q: &ObserveQuery, arm: Arm) -> Result<String, MetricError> {
        render_arm(KIND, t, q, arm, str::to_owned)
    }

    /// One custom-metric query, rendered for one arm: the last point of its one
    /// series for a gauge, the sum of its points for a count.
    async fn custom(
        &self,
        rendered: String,
        role: Role,
        (from, to): (u64, u64),
    ) -> Result<Option<f64>, MetricError> {
        let series = self.query(&rendered, from, to).await?;
        match (role, series.as_slice()) {
            (_, []) => Ok(None),
            (Role::Count, all) => Ok(Some(sum_points(all))),
            (Role::Gauge, [one]) => Ok(one.last().copied()),
            (Role::Gauge, many) => Err(MetricError::BadResponse {
                source_kind: KIND,
                url: self.query_url.clone(),
                reason: format!(
                    "custom metric query returned {} series, expected one (query `{rendered}`)",
                    many.len()
                ),
            }),
        }
    }
}

#[async_trait]
impl MetricSource for DatadogSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn observe(&self, q: &ObserveQuery) -> Result<Observation, MetricError> {
        let to = unix_now().as_secs();
        let from = to.saturating_sub(q.window.as_secs().max(1));
        observe_counting(
            KIND,
            &self.query_url,
            (&self.settings.requests, &self.settings.errors),
            q,
            |t, arm| self.render(t, q, arm),
            // No points is no data: for requests, an error; for errors, zero errors.
            |query| async move {
                let series = self.query(&query, from, to).await?;
                Ok((!series.iter().all(Vec::is_empty)).then(|| sum_points(&series)))
            },
            |query, role| self.custom(query, role, (from, to)),
        )
        .await
    }
}

/// The sum of every point of every series.
fn sum_points(series: &[Vec<f64>]) -> f64 {
    series.iter().flatten().sum()
}

/// Parses a `/api/v1/query` body into each series' non-null values.
fn parse_response(body: &Value) -> Result<Vec<Vec<f64>>, String> {
    if body.get("status").and_then(Value::as_str) == Some("error") {
        return Err(format!(
            "Datadog error: {}",
            body.get("error")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
        ));
    }
    let series = body
        .get("series")
        .and_then(Value::as_array)
        .ok_or("no `series` array: not a Datadog metrics query response")?;
    series
        .iter()
        .map(|s| {
            let points = s
                .get("pointlist")
                .and_then(Value::as_array)
                .ok_or("a series has no `pointlist`")?;
            let mut values = Vec::with_capacity(points.len());
            for p in points {
                match p.as_array().map(Vec::as_slice) {
                    Some([_, Value::Null]) => {}
                    Some([_, v]) => values.push(
                        v.as_f64()
                            .ok_or_else(|| format!("point value {v} is not a number"))?,
                    ),
                    _ => return Err(format!("expected [timestamp, value], found {p}")),
                }
            }
            Ok(values)
        })
        .collect()
}

#[cfg(test)]
mod tests;
