//! Metric sources: where the judge's per-version counters come from when the built-in
//! proxy does not count them itself.
//!
//! Every source answers the same question, [`MetricSource::observe`]: the cumulative
//! request, error and latency counters of the stable and the canary version, and the
//! current value of each custom metric. The engine differences consecutive
//! observations (with Prometheus-style reset handling, see `fledge_stats`), so a source
//! reports totals, never rates. How each source turns what its system offers into
//! totals is documented on the source.
//!
//! "No data" is an error ([`MetricError::NoData`]), never an empty observation: an
//! empty observation would look like a healthy canary with no traffic.

pub mod buckets;
pub mod datadog;
mod instant;
pub mod jsonpath;
pub mod loki;
pub mod newrelic;
pub mod prometheus;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fledge_stats::Observation;
use serde::{Deserialize, Serialize};

pub use self::datadog::{DatadogKeys, DatadogSettings, DatadogSource};
pub use self::loki::{LokiAuth, LokiSettings, LokiSource};
pub use self::newrelic::{NewRelicRegion, NewRelicSettings, NewRelicSource};
pub use self::prometheus::{PrometheusSettings, PrometheusSource};
pub use self::web::{WebSettings, WebSource};

/// Renders each named query template with sample values, so that a placeholder typo
/// is a configuration error when the source is built and not a failure at every tick.
pub(crate) fn check_templates(
    source_kind: &'static str,
    templates: &[(&str, &str)],
) -> Result<(), MetricError> {
    let vars = [
        ("app", "a"),
        ("version", "v"),
        ("arm", "canary"),
        ("window", "1s"),
    ];
    for (name, t) in templates {
        crate::template::render(t, &vars).map_err(|e| MetricError::Config {
            source_kind,
            reason: format!("{name}: {e}"),
        })?;
    }
    Ok(())
}

/// Fills a query template for one arm of `q`: `{{app}}` and `{{version}}` passed
/// through `escape` (for the source's query language, or a URL), `{{arm}}` and
/// `{{window}}`. A template error is the source's configuration error.
pub(crate) fn render_arm(
    source_kind: &'static str,
    template: &str,
    q: &ObserveQuery,
    arm: Arm,
    escape: fn(&str) -> String,
) -> Result<String, MetricError> {
    render_arm_in(
        source_kind,
        template,
        q,
        arm,
        escape,
        &window_text(q.window),
    )
}

/// [`render_arm`] for a query language that writes durations its own way: `window` is
/// `{{window}}` already in that syntax (NRQL's `300 seconds`).
pub(crate) fn render_arm_in(
    source_kind: &'static str,
    template: &str,
    q: &ObserveQuery,
    arm: Arm,
    escape: fn(&str) -> String,
    window: &str,
) -> Result<String, MetricError> {
    crate::template::render(
        template,
        &[
            ("app", &escape(&q.app)),
            ("version", &escape(version_of(arm, q))),
            ("arm", arm.as_str()),
            ("window", window),
        ],
    )
    .map_err(|reason| MetricError::Config {
        source_kind,
        reason,
    })
}

/// A source's extra HTTP headers, as requests take them.
pub(crate) fn header_list(
    headers: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A key, token or password a source authenticates with. `Debug` never shows it, and
/// no error message carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from a Secret, a file or the environment (trimmed).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().trim().to_owned())
    }

    /// Reads environment variable `name`; the error names the variable and `what` it
    /// should hold (`a Datadog key`), never a value.
    pub fn from_env(
        source_kind: &'static str,
        name: &str,
        what: &str,
    ) -> Result<Self, MetricError> {
        match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v)),
            _ => Err(MetricError::Config {
                source_kind,
                reason: format!("environment variable {name} ({what}) is not set"),
            }),
        }
    }

    /// The value, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The HTTP client a source queries with, bounded by its `timeout`.
pub(crate) fn source_client(
    source_kind: &'static str,
    timeout: Duration,
) -> Result<reqwest::Client, MetricError> {
    crate::tls::http_client(timeout).map_err(|e| MetricError::Config {
        source_kind,
        reason: format!("cannot build an HTTP client: {e}"),
    })
}

/// The HTTP client of a source whose settings hold a `requests` and an `errors`
/// query template; checks both templates first.
pub(crate) fn counting_client(
    source_kind: &'static str,
    requests: &str,
    errors: &str,
    timeout: Duration,
) -> Result<reqwest::Client, MetricError> {
    check_templates(source_kind, &[("requests", requests), ("errors", errors)])?;
    source_client(source_kind, timeout)
}

