//! The two things the controller needs from the world, as small traits: something
//! that sets an app's traffic split ([`TrafficRouter`]) and something that reads what
//! both versions served ([`MetricSource`]).
//!
//! The built-in proxy implements both (see [`super::builtin`]). External routers and
//! metric systems (HAProxy, nginx, Prometheus, Datadog, …) plug in by implementing the
//! same traits; the controller does not know which one it drives.

use std::fmt::Debug;
use std::time::Duration;

use fledge_proxy::Route;
use fledge_stats::Observation;
use futures::future::BoxFuture;

/// Makes an app's traffic split match a route. Must be idempotent: the controller
/// re-applies the desired route after restarts and whenever it may have drifted.
pub trait TrafficRouter: Send + Sync + Debug {
    /// The kind of router (`builtin`, `haproxy`, …), for logs and errors.
    fn kind(&self) -> &'static str;

    /// Applies the route: stable and canary upstreams, the canary's weight,
    /// stickiness and match rules.
    fn apply<'a>(&'a self, route: &'a Route) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Checks that the data plane still serves the route last applied: an external
    /// one may have died, or restarted from an older config, since. An error says
    /// what differs or why it cannot tell. The default trusts the last apply (the
    /// built-in proxy is in this process).
    fn verify<'a>(&'a self, _route: &'a Route) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// What a metric source is asked at each analysis tick.
#[derive(Debug, Clone, PartialEq)]
pub struct ObserveQuery {
    /// The app.
    pub app: String,
    /// The stable version's label.
    pub stable_version: String,
    /// The canary version's label.
    pub canary_version: String,
    /// How long the rollout has run so far.
    pub window: Duration,
    /// The rollout spec's custom metrics (`metrics:`), for sources that evaluate
    /// queries; empty outside a rollout. The built-in source has none to offer.
    pub custom: Vec<fledge_providers::metrics::CustomQuery>,
}

/// Reads the cumulative per-version counters of an app. An error means "no data",
/// which the engine never counts as a pass.
pub trait MetricSource: Send + Sync + Debug {
    /// The kind of source (`builtin`, `prometheus`, …), for logs and errors.
    fn kind(&self) -> &'static str;

    /// The cumulative counters of both versions.
    fn observe<'a>(&'a self, query: &'a ObserveQuery)
    -> BoxFuture<'a, anyhow::Result<Observation>>;
}
