//! The server's own Prometheus metrics (`GET /metrics`), with bounded labels: the
//! phase, the decision kind, the command and the app name.
//!
//! Metric names live here and nowhere else.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

type Labels = Vec<(String, String)>;

/// The server's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rollouts: Family<Labels, Gauge>,
    decisions: Family<Labels, Counter>,
    commands: Family<Labels, Counter>,
    weights: Family<Labels, Gauge>,
    router_in_sync: Family<Labels, Gauge>,
    router_failures: Family<Labels, Counter>,
    tick_lag: Gauge<f64, AtomicU64>,
    tick_duration: Gauge<f64, AtomicU64>,
    ticks: Counter,
    leader: Gauge,
    epoch: Gauge,
    rate_limited: Family<Labels, Counter>,
    rate_limit_clients: Gauge,
}

/// A new metric, registered under `name` with `help`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

// === impl Metrics ===

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // Registered in this order, and listed in it by `GET /metrics`.
        Self {
            rollouts: registered(
                &mut registry,
                "fledge_rollouts",
                "Rollouts in the store, by phase",
            ),
            decisions: registered(
                &mut registry,
                "fledge_decisions",
                "Rollout events recorded, by kind (stage advanced, failed, promoted, ...)",
            ),
            commands: registered(
                &mut registry,
                "fledge_operator_commands",
                "Operator commands applied, by command",
            ),
            weights: registered(
                &mut registry,
                "fledge_canary_weight_percent",
                "The canary's share of traffic currently applied, by app",
            ),
            router_in_sync: registered(
                &mut registry,
                "fledge_router_in_sync",
                "1 when the app's router serves the route the store asks for, 0 while it fails to apply it",
            ),
            router_failures: registered(
                &mut registry,
                "fledge_router_apply_failures",
                "Failed attempts to apply an app's route to its router",
            ),
            tick_lag: registered(
                &mut registry,
                "fledge_controller_tick_lag_seconds",
                "How late the last controller tick started",
            ),
            tick_duration: registered(
                &mut registry,
                "fledge_controller_tick_duration_seconds",
                "How long the last controller tick took",
            ),
            ticks: registered(
                &mut registry,
                "fledge_controller_ticks",
                "Controller ticks run",
            ),
            leader: registered(
                &mut registry,
                "fledge_controller_leader",
                "1 while this replica holds the controller lease and judges rollouts, else 0",
            ),
            epoch: registered(
                &mut registry,
                "fledge_controller_lease_epoch",
                "The fencing epoch of the controller lease this replica holds (0: none)",
            ),
            rate_limited: registered(
                &mut registry,
                "fledge_api_rate_limited",
                "API requests refused with 429 by the per-client rate limit, by client kind \
             (token or address)",
            ),
            rate_limit_clients: registered(
                &mut registry,
                "fledge_api_rate_limit_clients",
                "Clients whose rate-limit bucket the API currently keeps",
            ),
            registry,
        }
    }

    /// Records whether this replica leads, and with which lease epoch.
    pub fn set_leader(&self, epoch: Option<i64>) {
        self.leader.set(i64::from(epoch.is_some()));
        self.epoch.set(epoch.unwrap_or(0));
    }

    /// Counts one request refused by the rate limit; `kind` is `token` or `address`.
    pub fn count_rate_limited(&self, kind: &'static str) {
        self.rate_limited
            .get_or_create(&vec![("client".to_owned(), kind.to_owned())])
            .inc();
    }

    /// Records how many clients the rate limiter keeps a bucket for.
    pub fn set_rate_limit_clients(&self, n: usize) {
        self.rate_limit_clients
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Counts one recorded event.
    pub fn count_decision(&self, kind: &str) {
        self.decisions
            .get_or_create(&vec![("kind".to_owned(), bounded(kind))])
            .inc();
    }

    /// Counts one applied operator command.
    pub fn count_command(&self, command: &str) {
        self.commands
            .get_or_create(&vec![("command".to_owned(), command.to_owned())])
            .inc();
    }

    /// Records the weight applied to an app's canary.
    pub fn set_weight(&self, app: &str, weight: u8) {
        self.weights
            .get_or_create(&vec![("app".to_owned(), app.to_owned())])
            .set(i64::from(weight));
    }

    /// Records whether an app's router applied its route, and counts a failure.
    pub fn set_router_sync(&self, app: &str, in_sync: bool, failed: bool) {
        let labels = vec![("app".to_owned(), app.to_owned())];
        self.router_in_sync
            .get_or_create(&labels)
            .set(i64::from(in_sync));
        let failures = self.router_failures.get_or_create(&labels);
        if failed {
            failures.inc();
        }
    }

    /// Records how late a tick started.
    pub fn observe_tick_lag(&self, lag: Duration) {
        self.tick_lag.set(lag.as_secs_f64());
        self.ticks.inc();
    }

    /// Records how long a tick took.
    pub fn observe_tick_duration(&self, d: Duration) {
        self.tick_duration.set(d.as_secs_f64());
    }

    /// Sets the rollout counts by phase.
    pub fn set_rollouts_by_phase(&self, counts: &[(&str, i64)]) {
        for (phase, n) in counts {
            self.rollouts
                .get_or_create(&vec![("phase".to_owned(), (*phase).to_owned())])
                .set(*n);
        }
    }

    /// The exposition text of the server's own metrics (no `# EOF`: the proxy's
    /// metrics follow).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Event kinds come from the engine and the server, a small fixed set; anything
/// unexpected is folded into one label value so the series count stays bounded.
fn bounded(kind: &str) -> String {
    if kind.len() <= 48 && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        kind.to_owned()
    } else {
        "other".to_owned()
    }
}