/// What a metric source is asked for at each analysis tick.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveQuery {
    /// The app (service) name, `{{app}}` in templates.
    pub app: String,
    /// The stable version, `{{version}}` in the stable arm's queries.
    pub stable_version: String,
    /// The canary version, `{{version}}` in the canary arm's queries.
    pub canary_version: String,
    /// How long the rollout has been analysed so far (time since it started). Sources
    /// that only know rates or per-interval counts sum over this window to make a
    /// total; `{{window}}` in templates.
    pub window: Duration,
    /// The custom metrics the spec defines, evaluated for both arms.
    pub custom: Vec<CustomQuery>,
}

/// One custom metric of the spec's `metrics:` section, as the source evaluates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomQuery {
    /// The name criteria use (`checkout_success > 98%`).
    pub name: String,
    /// What to query.
    pub kind: CustomKind,
}

/// How a custom metric's value is obtained. Queries are in the source's own language
/// (PromQL for Prometheus, a metric query for Datadog, NRQL for New Relic, LogQL for
/// Loki, a JSON path into the arm's document for the web source), with `{{app}}`, `{{version}}`, `{{arm}}` (`canary` or
/// `stable`) and `{{window}}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CustomKind {
    /// One value per arm.
    Gauge {
        /// The query.
        query: String,
    },
    /// `bad / total` per arm; an empty `bad` with a non-zero `total` is 0, a zero or
    /// empty `total` is no data.
    Ratio {
        /// The query counting bad events.
        bad: String,
        /// The query counting all events.
        total: String,
    },
}

impl CustomQuery {
    /// A gauge metric.
    pub fn gauge(name: impl Into<String>, query: impl Into<String>) -> Self {
        CustomQuery {
            name: name.into(),
            kind: CustomKind::Gauge {
                query: query.into(),
            },
        }
    }

    /// The query for the spec's metric `name`; `None` when the definition lacks the
    /// queries its kind needs (a validated spec never does).
    pub fn from_spec(name: &str, def: &fledge_spec::MetricDef) -> Option<Self> {
        let kind = match def.kind {
            fledge_spec::MetricKind::Gauge => CustomKind::Gauge {
                query: def.query.clone()?,
            },
            fledge_spec::MetricKind::Ratio => CustomKind::Ratio {
                bad: def.bad.clone()?,
                total: def.total.clone()?,
            },
        };
        Some(CustomQuery {
            name: name.to_owned(),
            kind,
        })
    }

    /// The queries for every metric of a spec's `metrics:` section.
    pub fn from_spec_metrics(
        metrics: &std::collections::BTreeMap<String, fledge_spec::MetricDef>,
    ) -> Vec<Self> {
        metrics
            .iter()
            .filter_map(|(name, def)| Self::from_spec(name, def))
            .collect()
    }
}

/// Which version a query is about, `{{arm}}` in templates.
pub use fledge_stats::Arm;

/// The version `arm` runs in `q`.
fn version_of(arm: Arm, q: &ObserveQuery) -> &str {
    match arm {
        Arm::Stable => &q.stable_version,
        Arm::Canary => &q.canary_version,
    }
}

/// Reads per-version counters from a metric system.
#[async_trait]
pub trait MetricSource: Send + Sync + std::fmt::Debug {
    /// The kind of source (`prometheus`, `datadog`, `web`, `newrelic`, `loki`), for
    /// events and errors.
    fn kind(&self) -> &'static str;

    /// Reads the cumulative counters of both arms and the custom metrics.
    ///
    /// A custom metric that cannot be evaluated is left out of
    /// [`Observation::custom`] (absent means "no data" to the judge) and logged; the
    /// core counters failing is an error.
    async fn observe(&self, query: &ObserveQuery) -> Result<Observation, MetricError>;
}

#[async_trait]
impl<T: MetricSource + ?Sized> MetricSource for Arc<T> {
    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    async fn observe(&self, query: &ObserveQuery) -> Result<Observation, MetricError> {
        (**self).observe(query).await
    }
}

