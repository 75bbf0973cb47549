//! What crosses between a step and the shell that runs it: the [`Input`]s handed
//! in, the [`Action`]s the shell must carry out, and the [`Event`]s it appends to
//! the rollout's history.

use fledge_spec::NotifyEvent;
use fledge_stats::Observation;
use serde::{Deserialize, Serialize};

use super::{Actor, Command, HookPoint, Timestamp};
use crate::evidence::Evidence;

// === Input ===

/// Something that happened, handed to [`step`](super::step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "camelCase")]
pub enum Input {
    /// Begin the rollout (from `Pending`).
    Start,
    /// Time passed; nothing was measured (durations are checked).
    Tick,
    /// The metric source's cumulative counters, read now. The engine differences
    /// consecutive observations itself and handles counter resets.
    Observe(Observation),
    /// The metric source failed this tick. Never a pass; after
    /// `analysis.maxConsecutiveErrors` in a row the rollout fails.
    MetricsUnavailable {
        /// What went wrong, for the history (no secrets).
        error: String,
    },
    /// The traffic router has not applied the current weight (it is down or
    /// refuses). Never a pass, and it counts towards
    /// `analysis.maxConsecutiveErrors` like a failed metric read; the stage clock
    /// stops until the next observation, and that observation is only a baseline:
    /// a stage is never credited with time or traffic its weight did not have.
    RouteUnapplied {
        /// What went wrong, for the history (no secrets).
        error: String,
    },
    /// The hooks of `hook`, started by [`Action::RunHook`] with the same `attempt`,
    /// finished.
    HookDone {
        /// Which hook list ran.
        hook: HookPoint,
        /// The attempt that asked for it (stale results are ignored).
        attempt: u32,
        /// `None` when every hook succeeded, else what failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Alerts matching the spec's `alerts` are firing (neither silenced nor
    /// inhibited): a running rollout fails, with them as the reason. Ignored in
    /// other phases.
    AlertsFiring {
        /// The firing alerts, at least one.
        alerts: Vec<FiringAlert>,
    },
    /// The rollout's group (lock step) lets it go as far as `stage`: it may enter
    /// stages up to that index, and complete once `stage` is the number of stages.
    /// A stage that is done waits for it.
    GroupHold {
        /// The furthest stage the rollout may enter.
        stage: usize,
    },
    /// An operator's command.
    Command {
        /// What to do.
        command: Command,
        /// Who asked.
        actor: Actor,
    },
}

/// An alert that fires, as the alert source reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FiringAlert {
    /// Its `alertname` label.
    pub name: String,
    /// All its labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// When it started firing (RFC 3339, as the source says).
    pub starts_at: String,
}

// === Action ===

/// Something the shell must do to the world. Every action is idempotent: it states a
/// desired result, so executing it twice (after a crash, or by
/// [`reconcile`](super::reconcile)) is harmless. Hooks run at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Route `canary` percent of the app's requests to the canary and `100 − canary`
    /// to stable, and copy `mirror` percent of the requests stable serves to the
    /// canary (their answers thrown away, their outcomes counted as the canary's).
    SetWeight {
        /// The canary's share, 0–100.
        canary: u8,
        /// The share of stable's requests copied to the canary, 0–100.
        #[serde(default, skip_serializing_if = "super::state::is_zero")]
        mirror: u8,
    },
    /// Make the canary the app's stable version: its version and endpoints replace
    /// the stable ones and receive all traffic; the canary slot is emptied.
    PromoteCanary,
    /// Run the spec's hooks at `hook`, then report with [`Input::HookDone`] (carrying
    /// `attempt`). Only issued when that hook list is not empty.
    RunHook {
        /// Which hook list.
        hook: HookPoint,
        /// The rollout attempt (1 for the first run, +1 per retry).
        attempt: u32,
    },
}

// === Event ===

/// What kind of thing happened, for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// The rollout started.
    Started,
    /// A stage began: its weight is applied.
    StageStarted,
    /// The engine ended a stage: its duration passed with every criterion passing
    /// (or, under `analysis.onNoEvidence: advance`, none showing harm).
    StageAdvanced,
    /// An operator promoted (ended a stage early, or `--full`).
    Promoted,
    /// The promotion waits for the `beforePromotion` hooks.
    PromotionGate,
    /// An operator paused the rollout.
    Paused,
    /// An operator resumed the rollout.
    Resumed,
    /// The canary became the stable version.
    Succeeded,
    /// The rollout was rolled back automatically.
    Failed,
    /// An operator aborted the rollout.
    Aborted,
    /// A failed or aborted rollout started again from stage 0.
    Retried,
    /// The metric source failed (first failure of a streak).
    AnalysisError,
    /// The metric source answers again after failing.
    AnalysisRecovered,
    /// The traffic router failed to apply the current weight (first failure of a
    /// streak); the stage clock stops.
    RouteUnapplied,
    /// The traffic router applies the weight again; the stage clock runs on.
    RouteApplied,
    /// A hook failed.
    HookFailed,
}

impl EventKind {
    /// The `notifications[].events` name this kind is announced under, if any.
    pub fn notify_event(self) -> Option<NotifyEvent> {
        Some(match self {
            EventKind::Started => NotifyEvent::Started,
            EventKind::StageStarted => NotifyEvent::StageStarted,
            EventKind::Paused => NotifyEvent::Paused,
            EventKind::Resumed => NotifyEvent::Resumed,
            EventKind::Succeeded => NotifyEvent::Succeeded,
            EventKind::Failed => NotifyEvent::Failed,
            EventKind::Aborted => NotifyEvent::Aborted,
            EventKind::Retried => NotifyEvent::Retried,
            EventKind::StageAdvanced
            | EventKind::Promoted
            | EventKind::PromotionGate
            | EventKind::AnalysisError
            | EventKind::AnalysisRecovered
            | EventKind::RouteUnapplied
            | EventKind::RouteApplied
            | EventKind::HookFailed => return None,
        })
    }
}

/// One entry of a rollout's history: a decision and what it was based on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When (milliseconds since the Unix epoch).
    pub at: Timestamp,
    /// What happened.
    pub kind: EventKind,
    /// Who decided.
    pub actor: Actor,
    /// The stage it concerns (0-based), when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_index: Option<usize>,
    /// The attempt it belongs to (1 for the first run, +1 per retry; 0 before the
    /// start).
    #[serde(default)]
    pub attempt: u32,
    /// One human sentence, e.g. `error_rate 4.8% (n=1,204) ≥ 0.5% at stage 1/3 (20%)`.
    pub message: String,
    /// For decisions: the evidence of each criterion that decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}
