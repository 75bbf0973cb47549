//! New Relic as a metric source, through NerdGraph's NRQL query
//! (`POST https://api.newrelic.com/graphql`, or `https://api.eu.newrelic.com/graphql`
//! for EU accounts, header `API-Key` with a user key).
//!
//! Each query is sent as the documented GraphQL document
//! `{ actor { account(id: N) { nrql(query: "...") { results } } } }` and answered with
//! `{"data": {"actor": {"account": {"nrql": {"results": [{...}]}}}}}`; GraphQL
//! `errors` in the answer (NerdGraph sends them with status 200) are a bad response.
//!
//! **Counters from counts over the window.** NRQL counts events over a time range, so
//! the defaults count an arm's transactions `SINCE {{window}} ago`, the time since the
//! rollout started: a total that only grows, as the engine expects. `{{window}}` is
//! written in NRQL's own syntax here (`300 seconds`). The defaults read APM
//! transactions tagged with the version:
//!
//! ```text
//! requests: SELECT count(*) FROM Transaction WHERE appName = '{{app}}' AND tags.version = '{{version}}' SINCE {{window}} ago
//! errors:   SELECT count(*) FROM Transaction WHERE appName = '{{app}}' AND tags.version = '{{version}}' AND error IS true SINCE {{window}} ago
//! ```
//!
//! **Reading results.** A result row must hold one value (`{"count": 12}`,
//! `{"average.duration": 0.2}`, `{"percentile.duration": {"95": 0.4}}`); a `FACET`
//! query's rows are summed for the counters and for a ratio's `bad` and `total`, and
//! are an error for a gauge. Empty `results` (or a null value) for requests is "no
//! data"; for errors it is zero errors. NRQL answers `count(*)` with 0 when nothing
//! matched: that is zero requests, which the judge reads as no traffic, never as a
//! healthy canary.
//!
//! **Latency.** NRQL returns aggregates, not histogram buckets, so this source leaves
//! the latency histogram empty; judge latency with a custom gauge such as
//! `SELECT percentile(duration, 95) FROM Transaction WHERE ... SINCE {{window}} ago`.
//!
//! The key is read from the environment variable the settings name (by default
//! `NEW_RELIC_API_KEY`) or, in the operator, from a Secret; it never appears in
//! errors or logs.

use std::time::Duration;

use async_trait::async_trait;
use fledge_stats::Observation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    Arm, MetricError, MetricSource, ObserveQuery, Role, Secret, counting_client, observe_counting,
    post_json, render_arm_in,
};

const KIND: &str = "newrelic";

/// Where an account's data lives, which decides the NerdGraph endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewRelicRegion {
    /// `https://api.newrelic.com/graphql`.
    #[default]
    Us,
    /// `https://api.eu.newrelic.com/graphql`.
    Eu,
}

/// Settings of the New Relic metric source (`metrics: {newrelic: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewRelicSettings {
    /// The New Relic account whose data the queries read.
    pub account_id: u64,
    /// `us` (default) or `eu`: the data center of the account.
    #[serde(default)]
    pub region: NewRelicRegion,
    /// A base URL that replaces the region's `https://api.newrelic.com` or
    /// `https://api.eu.newrelic.com` (a proxy, or a test server); queries go to
    /// `<baseUrl>/graphql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable holding the user API key (sent as `API-Key`).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// How long one query may take.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// NRQL counting an arm's requests since the rollout started. Placeholders:
    /// `{{app}}`, `{{version}}` (escaped for an NRQL string), `{{arm}}`, `{{window}}`
    /// (e.g. `300 seconds`).
    #[serde(default = "default_requests")]
    pub requests: String,
    /// NRQL counting an arm's failed requests since the rollout started.
    #[serde(default = "default_errors")]
    pub errors: String,
}

