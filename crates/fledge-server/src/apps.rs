//! The registered apps at run time: each app's config (as last stored), its traffic
//! router and metric source, and its built-in proxy listener.
//!
//! Every change to an app's traffic goes through [`AppRuntime::reconcile`], which
//! holds the app's lock, re-reads the desired state from the store and applies it.
//! Re-reading under the lock is what keeps two racing writers (the controller and an
//! operator's abort) from applying their routes in the wrong order: whoever applies
//! last applies the newest stored state.
//!
//! The controller's periodic pass reads every app at once instead
//! ([`AppRuntime::reconcile_from`]: two queries a tick, not two an app). Its read is
//! numbered from [`Apps::generation`]; an app that a write re-read after the pass
//! began keeps that fresher route, and the next pass catches up.
//!
//! Each app also keeps [`RouteSync`]: whether its router has applied the route the
//! store asks for, or why not. The API shows it, `/metrics` exports it, and the
//! controller does not judge a rollout whose route is not applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fledge_providers::metrics::MetricSource;
use fledge_providers::router::{Desired, TrafficRouter};
use fledge_store::{AppRecord, RolloutRecord};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use super::Shared;
use super::builtin::{BuiltinProxy, ProxySettings};
use super::dataplane::{BuiltinBackend, Plane, Proxy, ProxyGrip, Remote, RemoteProxy};
use super::routes;
use crate::config::AppConfig;

/// All apps, by name.
#[derive(Debug)]
pub struct Apps {
    inner: RwLock<BTreeMap<String, Arc<AppRuntime>>>,
    /// Numbers the reads of the store that routes are computed from.
    generation: AtomicU64,
    /// How many proxy worker threads to start.
    worker_count: usize,
    /// The data-plane process's socket, when the proxies run in one.
    data_plane: Option<std::path::PathBuf>,
    /// Where every proxy listener is served from, started with the first.
    plane: tokio::sync::OnceCell<Plane>,
}

/// One app at run time.
#[derive(Debug)]
pub struct AppRuntime {
    /// The app's name.
    pub name: String,
    inner: Mutex<AppInner>,
    /// Kept outside `inner` so that reading it never waits behind a slow apply.
    sync: std::sync::Mutex<RouteSync>,
}

/// Whether an app's router serves the route the store asks for.
pub use fledge_api::app::RouterSync as RouteSync;

/// What a router's sync state becomes as applies succeed and fail.
trait SyncBook {
    fn new(router: &str, desired: u8) -> Self;
    fn applied(&mut self, weight: u8);
    fn failed(&mut self, desired: u8, error: &anyhow::Error, now: fledge_store::Timestamp);
}

impl SyncBook for RouteSync {
    fn new(router: &str, desired: u8) -> Self {
        Self {
            router: router.to_owned(),
            in_sync: false,
            desired_weight: desired,
            applied_weight: None,
            consecutive_failures: 0,
            last_error: None,
            out_of_sync_since: None,
        }
    }

    fn applied(&mut self, weight: u8) {
        self.in_sync = true;
        self.desired_weight = weight;
        self.applied_weight = Some(weight);
        self.consecutive_failures = 0;
        self.last_error = None;
        self.out_of_sync_since = None;
    }

    fn failed(&mut self, desired: u8, error: &anyhow::Error, now: fledge_store::Timestamp) {
        self.in_sync = false;
        self.desired_weight = desired;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(format!("{error:#}"));
        self.out_of_sync_since
            .get_or_insert_with(|| now.to_string());
    }
}

#[derive(Debug)]
struct AppInner {
    config: AppConfig,
    router: Arc<dyn TrafficRouter>,
    metrics: Arc<dyn MetricSource>,
    proxy: Option<Proxy>,
    last_route: Option<Desired>,
    /// The [`Apps::generation`] of the last read of the store this app applied.
    read_at: u64,
    /// When the router was last seen serving `last_route`.
    verified_at: Instant,
}

/// How often a route that looks applied is checked against the router, so that a
/// router that died or restarted from an older config is noticed without waiting
/// for the next weight change.
const VERIFY_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The app's built-in proxy, when it is also the app's metric source.
fn live_proxy(inner: &AppInner) -> Option<ProxyGrip> {
    if inner.metrics.kind() != crate::config::BUILTIN {
        return None;
    }
    Some(inner.proxy.as_ref()?.grip())
}