/// Why a metric source produced no observation. Every variant names the source and
/// the URL it asked (never a key or a token).
#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    /// The source could not be reached (connection refused, DNS, timeout).
    #[error("{source_kind} at {url} is unreachable: {reason}")]
    Unreachable {
        /// `prometheus`, `datadog`, `web`, `newrelic` or `loki`.
        source_kind: &'static str,
        /// The URL without query string.
        url: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The source answered, but not with what its API promises (an error status, a
    /// body that does not parse, a value that is not a number).
    #[error("{source_kind} at {url} gave a bad response: {reason}")]
    BadResponse {
        /// `prometheus`, `datadog`, `web`, `newrelic` or `loki`.
        source_kind: &'static str,
        /// The URL without query string.
        url: String,
        /// What was wrong, with the status code and the start of the body.
        reason: String,
    },
    /// The query succeeded but matched nothing: never treated as healthy.
    #[error("{source_kind} at {url} has no data for `{query}`")]
    NoData {
        /// `prometheus`, `datadog`, `web`, `newrelic` or `loki`.
        source_kind: &'static str,
        /// The URL without query string.
        url: String,
        /// The query (or JSON path) that matched nothing.
        query: String,
    },
    /// The source's settings are unusable (a template with an unknown placeholder, a
    /// missing API key variable, a malformed JSON path).
    #[error("{source_kind} settings: {reason}")]
    Config {
        /// `prometheus`, `datadog`, `web`, `newrelic` or `loki`.
        source_kind: &'static str,
        /// What is wrong and which setting holds it.
        reason: String,
    },
}

/// The `metrics:` setting of an app in `fledge.yaml`.
///
/// Written as `metrics: builtin`, as `metrics: {type: prometheus, url: ...}`, or as
/// `metrics: {prometheus: {url: ...}}`; see [`MetricsSettings::from_parts`] for a
/// caller that has already split the kind off.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum MetricsSettings {
    /// The built-in proxy's own per-version counters (implemented by the server, which
    /// owns the proxy).
    #[default]
    Builtin,
    /// Prometheus' HTTP query API.
    Prometheus(PrometheusSettings),
    /// Datadog's metrics query API.
    Datadog(DatadogSettings),
    /// Any HTTP endpoint answering JSON, read with JSON paths.
    Web(WebSettings),
    /// New Relic's NerdGraph NRQL queries.
    NewRelic(NewRelicSettings),
    /// Loki's LogQL queries: error log lines out of all log lines.
    Loki(LokiSettings),
}

impl MetricsSettings {
    /// The settings for source `kind` (`builtin`, `prometheus`, `datadog`, `web`,
    /// `newrelic`, `loki`) from its settings map; the error names the kind and the bad or unknown field.
    pub fn from_parts(
        kind: &str,
        settings: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, String> {
        use crate::settings::read;
        match kind {
            "builtin" if settings.is_empty() => Ok(MetricsSettings::Builtin),
            "builtin" => Err("metrics builtin takes no settings".to_owned()),
            "prometheus" => read("metrics", kind, settings).map(MetricsSettings::Prometheus),
            "datadog" => read("metrics", kind, settings).map(MetricsSettings::Datadog),
            "web" => read("metrics", kind, settings).map(MetricsSettings::Web),
            "newrelic" => read("metrics", kind, settings).map(MetricsSettings::NewRelic),
            "loki" => read("metrics", kind, settings).map(MetricsSettings::Loki),
            other => Err(format!(
                "unknown metric source `{other}`: expected builtin, prometheus, datadog, web, newrelic or loki"
            )),
        }
    }

    /// The kind: `builtin`, `prometheus`, `datadog`, `web`, `newrelic` or `loki`.
    pub fn kind(&self) -> &'static str {
        match self {
            MetricsSettings::Builtin => "builtin",
            MetricsSettings::Prometheus(_) => "prometheus",
            MetricsSettings::Datadog(_) => "datadog",
            MetricsSettings::Web(_) => "web",
            MetricsSettings::NewRelic(_) => "newrelic",
            MetricsSettings::Loki(_) => "loki",
        }
    }

    /// Builds the source these settings describe; `Ok(None)` for `builtin`, which the
    /// server provides. Keys, tokens and passwords (Datadog, New Relic, Loki) are read
    /// from the environment variables the settings name.
    pub fn build(&self) -> Result<Option<Arc<dyn MetricSource>>, MetricError> {
        Ok(match self {
            MetricsSettings::Builtin => None,
            MetricsSettings::Prometheus(s) => Some(Arc::new(PrometheusSource::new(s.clone())?)),
            MetricsSettings::Datadog(s) => {
                let keys = DatadogKeys::from_env(s)?;
                Some(Arc::new(DatadogSource::new(s.clone(), keys)?))
            }
            MetricsSettings::Web(s) => Some(Arc::new(WebSource::new(s.clone())?)),
            MetricsSettings::NewRelic(s) => Some(Arc::new(NewRelicSource::from_env(s.clone())?)),
            MetricsSettings::Loki(s) => Some(Arc::new(LokiSource::new(
                s.clone(),
                LokiAuth::from_env(s)?,
            )?)),
        })
    }
}

