//! Loki as a metric source: the share of error log lines per version, through Loki's
//! instant-query API (`GET <url>/loki/api/v1/query?query=&time=`), which answers
//! like Prometheus' (`{"status": "success", "data": {"resultType": "vector", ...}}`).
//!
//! **Log lines as requests.** An arm's "requests" are its log lines since the rollout
//! started and its "errors" the lines that look like errors, each counted by LogQL
//! over `{{window}}` (the time since the rollout started): totals that only grow, as
//! the engine expects. The built-in `error_rate` criteria then judge the canary's
//! share of error lines against the stable version's; `request_rate` is a log-line
//! rate. The defaults select streams by `app` and `version` labels:
//!
//! ```text
//! requests: sum(count_over_time({app="{{app}}",version="{{version}}"}[{{window}}]))
//! errors:   sum(count_over_time({app="{{app}}",version="{{version}}"} |= "error" [{{window}}]))
//! ```
//!
//! An empty result for requests (no log line at all) is "no data"; for errors, while
//! requests has data, it is zero errors (LogQL has no series when no line matched).
//! There is no latency histogram: `latency_*` criteria have no data (they never pass).
//! Custom metrics are LogQL metric queries, one value per arm, as for Prometheus.
//!
//! All queries of one observation are evaluated at the same instant (`time=`, in Unix
//! nanoseconds). A tenant is sent as `X-Scope-OrgID`; basic-auth passwords and bearer
//! tokens come from environment variables (or, in the operator, Secrets) and never
//! appear in errors or logs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use fledge_stats::Observation;
use serde::{Deserialize, Serialize};

use super::instant::InstantApi;
use super::prometheus::escape;
use super::{
    MetricError, MetricSource, ObserveQuery, Secret, counting_client, header_list,
    observe_counting, render_arm, unix_now,
};

const KIND: &str = "loki";

/// Settings of the Loki metric source (`metrics: {loki: {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LokiSettings {
    /// Base URL of Loki (or of a compatible API), e.g. `http://loki:3100`.
    pub url: String,
    /// The tenant, sent as `X-Scope-OrgID` (a multi-tenant Loki).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The user of HTTP basic auth; its password is read from `passwordEnv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The environment variable holding the basic-auth password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// The environment variable holding a bearer token (instead of basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Extra HTTP headers sent with every query (nothing secret).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// How long one query may take.
    #[serde(default = "default_timeout", with = "fledge_spec::duration::required")]
    pub timeout: Duration,
    /// LogQL counting an arm's log lines since the rollout started. Placeholders:
    /// `{{app}}`, `{{version}}` (escaped for a LogQL string), `{{arm}}`, `{{window}}`
    /// (e.g. `300s`).
    #[serde(default = "default_requests")]
    pub requests: String,
    /// LogQL counting an arm's error log lines since the rollout started.
    #[serde(default = "default_errors")]
    pub errors: String,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_requests() -> String {
    r#"sum(count_over_time({app="{{app}}",version="{{version}}"}[{{window}}]))"#.to_owned()
}
fn default_errors() -> String {
    r#"sum(count_over_time({app="{{app}}",version="{{version}}"} |= "error" [{{window}}]))"#
        .to_owned()
}

impl LokiSettings {
    /// Settings with the default queries for the Loki at `url`, without tenant or auth.
    pub fn new(url: impl Into<String>) -> Self {
        LokiSettings {
            url: url.into(),
            tenant: None,
            username: None,
            password_env: None,
            token_env: None,
            headers: BTreeMap::new(),
            timeout: default_timeout(),
            requests: default_requests(),
            errors: default_errors(),
        }
    }
}

/// How the source authenticates to Loki. `Debug` does not show the secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LokiAuth {
    /// No `Authorization` header (a Loki behind no gateway).
    #[default]
    None,
    /// HTTP basic auth.
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
}

impl LokiAuth {
    /// The auth the settings ask for, with the password or token read from the
    /// environment variable they name.
    pub fn from_env(settings: &LokiSettings) -> Result<Self, MetricError> {
        match (
            &settings.username,
            &settings.password_env,
            &settings.token_env,
        ) {
            (None, None, None) => Ok(LokiAuth::None),
            (Some(username), Some(var), None) => Ok(LokiAuth::Basic {
                username: username.clone(),
                password: Secret::from_env(KIND, var, "the Loki password")?,
            }),
            (None, None, Some(var)) => Ok(LokiAuth::Bearer(Secret::from_env(
                KIND,
                var,
                "a Loki bearer token",
            )?)),
            _ => Err(MetricError::Config {
                source_kind: KIND,
                reason: "set `username` with `passwordEnv` (basic auth), or `tokenEnv` \
                         (bearer token), not both"
                    .to_owned(),
            }),
        }
    }

    /// The `Authorization` header's value, if any.
    fn into_header(self) -> Option<String> {
        match self {
            LokiAuth::None => None,
            LokiAuth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            LokiAuth::Bearer(token) => Some(format!("Bearer {}", token.expose())),
        }
    }
}

/// Reads per-version log-line counters from Loki.
#[derive(Debug, Clone)]
pub struct LokiSource {
    settings: LokiSettings,
    /// Queried with the settings' headers, the tenant's and `Authorization`.
    api: InstantApi,
}

// === impl LokiSource ===

impl LokiSource {
    /// A source for `settings` authenticating with `auth`; checks the templates'
    /// placeholders now.
    pub fn new(settings: LokiSettings, auth: LokiAuth) -> Result<Self, MetricError> {
        let client = counting_client(KIND, &settings.requests, &settings.errors, settings.timeout)?;
        let query_url = format!("{}/loki/api/v1/query", settings.url.trim_end_matches('/'));
        let mut headers = header_list(&settings.headers);
        if let Some(tenant) = &settings.tenant {
            headers.push(("X-Scope-OrgID".to_owned(), tenant.clone()));
        }
        if let Some(value) = auth.into_header() {
            headers.push(("Authorization".to_owned(), value));
        }
        let api = InstantApi::new(KIND, query_url, headers, client);
        Ok(LokiSource { settings, api })
    }
}

#[async_trait]
impl MetricSource for LokiSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn observe(&self, q: &ObserveQuery) -> Result<Observation, MetricError> {
        let at = unix_now().as_nanos().to_string();
        let at = at.as_str();
        observe_counting(
            KIND,
            self.api.url(),
            (&self.settings.requests, &self.settings.errors),
            q,
            |t, arm| render_arm(KIND, t, q, arm, escape),
            |query| async move { self.api.count(&query, at).await },
            |query, _| async move { self.api.value(&query, at).await },
        )
        .await
    }
}

#[cfg(test)]
mod tests;
