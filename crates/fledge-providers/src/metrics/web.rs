//! Any HTTP endpoint that answers JSON, read with JSON paths (like Argo Rollouts' web
//! metric).
//!
//! The source GETs `url` once per arm, with `{{app}}`, `{{version}}` and `{{window}}`
//! filled in (URL-encoded), and reads the arm's counters from the JSON document with
//! [`JsonPath`]s: `requests` and `errors` must be totals that only grow (the engine
//! differences them); `latencyBuckets`, when set, names an array of cumulative buckets
//! written `[{"le": 0.5, "count": 120}, ...]` or `[[0.5, 120], ...]` (`le` may be the
//! string `"+Inf"`), mapped onto the fledge ladder like Prometheus buckets. A missing
//! `requests` or `errors` value is "no data" (a JSON API that omits a field is more
//! likely misconfigured than error-free). A custom metric's query (a ratio's `bad` and
//! `total`) is a JSON path into the same per-arm document.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use fledge_stats::{ArmCounters, LatencyHistogram, Observation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jsonpath::JsonPath;
use super::{
    Arm, MetricError, MetricSource, ObserveQuery, as_counter, buckets, evaluate_custom, get_json,
    header_list, render_arm,
};
use crate::template;

const KIND: &str = "web";

/// Settings of the web metric source (`metrics: {web: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebSettings {
    /// URL of the JSON document for one arm; `{{app}}`, `{{version}}` and
    /// `{{window}}` are replaced (URL-encoded), e.g.
    /// `http://stats.internal/apps/{{app}}/versions/{{version}}`.
    pub url: String,
    /// Extra HTTP headers sent with every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How long one request may take.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// JSON path to the arm's total requests, e.g. `$.requests`.
    pub requests: String,
    /// JSON path to the arm's total failed requests, e.g. `$.errors.total`.
    pub errors: String,
    /// JSON path to the arm's cumulative latency buckets (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets: Option<String>,
    /// JSON path to the sum of the arm's latencies in seconds (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_sum: Option<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Reads per-version counters from a JSON endpoint.
#[derive(Debug, Clone)]
pub struct WebSource {
    settings: WebSettings,
    requests: JsonPath,
    errors: JsonPath,
    latency_buckets: Option<JsonPath>,
    latency_sum: Option<JsonPath>,
    headers: Vec<(String, String)>,
    client: reqwest::Client,
}

// === impl WebSource ===

impl WebSource {
    /// A source for `settings`; parses the JSON paths and checks the URL template now.
    pub fn new(settings: WebSettings) -> Result<Self, MetricError> {
        let config = |reason: String| MetricError::Config {
            source_kind: KIND,
            reason,
        };
        template::render(
            &settings.url,
            &[("app", "a"), ("version", "v"), ("window", "1s")],
        )
        .map_err(|e| config(format!("url: {e}")))?;
        let path =
            |name: &str, p: &str| JsonPath::parse(p).map_err(|e| config(format!("{name}: {e}")));
        let requests = path("requests", &settings.requests)?;
        let errors = path("errors", &settings.errors)?;
        let latency_buckets = settings
            .latency_buckets
            .as_deref()
            .map(|p| path("latencyBuckets", p))
            .transpose()?;
        let latency_sum = settings
            .latency_sum
            .as_deref()
            .map(|p| path("latencySum", p))
            .transpose()?;
        let client = super::source_client(KIND, settings.timeout)?;
        let headers = header_list(&settings.headers);
        Ok(WebSource {
            settings,
            requests,
            errors,
            latency_buckets,
            latency_sum,
            headers,
            client,
        })
    }

    async fn fetch(&self, q: &ObserveQuery, arm: Arm) -> Result<(String, Value), MetricError> {
        let url = render_arm(KIND, &self.settings.url, q, arm, encode)?;
        let doc = get_json(&self.client, KIND, &url, &[], &self.headers).await?;
        Ok((url, doc))
    }

    fn arm(&self, url: &str, doc: &Value) -> Result<ArmCounters, MetricError> {
        let bad = |reason: String| MetricError::BadResponse {
            source_kind: KIND,
            url: url.to_owned(),
            reason,
        };
        let counter = |path: &JsonPath| -> Result<u64, MetricError> {
            let Some(v) = path.number(doc).map_err(&bad)? else {
                return Err(MetricError::NoData {
                    source_kind: KIND,
                    url: url.to_owned(),
                    query: path.to_string(),
                });
            };
            as_counter(v).ok_or_else(|| bad(format!("`{path}` is {v}, not a count")))
        };
        let requests = counter(&self.requests)?;
        let errors = counter(&self.errors)?;
        let latency = match &self.latency_buckets {
            None => LatencyHistogram::default(),
            Some(path) => {
                let sum = match &self.latency_sum {
                    Some(p) => p.number(doc).map_err(&bad)?,
                    None => None,
                };
                match path.select(doc) {
                    None | Some(Value::Null) => LatencyHistogram::default(),
                    Some(v) => {
                        let pairs = bucket_pairs(v).map_err(|e| bad(format!("`{path}`: {e}")))?;
                        buckets::from_cumulative(&pairs, sum)
                            .map_err(|e| bad(format!("`{path}`: {e}")))?
                    }
                }
            }
        };
        Ok(ArmCounters {
            requests,
            errors: errors.min(requests),
            latency,
        })
    }
}

