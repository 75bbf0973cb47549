//! One version's recent health: the figures derived from its counters over a short
//! window, as `GET /status` serves them and the store keeps them in chart samples.
//!
//! Declared here, below both the API and the store, so that what is served and what
//! is stored are one type. Its JSON is the API's wire format; its JSON Schema (for
//! the OpenAPI document) comes with the `schema` feature.

use serde::{Deserialize, Serialize};

/// One version's recent health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ArmHealth {
    /// The version label.
    pub version: String,
    /// Requests per second over the window.
    pub request_rate: f64,
    /// Failed share of the window's requests; `None` without requests.
    pub error_rate: Option<f64>,
    /// Median latency in milliseconds.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Requests since the source started counting.
    pub total_requests: u64,
}
