//! The built-in proxy as a [`TrafficRouter`] and a [`MetricSource`]: one proxy
//! listener per app, whose route the controller sets and whose per-version counters
//! it reads.

use std::net::SocketAddr;

use fledge_proxy::{ProxyConfig, ProxyHandle, Route};
use fledge_stats::Observation;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::backends::{MetricSource, ObserveQuery, TrafficRouter};
use crate::config::AppTimeouts;

/// One app's running proxy listener.
#[derive(Debug)]
pub struct BuiltinProxy {
    handle: ProxyHandle,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

// === impl BuiltinProxy ===

impl BuiltinProxy {
    /// Binds `listen` and starts proxying with `route`, waiting on upstreams and
    /// clients as long as `timeouts` allow.
    pub async fn start(
        app: &str,
        listen: SocketAddr,
        timeouts: &AppTimeouts,
        route: Route,
    ) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("app `{app}`: cannot listen on {listen}: {e}"))?;
        let addr = listener.local_addr()?;
        let config = ProxyConfig {
            timeouts: timeouts.to_proxy(),
            ..ProxyConfig::new(app)
        };
        let handle =
            ProxyHandle::new(config, route).map_err(|e| anyhow::anyhow!("app `{app}`: {e}"))?;
        let (shutdown, mut rx) = watch::channel(false);
        let serve_handle = handle.clone();
        let app_name = app.to_owned();
        let task = tokio::spawn(async move {
            let signal = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = fledge_proxy::serve(listener, serve_handle, signal).await {
                tracing::error!(app = %app_name, error = %e, "proxy listener failed");
            }
        });
        tracing::info!(app, %addr, "proxy listening");
        Ok(Self {
            handle,
            addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy's handle (route and statistics).
    pub fn handle(&self) -> &ProxyHandle {
        &self.handle
    }

    /// Stops accepting, lets in-flight requests drain, and waits for the listener.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// The built-in router/metric source of one app: its proxy's handle.
#[derive(Debug, Clone)]
pub struct BuiltinBackend {
    handle: ProxyHandle,
}

impl BuiltinBackend {
    /// Drives the proxy behind `handle`.
    pub fn new(handle: ProxyHandle) -> Self {
        Self { handle }
    }
}

impl TrafficRouter for BuiltinBackend {
    fn kind(&self) -> &'static str {
        crate::config::BUILTIN
    }

    fn apply<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.handle
                .set_route(route.clone())
                .map_err(|e| anyhow::anyhow!("built-in proxy refused the route: {e}"))
        })
    }
}

impl MetricSource for BuiltinBackend {
    fn kind(&self) -> &'static str {
        crate::config::BUILTIN
    }

    fn observe<'a>(
        &'a self,
        query: &'a ObserveQuery,
    ) -> BoxFuture<'a, anyhow::Result<Observation>> {
        Box::pin(async move {
            Ok(Observation {
                stable: self.handle.stats(&query.stable_version),
                canary: if query.canary_version.is_empty() {
                    Default::default()
                } else {
                    self.handle.stats(&query.canary_version)
                },
                custom: Default::default(),
            })
        })
    }
}
