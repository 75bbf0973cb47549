//! The external traffic router (HAProxy, nginx) and metric source (Prometheus,
//! Datadog, web) an app's config names, built from `fledge_providers`; the built-in
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
