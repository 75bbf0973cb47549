//! What every reconcile shares: the API client, the injected clock and the factory of
//! metric sources.

use std::sync::Arc;

use fledge_engine::Timestamp;
use std::time::Duration;

use fledge_providers::metrics::{
    DatadogKeys, DatadogSettings, DatadogSource, LokiAuth, LokiSettings, LokiSource, MetricError,
    MetricSource, NewRelicSettings, NewRelicSource, PrometheusSettings, PrometheusSource, Secret,
    WebSettings, WebSource,
};
use k8s_openapi::api::core::v1::Secret as SecretObject;
use kube::api::Api;

use crate::crd::{
    DatadogSpec, LokiSpec, MetricsSpec, NewRelicSpec, PrometheusSpec, SecretKeyRef, WebSpec,
};
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
        Timestamp::now()
    }
}

/// Makes the metric source a CanaryRollout names (tests hand in a fake).
#[async_trait::async_trait]
pub trait MetricsFactory: Send + Sync + std::fmt::Debug {
    /// The source for `spec` of a CanaryRollout in `namespace`, whose Secrets
    /// `client` reads. [`Error::InvalidSpec`] when the spec is wrong; any other error
    /// is a failed read (the Secret may appear), which the engine counts against
    /// `analysis.maxConsecutiveErrors`.
    async fn source(
        &self,
        client: &kube::Client,
        namespace: &str,
        spec: &MetricsSpec,
    ) -> Result<Arc<dyn MetricSource>, Error>;
}

/// Builds the real sources: Prometheus, Datadog, web, New Relic and Loki.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceFactory;

#[async_trait::async_trait]
impl MetricsFactory for SourceFactory {
    async fn source(
        &self,
        client: &kube::Client,
        namespace: &str,
        spec: &MetricsSpec,
    ) -> Result<Arc<dyn MetricSource>, Error> {
        let secrets = Secrets { client, namespace };
        match (
            &spec.prometheus,
            &spec.datadog,
            &spec.web,
            &spec.new_relic,
            &spec.loki,
        ) {
            (Some(p), None, None, None, None) => prometheus(p),
            (None, Some(d), None, None, None) => datadog(d, secrets).await,
            (None, None, Some(w), None, None) => web(w, secrets).await,
            (None, None, None, Some(n), None) => new_relic(n, secrets).await,
            (None, None, None, None, Some(l)) => loki(l, secrets).await,
            _ => Err(Error::InvalidSpec(
                "spec.metrics: exactly one of prometheus, datadog, web, newRelic and loki expected"
                    .into(),
            )),
        }
    }
}

/// Where a source's Secrets are read: the CanaryRollout's namespace.
#[derive(Clone, Copy)]
struct Secrets<'a> {
    client: &'a kube::Client,
    namespace: &'a str,
}

impl Secrets<'_> {
    /// The value of key `r` of a Secret, trimmed; the error names the `field` (under
    /// `spec.metrics.`), the Secret and the key, never the value.
    async fn read(self, r: &SecretKeyRef, field: &str) -> Result<Secret, Error> {
        let what = format!("spec.metrics.{field}: Secret {}/{}", self.namespace, r.name);
        let api: Api<SecretObject> = Api::namespaced(self.client.clone(), self.namespace);
        let secret = match api.get_opt(&r.name).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Error::Missing { what }),
            Err(e) => return Err(Error::kube(format!("read {what}"), e)),
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_owned())
            .unwrap_or_default();
        if value.is_empty() {
            return Err(Error::Missing {
                what: format!("{what} key {} (or it is empty)", r.key),
            });
        }
        Ok(Secret::new(value))
    }
}

/// The spec's error for source `field`.
fn invalid(field: &str, e: &dyn std::fmt::Display) -> Error {
    Error::InvalidSpec(format!("spec.metrics.{field}: {e}"))
}

/// The Prometheus source `p` describes.
fn prometheus(p: &PrometheusSpec) -> Result<Arc<dyn MetricSource>, Error> {
    let mut settings = PrometheusSettings::new(p.address.clone());
    override_queries([
        (&mut settings.requests, &p.requests),
        (&mut settings.errors, &p.errors),
        (&mut settings.latency_buckets, &p.latency_buckets),
        (&mut settings.latency_sum, &p.latency_sum),
    ]);
    built("prometheus", PrometheusSource::new(settings))
}

