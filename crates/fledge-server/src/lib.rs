//! The fledge server: the store, one proxy listener per app, the controller loop that
//! drives every active rollout, the HTTP API and the web UI.
//!
//! [`start`] wires them in this order, which is what makes a restart safe: open the
//! store, register the apps from the config, start each app's proxy with the route
//! its persisted state asks for (so a crash between "decided" and "applied"
//! converges before anything else happens), then start the controller and, last, the
//! API (which is then ready).
//!
//! Must never depend on the `fledge` binary (CLI, demo) nor on `fledge-k8s`; every
//! body it reads or answers is a type of `fledge-api`, every router and metric
//! source a trait of `fledge-providers`. This file is the composition root: [`Shared`]
//! holds what the modules share. Below it the modules form layers, and none imports
//! one of a layer above it (docs/architecture.md lists them):
//! `clock`/`config`/`error`/`engine`/`metrics`/`health`/`hook_queue`/`store_health`/`signals`,
//! then `principal`/`body`/`view`/`routes`/`tls`/`external`/`builtin`/`dataplane`/`notify`/`leader`,
//! then `session`/`auth`/`ratelimit`/`apps`/`rollouts`, then
//! `groups`/`hooks`/`controller`/`status`, then `sse`/`ui`/`api`.

pub mod api;
pub mod apps;
pub mod auth;
pub mod body;
pub mod builtin;
pub mod clock;
pub mod config;
pub mod controller;
pub mod dataplane;
pub mod engine;
pub mod error;
pub mod external;
pub mod groups;
pub mod health;
pub mod hook_queue;
pub mod hooks;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod principal;
pub mod ratelimit;
pub mod rollouts;
pub mod routes;
pub mod session;
pub mod signals;
pub mod sse;
pub mod status;
pub mod store_health;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod ui;
pub mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context as _;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::ServerConfig;

pub use self::auth::{Authenticator, Principal};
pub use self::error::ApiError;

/// How long in-flight API requests may take to finish on shutdown.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How [`start`] runs, beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Allow listening on a non-loopback address without any token.
    pub insecure: bool,
    /// The value of `FLEDGE_TOKENS` (`name:role:token,...`), if any.
    pub env_tokens: Option<String>,
    /// The wall clock (the system's unless a test holds it).
    pub clock: clock::Clock,
}

/// Everything the API handlers, the controller and the background tasks share.
#[derive(Debug)]
pub struct Shared {
    /// The durable state.
    pub store: Arc<dyn fledge_store::Store>,
    /// The wall clock every decision reads.
    pub clock: clock::Clock,
    /// Who may call the API.
    pub auth: Authenticator,
    /// The config the server was started with.
    pub config: ServerConfig,
    /// The apps with their routers, metric sources and proxies.
    pub apps: apps::Apps,
    /// The server's own Prometheus metrics.
    pub metrics: metrics::Metrics,
    /// Live per-version health of every app.
    pub health: health::HealthTracker,
    /// Messages for `GET /events` subscribers.
    pub live: broadcast::Sender<sse::LiveMessage>,
    /// Wakes the live-event poller after a write.
    pub wrote: Notify,
    /// Writes this replica has made (see [`Shared::note_write`]).
    writes: AtomicU64,
    /// The last `GET /status` answer.
    pub status: status::StatusSnapshot,
    /// Set once the persisted routes are applied; cleared on shutdown.
    pub ready: AtomicBool,
    /// Hook lists waiting to run.
    pub hooks: hooks::HookQueue,
    /// Sends the spec's notifications in the background.
    pub notifications: notify::Notifications,
    /// Becomes `true` when the server stops: long-lived responses (the event
    /// stream) end so that the graceful shutdown does not wait for them forever.
    pub stopping: watch::Receiver<bool>,
    /// Whether this replica holds the controller lease (HA on a shared store).
    pub leader: leader::Leadership,
    /// Whether the store took the last write (for `/readyz`).
    pub store_health: store_health::StoreHealth,
    /// Per-client API rate limits; `None` when `limits.ratePerSecond` is 0.
    pub rate_limiter: Option<ratelimit::RateLimiter>,
    /// The API's certificate, when it serves TLS.
    pub api_cert: Option<Arc<tls::ListenerCert>>,
    /// The Alertmanager of `alertmanager:` (or why its client could not be made).
    pub alertmanager: Option<Result<fledge_providers::alerts::Alertmanager, String>>,
    /// Held by each pass over a rollout group (see `groups`), so that the
    /// controller's and an operator's passes never act on members at once.
    pub group_pass: tokio::sync::Mutex<()>,
}

