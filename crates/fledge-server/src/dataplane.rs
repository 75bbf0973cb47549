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

use async_trait::async_trait;
use fledge_providers::metrics::{MetricError, MetricSource, ObserveQuery};
use fledge_providers::router::{
    AppliedWeights, Desired, Endpoints, EndpointsApplied, RouterError, RoutingRules, TrafficRouter,
};
use fledge_proxy::{ProxyHandle, Route, Workers};
use fledge_stats::{ArmCounters, Observation};

use crate::builtin::{BuiltinProxy, proxy_route};

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

/// The built-in router/metric source of one app: its proxy, here or in the
/// data-plane process.
#[derive(Debug, Clone)]
pub struct BuiltinBackend {
    grip: ProxyGrip,
}

impl BuiltinBackend {
    /// Drives the proxy behind `grip`.
    pub fn new(grip: ProxyGrip) -> Self {
        Self { grip }
    }

    fn refused(&self, e: impl std::fmt::Display) -> RouterError {
        RouterError::Rejected {
            router: crate::config::BUILTIN,
            target: "the built-in proxy".to_owned(),
            reason: e.to_string(),
        }
    }

    async fn applied(&self) -> Result<AppliedWeights, RouterError> {
        let route = self
            .grip
            .route()
            .await
            .map_err(|e| self.refused(format!("{e:#}")))?;
        Ok(AppliedWeights::canary(route.effective_canary_weight()))
    }

    async fn change(&self, change: impl FnOnce(&mut Route)) -> Result<AppliedWeights, RouterError> {
        let mut route = self
            .grip
            .route()
            .await
            .map_err(|e| self.refused(format!("{e:#}")))?;
        change(&mut route);
        self.set(route).await
    }

    async fn set(&self, route: Route) -> Result<AppliedWeights, RouterError> {
        let weight = route.effective_canary_weight();
        self.grip
            .set_route(route)
            .await
            .map_err(|e| self.refused(format!("{e:#}")))?;
        Ok(AppliedWeights::canary(weight))
    }
}

#[async_trait]
impl TrafficRouter for BuiltinBackend {
    fn kind(&self) -> &'static str {
        crate::config::BUILTIN
    }

    async fn set_weights(&self, canary_weight: u8) -> Result<AppliedWeights, RouterError> {
        self.change(|r| r.canary_weight = canary_weight.min(100))
            .await
    }

    async fn current(&self) -> Result<AppliedWeights, RouterError> {
        self.applied().await
    }

    async fn set_endpoints(&self, endpoints: &Endpoints) -> Result<EndpointsApplied, RouterError> {
        self.change(|route| {
            route.stable.endpoints = endpoints.stable.clone();
            if let Some(canary) = route.canary.as_mut() {
                canary.endpoints = endpoints.canary.clone();
            }
        })
        .await?;
        Ok(EndpointsApplied::Applied)
    }

    /// Every rule of a spec: the proxy matches headers and cookies and keeps users
    /// on their version.
    fn supports(&self, _rules: &RoutingRules) -> Result<(), RouterError> {
        Ok(())
    }

    /// Swaps the whole route at once: versions, servers, weight and rules.
    async fn serve(&self, desired: &Desired) -> Result<AppliedWeights, RouterError> {
        self.set(proxy_route(desired)).await
    }
}

#[async_trait]
impl MetricSource for BuiltinBackend {
    fn kind(&self) -> &'static str {
        crate::config::BUILTIN
    }

    async fn observe(&self, query: &ObserveQuery) -> Result<Observation, MetricError> {
        let mut versions = vec![query.stable_version.as_str()];
        if !query.canary_version.is_empty() {
            versions.push(&query.canary_version);
        }
        let mut counts = self
            .grip
            .counts(&versions)
            .await
            .map_err(|e| MetricError::Unreachable {
                source_kind: crate::config::BUILTIN,
                url: "the data-plane process".to_owned(),
                reason: format!("{e:#}"),
            })?
            .into_iter();
        Ok(Observation {
            stable: counts.next().unwrap_or_default(),
            canary: counts.next().unwrap_or_default(),
            custom: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests;