/// The Datadog source `d` describes, with its keys from Secrets.
async fn datadog(d: &DatadogSpec, secrets: Secrets<'_>) -> Result<Arc<dyn MetricSource>, Error> {
    let mut settings = DatadogSettings::default();
    if let Some(site) = &d.site {
        settings.site.clone_from(site);
    }
    settings.base_url.clone_from(&d.base_url);
    settings.timeout = d.timeout.unwrap_or(settings.timeout);
    override_queries([
        (&mut settings.requests, &d.requests),
        (&mut settings.errors, &d.errors),
    ]);
    let keys = DatadogKeys {
        api_key: secrets
            .read(&d.api_key_secret_ref, "datadog.apiKeySecretRef")
            .await?
            .expose()
            .to_owned(),
        app_key: secrets
            .read(&d.app_key_secret_ref, "datadog.appKeySecretRef")
            .await?
            .expose()
            .to_owned(),
    };
    built("datadog", DatadogSource::new(settings, keys))
}

/// The New Relic source `n` describes, with its user key from a Secret.
async fn new_relic(n: &NewRelicSpec, secrets: Secrets<'_>) -> Result<Arc<dyn MetricSource>, Error> {
    let mut settings = NewRelicSettings::new(n.account_id);
    if let Some(region) = &n.region {
        settings.region = serde_json::from_value(serde_json::json!(region))
            .map_err(|_| invalid("newRelic.region", &format!("`{region}`: expected us or eu")))?;
    }
    settings.base_url.clone_from(&n.base_url);
    settings.timeout = n.timeout.unwrap_or(settings.timeout);
    override_queries([
        (&mut settings.requests, &n.requests),
        (&mut settings.errors, &n.errors),
    ]);
    let key = secrets
        .read(&n.api_key_secret_ref, "newRelic.apiKeySecretRef")
        .await?;
    built("newRelic", NewRelicSource::new(settings, key))
}

/// The Loki source `l` describes, with its password or token from a Secret.
async fn loki(l: &LokiSpec, secrets: Secrets<'_>) -> Result<Arc<dyn MetricSource>, Error> {
    let mut settings = LokiSettings::new(l.address.clone());
    settings.tenant.clone_from(&l.tenant);
    settings.timeout = l.timeout.unwrap_or(settings.timeout);
    override_queries([
        (&mut settings.requests, &l.requests),
        (&mut settings.errors, &l.errors),
    ]);
    let auth = match (&l.basic_auth, &l.bearer_token_secret_ref) {
        (None, None) => LokiAuth::None,
        (Some(b), None) => LokiAuth::Basic {
            username: b.username.clone(),
            password: secrets
                .read(&b.password_secret_ref, "loki.basicAuth.passwordSecretRef")
                .await?,
        },
        (None, Some(r)) => LokiAuth::Bearer(secrets.read(r, "loki.bearerTokenSecretRef").await?),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "loki",
                &"basicAuth or bearerTokenSecretRef, not both",
            ));
        }
    };
    built("loki", LokiSource::new(settings, auth))
}

/// The web source `w` describes, with its secret headers from Secrets.
async fn web(w: &WebSpec, secrets: Secrets<'_>) -> Result<Arc<dyn MetricSource>, Error> {
    let mut headers = w.headers.clone();
    for (name, r) in &w.header_secret_refs {
        let field = format!("web.headerSecretRefs.{name}");
        let value = secrets.read(r, &field).await?;
        headers.insert(name.clone(), value.expose().to_owned());
    }
    let settings = WebSettings {
        url: w.url.clone(),
        headers,
        timeout: w.timeout.unwrap_or(Duration::from_secs(5)),
        requests: w.requests.clone(),
        errors: w.errors.clone(),
        latency_buckets: w.latency_buckets.clone(),
        latency_sum: w.latency_sum.clone(),
    };
    built("web", WebSource::new(settings))
}

/// The source `field` describes, once built; a source that refuses its settings is
/// the spec's error.
fn built(
    field: &str,
    source: Result<impl MetricSource + 'static, MetricError>,
) -> Result<Arc<dyn MetricSource>, Error> {
    match source {
        Ok(source) => Ok(Arc::new(source)),
        Err(e) => Err(invalid(field, &e)),
    }
}

/// Replaces each default query whose override the spec sets.
fn override_queries<const N: usize>(queries: [(&mut String, &Option<String>); N]) {
    for (setting, q) in queries {
        if let Some(q) = q {
            setting.clone_from(q);
        }
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
    /// Hooks and notifications.
    pub effects: Arc<super::Effects>,
    /// The operator's metrics.
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("clock", &self.clock)
            .field("metrics", &self.metrics)
            .field("identity", &self.identity)
            .field("effects", &self.effects)
            .finish_non_exhaustive()
    }
}
