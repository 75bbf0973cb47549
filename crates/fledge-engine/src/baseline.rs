//! Emulations of the analysis that Flagger and Argo Rollouts do by default, as
//! simulator controllers, so that fledge's judge can be measured against them in the
//! same harness on the same traffic (JUDGE.md §4.8 (c), §5.6).
//!
//! Both compare one query result per interval with a fixed bound and roll back after
//! a number of failed checks:
//!
//! * **Flagger** (`analysis.interval: 1m`, `threshold: 5`, the built-in
//!   `request-success-rate` ≥ 99% over the last minute, optionally the built-in
//!   `request-duration` P99 ≤ 500 ms): every interval the scheduler first checks
//!   whether failed checks already reached the threshold (and rolls back), then runs
//!   the analysis; a window with no requests is a failed check ("no values found").
//!   With the weight held this means a rollback at the 6th interval.
//! * **Argo Rollouts** (the documented success-rate `AnalysisTemplate`: `interval:
//!   5m`, `failureLimit: 3`, `successCondition: result[0] >= 0.99`): the first
//!   measurement is taken at once, then one every interval; the run fails when failed
//!   measurements exceed the limit (`failed > failureLimit`), i.e. at the 4th. A query
//!   with no data is an error measurement; more than `consecutiveErrorLimit` (4) in a
//!   row fail the run.

use fledge_stats::{ArmCounters, Observation};

use crate::sim::{Control, Controller, Outcome};

/// Flagger's default canary analysis, emulated.
#[derive(Debug, Clone)]
pub struct Flagger {
    /// Seconds between checks.
    pub interval_seconds: f64,
    /// Failed checks that trigger the rollback.
    pub threshold: u32,
    /// Minimum success rate in percent over the last interval.
    pub min_success_percent: f64,
    /// Maximum P99 latency in seconds over the last interval, when checked.
    pub max_p99_seconds: Option<f64>,
    /// Canary weight (0–1): held, or the first step of a progression.
    pub weight: f64,
    /// `(step_weight, max_weight)` to progress the weight after each passing check
    /// and promote after a passing check at the max; `None` holds the weight.
    pub progression: Option<(f64, f64)>,
    failed_checks: u32,
    next_check: f64,
    window_start: Option<ArmCounters>,
}

impl Flagger {
    /// The default: interval 1m, threshold 5, success rate ≥ 99%, weight held.
    pub fn default_at(weight: f64) -> Self {
        Self {
            interval_seconds: 60.0,
            threshold: 5,
            min_success_percent: 99.0,
            max_p99_seconds: None,
            weight,
            progression: None,
            failed_checks: 0,
            next_check: 60.0,
            window_start: None,
        }
    }

    /// Also checks the built-in request duration: P99 ≤ `seconds`.
    pub fn with_max_p99(mut self, seconds: f64) -> Self {
        self.max_p99_seconds = Some(seconds);
        self
    }

    /// Progresses the weight by `step` after each passing check up to `max`.
    pub fn with_progression(mut self, step: f64, max: f64) -> Self {
        self.progression = Some((step, max));
        self
    }

    fn check(&self, window: &ArmCounters) -> bool {
        if window.requests == 0 {
            return false;
        }
        let success = 100.0 * (1.0 - window.errors as f64 / window.requests as f64);
        if success < self.min_success_percent {
            return false;
        }
        match (self.max_p99_seconds, window.latency.quantile(0.99)) {
            (Some(max), Some(p99)) => p99 <= max,
            (Some(_), None) => window.latency.total() > 0,
            (None, _) => true,
        }
    }
}

impl Controller for Flagger {
    fn initial_weight(&self) -> f64 {
        self.weight
    }

    fn observe(&mut self, now: f64, obs: &Observation) -> Control {
        let start = self.window_start.get_or_insert_with(ArmCounters::default);
        let hold = Control {
            weight: self.weight,
            outcome: None,
        };
        if now + 1e-9 < self.next_check {
            return hold;
        }
        self.next_check += self.interval_seconds;
        // The scheduler checks the failure count before it runs the analysis.
        if self.failed_checks >= self.threshold {
            return Control {
                weight: 0.0,
                outcome: Some(Outcome::Failed),
            };
        }
        let window = obs.canary.delta_since(start);
        self.window_start = Some(obs.canary.clone());
        if !self.check(&window) {
            self.failed_checks += 1;
            return hold;
        }
        if let Some((step, max)) = self.progression {
            if self.weight >= max - 1e-9 {
                return Control {
                    weight: 1.0,
                    outcome: Some(Outcome::Succeeded),
                };
            }
            self.weight = (self.weight + step).min(max);
        }
        Control {
            weight: self.weight,
            outcome: None,
        }
    }
}