/// What a custom-metric query's value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A gauge: the current value.
    Gauge,
    /// A ratio's `bad` or `total`: a count of events (Datadog sums its points).
    Count,
}

/// The observation of a source that reads each arm's counters with `arm` (both arms
/// at once) and each custom metric's templates with `eval`, as [`evaluate_custom`]
/// does.
pub(crate) async fn observe_arms<'a, A, AFut, F, Fut>(
    source_kind: &'static str,
    q: &'a ObserveQuery,
    arm: A,
    eval: F,
) -> Result<Observation, MetricError>
where
    A: Fn(Arm) -> AFut,
    AFut: std::future::Future<Output = Result<fledge_stats::ArmCounters, MetricError>>,
    F: Fn(&'a str, Arm, Role) -> Fut,
    Fut: std::future::Future<Output = Result<Option<f64>, MetricError>>,
{
    let (stable, canary) = futures::try_join!(arm(Arm::Stable), arm(Arm::Canary))?;
    let custom = evaluate_custom(source_kind, q, eval).await;
    Ok(Observation {
        stable,
        canary,
        custom,
    })
}

/// Evaluates every custom metric of `q` for both arms with `eval(template, arm, role)`,
/// which returns the template's value for that arm (`None`: no data). A metric that
/// fails or has no canary value is left out (no data to the judge) and logged.
pub(crate) async fn evaluate_custom<'a, F, Fut>(
    source_kind: &'static str,
    q: &'a ObserveQuery,
    eval: F,
) -> std::collections::BTreeMap<String, fledge_stats::CustomValue>
where
    F: Fn(&'a str, Arm, Role) -> Fut,
    Fut: std::future::Future<Output = Result<Option<f64>, MetricError>>,
{
    let eval = &eval;
    let one = |def: &'a CustomQuery, arm: Arm| async move {
        match &def.kind {
            CustomKind::Gauge { query } => eval(query, arm, Role::Gauge).await,
            CustomKind::Ratio { bad, total } => {
                let (bad, total) =
                    futures::try_join!(eval(bad, arm, Role::Count), eval(total, arm, Role::Count))?;
                Ok(match total {
                    Some(t) if t > 0.0 => Some(bad.unwrap_or(0.0) / t),
                    _ => None,
                })
            }
        }
    };
    let results = futures::future::join_all(q.custom.iter().map(|def| async move {
        let (canary, stable) = futures::join!(one(def, Arm::Canary), one(def, Arm::Stable));
        (def, canary, stable)
    }))
    .await;
    let mut out = std::collections::BTreeMap::new();
    for (def, canary, stable) in results {
        match (canary, stable) {
            (Ok(Some(canary)), stable) if canary.is_finite() => {
                let stable = match stable {
                    Ok(v) => v.filter(|v| v.is_finite()),
                    Err(e) => {
                        tracing::warn!(source = source_kind, metric = %def.name, arm = "stable", error = %e, "custom metric failed");
                        None
                    }
                };
                out.insert(
                    def.name.clone(),
                    fledge_stats::CustomValue { canary, stable },
                );
            }
            (Err(e), _) => {
                tracing::warn!(source = source_kind, metric = %def.name, arm = "canary", error = %e, "custom metric failed");
            }
            _ => {
                tracing::debug!(source = source_kind, metric = %def.name, "custom metric has no canary data")
            }
        }
    }
    out
}

impl<'de> Deserialize<'de> for MetricsSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::settings::deserialize(d, "metrics", MetricsSettings::from_parts)
    }
}

impl Serialize for MetricsSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use crate::settings::write;
        match self {
            MetricsSettings::Builtin => s.serialize_str("builtin"),
            MetricsSettings::Prometheus(p) => write("prometheus", p).serialize(s),
            MetricsSettings::Datadog(d) => write("datadog", d).serialize(s),
            MetricsSettings::Web(w) => write("web", w).serialize(s),
            MetricsSettings::NewRelic(n) => write("newrelic", n).serialize(s),
            MetricsSettings::Loki(l) => write("loki", l).serialize(s),
        }
    }
}

