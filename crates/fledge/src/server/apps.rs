//! The registered apps at run time: each app's config (as last stored), its traffic
//! router and metric source, and its built-in proxy listener.
//!
//! Every change to an app's traffic goes through [`AppRuntime::reconcile`], which
//! holds the app's lock, re-reads the desired state from the store and applies it.
//! Re-reading under the lock is what keeps two racing writers (the controller and an
//! operator's abort) from applying their routes in the wrong order: whoever applies
//! last applies the newest stored state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use fledge_proxy::Route;
use fledge_store::AppRecord;
use tokio::sync::{Mutex, RwLock};

use super::Shared;
use super::backends::{MetricSource, TrafficRouter};
use super::builtin::{BuiltinBackend, BuiltinProxy};
use super::rollouts;
use crate::config::AppConfig;

/// All apps, by name.
#[derive(Debug, Default)]
pub struct Apps {
    inner: RwLock<BTreeMap<String, Arc<AppRuntime>>>,
}

/// One app at run time.
#[derive(Debug)]
pub struct AppRuntime {
    /// The app's name.
    pub name: String,
    inner: Mutex<AppInner>,
}

#[derive(Debug)]
struct AppInner {
    config: AppConfig,
    router: Arc<dyn TrafficRouter>,
    metrics: Arc<dyn MetricSource>,
    proxy: Option<BuiltinProxy>,
    last_route: Option<Route>,
}

/// Reads an app's stored config.
pub fn app_from_record(record: &AppRecord) -> anyhow::Result<AppConfig> {
    serde_json::from_value(record.config.clone()).map_err(|e| {
        anyhow::anyhow!(
            "the stored config of app `{}` cannot be read: {e}",
            record.name
        )
    })
}

/// The router and metric source an app's config asks for: the built-in proxy's, or
/// an external provider's (HAProxy, nginx, Prometheus, Datadog, web).
fn backends(
    config: &AppConfig,
    proxy: Option<&BuiltinProxy>,
) -> anyhow::Result<(Arc<dyn TrafficRouter>, Arc<dyn MetricSource>)> {
    let name = &config.name;
    let builtin = proxy.map(|p| BuiltinBackend::new(p.handle().clone()));
    let router: Arc<dyn TrafficRouter> = match super::external::router(config)? {
        Some(external) => external,
        None => match &builtin {
            Some(b) => Arc::new(b.clone()),
            None => anyhow::bail!("app `{name}`: the built-in router needs `listen`"),
        },
    };
    let metrics: Arc<dyn MetricSource> = match super::external::metrics(config)? {
        Some(external) => external,
        None => match &builtin {
            Some(b) => Arc::new(b.clone()),
            None => anyhow::bail!(
                "app `{name}`: the built-in metric source counts in the built-in proxy; \
                 with router `{}` name a metric source (prometheus, datadog or web)",
                config.router.kind()
            ),
        },
    };
    Ok((router, metrics))
}

// === impl Apps ===

impl Apps {
    /// Starts (or restarts with a new config) an app: its proxy listener begins with
    /// the route the store asks for, so persisted weights hold from the first request.
    pub async fn start_app(&self, shared: &Shared, config: AppConfig) -> anyhow::Result<()> {
        let existing = self.get(&config.name).await;
        if let Some(runtime) = existing {
            return runtime.replace_config(shared, config).await;
        }
        let route = rollouts::desired_route(shared, &config).await?;
        let proxy = match (config.router.is_builtin(), config.listen) {
            (true, Some(listen)) => Some(
                BuiltinProxy::start(&config.name, listen, config.tls.as_ref(), route.clone())
                    .await?,
            ),
            _ => None,
        };
        let (router, metrics) = backends(&config, proxy.as_ref())?;
        // An external data plane that is down must not keep the server from starting:
        // the route stays unapplied and the controller retries it every tick.
        let applied = match router.apply(&route).await {
            Ok(()) => {
                shared
                    .metrics
                    .set_weight(&config.name, route_weight(&route));
                Some(route)
            }
            Err(e) => {
                tracing::warn!(app = %config.name, router = router.kind(),
                    error = %format!("{e:#}"), "cannot apply the route yet; retrying every tick");
                None
            }
        };
        let runtime = Arc::new(AppRuntime {
            name: config.name.clone(),
            inner: Mutex::new(AppInner {
                config,
                router,
                metrics,
                proxy,
                last_route: applied,
            }),
        });
        self.inner
            .write()
            .await
            .insert(runtime.name.clone(), runtime);
        Ok(())
    }

    /// One app.
    pub async fn get(&self, name: &str) -> Option<Arc<AppRuntime>> {
        self.inner.read().await.get(name).cloned()
    }

    /// Every app.
    pub async fn all(&self) -> Vec<Arc<AppRuntime>> {
        self.inner.read().await.values().cloned().collect()
    }