/// Argo Rollouts' documented success-rate analysis, emulated.
#[derive(Debug, Clone)]
pub struct Argo {
    /// Seconds between measurements.
    pub interval_seconds: f64,
    /// Failed measurements tolerated: the run fails at `failure_limit + 1`.
    pub failure_limit: u32,
    /// Error (no-data) measurements in a row tolerated.
    pub consecutive_error_limit: u32,
    /// `successCondition: result[0] >= min_success` (a fraction).
    pub min_success: f64,
    /// Canary weight (0–1), held.
    pub weight: f64,
    failed: u32,
    consecutive_errors: u32,
    next_measurement: Option<f64>,
    window_start: Option<ArmCounters>,
}

impl Argo {
    /// The documented template: interval 5m, failureLimit 3, success rate ≥ 99%.
    pub fn documented_at(weight: f64) -> Self {
        Self {
            interval_seconds: 300.0,
            failure_limit: 3,
            consecutive_error_limit: 4,
            min_success: 0.99,
            weight,
            failed: 0,
            consecutive_errors: 0,
            next_measurement: None,
            window_start: None,
        }
    }
}

impl Controller for Argo {
    fn initial_weight(&self) -> f64 {
        self.weight
    }

    fn observe(&mut self, now: f64, obs: &Observation) -> Control {
        let hold = Control {
            weight: self.weight,
            outcome: None,
        };
        let fail = Control {
            weight: 0.0,
            outcome: Some(Outcome::Failed),
        };
        let start = self.window_start.get_or_insert_with(ArmCounters::default);
        // The first measurement is taken as soon as the analysis starts.
        let due = *self.next_measurement.get_or_insert(now);
        if now + 1e-9 < due {
            return hold;
        }
        self.next_measurement = Some(due + self.interval_seconds);
        let window = obs.canary.delta_since(start);
        self.window_start = Some(obs.canary.clone());
        if window.requests == 0 {
            self.consecutive_errors += 1;
            if self.consecutive_errors > self.consecutive_error_limit {
                return fail;
            }
            return hold;
        }
        self.consecutive_errors = 0;
        let success = 1.0 - window.errors as f64 / window.requests as f64;
        if success < self.min_success {
            self.failed += 1;
            if self.failed > self.failure_limit {
                return fail;
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canary(requests: u64, errors: u64) -> Observation {
        Observation {
            canary: ArmCounters {
                requests,
                errors,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Feeds `c` one second at a time of a canary failing all its 200 rps, for at
    /// most `limit` seconds; returns the outcome and the second it came at.
    fn run_all_failing(c: &mut impl Controller, limit: u64) -> (Option<Outcome>, u64) {
        let mut outcome = None;
        let mut t = 0;
        while outcome.is_none() && t < limit {
            t += 1;
            outcome = c.observe(t as f64, &canary(200 * t, 200 * t)).outcome;
        }
        (outcome, t)
    }

    #[test]
    fn flagger_rolls_back_at_the_sixth_interval() {
        let mut f = Flagger::default_at(0.2);
        assert_eq!(run_all_failing(&mut f, 1000), (Some(Outcome::Failed), 360));
    }

    #[test]
    fn flagger_counts_no_data_as_a_failed_check() {
        let mut f = Flagger::default_at(0.2);
        for t in 1..=300 {
            assert_eq!(f.observe(t as f64, &canary(0, 0)).outcome, None);
        }
        assert_eq!(f.failed_checks, 5);
    }

    #[test]
    fn argo_fails_at_the_fourth_failed_measurement() {
        let mut a = Argo::documented_at(0.2);
        assert_eq!(run_all_failing(&mut a, 2000), (Some(Outcome::Failed), 901));
    }
}
