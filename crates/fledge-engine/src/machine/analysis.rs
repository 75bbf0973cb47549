//! Evidence bookkeeping: how the spec's analysis settings become judges, how each
//! observation is differenced and fed to the current stage's judges, and what the
//! latest analysis allows (a failure, the spent error budget, or the end of a stage).
//! A failed metric read is never a pass; enough of them in a row fail the rollout.

use fledge_spec::{AnalysisMethod, Dimension, Metric, NoEvidencePolicy, RolloutSpec, Stage};
use fledge_stats::Observation;

use super::step::Machine;
use super::{Actor, EventKind, Phase, TimedObservation};
use crate::evidence::{
    AnalysisReport, ArmSample, CriterionStatus, Evidence, JudgeMethod, ValueUnit, format_count,
};
use crate::judge::{CriterionContext, CriterionJudge, JudgeSettings, TickDelta};

// === Settings ===

/// The judge settings `spec.analysis` asks for, for a stage with `criteria_count`
/// criteria.
pub fn judge_settings(spec: &RolloutSpec, criteria_count: usize) -> JudgeSettings {
    let a = &spec.analysis;
    JudgeSettings {
        method: match a.method {
            AnalysisMethod::Threshold => JudgeMethod::Threshold,
            AnalysisMethod::Sequential => JudgeMethod::Sequential,
        },
        min_requests: a.min_requests,
        alpha: a.alpha,
        criteria_count: criteria_count.max(1),
        tolerance: a.tolerance.clone(),
    }
}

/// The unit a metric's values are in, custom metrics resolved from `spec.metrics`.
pub fn metric_unit(spec: &RolloutSpec, metric: &Metric) -> ValueUnit {
    let dimension = match metric {
        Metric::Custom(name) => spec
            .metrics
            .get(name)
            .map_or(Dimension::None, |d| d.dimension()),
        m => m.dimension(),
    };
    dimension.into()
}

/// What each judge of `stage` needs to know about its criterion, in spec order.
pub(super) fn contexts<'s>(
    spec: &'s RolloutSpec,
    stage: &'s Stage,
    settings: &'s JudgeSettings,
) -> Vec<CriterionContext<'s>> {
    stage
        .success_criteria
        .iter()
        .map(|c| CriterionContext {
            criterion: c,
            unit: metric_unit(spec, &c.metric),
            settings,
        })
        .collect()
}

/// Whether `state` may be judged as often as evidence arrives rather than once per
/// `analysis.interval`: its stage runs (progressing or paused), it has something to
/// judge (a criterion or the error budget), and every criterion of the stage is
/// judged by an anytime-valid sequential test. An e-process keeps its false-abort
/// bound at any stopping time, so looking at it after every batch of requests
/// instead of every second costs no extra false aborts. A threshold judge (the
/// `threshold` method, or the fallback for a criterion with no sequential form)
/// re-tests its window at every look, so such a stage keeps the spec's interval.
pub fn judged_as_evidence_arrives(spec: &RolloutSpec, state: &super::RolloutState) -> bool {
    if !state.phase.runs_stages() {
        return false;
    }
    let Some(stage) = spec.stages.get(state.stage_index) else {
        return false;
    };
    if stage.success_criteria.is_empty() {
        return spec.error_budget.is_some();
    }
    let settings = judge_settings(spec, stage.success_criteria.len());
    contexts(spec, stage, &settings)
        .iter()
        .all(|ctx| CriterionJudge::new(ctx).method() == JudgeMethod::Sequential)
}

// === impl Machine ===

