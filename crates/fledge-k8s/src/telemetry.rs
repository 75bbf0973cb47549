//! What the operator tells about itself: its Prometheus metrics (`GET /metrics` of
//! `fledge operator run`) and its readiness (`GET /readyz`: the API server answered
//! its last Lease call in time).
//!
//! Labels are bounded: a rollout's namespace and name (one series per CanaryRollout,
//! removed with it is left to a restart, as Flagger's `flagger_canary_status`), the
//! phase, the decision kind, the hook list and the result.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode_registry;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

type Labels = Vec<(String, String)>;

/// The operator's metrics, and when the API server last answered it.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    hooks: Family<Labels, Counter>,
    phase: Family<Labels, Gauge>,
    weight: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    leader: Gauge,
    /// Unix milliseconds of the last Lease call the API server answered; 0 never.
    api_answered_ms: AtomicI64,
}

fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// === impl Telemetry ===

impl Telemetry {
    /// Fresh metrics; the API server has not answered yet.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build: Family<Labels, Gauge> = Family::default();
        registry.register(
            "fledge_operator_build_info",
            "The running operator's version",
            build.clone(),
        );
        build
            .get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        Telemetry {
            reconciles: registered(
                &mut registry,
                "fledge_operator_reconciles",
                "Reconciles of CanaryRollouts, by result (ok, error)",
            ),
            decisions: registered(
                &mut registry,
                "fledge_operator_decisions",
                "Rollout events recorded, by kind (Started, StageAdvanced, Failed, ...)",
            ),
            hooks: registered(
                &mut registry,
                "fledge_operator_hook_runs",
                "Hook lists whose result was recorded, by list and result (succeeded, failed)",
            ),
            phase: registered(
                &mut registry,
                "fledge_operator_rollout_phase",
                "1 for each CanaryRollout's current phase, 0 for the others",
            ),
            weight: registered(
                &mut registry,
                "fledge_operator_canary_weight_ratio",
                "The share of requests each CanaryRollout's router sends to the canary, 0 to 1",
            ),
            leader: registered(
                &mut registry,
                "fledge_operator_leader",
                "1 while this replica holds the leader Lease and reconciles",
            ),
            api_answered_ms: AtomicI64::new(0),
            registry,
        }
    }

    /// Counts a reconcile.
    pub fn reconciled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&labels(&[("result", result)]))
            .inc();
    }

    /// Counts a recorded rollout event.
    pub fn decided(&self, kind: &str) {
        self.decisions
            .get_or_create(&labels(&[("kind", kind)]))
            .inc();
    }

    /// Counts a hook list's recorded result.
    pub fn hooks_ran(&self, list: &str, succeeded: bool) {
        let result = if succeeded { "succeeded" } else { "failed" };
        self.hooks
            .get_or_create(&labels(&[("hook", list), ("result", result)]))
            .inc();
    }

    /// Sets a rollout's phase and canary weight (0–100) as written to its status.
    pub fn rollout(&self, namespace: &str, name: &str, phase: &str, canary_weight: u8) {
        for p in fledge_engine::Phase::ALL {
            let p = p.to_string();
            let l = labels(&[("namespace", namespace), ("name", name), ("phase", &p)]);
            self.phase.get_or_create(&l).set(i64::from(p == phase));
        }
        self.weight
            .get_or_create(&labels(&[("namespace", namespace), ("name", name)]))
            .set(f64::from(canary_weight) / 100.0);
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records that the API server answered a Lease call.
    pub fn api_answered(&self) {
        self.api_answered_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Ready: the API server answered a Lease call within `within`.
    pub fn ready(&self, within: Duration) -> bool {
        let at = self.api_answered_ms.load(Ordering::Relaxed);
        let within = i64::try_from(within.as_millis()).unwrap_or(i64::MAX);
        at > 0 && now_ms().saturating_sub(at) <= within
    }

    /// The OpenMetrics exposition, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        out.push_str("# EOF\n");
        out
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_each_family_once_and_ends_with_eof() {
        let t = Telemetry::new();
        t.reconciled(true);
        t.decided("Started");
        t.hooks_ran("beforeRollout", false);
        t.rollout("shop-ns", "shop", "Progressing", 20);
        t.set_leader(true);
        let text = t.encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in [
            "fledge_operator_reconciles_total{result=\"ok\"} 1",
            "fledge_operator_decisions_total{kind=\"Started\"} 1",
            "fledge_operator_hook_runs_total{hook=\"beforeRollout\",result=\"failed\"} 1",
            "fledge_operator_rollout_phase{namespace=\"shop-ns\",name=\"shop\",phase=\"Progressing\"} 1",
            "fledge_operator_rollout_phase{namespace=\"shop-ns\",name=\"shop\",phase=\"Failed\"} 0",
            "fledge_operator_canary_weight_ratio{namespace=\"shop-ns\",name=\"shop\"} 0.2",
            "fledge_operator_leader 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("fledge_operator_build_info{version="));
    }

    #[test]
    fn ready_only_after_a_recent_answer() {
        let t = Telemetry::new();
        assert!(!t.ready(Duration::from_secs(30)));
        t.api_answered();
        assert!(t.ready(Duration::from_secs(30)));
    }
}