    /// The address of an app's proxy.
    pub async fn proxy_addr(&self, name: &str) -> Option<SocketAddr> {
        let app = self.get(name).await?;
        app.proxy_addr().await
    }

    /// Every app's proxy address.
    pub async fn proxy_addrs(&self) -> BTreeMap<String, SocketAddr> {
        let mut out = BTreeMap::new();
        for app in self.all().await {
            if let Some(addr) = app.proxy_addr().await {
                out.insert(app.name.clone(), addr);
            }
        }
        out
    }

    /// The handles of every built-in proxy (for their metrics).
    pub async fn proxy_handles(&self) -> Vec<fledge_proxy::ProxyHandle> {
        let mut out = Vec::new();
        for app in self.all().await {
            if let Some(p) = &app.inner.lock().await.proxy {
                out.push(p.handle().clone());
            }
        }
        out
    }

    /// Reloads the certificate of every app's TLS proxy listener whose files
    /// changed (every one with `force`), logging each outcome.
    pub async fn reload_certificates(&self, force: bool) {
        for app in self.all().await {
            let inner = app.inner.lock().await;
            let Some(proxy) = &inner.proxy else { continue };
            match proxy.reload_certificate(&app.name, force) {
                Ok(true) => tracing::info!(app = %app.name, "proxy certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(app = %app.name, error = %format!("{e:#}"),
                    "cannot reload the proxy certificate; keeping the current one"),
            }
        }
    }

    /// Stops every proxy listener, draining in-flight requests.
    pub async fn stop_all(&self) {
        let apps: Vec<_> = std::mem::take(&mut *self.inner.write().await)
            .into_values()
            .collect();
        for app in apps {
            let proxy = app.inner.lock().await.proxy.take();
            if let Some(proxy) = proxy {
                proxy.stop().await;
            }
        }
    }
}

/// The canary weight a route gives (0 without a canary).
pub fn route_weight(route: &Route) -> u8 {
    if route.canary.is_some() {
        route.canary_weight
    } else {
        0
    }
}

// === impl AppRuntime ===

impl AppRuntime {
    /// The app's config as last read from the store.
    pub async fn config(&self) -> AppConfig {
        self.inner.lock().await.config.clone()
    }

    /// The app's metric source.
    pub async fn metrics(&self) -> Arc<dyn MetricSource> {
        self.inner.lock().await.metrics.clone()
    }

    /// The address of the app's proxy, if it has one.
    pub async fn proxy_addr(&self) -> Option<SocketAddr> {
        self.inner.lock().await.proxy.as_ref().map(|p| p.addr())
    }

    /// The route last applied.
    pub async fn applied_route(&self) -> Option<Route> {
        self.inner.lock().await.last_route.clone()
    }

    /// Makes the app's traffic match the store: re-reads the app's config and its
    /// active rollout, computes the route and applies it if it changed (or `force`).
    pub async fn reconcile(&self, shared: &Shared, force: bool) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().await;
        if let Some(record) = shared.store.get_app(&self.name).await? {
            let stored = app_from_record(&record)?;
            inner.config = stored;
        }
        let route = rollouts::desired_route(shared, &inner.config).await?;
        if force || inner.last_route.as_ref() != Some(&route) {
            inner.router.apply(&route).await?;
            tracing::info!(
                app = %self.name,
                stable = %route.stable.version,
                canary = route.canary.as_ref().map(|c| c.version.as_str()).unwrap_or("-"),
                weight = route_weight(&route),
                "route applied"
            );
            shared.metrics.set_weight(&self.name, route_weight(&route));
            inner.last_route = Some(route);
        }
        Ok(())
    }

    /// Replaces the app's config (a `PUT /apps/{app}`): moves the proxy listener if
    /// its address changed, then reconciles.
    async fn replace_config(&self, shared: &Shared, config: AppConfig) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().await;
        let route = rollouts::desired_route(shared, &config).await?;
        let moved = inner.config.listen != config.listen
            || inner.config.router.is_builtin() != config.router.is_builtin();
        if !moved && inner.config.tls != config.tls {
            // Same listener, new certificate (or TLS turned on or off): from the
            // next connection on, without closing the port.
            if let Some(proxy) = inner.proxy.as_mut() {
                proxy.set_tls(&config.name, config.tls.as_ref())?;
            }
        }
        if moved {
            let new_proxy = match (config.router.is_builtin(), config.listen) {
                (true, Some(listen)) => Some(
                    BuiltinProxy::start(&config.name, listen, config.tls.as_ref(), route.clone())
                        .await?,
                ),
                _ => None,
            };
            if let Some(old) = std::mem::replace(&mut inner.proxy, new_proxy) {
                old.stop().await;
            }
        }
        let (router, metrics) = backends(&config, inner.proxy.as_ref())?;
        router.apply(&route).await?;
        shared
            .metrics
            .set_weight(&config.name, route_weight(&route));
        inner.router = router;
        inner.metrics = metrics;
        inner.config = config;
        inner.last_route = Some(route);
        Ok(())
    }
}
