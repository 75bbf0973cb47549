//! What the engine remembers about a rollout: its [`Phase`] and the [`RolloutState`]
//! persisted after every step, enough to resume exactly after a restart.

use std::fmt;

use fledge_stats::Observation;
use serde::{Deserialize, Serialize};

use super::{Actor, Gate, Timestamp};
use crate::evidence::AnalysisReport;
use crate::judge::CriterionJudge;

// === Phase ===

/// Where a rollout is in its life.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Phase {
    /// Created, not started.
    #[default]
    Pending,
    /// Moving through its stages.
    Progressing,
    /// Held in its stage by an operator: criteria are still judged (and can fail the
    /// rollout), but no stage advances by itself.
    Paused,
    /// The canary became the app's stable version.
    Succeeded,
    /// Rolled back automatically (a criterion, the error budget, the metric source or
    /// a gating hook failed). The canary gets 0% until a retry.
    Failed,
    /// Rolled back by an operator. The canary gets 0% until a retry.
    Aborted,
}

impl Phase {
    /// Every phase, in the order of a rollout's life.
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Progressing,
        Phase::Paused,
        Phase::Succeeded,
        Phase::Failed,
        Phase::Aborted,
    ];

    /// The phase named `name`, in any case (`failed`, `Failed`).
    pub fn from_name(name: &str) -> Option<Phase> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(name))
    }

    /// What a phase name must be, for error messages.
    pub const EXPECTED: &str = "Pending, Progressing, Paused, Succeeded, Failed or Aborted";

    /// Whether the rollout is over (until a retry, for `Failed` and `Aborted`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Aborted)
    }

    /// Whether the rollout still holds its app (one active rollout per app).
    pub fn is_active(self) -> bool {
        !self.is_terminal()
    }

    /// Whether the rollout is running a stage (moving, or held by a pause): the
    /// phases in which observations are judged and the stage clock runs.
    pub(crate) fn runs_stages(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused)
    }

    /// Whether the rollout was rolled back (the canary must get 0%).
    pub fn is_rolled_back(self) -> bool {
        matches!(self, Phase::Failed | Phase::Aborted)
    }

    /// The phase's name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Aborted => "Aborted",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === RolloutState ===

/// An observation with the time it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimedObservation {
    /// When it was taken.
    pub at: Timestamp,
    /// The cumulative counters.
    pub observation: Observation,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// When.
    pub at: Timestamp,
    /// Who decided.
    pub actor: Actor,
    /// Why, in one sentence.
    pub reason: String,
}

/// Everything the engine remembers about one rollout: persisted as JSON after every
/// step, and enough to resume exactly after a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// Where the rollout is in its life.
    pub phase: Phase,
    /// The current stage (0-based).
    pub stage_index: usize,
    /// The canary's share of requests now, 0–100.
    pub canary_weight: u8,
    /// The share of the requests served by stable that are copied to the canary
    /// now, 0–100 (the stage's `mirror`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary_mirror: u8,
    /// 1 for the first run, +1 per retry; 0 while pending.
    pub attempt: u32,
    /// When the current attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the current stage started (its weight was applied); `None` while a
    /// `beforeRollout` gate holds stage 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_started_at: Option<Timestamp>,
    /// Milliseconds spent paused in the current stage, pauses that ended only.
    #[serde(default)]
    pub stage_paused_ms: u64,
    /// When the current pause began, while `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<Timestamp>,
    /// When the router was first seen not to apply the current weight, while it
    /// still has not (and the rollout is not paused): the stage clock is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_unapplied_since: Option<Timestamp>,
    /// Hooks the rollout waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
    /// One judge per success criterion of the current stage, in spec order.
    #[serde(default)]
    pub judges: Vec<CriterionJudge>,
    /// The latest successful observation, to difference the next one against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observation: Option<TimedObservation>,
    /// The latest analysis of the current stage's criteria.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisReport>,
    /// Metric reads that failed in a row.
    #[serde(default)]
    pub consecutive_metric_errors: u32,
    /// Canary requests seen in this attempt.
    #[serde(default)]
    pub canary_requests: u64,
    /// Failed canary requests seen in this attempt (what `errorBudget` limits).
    #[serde(default)]
    pub canary_failures: u64,
    /// Canary requests judged in the current stage: a stage with criteria advances
    /// only after `analysis.minRequests` of them, whatever its judges carried over.
    #[serde(default)]
    pub stage_canary_requests: u64,
    /// How the attempt ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// For a member of a rollout group moving in lock step: the furthest stage it
    /// may enter (the number of stages lets it complete). `None` outside a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_hold: Option<usize>,
    /// Whether the current stage is done (its time and criteria allow moving on)
    /// and the rollout waits only for its group.
    #[serde(default, skip_serializing_if = "is_false")]
    pub held_by_group: bool,
}

impl RolloutState {
    /// A rollout that has not started.
    pub fn pending() -> Self {
        Self::default()
    }

    /// Whether its group lets it enter the stage after the current one (or, from
    /// the last stage, complete).
    pub fn group_allows_next(&self) -> bool {
        self.group_hold.is_none_or(|h| self.stage_index < h)
    }
}

/// For `skip_serializing_if`: `false` is left out.
pub(super) fn is_false(b: &bool) -> bool {
    !*b
}

/// For `skip_serializing_if`: a share of 0 is left out.
pub(super) fn is_zero(n: &u8) -> bool {
    *n == 0
}