fn default_api_key_env() -> String {
    "NEW_RELIC_API_KEY".to_owned()
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_requests() -> String {
    "SELECT count(*) FROM Transaction WHERE appName = '{{app}}' AND tags.version = '{{version}}' SINCE {{window}} ago".to_owned()
}
fn default_errors() -> String {
    "SELECT count(*) FROM Transaction WHERE appName = '{{app}}' AND tags.version = '{{version}}' AND error IS true SINCE {{window}} ago".to_owned()
}

impl NewRelicSettings {
    /// Settings with the default queries for `account_id` in the US region.
    pub fn new(account_id: u64) -> Self {
        NewRelicSettings {
            account_id,
            region: NewRelicRegion::Us,
            base_url: None,
            api_key_env: default_api_key_env(),
            timeout: default_timeout(),
            requests: default_requests(),
            errors: default_errors(),
        }
    }

    /// The NerdGraph endpoint: `<baseUrl>/graphql`, or the region's.
    pub fn endpoint(&self) -> String {
        let base = match (&self.base_url, self.region) {
            (Some(u), _) => u.trim_end_matches('/'),
            (None, NewRelicRegion::Us) => "https://api.newrelic.com",
            (None, NewRelicRegion::Eu) => "https://api.eu.newrelic.com",
        };
        format!("{base}/graphql")
    }
}

/// Reads per-version counters from New Relic.
#[derive(Debug, Clone)]
pub struct NewRelicSource {
    settings: NewRelicSettings,
    endpoint: String,
    api_key: Secret,
    client: reqwest::Client,
}

// === impl NewRelicSource ===

impl NewRelicSource {
    /// A source for `settings` authenticating with the user key `api_key`.
    pub fn new(settings: NewRelicSettings, api_key: Secret) -> Result<Self, MetricError> {
        let client = counting_client(KIND, &settings.requests, &settings.errors, settings.timeout)?;
        let endpoint = settings.endpoint();
        Ok(NewRelicSource {
            settings,
            endpoint,
            api_key,
            client,
        })
    }

    /// Builds the source with the key from the environment variable the settings name.
    pub fn from_env(settings: NewRelicSettings) -> Result<Self, MetricError> {
        let key = Secret::from_env(KIND, &settings.api_key_env, "a New Relic user key")?;
        NewRelicSource::new(settings, key)
    }

    /// Runs one NRQL query and returns its result rows' values.
    async fn query(&self, nrql: &str) -> Result<Vec<Option<f64>>, MetricError> {
        let body = json!({ "query": graphql_document(self.settings.account_id, nrql) });
        let headers = [("API-Key".to_owned(), self.api_key.expose().to_owned())];
        let answer = post_json(&self.client, KIND, &self.endpoint, &body, &headers).await?;
        parse_response(&answer).map_err(|reason| MetricError::BadResponse {
            source_kind: KIND,
            url: self.endpoint.clone(),
            reason: format!("{reason} (query `{nrql}`)"),
        })
    }

    /// Fills a template for one arm: names escaped for an NRQL string, the window in
    /// NRQL's syntax.
    fn render(&self, t: &str, q: &ObserveQuery, arm: Arm) -> Result<String, MetricError> {
        let window = format!("{} seconds", q.window.as_secs().max(1));
        render_arm_in(KIND, t, q, arm, escape, &window)
    }

    /// The value of one query as `role` reads it: the sum of its rows for a count, its
    /// one row for a gauge; `None` when it has no rows or only null values.
    async fn value(&self, nrql: &str, role: Role) -> Result<Option<f64>, MetricError> {
        let rows = self.query(nrql).await?;
        match (role, rows.as_slice()) {
            (_, []) => Ok(None),
            (Role::Gauge, [one]) => Ok(one.filter(|v| v.is_finite())),
            (Role::Gauge, many) => Err(MetricError::BadResponse {
                source_kind: KIND,
                url: self.endpoint.clone(),
                reason: format!(
                    "custom metric query returned {} rows, expected one (query `{nrql}`)",
                    many.len()
                ),
            }),
            (Role::Count, all) => Ok(all.iter().flatten().copied().reduce(|a, b| a + b)),
        }
    }
}

#[async_trait]
impl MetricSource for NewRelicSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn observe(&self, q: &ObserveQuery) -> Result<Observation, MetricError> {
        observe_counting(
            KIND,
            &self.endpoint,
            (&self.settings.requests, &self.settings.errors),
            q,
            |t, arm| self.render(t, q, arm),
            |nrql| async move { self.value(&nrql, Role::Count).await },
            |nrql, role| async move { self.value(&nrql, role).await },
        )
        .await
    }
}

/// Escapes a value for use inside an NRQL single-quoted string.
fn escape(value: &str) -> String {
    value.replace('\\', r"\\").replace('\'', r"\'")
}

/// The documented NerdGraph document running `nrql` in `account`. GraphQL string
/// literals take exactly JSON's escapes, so the NRQL is written as a JSON string.
fn graphql_document(account: u64, nrql: &str) -> String {
    let literal = Value::String(nrql.to_owned()).to_string();
    format!("{{ actor {{ account(id: {account}) {{ nrql(query: {literal}) {{ results }} }} }} }}")
}

/// Parses a NerdGraph answer into the value of each NRQL result row.
fn parse_response(body: &Value) -> Result<Vec<Option<f64>>, String> {
    if let Some(errors) = body.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        let messages: Vec<&str> = errors
            .iter()
            .map(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("(no message)")
            })
            .collect();
        return Err(format!("NerdGraph error: {}", messages.join("; ")));
    }
    let results = body
        .pointer("/data/actor/account/nrql/results")
        .and_then(Value::as_array)
        .ok_or("no `data.actor.account.nrql.results`: not a NerdGraph NRQL answer")?;
    results.iter().map(row_value).collect()
}

/// The one value of a result row: a number, null, or an object holding one number
/// (`percentile`). Strings (a `FACET`'s names) and the time bounds of a row are not
/// values.
fn row_value(row: &Value) -> Result<Option<f64>, String> {
    let fields = row
        .as_object()
        .ok_or_else(|| format!("a result row is not an object: {row}"))?;
    let mut values = Vec::new();
    for (name, v) in fields {
        if matches!(
            name.as_str(),
            "facet" | "beginTimeSeconds" | "endTimeSeconds"
        ) {
            continue;
        }
        match v {
            Value::Number(n) => values.push(n.as_f64()),
            Value::Null => values.push(None),
            Value::Object(inner) => match inner.values().collect::<Vec<_>>().as_slice() {
                [Value::Number(n)] => values.push(n.as_f64()),
                _ => return Err(format!("`{name}` is not one number: {v}")),
            },
            // A facet's name, or another label.
            _ => {}
        }
    }
    match values.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!("a result row holds no value: {row}")),
        _ => Err(format!(
            "a result row must hold exactly one value, found {row}: select one aggregate"
        )),
    }
}

#[cfg(test)]
mod tests;
