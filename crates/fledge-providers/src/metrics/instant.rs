//! The Prometheus-style instant-query API that Prometheus (`GET /api/v1/query`) and
//! Loki (`GET /loki/api/v1/query`) share: one query (`query=`) evaluated at one
//! instant (`time=`), answered with `{"status": "success", "data": {"resultType":
//! "vector", "result": [{"metric": {...}, "value": [ts, "N"]}]}}` or
//! `{"status": "error", "errorType": ..., "error": ...}`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{MetricError, query_api};

/// One instant-query result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sample {
    /// A vector: one value per series, with the series' labels.
    Vector(Vec<(BTreeMap<String, String>, f64)>),
    /// A scalar.
    Scalar(f64),
}

/// A client of one instant-query endpoint. `Debug` shows only the URL: the headers
/// may carry credentials.
#[derive(Clone)]
pub(crate) struct InstantApi {
    source_kind: &'static str,
    url: String,
    headers: Vec<(String, String)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for InstantApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstantApi")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

// === impl InstantApi ===

impl InstantApi {
    /// The endpoint at `url` (the full query URL), queried with `headers`.
    pub(crate) fn new(
        source_kind: &'static str,
        url: String,
        headers: Vec<(String, String)>,
        client: reqwest::Client,
    ) -> Self {
        InstantApi {
            source_kind,
            url,
            headers,
            client,
        }
    }

    /// The query URL.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Runs `query` evaluated at `at` (a timestamp in a form the API takes).
    pub(crate) async fn query(&self, query: &str, at: &str) -> Result<Sample, MetricError> {
        query_api(
            &self.client,
            self.source_kind,
            &self.url,
            &[("query", query.to_owned()), ("time", at.to_owned())],
            &self.headers,
            query,
            parse_response,
        )
        .await
    }

    /// A bad response of this endpoint to `query`.
    pub(crate) fn bad(&self, reason: &str, query: &str) -> MetricError {
        MetricError::BadResponse {
            source_kind: self.source_kind,
            url: self.url.clone(),
            reason: format!("{reason} (query `{query}`)"),
        }
    }

    /// The sum of `sample`'s values (the answer to `query`); `None` when empty.
    pub(crate) fn total(&self, sample: &Sample, query: &str) -> Result<Option<f64>, MetricError> {
        total(sample).map_err(|e| self.bad(&e, query))
    }

    /// The sum of `query`'s values at `at`; `None` for an empty result.
    pub(crate) async fn count(&self, query: &str, at: &str) -> Result<Option<f64>, MetricError> {
        self.total(&self.query(query, at).await?, query)
    }

    /// A custom metric's value: `query`'s one value at `at`; `None` for an empty
    /// result or NaN, an error for more than one series (the query must aggregate).
    pub(crate) async fn value(&self, query: &str, at: &str) -> Result<Option<f64>, MetricError> {
        single_value(self.query(query, at).await?).map_err(|e| self.bad(&e, query))
    }
}

/// Parses Prometheus' float text (`"12"`, `"+Inf"`, `"NaN"`).
pub(crate) fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        t => t.parse().map_err(|_| format!("`{t}` is not a number")),
    }
}

/// The `[timestamp, "value"]` pair of a sample.
fn sample_value(v: &Value) -> Result<f64, String> {
    match v.as_array().map(Vec::as_slice) {
        Some([_, Value::String(s)]) => parse_float(s),
        _ => Err(format!("expected [timestamp, \"value\"], found {v}")),
    }
}

/// Parses the body of `/api/v1/query` (and of the APIs that answer like it: Loki's
/// `/loki/api/v1/query`).
pub(crate) fn parse_response(body: &Value) -> Result<Sample, String> {
    match body.get("status").and_then(Value::as_str) {
        Some("success") => {}
        Some("error") => {
            return Err(format!(
                "{}: {}",
                body.get("errorType")
                    .and_then(Value::as_str)
                    .unwrap_or("error"),
                body.get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
            ));
        }
        _ => return Err("no `status` field: not a Prometheus-style query API".to_owned()),
    }
    let data = body.get("data").ok_or("no `data` field")?;
    let result = data.get("result").ok_or("no `data.result` field")?;
    match data.get("resultType").and_then(Value::as_str) {
        Some("vector") => {
            let items = result.as_array().ok_or("`data.result` is not an array")?;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let labels = item
                    .get("metric")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = sample_value(item.get("value").ok_or("a series has no `value`")?)?;
                out.push((labels, value));
            }
            Ok(Sample::Vector(out))
        }
        Some("scalar") => Ok(Sample::Scalar(sample_value(result)?)),
        Some(other) => Err(format!(
            "result type `{other}`: a query must give an instant vector or a scalar (a range selector `[5m]` needs a function such as increase() or count_over_time())"
        )),
        None => Err("no `data.resultType` field".to_owned()),
    }
}

/// A custom metric's value from one result: `None` for an empty result or NaN; more
/// than one series is an error (the query must aggregate).
fn single_value(sample: Sample) -> Result<Option<f64>, String> {
    match sample {
        Sample::Scalar(v) => Ok(Some(v).filter(|v| v.is_finite())),
        Sample::Vector(series) if series.len() > 1 => Err(format!(
            "custom metric query returned {} series, expected one",
            series.len()
        )),
        Sample::Vector(series) => Ok(series.first().map(|(_, v)| *v).filter(|v| v.is_finite())),
    }
}

/// The sum of a result's values; `None` for an empty vector.
pub(crate) fn total(sample: &Sample) -> Result<Option<f64>, String> {
    match sample {
        Sample::Scalar(v) => Ok(Some(*v)),
        Sample::Vector(series) if series.is_empty() => Ok(None),
        Sample::Vector(series) => Ok(Some(series.iter().map(|(_, v)| v).sum())),
    }
}