/// The app's built-in proxy on `listen`, started on `route`; `None` when the app
/// uses an external router or has no listener.
async fn start_proxy(
    shared: &Shared,
    config: &AppConfig,
    listen: Option<SocketAddr>,
    route: &Desired,
) -> anyhow::Result<Option<Proxy>> {
    let (true, Some(listen)) = (config.router.is_builtin(), listen) else {
        return Ok(None);
    };
    let settings = ProxySettings::of(config);
    let route = super::builtin::proxy_route(route);
    Ok(Some(match shared.apps.plane().await? {
        Plane::Here(workers) => Proxy::Here(
            BuiltinProxy::start(workers, &config.name, listen, &settings, &route).await?,
        ),
        Plane::There(remote) => {
            let addr = remote
                .start(super::dataplane::wire::Start {
                    app: config.name.clone(),
                    listen,
                    settings,
                    route,
                })
                .await
                .map_err(|e| anyhow::anyhow!("app `{}`: {e:#}", config.name))?;
            Proxy::There {
                addr,
                grip: RemoteProxy {
                    app: config.name.clone(),
                    plane: remote.clone(),
                },
            }
        }
    }))
}

pub use crate::config::app_from_record;

/// The external router and metric source an app's config names (`None` for
/// `builtin`), built before any listener is started or stopped: a config whose
/// providers refuse their settings changes nothing.
struct External {
    router: Option<Arc<dyn TrafficRouter>>,
    metrics: Option<Arc<dyn MetricSource>>,
}

impl External {
    fn of(config: &AppConfig) -> anyhow::Result<Self> {
        let router = super::external::router(config)?;
        let metrics = super::external::metrics(config)?;
        // Only the built-in router has a proxy to count in.
        if router.is_some() && metrics.is_none() {
            anyhow::bail!(
                "app `{}`: the built-in metric source counts in the built-in proxy; \
                 with router `{}` name a metric source (prometheus, datadog, web, newrelic or loki)",
                config.name,
                config.router.kind()
            );
        }
        Ok(Self { router, metrics })
    }

    /// The router and metric source: these, or the built-in proxy's.
    fn with(
        self,
        config: &AppConfig,
        proxy: Option<&Proxy>,
    ) -> anyhow::Result<(Arc<dyn TrafficRouter>, Arc<dyn MetricSource>)> {
        let builtin = proxy.map(|p| BuiltinBackend::new(p.grip()));
        let builtin = |what: &str| -> anyhow::Result<BuiltinBackend> {
            builtin.clone().ok_or_else(|| {
                anyhow::anyhow!("app `{}`: the built-in {what} needs `listen`", config.name)
            })
        };
        let router: Arc<dyn TrafficRouter> = match self.router {
            Some(external) => external,
            None => Arc::new(builtin("router")?),
        };
        let metrics: Arc<dyn MetricSource> = match self.metrics {
            Some(external) => external,
            None => Arc::new(builtin("metric source")?),
        };
        Ok((router, metrics))
    }
}

// === impl Apps ===

impl Apps {
    /// No apps yet; their proxies will be served by `worker_count` threads, in
    /// this process or in the data-plane process on the `data_plane` socket.
    pub fn new(worker_count: usize, data_plane: Option<std::path::PathBuf>) -> Self {
        Self {
            inner: RwLock::default(),
            generation: AtomicU64::new(0),
            worker_count,
            data_plane,
            plane: tokio::sync::OnceCell::new(),
        }
    }

    /// Where the proxies run: worker threads started (or a data-plane process
    /// reached) on first use.
    async fn plane(&self) -> anyhow::Result<&Plane> {
        self.plane
            .get_or_try_init(|| async {
                if let Some(socket) = &self.data_plane {
                    let remote = Remote::connect(socket.clone(), self.worker_count).await?;
                    return Ok(Plane::There(Arc::new(remote)));
                }
                let started = fledge_proxy::Workers::start(self.worker_count)
                    .map_err(|e| anyhow::anyhow!("cannot start the proxy's worker threads: {e}"))?;
                tracing::info!(workers = started.len(), "proxy worker threads started");
                Ok(Plane::Here(started))
            })
            .await
    }

