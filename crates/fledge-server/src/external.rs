//! External traffic routers (HAProxy, nginx) and metric sources (Prometheus,
//! Datadog, web) from `fledge_providers`, adapted to the controller's two traits.

use std::sync::Arc;
use std::time::Duration;

use fledge_providers::metrics::{MetricSource as ProviderSource, MetricsSettings};
use fledge_providers::router::{Endpoints, RouterSettings, TrafficRouter as ProviderRouter};
use fledge_proxy::Route;
use fledge_stats::Observation;
use futures::future::BoxFuture;

use super::backends::{MetricSource, ObserveQuery, TrafficRouter};
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
    Ok(built.map(|inner| Arc::new(ExternalRouter { inner }) as Arc<dyn TrafficRouter>))
}

/// The external metric source an app's config names; `None` for `builtin`.
pub fn metrics(app: &AppConfig) -> anyhow::Result<Option<Arc<dyn MetricSource>>> {
    let (kind, settings) = parts(&app.metrics);
    let settings = MetricsSettings::from_parts(&kind, settings)
        .map_err(|e| anyhow::anyhow!("app `{}`: metrics: {e}", app.name))?;
    let built = settings
        .build()
        .map_err(|e| anyhow::anyhow!("app `{}`: {e}", app.name))?;
    Ok(built.map(|inner| Arc::new(ExternalMetrics { inner }) as Arc<dyn MetricSource>))
}

/// A `fledge_providers` router behind the controller's trait.
#[derive(Debug)]
struct ExternalRouter {
    inner: Arc<dyn ProviderRouter>,
}

impl TrafficRouter for ExternalRouter {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn apply<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let (canary, weight) = match &route.canary {
                Some(c) => (c.endpoints.clone(), route.canary_weight),
                None => (Vec::new(), 0),
            };
            let endpoints = Endpoints {
                stable: route.stable.endpoints.clone(),
                canary,
            };
            self.inner
                .apply(&endpoints, weight)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
    }

    fn verify<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let wanted = super::apps::route_weight(route);
            let serving = self
                .inner
                .current()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(
                serving.canary == wanted,
                "the {} router serves the canary {}% of requests instead of {wanted}%",
                self.inner.kind(),
                serving.canary
            );
            Ok(())
        })
    }
}

/// A `fledge_providers` metric source behind the controller's trait.
#[derive(Debug)]
struct ExternalMetrics {
    inner: Arc<dyn ProviderSource>,
}

impl MetricSource for ExternalMetrics {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn observe<'a>(
        &'a self,
        query: &'a ObserveQuery,
    ) -> BoxFuture<'a, anyhow::Result<Observation>> {
        Box::pin(async move {
            let q = fledge_providers::metrics::ObserveQuery {
                app: query.app.clone(),
                stable_version: query.stable_version.clone(),
                canary_version: query.canary_version.clone(),
                window: query.window.max(Duration::from_secs(1)),
                custom: query.custom.clone(),
            };
            self.inner
                .observe(&q)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
        })
    }
}
