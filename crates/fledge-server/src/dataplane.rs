//! Where the built-in proxies run: in this process ([`Plane::Here`], the default),
//! or in a data-plane process of their own ([`Plane::There`], `proxy.dataPlane`)
//! that keeps serving the last applied routes while this control process crashes,
//! restarts or is upgraded, and that is itself upgraded without closing a port.
//!
//! The control process reaches the proxies through [`ProxyGrip`] either way: the
//! route it applies, the counters the judge reads. In the data-plane process they
//! live behind `wire`'s requests on a Unix socket (`process` serves them, `remote`
//! sends them).
//!
//! Routes are never stale: a control process applies only what it has just read
//! from the store (under the app's lock, as with any router), it takes the data
//! plane over with a `Hello` that fences off any older control process still
//! connected, and on every start it re-applies each app's stored route. While a
//! new data-plane process takes over, no route changes (the change is retried on
//! the next tick, against the new process).

pub mod fds;
pub mod process;
pub mod remote;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use fledge_proxy::{ProxyHandle, Route, Workers};
use fledge_stats::ArmCounters;

use crate::builtin::BuiltinProxy;

pub use remote::Remote;

/// The proxies' home.
#[derive(Debug)]
pub enum Plane {
    /// Worker threads of this process.
    Here(Workers),
    /// A data-plane process.
    There(Arc<Remote>),
}

/// One app's running proxy listener.
#[derive(Debug)]
pub enum Proxy {
    Here(BuiltinProxy),
    There { addr: SocketAddr, grip: RemoteProxy },
}

/// The control process's grip on one app's proxy, wherever it runs.
#[derive(Debug, Clone)]
pub enum ProxyGrip {
    Here(ProxyHandle),
    There(RemoteProxy),
}

/// An app's proxy in the data-plane process.
#[derive(Debug, Clone)]
pub struct RemoteProxy {
    pub app: String,
    pub plane: Arc<Remote>,
}

// === impl Proxy ===

impl Proxy {
    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Proxy::Here(p) => p.addr(),
            Proxy::There { addr, .. } => *addr,
        }
    }

    /// The grip the router, the metric source and the judge use.
    pub fn grip(&self) -> ProxyGrip {
        match self {
            Proxy::Here(p) => ProxyGrip::Here(p.handle().clone()),
            Proxy::There { grip, .. } => ProxyGrip::There(grip.clone()),
        }
    }

    /// Stops the listener here, draining; a data-plane process stops it too.
    pub async fn stop(self) {
        match self {
            Proxy::Here(p) => p.stop().await,
            Proxy::There { grip, .. } => {
                if let Err(e) = grip.plane.stop(&grip.app).await {
                    tracing::warn!(app = %grip.app, error = %format!("{e:#}"),
                        "cannot stop the app's proxy in the data plane");
                }
            }
        }
    }
}

// === impl ProxyGrip ===

impl ProxyGrip {
    /// The route the proxy serves.
    pub async fn route(&self) -> anyhow::Result<Route> {
        match self {
            ProxyGrip::Here(h) => Ok((*h.route()).clone()),
            ProxyGrip::There(r) => r.plane.route(&r.app).await,
        }
    }

    /// Serves `route` from the next request on.
    pub async fn set_route(&self, route: Route) -> anyhow::Result<()> {
        match self {
            ProxyGrip::Here(h) => Ok(h.set_route(route)?),
            ProxyGrip::There(r) => r.plane.set_route(&r.app, route).await,
        }
    }

    /// The cumulative counters of each of `versions`.
    pub async fn counts(&self, versions: &[&str]) -> anyhow::Result<Vec<ArmCounters>> {
        match self {
            ProxyGrip::Here(h) => Ok(versions.iter().map(|v| h.stats(v)).collect()),
            ProxyGrip::There(r) => r.plane.counts(&r.app, versions).await,
        }
    }

    /// The counters of the canary the proxy serves now.
    pub async fn canary_counts(&self) -> anyhow::Result<Option<ArmCounters>> {
        match self {
            ProxyGrip::Here(h) => Ok(h.canary_stats()),
            ProxyGrip::There(r) => r.plane.canary_counts(&r.app).await,
        }
    }
}
