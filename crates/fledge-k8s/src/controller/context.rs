//! What every reconcile shares: the API client, the injected clock and the factory of
//! metric sources.

use std::sync::Arc;

use fledge_engine::Timestamp;
use std::time::Duration;

use fledge_providers::metrics::{
    DatadogKeys, DatadogSettings, DatadogSource, LokiAuth, LokiSettings, LokiSource, MetricSource,
    NewRelicSettings, NewRelicSource, PrometheusSettings, PrometheusSource, Secret, WebSettings,
    WebSource,
};
use k8s_openapi::api::core::v1::Secret as SecretObject;
use kube::api::Api;

use crate::crd::{MetricsSpec, SecretKeyRef};
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
        let invalid = |field: &str, e: &dyn std::fmt::Display| {
            Error::InvalidSpec(format!("spec.metrics.{field}: {e}"))
        };
        let chosen = [
            spec.prometheus.is_some(),
            spec.datadog.is_some(),
            spec.web.is_some(),
            spec.new_relic.is_some(),
            spec.loki.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return Err(Error::InvalidSpec(
                "spec.metrics: exactly one of prometheus, datadog, web, newRelic and loki expected"
                    .into(),
            ));
        }
        if let Some(p) = &spec.prometheus {
            let mut settings = PrometheusSettings::new(p.address.clone());
            override_queries([
                (&mut settings.requests, &p.requests),
                (&mut settings.errors, &p.errors),
                (&mut settings.latency_buckets, &p.latency_buckets),
                (&mut settings.latency_sum, &p.latency_sum),
            ]);
            let source = PrometheusSource::new(settings).map_err(|e| invalid("prometheus", &e))?;
            return Ok(Arc::new(source));
        }
        if let Some(d) = &spec.datadog {
            let mut settings = DatadogSettings::default();
            if let Some(site) = &d.site {
                settings.site.clone_from(site);
            }
            settings.base_url.clone_from(&d.base_url);
            if let Some(t) = d.timeout {
                settings.timeout = t;
            }
            override_queries([
                (&mut settings.requests, &d.requests),
                (&mut settings.errors, &d.errors),
            ]);
            let keys = DatadogKeys {
                api_key: secret_value(
                    client,
                    namespace,
                    &d.api_key_secret_ref,
                    "datadog.apiKeySecretRef",
                )
                .await?
                .expose()
                .to_owned(),
                app_key: secret_value(
                    client,
                    namespace,
                    &d.app_key_secret_ref,
                    "datadog.appKeySecretRef",
                )
                .await?
                .expose()
                .to_owned(),
            };
            let source = DatadogSource::new(settings, keys).map_err(|e| invalid("datadog", &e))?;
            return Ok(Arc::new(source));
        }
        if let Some(n) = &spec.new_relic {
            let mut settings = NewRelicSettings::new(n.account_id);
            if let Some(region) = &n.region {
                settings.region =
                    serde_json::from_value(serde_json::json!(region)).map_err(|_| {
                        invalid("newRelic.region", &format!("`{region}`: expected us or eu"))
                    })?;
            }
            settings.base_url.clone_from(&n.base_url);
            if let Some(t) = n.timeout {
                settings.timeout = t;
            }
            override_queries([
                (&mut settings.requests, &n.requests),
                (&mut settings.errors, &n.errors),
            ]);
            let key = secret_value(
                client,
                namespace,
                &n.api_key_secret_ref,
                "newRelic.apiKeySecretRef",
            )
            .await?;
            let source = NewRelicSource::new(settings, key).map_err(|e| invalid("newRelic", &e))?;
            return Ok(Arc::new(source));
        }
        if let Some(l) = &spec.loki {
            let mut settings = LokiSettings::new(l.address.clone());
            settings.tenant.clone_from(&l.tenant);
            if let Some(t) = l.timeout {
                settings.timeout = t;
            }
            override_queries([
                (&mut settings.requests, &l.requests),
                (&mut settings.errors, &l.errors),
            ]);
            let auth = match (&l.basic_auth, &l.bearer_token_secret_ref) {
                (None, None) => LokiAuth::None,
                (Some(b), None) => LokiAuth::Basic {
                    username: b.username.clone(),
                    password: secret_value(
                        client,
                        namespace,
                        &b.password_secret_ref,
                        "loki.basicAuth.passwordSecretRef",
                    )
                    .await?,
                },
                (None, Some(r)) => LokiAuth::Bearer(
                    secret_value(client, namespace, r, "loki.bearerTokenSecretRef").await?,
                ),
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "loki",
                        &"basicAuth or bearerTokenSecretRef, not both",
                    ));
                }
            };
            let source = LokiSource::new(settings, auth).map_err(|e| invalid("loki", &e))?;
            return Ok(Arc::new(source));
        }
        let Some(w) = &spec.web else {
            unreachable!("exactly one source is set")
        };
        let mut headers = w.headers.clone();
        for (name, r) in &w.header_secret_refs {
            let field = format!("web.headerSecretRefs.{name}");
            let value = secret_value(client, namespace, r, &field).await?;
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
        let source = WebSource::new(settings).map_err(|e| invalid("web", &e))?;
        Ok(Arc::new(source))
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

/// The value of a Secret's key in `namespace`, trimmed; the error names the field,
/// the Secret and the key, never the value.
async fn secret_value(
    client: &kube::Client,
    namespace: &str,
    r: &SecretKeyRef,
    field: &str,
) -> Result<Secret, Error> {
    let what = format!("spec.metrics.{field}: Secret {namespace}/{}", r.name);
    let api: Api<SecretObject> = Api::namespaced(client.clone(), namespace);
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
