//! The external traffic router (HAProxy, nginx) and metric source (Prometheus,
//! Datadog, web, New Relic, Loki) an app's config names, built from `fledge_providers`; the built-in
//! proxy stands in for both when the config says `builtin`.

use std::sync::Arc;

use fledge_providers::metrics::{MetricSource, MetricsSettings};
use fledge_providers::router::{Endpoints, RouterSettings, TrafficRouter};

use crate::config::{AppConfig, ProviderConfig};

fn parts(p: &ProviderConfig) -> (String, serde_json::Map<String, serde_json::Value>) {
    match p {
        ProviderConfig::Kind(k) => (k.clone(), serde_json::Map::new()),
        ProviderConfig::Detailed { kind, settings } => (
            kind.clone(),
            settings
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
    }
}

/// The external router an app's config names; `None` for `builtin`.
pub fn router(app: &AppConfig) -> anyhow::Result<Option<Arc<dyn TrafficRouter>>> {
    let (kind, settings) = parts(&app.router);
    let settings = RouterSettings::from_parts(&kind, settings)
        .map_err(|e| anyhow::anyhow!("app `{}`: router: {e}", app.name))?;
    let endpoints = Endpoints {
        stable: app.stable.endpoints.clone(),
        canary: app.canary_endpoints().to_vec(),
    };
    let built = settings
        .build(&endpoints)
        .map_err(|e| anyhow::anyhow!("app `{}`: {e}", app.name))?;
    Ok(built)
}

/// The external metric source an app's config names; `None` for `builtin`.
pub fn metrics(app: &AppConfig) -> anyhow::Result<Option<Arc<dyn MetricSource>>> {
    let (kind, settings) = parts(&app.metrics);
    let settings = MetricsSettings::from_parts(&kind, settings)
        .map_err(|e| anyhow::anyhow!("app `{}`: metrics: {e}", app.name))?;
    let built = settings
        .build()
        .map_err(|e| anyhow::anyhow!("app `{}`: {e}", app.name))?;
    Ok(built)
}

#[cfg(test)]
mod tests {
    use crate::config::ServerConfig;

    /// An app of `fledge.yaml` whose metrics come from `metrics`.
    fn app_with(metrics: &str) -> crate::config::AppConfig {
        let text = format!(
            "apps:\n  - name: shop\n    listen: 127.0.0.1:8000\n    stable:\n      version: v1\n      \
             endpoints: [\"127.0.0.1:9001\"]\n    metrics: {metrics}\n"
        );
        let mut c = ServerConfig::parse(&text, "fledge.yaml").unwrap();
        c.apps.remove(0)
    }

    #[test]
    fn newrelic_and_loki_are_metric_sources_of_an_app() {
        let loki = app_with("{type: loki, url: http://127.0.0.1:3100, tenant: team-shop}");
        let source = super::metrics(&loki).unwrap().expect("an external source");
        assert_eq!(source.kind(), "loki");
        // Keys are read from the environment when the source is built, and the error
        // names the app and the variable.
        let nr = app_with(
            "{type: newrelic, accountId: 1234567, apiKeyEnv: FLEDGE_TEST_SURELY_UNSET_NR_KEY}",
        );
        let err = super::metrics(&nr).unwrap_err().to_string();
        assert!(
            err.contains("app `shop`") && err.contains("FLEDGE_TEST_SURELY_UNSET_NR_KEY"),
            "{err}"
        );
        let typo = app_with("{type: newrelic, accountId: 1, regoin: eu}");
        let err = super::metrics(&typo).unwrap_err().to_string();
        assert!(err.contains("regoin"), "{err}");
    }
}
