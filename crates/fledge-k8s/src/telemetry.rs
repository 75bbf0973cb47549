//! What the operator tells about itself: its Prometheus metrics (`GET /metrics` of
//! `fledge operator run`) and its readiness (`GET /readyz`: the API server answered
//! its last Lease call in time).
//!
//! Labels are bounded: a rollout's namespace and name (one series per CanaryRollout,
//! removed with it is left to a restart, as Flagger's `flagger_canary_status`), the
//! phase, the decision kind, the hook list and the result.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fledge_stats::exposition::{Format, Kind, Page};

/// The operator's metrics, and when the API server last answered it.
#[derive(Debug, Default)]
pub struct Telemetry {
    inner: Mutex<Inner>,
    /// Unix milliseconds of the last Lease call the API server answered; 0 never.
    api_answered_ms: AtomicI64,
}

#[derive(Debug, Default)]
struct Inner {
    /// By result.
    reconciles: BTreeMap<&'static str, u64>,
    /// By event kind.
    decisions: BTreeMap<String, u64>,
    /// By hook list and result.
    hooks: BTreeMap<(String, &'static str), u64>,
    /// By namespace and name: the phase and the canary weight (0–100).
    rollouts: BTreeMap<(String, String), (String, u8)>,
    leader: bool,
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
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Counts a reconcile.
    pub fn reconciled(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.with(|m| *m.reconciles.entry(result).or_default() += 1);
    }

    /// Counts a recorded rollout event.
    pub fn decided(&self, kind: &str) {
        self.with(|m| *m.decisions.entry(kind.to_owned()).or_default() += 1);
    }

    /// Counts a hook list's recorded result.
    pub fn hooks_ran(&self, list: &str, succeeded: bool) {
        let result = if succeeded { "succeeded" } else { "failed" };
        self.with(|m| *m.hooks.entry((list.to_owned(), result)).or_default() += 1);
    }

    /// Sets a rollout's phase and canary weight (0–100) as written to its status.
    pub fn rollout(&self, namespace: &str, name: &str, phase: &str, canary_weight: u8) {
        let key = (namespace.to_owned(), name.to_owned());
        self.with(|m| m.rollouts.insert(key, (phase.to_owned(), canary_weight)));
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.with(|m| m.leader = leading);
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

    /// The `/metrics` page in `format` (`# EOF` included for OpenMetrics).
    pub fn encode(&self, format: Format) -> String {
        let mut page = Page::new(format);
        page.family(
            "fledge_operator_build",
            Kind::Info,
            "The running operator's version, as a label",
        )
        .sample(&[("version", env!("CARGO_PKG_VERSION"))], 1u64);
        self.with(|m| m.write(&mut page));
        page.finish()
    }
}

impl Inner {
    fn write(&self, page: &mut Page) {
        page.family(
            "fledge_operator_reconciles",
            Kind::Counter,
            "Reconciles of CanaryRollouts, by result (ok, error)",
        )
        .labelled("result", self.reconciles.iter().map(|(r, n)| (r, *n)));
        page.family(
            "fledge_operator_decisions",
            Kind::Counter,
            "Rollout events recorded, by kind (Started, StageAdvanced, Failed, ...)",
        )
        .labelled("kind", self.decisions.iter().map(|(k, n)| (k, *n)));
        let mut hooks = page.family(
            "fledge_operator_hook_runs",
            Kind::Counter,
            "Hook lists whose result was recorded, by list and result (succeeded, failed)",
        );
        for ((list, result), n) in &self.hooks {
            hooks.sample(&[("hook", list), ("result", result)], *n);
        }
        let mut phase = page.family(
            "fledge_operator_rollout_phase",
            Kind::Gauge,
            "1 for each CanaryRollout's current phase, 0 for the others",
        );
        for ((namespace, name), (current, _)) in &self.rollouts {
            for p in fledge_engine::Phase::ALL {
                let p = p.as_str();
                let labels = [("namespace", &**namespace), ("name", name), ("phase", p)];
                phase.sample(&labels, u64::from(p == current));
            }
        }
        let mut weight = page.family(
            "fledge_operator_canary_weight_ratio",
            Kind::Gauge,
            "The share of requests each CanaryRollout's router sends to the canary, 0 to 1",
        );
        for ((namespace, name), (_, w)) in &self.rollouts {
            weight.sample(
                &[("namespace", namespace), ("name", name)],
                f64::from(*w) / 100.0,
            );
        }
        page.family(
            "fledge_operator_leader",
            Kind::Gauge,
            "1 while this replica holds the leader Lease and reconciles",
        )
        .sample(&[], u64::from(self.leader));
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
        let text = t.encode(Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE fledge_operator_reconciles counter\n"));
        let plain = t.encode(Format::PrometheusText);
        assert!(plain.contains("# TYPE fledge_operator_reconciles_total counter\n"));
        assert!(!plain.contains("# EOF"));
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