/// The time since the Unix epoch, by the wall clock (what the sources' APIs take).
pub(crate) fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Renders a Prometheus-style duration (`300s`) for `{{window}}`, at least one second.
pub(crate) fn window_text(window: Duration) -> String {
    format!("{}s", window.as_secs().max(1))
}

/// Maps a reqwest failure to `Unreachable` or `BadResponse`.
pub(crate) fn transport_error(
    source_kind: &'static str,
    url: &str,
    err: &reqwest::Error,
) -> MetricError {
    if err.is_connect() || err.is_timeout() || err.is_request() {
        MetricError::Unreachable {
            source_kind,
            url: url.to_owned(),
            reason: error_chain(err),
        }
    } else {
        MetricError::BadResponse {
            source_kind,
            url: url.to_owned(),
            reason: error_chain(err),
        }
    }
}

/// An error and its causes on one line (reqwest's top-level message alone is vague).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The first `max` characters of a response body, for error messages.
pub(crate) fn snippet(body: &str, max: usize) -> String {
    let mut s: String = body.chars().take(max).collect();
    if body.chars().count() > max {
        s.push('…');
    }
    s
}

/// A float read from a metric system as a counter: rounded, and an error when it is
/// negative or not finite.
pub(crate) fn as_counter(value: f64) -> Option<u64> {
    (value.is_finite() && value >= -0.5).then(|| value.round().max(0.0) as u64)
}

/// An arm's counters from the totals its `requests` and `errors` queries gave
/// (`None`: an empty result), each with its query for errors. No requests value is
/// [`MetricError::NoData`]; no errors value is zero errors, since most systems have no
/// error series until the first error. Errors are capped at requests: two queries a
/// moment apart can disagree by a few.
pub(crate) fn arm_counters(
    source_kind: &'static str,
    url: &str,
    (requests, requests_q): (Option<f64>, &str),
    (errors, errors_q): (Option<f64>, &str),
    latency: fledge_stats::LatencyHistogram,
) -> Result<fledge_stats::ArmCounters, MetricError> {
    let counter = |what: &str, v: f64, query: &str| {
        as_counter(v).ok_or_else(|| MetricError::BadResponse {
            source_kind,
            url: url.to_owned(),
            reason: format!("{what} is {v} (query `{query}`)"),
        })
    };
    let Some(requests) = requests else {
        return Err(MetricError::NoData {
            source_kind,
            url: url.to_owned(),
            query: requests_q.to_owned(),
        });
    };
    let requests = counter("requests", requests, requests_q)?;
    let errors = counter("errors", errors.unwrap_or(0.0), errors_q)?;
    Ok(fledge_stats::ArmCounters {
        requests,
        errors: errors.min(requests),
        latency,
    })
}

/// The counters of one arm of a source that counts requests and errors with one
/// query each and keeps no latency histogram: `render` fills the `requests` and
/// `errors` templates for the arm, `count` runs a query and returns its total
/// (`None`: no data), both queries at once; [`arm_counters`] judges the totals.
async fn count_arm<F, Fut>(
    source_kind: &'static str,
    url: &str,
    (requests, errors): (&str, &str),
    render: impl Fn(&str) -> Result<String, MetricError>,
    count: F,
) -> Result<fledge_stats::ArmCounters, MetricError>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<f64>, MetricError>>,
{
    let requests_q = render(requests)?;
    let errors_q = render(errors)?;
    let (requests, errors) =
        futures::try_join!(count(requests_q.clone()), count(errors_q.clone()))?;
    arm_counters(
        source_kind,
        url,
        (requests, &requests_q),
        (errors, &errors_q),
        Default::default(),
    )
}

/// The observation of a source that counts each arm's requests and errors with one
/// query each and keeps no latency histogram (see [`count_arm`]): `render(template,
/// arm)` fills a template for an arm, `count` runs a requests or errors query and
/// returns its total (`None`: no data), and `value` runs a custom metric's query as
/// its role reads it.
pub(crate) async fn observe_counting<R, C, CFut, V, VFut>(
    source_kind: &'static str,
    url: &str,
    templates: (&str, &str),
    q: &ObserveQuery,
    render: R,
    count: C,
    value: V,
) -> Result<Observation, MetricError>
where
    R: Fn(&str, Arm) -> Result<String, MetricError>,
    C: Fn(String) -> CFut,
    CFut: std::future::Future<Output = Result<Option<f64>, MetricError>>,
    V: Fn(String, Role) -> VFut,
    VFut: std::future::Future<Output = Result<Option<f64>, MetricError>>,
{
    let (render, count, value) = (&render, &count, &value);
    observe_arms(
        source_kind,
        q,
        |arm| count_arm(source_kind, url, templates, move |t| render(t, arm), count),
        |t, arm, role| async move { value(render(t, arm)?, role).await },
    )
    .await
}