/// A running server: its addresses, and how to stop it.
#[derive(Debug)]
pub struct RunningServer {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the server: store, apps and their proxies (with the persisted routes
/// re-applied), controller, live-event poller, then the API.
pub async fn start(config: ServerConfig, opts: StartOptions) -> anyhow::Result<RunningServer> {
    config
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    let auth = Authenticator::new(&config.auth.tokens, opts.env_tokens.as_deref())?;
    if !auth.enabled() && !config.listen.ip().is_loopback() && !opts.insecure {
        anyhow::bail!(
            "refusing to serve the API on {} without access tokens: anyone who can reach \
             it could promote or abort rollouts. Add tokens (`fledge token`, then \
             auth.tokens in the config or FLEDGE_TOKENS), listen on 127.0.0.1, or pass \
             --insecure",
            config.listen
        );
    }
    if !auth.enabled() {
        tracing::warn!("no access tokens configured: the API is open to anyone who can reach it");
    }
    // Read the API's certificate before opening anything, so a bad file fails fast.
    let api_cert = match &config.tls {
        Some(t) => Some(Arc::new(
            tls::ListenerCert::load(t, &[tls::ALPN_HTTP1])
                .map_err(|e| anyhow::anyhow!("tls: {e:#}"))?,
        )),
        None => None,
    };

    let store = fledge_store::connect(&config.store)
        .await
        .with_context(|| "cannot open the store")?;
    tracing::info!(backend = store.backend(), "store opened");

    let (stop, stop_rx) = watch::channel(false);
    let (shared, hook_jobs) = Shared::new(
        config,
        store,
        opts.clock,
        auth,
        api_cert.clone(),
        stop_rx.clone(),
    );

    // Apps first, with their proxies started on the route the store asks for.
    rollouts::register_config_apps(&shared).await?;
    for record in shared.store.list_apps().await? {
        let app = apps::app_from_record(&record)?;
        shared.apps.start_app(&shared, app).await?;
    }
    shared.apps.retain_registered().await;
    controller::reapply_all(&shared).await?;
    shared.ready.store(true, Ordering::SeqCst);

    let mut tasks = Vec::new();
    // Not joined on shutdown: hooks in flight are re-run after a restart if they gate.
    tokio::spawn(hooks::run_worker(shared.clone(), hook_jobs));
    shared
        .leader
        .step(shared.store.as_ref(), &shared.store_health)
        .await;
    shared.metrics.set_leader(shared.leader.epoch());
    tasks.extend([
        spawn_task(&shared, &stop_rx, leader::run),
        spawn_task(&shared, &stop_rx, controller::run),
        spawn_task(&shared, &stop_rx, sse::run_poller),
        spawn_task(&shared, &stop_rx, ui::series::run_recorder),
        spawn_task(&shared, &stop_rx, health::run_sampler),
        spawn_task(&shared, &stop_rx, tls::run_reloader),
    ]);

    let listener = fledge_proxy::bind(shared.config.listen)
        .with_context(|| format!("cannot listen on {} for the API", shared.config.listen))?;
    let api_addr = listener.local_addr()?;
    let router = api::served_router(shared.clone());
    let mut api_stop = stop_rx.clone();
    let shutdown = async move {
        let _ = api_stop.wait_for(|s| *s).await;
    };
    tasks.push(match api_cert {
        None => {
            let listener = tls::PlainListener::new(listener, tls::FIRST_REQUEST_TIMEOUT)?;
            tokio::spawn(serve_api(listener, router, shutdown))
        }
        Some(cert) => {
            let listener = tls::TlsListener::new(listener, cert)?;
            tokio::spawn(serve_api(listener, router, shutdown))
        }
    });
    tracing::info!(addr = %api_addr, tls = shared.config.tls.is_some(), "API listening");

    Ok(RunningServer {
        shared,
        api_addr,
        stop,
        tasks,
    })
}

/// Starts one of the server's background tasks, which runs until `stop` turns true.
fn spawn_task<F>(
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    task: impl FnOnce(Arc<Shared>, watch::Receiver<bool>) -> F,
) -> tokio::task::JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(task(shared.clone(), stop.clone()))
}

// === impl Shared ===

impl Shared {
    /// The shared state on an open store, with no app started and no task running
    /// yet; also the receiving end of the hook queue, for [`hooks::run_worker`].
    pub fn new(
        config: ServerConfig,
        store: Arc<dyn fledge_store::Store>,
        clock: clock::Clock,
        auth: Authenticator,
        api_cert: Option<Arc<tls::ListenerCert>>,
        stopping: watch::Receiver<bool>,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<hooks::HookJob>) {
        let (live, _) = broadcast::channel(1024);
        let (hooks, hook_jobs) = hooks::HookQueue::new();
        let shared = Arc::new(Shared {
            store,
            clock,
            auth,
            apps: apps::Apps::new(
                config.proxy.worker_count(),
                config.proxy.data_plane.as_ref().map(|p| p.socket.clone()),
            ),
            metrics: metrics::Metrics::new(),
            health: health::HealthTracker::default(),
            live,
            wrote: Notify::new(),
            writes: AtomicU64::new(0),
            status: status::StatusSnapshot::default(),
            ready: AtomicBool::new(false),
            hooks,
            notifications: notify::Notifications::start(),
            stopping,
            leader: leader::Leadership::new(),
            store_health: store_health::StoreHealth::new(clock),
            rate_limiter: ratelimit::RateLimiter::from_limits(&config.limits),
            api_cert,
            alertmanager: config.alertmanager.as_ref().map(|settings| {
                fledge_providers::alerts::Alertmanager::new(settings).map_err(|e| e.to_string())
            }),
            group_pass: tokio::sync::Mutex::new(()),
            config,
        });
        (shared, hook_jobs)
    }