    /// The data-plane process, when the proxies run in one and it was reached.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        match self.plane.get()? {
            Plane::There(remote) => Some(remote),
            Plane::Here(_) => None,
        }
    }

    /// Numbers a read of the store that is about to happen; later reads get larger
    /// numbers.
    pub fn generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Starts (or restarts with a new config) an app: its proxy listener begins with
    /// the route the store asks for, so persisted weights hold from the first request.
    pub async fn start_app(&self, shared: &Shared, config: AppConfig) -> anyhow::Result<()> {
        let existing = self.get(&config.name).await;
        if let Some(runtime) = existing {
            return runtime.replace_config(shared, config).await;
        }
        let route = routes::desired_route(shared, &config).await?;
        let external = External::of(&config)?;
        let proxy = start_proxy(shared, &config, config.listen, &route).await?;
        let (router, metrics) = external.with(&config, proxy.as_ref())?;
        self.insert(shared, config, route, proxy, router, metrics)
            .await;
        Ok(())
    }

    /// Starts an app on the given router and metric source, without a proxy
    /// listener: the controller drives them like any other backends.
    #[cfg(any(test, feature = "testing"))]
    pub async fn start_app_with(
        &self,
        shared: &Shared,
        config: AppConfig,
        router: Arc<dyn TrafficRouter>,
        metrics: Arc<dyn MetricSource>,
    ) -> anyhow::Result<()> {
        let route = routes::desired_route(shared, &config).await?;
        self.insert(shared, config, route, None, router, metrics)
            .await;
        Ok(())
    }

    /// Applies the app's first route and adds it.
    async fn insert(
        &self,
        shared: &Shared,
        config: AppConfig,
        route: Desired,
        proxy: Option<Proxy>,
        router: Arc<dyn TrafficRouter>,
        metrics: Arc<dyn MetricSource>,
    ) {
        // An external data plane that is down must not keep the server from starting:
        // the route stays unapplied and the controller retries it every tick.
        let mut sync = RouteSync::new(router.kind(), route_weight(&route));
        let applied = match serve(router.as_ref(), &route).await {
            Ok(()) => {
                shared
                    .metrics
                    .set_weight(&config.name, route_weight(&route));
                sync.applied(route_weight(&route));
                Some(route)
            }
            Err(e) => {
                tracing::warn!(app = %config.name, router = router.kind(),
                    error = %format!("{e:#}"), "cannot apply the route yet; retrying every tick");
                sync.failed(route_weight(&route), &e, shared.timestamp());
                None
            }
        };
        shared
            .metrics
            .set_router_sync(&config.name, sync.in_sync, false);
        let runtime = Arc::new(AppRuntime {
            name: config.name.clone(),
            inner: Mutex::new(AppInner {
                config,
                router,
                metrics,
                proxy,
                last_route: applied,
                read_at: 0,
                verified_at: Instant::now(),
            }),
            sync: std::sync::Mutex::new(sync),
        });
        self.inner
            .write()
            .await
            .insert(runtime.name.clone(), runtime);
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

    /// Writes every built-in proxy's metric families to `page`.
    pub async fn write_proxy_metrics(&self, page: &mut fledge_stats::exposition::Page) {
        if let Some(remote) = self.remote() {
            let openmetrics = page.format() == fledge_stats::exposition::Format::OpenMetrics;
            match remote.metrics(openmetrics).await {
                Ok(text) => page.push_families(&text),
                Err(e) => tracing::warn!(error = %format!("{e:#}"),
                    "cannot read the data plane's metrics"),
            }
            return;
        }
        fledge_proxy::write_metrics(&self.proxy_handles().await, page);
    }

    /// The handles of every built-in proxy running in this process.
    pub async fn proxy_handles(&self) -> Vec<fledge_proxy::ProxyHandle> {
        let mut out = Vec::new();
        for app in self.all().await {
            if let Some(Proxy::Here(p)) = &app.inner.lock().await.proxy {
                out.push(p.handle().clone());
            }
        }
        out
    }

    /// Stops an app's proxy and forgets the app: one whose registration the store
    /// refused, so that nothing serves an app the store does not know.
    pub async fn remove(&self, name: &str) {
        let Some(app) = self.inner.write().await.remove(name) else {
            return;
        };
        if let Some(proxy) = app.inner.lock().await.proxy.take() {
            proxy.stop().await;
        }
    }

    /// Tells the data-plane process (if any) to stop the proxies this process did
    /// not start: apps removed, or moved to another router, while it was not
    /// running.
    pub async fn retain_registered(&self) {
        let Some(remote) = self.remote() else { return };
        let mut names = Vec::new();
        for app in self.all().await {
            if app.inner.lock().await.proxy.is_some() {
                names.push(app.name.clone());
            }
        }
        if let Err(e) = remote.retain(names).await {
            tracing::warn!(error = %format!("{e:#}"), "cannot tell the data plane which apps remain");
        }
    }

    /// Reloads the certificate of every app's TLS proxy listener whose files
    /// changed (every one with `force`), logging each outcome.
    pub async fn reload_certificates(&self, force: bool) {
        if let Some(remote) = self.remote() {
            if let Err(e) = remote.reload_certificates(force).await {
                tracing::warn!(error = %format!("{e:#}"), "cannot reload the data plane's certificates");
            }
            return;
        }
        for app in self.all().await {
            let inner = app.inner.lock().await;
            let Some(Proxy::Here(proxy)) = &inner.proxy else {
                continue;
            };
            match proxy.reload_certificate(&app.name, force) {
                Ok(true) => tracing::info!(app = %app.name, "proxy certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(app = %app.name, error = %format!("{e:#}"),
                    "cannot reload the proxy certificate; keeping the current one"),
            }
        }
    }

    /// Stops every proxy listener here, draining in-flight requests; a data-plane
    /// process keeps serving the last applied routes.
    pub async fn stop_all(&self) {
        let apps: Vec<_> = std::mem::take(&mut *self.inner.write().await)
            .into_values()
            .collect();
        for app in apps {
            let proxy = app.inner.lock().await.proxy.take();
            if let Some(Proxy::Here(proxy)) = proxy {
                proxy.stop().await;
            }
        }
        if let Some(remote) = self.remote() {
            tracing::info!(socket = %remote.socket().display(),
                "the data-plane process keeps serving the last applied routes");
        }
    }
}

/// The canary weight a route gives (0 without a canary).
pub fn route_weight(route: &Desired) -> u8 {
    route.weight()
}

/// Makes `router` serve `route`. The router's typed error travels inside the
/// `anyhow::Error` (callers may downcast it to `RouterError`).
async fn serve(router: &dyn TrafficRouter, route: &Desired) -> anyhow::Result<()> {
    router.serve(route).await?;
    Ok(())
}

/// Checks that `router` still serves `route`'s weight: an external data plane may
/// have died, or restarted from an older config, since the last apply.
async fn verify(router: &dyn TrafficRouter, route: &Desired) -> anyhow::Result<()> {
    let serving = router.current().await?;
    anyhow::ensure!(
        serving.canary == route.weight(),
        "the {} router serves the canary {}% of requests instead of {}%",
        router.kind(),
        serving.canary,
        route.weight()
    );
    Ok(())
}

// === impl AppRuntime ===

impl AppRuntime {
    /// The app's config as last read from the store.
    pub async fn config(&self) -> AppConfig {
        self.inner.lock().await.config.clone()
    }

    /// The app's traffic router.
    pub async fn router(&self) -> Arc<dyn TrafficRouter> {
        self.inner.lock().await.router.clone()
    }

    /// The app's metric source.
    pub async fn metrics(&self) -> Arc<dyn MetricSource> {
        self.inner.lock().await.metrics.clone()
    }

    /// The address of the app's proxy, if it has one.
    pub async fn proxy_addr(&self) -> Option<SocketAddr> {
        self.inner.lock().await.proxy.as_ref().map(|p| p.addr())
    }

    /// The counters of the canary its built-in proxy serves now, when the app's
    /// metrics are that proxy's own (cheap enough to read many times a second);
    /// `None` for an app judged on an external source or serving no canary.
    pub async fn live_canary_counts(&self) -> Option<fledge_stats::ArmCounters> {
        let grip = live_proxy(&*self.inner.lock().await)?;
        grip.canary_counts().await.ok().flatten()
    }

    /// What the app's built-in proxy has counted of its stable version and of
    /// `canary_version`, when the app's metrics are that proxy's own; `None`
    /// otherwise (an external source is read by the controller only).
    pub async fn live_observation(
        &self,
        canary_version: &str,
    ) -> Option<fledge_stats::Observation> {
        let (grip, stable) = {
            let inner = self.inner.lock().await;
            (live_proxy(&inner)?, inner.config.stable.version.clone())
        };
        let mut counts = grip
            .counts(&[&stable, canary_version])
            .await
            .ok()?
            .into_iter();
        Some(fledge_stats::Observation {
            stable: counts.next()?,
            canary: counts.next()?,
            custom: Default::default(),
        })
    }

    /// The route last applied.
    pub async fn applied_route(&self) -> Option<Desired> {
        self.inner.lock().await.last_route.clone()
    }

    /// Whether the router serves the stored route, as of the last apply.
    pub fn route_sync(&self) -> RouteSync {
        self.lock_sync().clone()
    }

    /// Why the stored route is not in place, while the router fails to apply it.
    pub fn route_unapplied(&self) -> Option<String> {
        let sync = self.lock_sync();
        (!sync.in_sync).then(|| {
            format!(
                "the {} router has not applied the canary weight of {}% ({})",
                sync.router,
                sync.desired_weight,
                sync.last_error.as_deref().unwrap_or("not tried yet")
            )
        })
    }

    fn lock_sync(&self) -> std::sync::MutexGuard<'_, RouteSync> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_applied(&self, shared: &Shared, weight: u8) {
        self.lock_sync().applied(weight);
        shared.metrics.set_router_sync(&self.name, true, false);
    }

    fn record_failure(&self, shared: &Shared, desired: u8, error: &anyhow::Error) {
        self.lock_sync().failed(desired, error, shared.timestamp());
        shared.metrics.set_router_sync(&self.name, false, true);
    }

    /// Makes the app's traffic match the store: re-reads the app's config and its
    /// active rollout, computes the route and applies it if it changed (or `force`).
    pub async fn reconcile(&self, shared: &Shared, force: bool) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().await;
        let generation = shared.apps.generation();
        let record = shared.store.get_app(&self.name).await?;
        let active = routes::active_rollout(shared, &self.name).await?;
        self.apply_read(
            shared,
            &mut inner,
            generation,
            record.as_ref(),
            active.as_ref(),
            force,
        )
        .await
    }

    /// [`reconcile`](Self::reconcile) from a read of every app made at `generation`
    /// (`record`: the app's stored config; `active`: its active rollout). Skipped when
    /// the app has applied a newer read since.
    pub async fn reconcile_from(
        &self,
        shared: &Shared,
        generation: u64,
        record: Option<&AppRecord>,
        active: Option<&RolloutRecord>,
    ) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().await;
        if inner.read_at > generation {
            return Ok(());
        }
        self.apply_read(shared, &mut inner, generation, record, active, false)
            .await
    }

    async fn apply_read(
        &self,
        shared: &Shared,
        inner: &mut AppInner,
        generation: u64,
        record: Option<&AppRecord>,
        active: Option<&RolloutRecord>,
        force: bool,
    ) -> anyhow::Result<()> {
        if let Some(record) = record {
            inner.config = app_from_record(record)?;
        }
        let route = routes::route_of(&inner.config, active)?;
        if !force
            && inner.last_route.as_ref() == Some(&route)
            && inner.verified_at.elapsed() >= VERIFY_EVERY
        {
            if let Err(e) = verify(inner.router.as_ref(), &route).await {
                // Applied again from the next tick on, until the router takes it.
                inner.last_route = None;
                self.record_failure(shared, route_weight(&route), &e);
                return Err(e);
            }
            inner.verified_at = Instant::now();
        }
        if force || inner.last_route.as_ref() != Some(&route) {
            if let Err(e) = serve(inner.router.as_ref(), &route).await {
                self.record_failure(shared, route_weight(&route), &e);
                return Err(e);
            }
            self.record_applied(shared, route_weight(&route));
            inner.verified_at = Instant::now();
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
        inner.read_at = inner.read_at.max(generation);
        Ok(())
    }

    /// Replaces the app's config (a `PUT /apps/{app}`): moves the proxy listener if
    /// its address changed, then reconciles. A change that is refused leaves the app
    /// serving as before: the providers are built before any listener is touched, a
    /// new address is bound before the old one closes, and a listener restarted for
    /// new timeouts or a new upstream protocol takes over the old one's socket only
    /// once it has started.
    async fn replace_config(&self, shared: &Shared, config: AppConfig) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().await;
        let route = routes::desired_route(shared, &config).await?;
        let external = External::of(&config)?;
        // The address the config names, or the one bound (should it say port 0).
        let bound = inner.proxy.as_ref().map(Proxy::addr);
        let moved = (inner.config.listen != config.listen && bound != config.listen)
            || inner.config.router.is_builtin() != config.router.is_builtin();
        let there = matches!(inner.proxy, Some(Proxy::There { .. }));
        if there {
            // The data plane keeps, reconfigures or moves the listener as the new
            // config asks (keeping the old one if the new one fails to start); an app
            // no longer on the built-in router stops there.
            let new_proxy = start_proxy(shared, &config, config.listen, &route).await?;
            if new_proxy.is_none()
                && let Some(old) = inner.proxy.take()
            {
                old.stop().await;
            }
            inner.proxy = new_proxy;
        }
        // The proxy's timeouts and upstream protocol are fixed when it starts: new
        // ones need a new listener on the same address, which takes the new TLS
        // settings too. A new certificate alone (or TLS turned on or off) is
        // served from the next connection on, without closing the port.
        let restart = !there
            && !moved
            && (inner.config.timeouts != config.timeouts
                || inner.config.upstream != config.upstream);
        let tls_changed = inner.config.tls != config.tls;
        if let Some(Proxy::Here(proxy)) = inner.proxy.as_mut()
            && !moved
            && !restart
            && tls_changed
        {
            proxy.set_tls(&config.name, config.tls.as_ref())?;
        }
        if restart
            && let Plane::Here(workers) = shared.apps.plane().await?
            && let Some(Proxy::Here(old)) = inner.proxy.take()
        {
            let settings = ProxySettings::of(&config);
            let route = super::builtin::proxy_route(&route);
            match old.restart(workers, &config.name, &settings, &route) {
                Ok(new_proxy) => inner.proxy = Some(Proxy::Here(new_proxy)),
                Err((e, unchanged)) => {
                    inner.proxy = Some(Proxy::Here(unchanged));
                    return Err(e);
                }
            }
        } else if !there && (moved || inner.proxy.is_none()) {
            let new_proxy = start_proxy(shared, &config, config.listen, &route).await?;
            if let Some(old) = std::mem::replace(&mut inner.proxy, new_proxy) {
                old.stop().await;
            }
        }
        let (router, metrics) = external.with(&config, inner.proxy.as_ref())?;
        if let Err(e) = serve(router.as_ref(), &route).await {
            self.record_failure(shared, route_weight(&route), &e);
            return Err(e);
        }
        self.lock_sync().router = router.kind().to_owned();
        self.record_applied(shared, route_weight(&route));
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

    #[test]
    fn route_sync_follows_applies_and_failures() {
        let mut sync = RouteSync::new("haproxy", 10);
        assert!(!sync.in_sync, "not applied yet");
        sync.applied(10);
        assert!(sync.in_sync);
        assert_eq!(sync.applied_weight, Some(10));
        let at = fledge_store::Timestamp(1_700_000_000_000);
        sync.failed(50, &anyhow::anyhow!("connection refused"), at);
        sync.failed(50, &anyhow::anyhow!("connection refused"), at);
        assert!(!sync.in_sync);
        assert_eq!((sync.desired_weight, sync.applied_weight), (50, Some(10)));
        assert_eq!(sync.consecutive_failures, 2);
        assert_eq!(sync.last_error.as_deref(), Some("connection refused"));
        let since = sync.out_of_sync_since.clone();
        assert_eq!(since, Some(at.to_string()));
        sync.failed(0, &anyhow::anyhow!("still down"), at.saturating_add(SECOND));
        assert_eq!(sync.out_of_sync_since, since, "kept from the first failure");
        sync.applied(0);
        assert!(sync.in_sync);
        assert_eq!(sync.consecutive_failures, 0);
        assert_eq!(
            (sync.last_error.clone(), sync.out_of_sync_since.clone()),
            (None, None)
        );
        let json = serde_json::to_value(&sync).unwrap();
        assert_eq!(json["inSync"], true);
        assert_eq!(json["appliedWeight"], 0);
    }
}