/// GETs `url` with `params` and `headers` and parses the JSON body. A non-2xx status
/// is a `BadResponse` carrying the API's own error message when the body has one
/// (`error`, `errors`), else the start of the body.
pub(crate) async fn get_json(
    client: &reqwest::Client,
    source_kind: &'static str,
    url: &str,
    params: &[(&str, String)],
    headers: &[(String, String)],
) -> Result<serde_json::Value, MetricError> {
    send_json(source_kind, url, client.get(url).query(params), headers).await
}

/// POSTs `body` as JSON to `url` with `headers` and parses the JSON answer, like
/// [`get_json`].
pub(crate) async fn post_json(
    client: &reqwest::Client,
    source_kind: &'static str,
    url: &str,
    body: &serde_json::Value,
    headers: &[(String, String)],
) -> Result<serde_json::Value, MetricError> {
    send_json(source_kind, url, client.post(url).json(body), headers).await
}

/// Sends `req` (to `url`, named in errors) with `headers` and reads its JSON answer.
async fn send_json(
    source_kind: &'static str,
    url: &str,
    mut req: reqwest::RequestBuilder,
    headers: &[(String, String)],
) -> Result<serde_json::Value, MetricError> {
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| transport_error(source_kind, url, &e))?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| transport_error(source_kind, url, &e))?;
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&body);
    if !status.is_success() {
        let message = parsed
            .ok()
            .and_then(|v| {
                v.get("error").or_else(|| v.get("errors")).map(|e| match e {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            })
            .unwrap_or_else(|| snippet(&body, 200));
        return Err(MetricError::BadResponse {
            source_kind,
            url: url.to_owned(),
            reason: format!("HTTP {status}: {message}"),
        });
    }
    parsed.map_err(|e| MetricError::BadResponse {
        source_kind,
        url: url.to_owned(),
        reason: format!("body is not JSON ({e}): {}", snippet(&body, 200)),
    })
}

/// GETs a query API with [`get_json`] and reads its answer with `parse`; an answer
/// `parse` refuses is a `BadResponse` that names the `query`.
pub(crate) async fn query_api<T>(
    client: &reqwest::Client,
    source_kind: &'static str,
    url: &str,
    params: &[(&str, String)],
    headers: &[(String, String)],
    query: &str,
    parse: fn(&serde_json::Value) -> Result<T, String>,
) -> Result<T, MetricError> {
    let body = get_json(client, source_kind, url, params, headers).await?;
    parse(&body).map_err(|reason| MetricError::BadResponse {
        source_kind,
        url: url.to_owned(),
        reason: format!("{reason} (query `{query}`)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_queries_come_from_the_spec() {
        let spec: fledge_spec::MetricDef = serde_json::from_value(serde_json::json!({
            "kind": "ratio", "bad": "sum(bad{version=\"{{version}}\"})", "total": "sum(all)"
        }))
        .unwrap();
        let q = CustomQuery::from_spec("checkout_failures", &spec).unwrap();
        assert_eq!(q.name, "checkout_failures");
        assert!(matches!(q.kind, CustomKind::Ratio { ref total, .. } if total == "sum(all)"));
        let gauge: fledge_spec::MetricDef =
            serde_json::from_value(serde_json::json!({"query": "queue_depth"})).unwrap();
        assert_eq!(
            CustomQuery::from_spec("depth", &gauge),
            Some(CustomQuery::gauge("depth", "queue_depth"))
        );
        let incomplete: fledge_spec::MetricDef =
            serde_json::from_value(serde_json::json!({"kind": "ratio", "bad": "x"})).unwrap();
        assert_eq!(CustomQuery::from_spec("x", &incomplete), None);
    }

    /// Why `value` is not metric-source settings.
    fn settings_error(value: serde_json::Value) -> String {
        serde_json::from_value::<MetricsSettings>(value)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn both_written_forms_read_the_same_and_errors_name_the_field() {
        let typed: MetricsSettings = serde_json::from_value(serde_json::json!(
            {"type": "prometheus", "url": "http://p:9090", "timeout": "2s"}
        ))
        .unwrap();
        let keyed: MetricsSettings = serde_json::from_value(serde_json::json!(
            {"prometheus": {"url": "http://p:9090", "timeout": "2s"}}
        ))
        .unwrap();
        assert_eq!(typed, keyed);
        assert_eq!(typed.kind(), "prometheus");
        let back: MetricsSettings =
            serde_json::from_value(serde_json::to_value(&typed).unwrap()).unwrap();
        assert_eq!(back, typed);
        let err = settings_error(serde_json::json!(
            {"type": "prometheus", "url": "x", "querry": "y"}
        ));
        assert!(
            err.contains("prometheus") && err.contains("querry"),
            "{err}"
        );
        // Durations are the spec's: `1m30s`, never `5 seconds`.
        let err = settings_error(serde_json::json!(
            {"prometheus": {"url": "http://p:9090", "timeout": "5 seconds"}}
        ));
        assert!(err.contains("found `5 seconds`"), "{err}");
        let err = settings_error(serde_json::json!("graphite"));
        assert!(err.contains("unknown metric source `graphite`"), "{err}");
    }

    /// `text` read as the metric-source settings of `fledge.yaml`; the error as shown.
    fn from_fledge_yaml(text: &str) -> Result<MetricsSettings, String> {
        fledge_spec::from_yaml_str(text, "fledge.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn newrelic_and_loki_read_from_fledge_yaml() {
        let nr = from_fledge_yaml(
            "newrelic:\n  accountId: 1234567\n  region: eu\n  apiKeyEnv: NR_KEY\n  timeout: 3s\n",
        )
        .unwrap();
        let MetricsSettings::NewRelic(ref s) = nr else {
            panic!("{nr:?}")
        };
        assert_eq!((s.account_id, s.api_key_env.as_str()), (1234567, "NR_KEY"));
        assert_eq!(s.endpoint(), "https://api.eu.newrelic.com/graphql");
        assert_eq!(s.timeout, Duration::from_secs(3));
        assert!(s.requests.contains("tags.version = '{{version}}'"));
        let loki = from_fledge_yaml(
            "type: loki\nurl: http://loki:3100\ntenant: team-shop\ntokenEnv: LOKI_TOKEN\n",
        )
        .unwrap();
        let MetricsSettings::Loki(ref l) = loki else {
            panic!("{loki:?}")
        };
        assert_eq!(l.tenant.as_deref(), Some("team-shop"));
        assert_eq!(l.token_env.as_deref(), Some("LOKI_TOKEN"));
        for m in [&nr, &loki] {
            let back: MetricsSettings =
                serde_json::from_value(serde_json::to_value(m).unwrap()).unwrap();
            assert_eq!(&back, m);
        }
        // A key is never written in the file: only the variable's name.
        let err = from_fledge_yaml("newrelic: {accountId: 1, apiKey: NRAK-x}").unwrap_err();
        assert!(err.contains("apiKey"), "{err}");
        let err = from_fledge_yaml("newrelic: {}").unwrap_err();
        assert!(err.contains("accountId"), "{err}");
        // The variables are read when the source is built, and named when unset.
        let unset: MetricsSettings = serde_json::from_value(serde_json::json!(
            {"loki": {"url": "http://l", "tokenEnv": "FLEDGE_TEST_SURELY_UNSET_LOKI_TOKEN"}}
        ))
        .unwrap();
        let err = unset.build().unwrap_err().to_string();
        assert!(err.contains("FLEDGE_TEST_SURELY_UNSET_LOKI_TOKEN"), "{err}");
    }

    #[test]
    fn settings_shapes() {
        let b: MetricsSettings = serde_json::from_value(serde_json::json!("builtin")).unwrap();
        assert_eq!(b, MetricsSettings::Builtin);
        let p: MetricsSettings = serde_json::from_value(
            serde_json::json!({"prometheus": {"url": "http://127.0.0.1:9090"}}),
        )
        .unwrap();
        assert!(
            matches!(p, MetricsSettings::Prometheus(ref s) if s.url == "http://127.0.0.1:9090")
        );
        assert!(p.build().unwrap().is_some());
        assert!(b.build().unwrap().is_none());
    }
}