    /// Records that this replica wrote to the store: snapshots built before are
    /// stale, and the live-event poller looks for new events.
    pub fn note_write(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.wrote.notify_one();
    }

    /// The current time from [`Shared::clock`], as the store records times.
    pub fn timestamp(&self) -> fledge_store::Timestamp {
        fledge_store::Timestamp(self.clock.now_ms())
    }

    /// How many writes [`note_write`](Self::note_write) has seen.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }
}

/// Serves the API on `listener` until `shutdown`, with each connection's source
/// address available to the rate limiter.
async fn serve_api<L>(
    listener: L,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
    ratelimit::PeerAddr:
        for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let service = router.into_make_service_with_connect_info::<ratelimit::PeerAddr>();
    if let Err(e) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "API server failed");
    }
}

// === impl RunningServer ===

impl RunningServer {
    /// The address the API listens on.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The address of `app`'s proxy listener, if it has one.
    pub async fn proxy_addr(&self, app: &str) -> Option<SocketAddr> {
        self.shared.apps.proxy_addr(app).await
    }

    /// Every app's proxy address.
    pub async fn proxy_addrs(&self) -> BTreeMap<String, SocketAddr> {
        self.shared.apps.proxy_addrs().await
    }

    /// The shared state (for in-process callers such as the demo).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting API requests, lets in-flight ones finish, stops the controller
    /// and the proxies (draining their requests), and closes the store.
    pub async fn shutdown(self) {
        self.shared.ready.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            // In-flight requests get a bounded time to finish.
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                tracing::warn!("a server task did not stop in time; cancelling it");
                task.abort();
            }
        }
        self.shared.apps.stop_all().await;
        // Notifications already decided still go out, within a bounded time.
        if !self.shared.notifications.flush(SHUTDOWN_GRACE).await {
            tracing::warn!("some notifications could not be sent before shutdown");
        }
        self.shared.store.close().await;
        tracing::info!("server stopped");
    }

    /// Reads every TLS listener's certificate files again and uses the good ones
    /// from the next connection on (what SIGHUP does); a listener whose files are
    /// broken keeps its current certificate.
    pub async fn reload_certificates(&self) {
        tls::reload_certificates(&self.shared, true).await;
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully; SIGHUP reloads the
    /// TLS certificates.
    pub async fn run_until_signal(self) {
        let stop = signals::stop_requested();
        let mut stop = std::pin::pin!(stop);
        let mut hangups = Hangups::new();
        loop {
            tokio::select! {
                () = &mut stop => break,
                () = hangups.next() => {
                    tracing::info!("SIGHUP: reloading the TLS certificates");
                    self.reload_certificates().await;
                }
            }
        }
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

/// SIGHUP, where the platform has it.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn new() -> Self {
        Self {
            #[cfg(unix)]
            signal: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    /// Resolves on the next SIGHUP; never where there is none.
    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending().await
    }
}