#[async_trait]
impl MetricSource for WebSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn observe(&self, q: &ObserveQuery) -> Result<Observation, MetricError> {
        let ((stable_url, stable_doc), (canary_url, canary_doc)) =
            futures::try_join!(self.fetch(q, Arm::Stable), self.fetch(q, Arm::Canary))?;
        let stable = self.arm(&stable_url, &stable_doc)?;
        let canary = self.arm(&canary_url, &canary_doc)?;
        let custom = evaluate_custom(KIND, q, |path, arm, _| {
            let (doc, url) = match arm {
                Arm::Canary => (&canary_doc, &canary_url),
                Arm::Stable => (&stable_doc, &stable_url),
            };
            let value = JsonPath::parse(path)
                .map_err(|reason| MetricError::Config {
                    source_kind: KIND,
                    reason,
                })
                .and_then(|p| {
                    p.number(doc).map_err(|reason| MetricError::BadResponse {
                        source_kind: KIND,
                        url: url.clone(),
                        reason,
                    })
                });
            std::future::ready(value)
        })
        .await;
        Ok(Observation {
            stable,
            canary,
            custom,
        })
    }
}

/// Percent-encodes a value for a URL path or query (RFC 3986 unreserved kept).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads `[{"le": .., "count": ..}]` or `[[le, count]]` into pairs.
fn bucket_pairs(v: &Value) -> Result<Vec<(f64, f64)>, String> {
    let items = v.as_array().ok_or("expected an array of buckets")?;
    let num = |v: &Value| -> Result<f64, String> {
        match v {
            Value::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a number")),
            Value::String(s) if s == "+Inf" || s == "Inf" => Ok(f64::INFINITY),
            Value::String(s) => s.parse().map_err(|_| format!("{s:?} is not a number")),
            other => Err(format!("{other} is not a number")),
        }
    };
    items
        .iter()
        .map(|item| match item {
            Value::Object(m) => Ok((
                num(m.get("le").ok_or("a bucket has no `le`")?)?,
                num(m.get("count").ok_or("a bucket has no `count`")?)?,
            )),
            Value::Array(pair) if pair.len() == 2 => Ok((num(&pair[0])?, num(&pair[1])?)),
            other => Err(format!(
                "bucket {other} is neither {{le, count}} nor [le, count]"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use axum::Json;
    use axum::extract::Path;
    use axum::routing::get;
    use serde_json::json;

    use super::*;
    use crate::metrics::CustomQuery;
    use crate::testing::{TestServer, assert_counts, assert_custom};

    async fn stats_server() -> TestServer {
        let app = axum::Router::new().route(
            "/apps/{app}/versions/{version}",
            get(|Path((app, version)): Path<(String, String)>| async move {
                let (req, err, ok) = match version.as_str() {
                    "v1" => (1000, 5, 0.995),
                    "v2 beta" => (100, 3, 0.97),
                    _ => return Json(json!({"app": app})),
                };
                Json(json!({
                    "app": app,
                    "totals": {"requests": req, "errors": {"5xx": err}},
                    "latency": [{"le": 0.1, "count": req / 2}, {"le": "+Inf", "count": req}],
                    "business": {"checkout ok": ok}
                }))
            }),
        );
        TestServer::start(app).await.unwrap()
    }

    fn settings(base: &str) -> WebSettings {
        WebSettings {
            url: format!("{base}/apps/{{{{app}}}}/versions/{{{{version}}}}"),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(2),
            requests: "$.totals.requests".into(),
            errors: "$.totals.errors['5xx']".into(),
            latency_buckets: Some("$.latency".into()),
            latency_sum: None,
        }
    }

    fn query(canary: &str) -> ObserveQuery {
        let checkout = CustomQuery::gauge("checkout", "$.business['checkout ok']");
        crate::testing::shop_query(canary, vec![checkout])
    }

    #[tokio::test]
    async fn reads_both_arms_through_json_paths() {
        let server = stats_server().await;
        let source = WebSource::new(settings(&server.url())).unwrap();
        let obs = source.observe(&query("v2 beta")).await.unwrap();
        assert_counts(&obs, (1000, 5), (100, 3));
        assert_eq!(obs.canary.latency.total(), 100);
        assert_eq!(obs.canary.latency.count_above(0.1), 50);
        assert_custom(&obs, "checkout", 0.97, Some(0.995));
    }

    #[tokio::test]
    async fn missing_counter_is_no_data() {
        let server = stats_server().await;
        let source = WebSource::new(settings(&server.url())).unwrap();
        let err = source.observe(&query("v9")).await.unwrap_err();
        assert!(matches!(err, MetricError::NoData { .. }), "{err}");
        assert!(err.to_string().contains("v9"), "{err}");
    }

    #[test]
    fn bad_paths_are_config_errors() {
        let mut s = settings("http://x");
        s.errors = "$.totals[".into();
        let err = WebSource::new(s).unwrap_err();
        assert!(err.to_string().contains("errors"), "{err}");
    }
}