impl Machine<'_> {
    /// Takes the metric source's cumulative counters: the first of an attempt is a
    /// baseline, each later one is judged as the difference from its predecessor.
    pub(super) fn observe(&mut self, mut obs: Observation) {
        crate::judge::sanitize_observation(&mut obs);
        match self.st.phase {
            Phase::Pending => {
                // A baseline, so the first tick after the start has a delta.
                self.st.last_observation = Some(TimedObservation {
                    at: self.now,
                    observation: obs,
                });
                return;
            }
            Phase::Progressing | Phase::Paused => {}
            _ => return,
        }
        if self.st.consecutive_metric_errors > 0 {
            let message = format!(
                "metrics available again after {} failed reads",
                self.st.consecutive_metric_errors
            );
            self.st.consecutive_metric_errors = 0;
            self.event(
                EventKind::AnalysisRecovered,
                Actor::Engine,
                message,
                Vec::new(),
            );
        }
        let previous = self.st.last_observation.replace(TimedObservation {
            at: self.now,
            observation: obs,
        });
        let Some(previous) = previous else {
            return;
        };
        let Some(current) = self.st.last_observation.as_ref() else {
            return;
        };
        let delta = TickDelta::between(
            &previous.observation,
            previous.at,
            &current.observation,
            self.now,
        );
        self.st.canary_requests = self
            .st
            .canary_requests
            .saturating_add(delta.canary.requests);
        self.st.canary_failures = self.st.canary_failures.saturating_add(delta.canary.errors);

        // Judges run only once the stage has started (its weight applied).
        if self.st.stage_started_at.is_some() {
            self.st.stage_canary_requests = self
                .st
                .stage_canary_requests
                .saturating_add(delta.canary.requests);
            let spec = self.spec;
            let stage = &spec.stages[self.st.stage_index];
            let settings = judge_settings(spec, stage.success_criteria.len());
            let ctxs = contexts(spec, stage, &settings);
            if self.st.judges.len() != ctxs.len() {
                // A state written for another spec version: start the window over
                // rather than pair judges with the wrong criteria.
                self.st.judges = ctxs.iter().map(CriterionJudge::new).collect();
            }
            let criteria: Vec<Evidence> = self
                .st
                .judges
                .iter_mut()
                .zip(&ctxs)
                .map(|(j, ctx)| j.update(ctx, &delta))
                .collect();
            self.st.analysis = Some(AnalysisReport {
                at: self.now,
                stage_index: self.st.stage_index,
                criteria,
            });
            let failed: Vec<Evidence> = self
                .st
                .analysis
                .iter()
                .flat_map(|a| &a.criteria)
                .filter(|e| e.status == CriterionStatus::Fail)
                .cloned()
                .collect();
            if let Some(first) = failed.first() {
                let reason = first.summary.clone();
                self.fail(reason, failed);
                return;
            }
        }

        self.check_error_budget();
    }

    /// Fails the rollout once the canary has failed more requests than
    /// `errorBudget` allows in this attempt.
    fn check_error_budget(&mut self) {
        if let Some(budget) = self.spec.error_budget
            && self.st.canary_failures > budget
        {
            let reason = format!(
                "error budget spent: the canary failed {} requests (budget {})",
                format_count(self.st.canary_failures),
                format_count(budget)
            );
            let evidence = Evidence {
                criterion: format!("errorBudget: {budget}"),
                metric: "canary_failed_requests".to_string(),
                method: JudgeMethod::Threshold,
                status: CriterionStatus::Fail,
                unit: ValueUnit::Plain,
                canary: ArmSample {
                    value: Some(self.st.canary_failures as f64),
                    requests: self.st.canary_requests,
                    bad: Some(self.st.canary_failures),
                },
                stable: None,
                threshold: Some(budget as f64),
                min_requests: 0,
                sequential: None,
                summary: reason.clone(),
            };
            self.fail(reason, vec![evidence]);
        }
    }

    pub(super) fn metrics_unavailable(&mut self, error: &str) {
        if !self.st.phase.runs_stages() {
            return;
        }
        self.failed_read(
            EventKind::AnalysisError,
            false,
            |n| format!("metrics unavailable for {n} reads in a row: {error}"),
            |limit| {
                format!(
                    "metrics unavailable: {error} (the rollout fails after {limit} failed reads in a row)"
                )
            },
        );
    }

    /// Counts one more analysis read that failed. Once
    /// `analysis.maxConsecutiveErrors` have failed in a row the rollout fails, with
    /// `reason(count)`; before that, the first failure of a streak (or any, when
    /// `announce`) is recorded as `kind` with `message(limit)`.
    pub(super) fn failed_read(
        &mut self,
        kind: EventKind,
        announce: bool,
        reason: impl FnOnce(u32) -> String,
        message: impl FnOnce(u32) -> String,
    ) {
        self.st.consecutive_metric_errors = self.st.consecutive_metric_errors.saturating_add(1);
        let n = self.st.consecutive_metric_errors;
        let limit = self.spec.analysis.max_consecutive_errors.max(1);
        if n >= limit {
            self.fail(reason(n), Vec::new());
        } else if announce || n == 1 {
            self.event(kind, Actor::Engine, message(limit), Vec::new());
        }
    }

    /// Whether the latest analysis lets the current stage end.
    pub(super) fn criteria_allow_advance(&self) -> bool {
        let stage = self.stage();
        if stage.success_criteria.is_empty() {
            return true;
        }
        if self.st.consecutive_metric_errors > 0 {
            return false;
        }
        // Evidence carried over from earlier stages (sequential judges) does not
        // stand in for this stage's own traffic: "missing data is never a pass".
        if self.st.stage_canary_requests < self.spec.analysis.min_requests {
            return false;
        }
        let Some(a) = &self.st.analysis else {
            return false;
        };
        let undecided_ok = self.spec.analysis.on_no_evidence == NoEvidencePolicy::Advance;
        a.stage_index == self.st.stage_index
            && a.criteria.len() == stage.success_criteria.len()
            && a.criteria.iter().all(|e| match e.status {
                CriterionStatus::Pass => true,
                CriterionStatus::Undecided => undecided_ok,
                CriterionStatus::Fail | CriterionStatus::NotEnoughData => false,
            })
    }
}
