//! The rollout state machine: `(spec, state, input, now) → (state, actions, events)`.
//!
//! ```text
//! [Pending] → [Progressing: stage 0 … n] → [Succeeded]      (canary is the new stable)
//!                  ↕ pause / resume
//!               [Paused]
//! [Progressing|Paused] → [Failed]    automatic: a criterion, the error budget, the
//!                                    metric source or a gating hook failed
//! [Pending|Progressing|Paused] → [Aborted]   operator abort
//! [Failed|Aborted] → retry → [Progressing: stage 0]
//! ```
//!
//! [`step`] is pure: no I/O, no clock (the caller hands in `now`), no randomness. The
//! effectful shell (the server's controller) persists the returned state, then
//! executes the returned [`Action`]s and records the [`Event`]s. [`reconcile`] gives
//! the actions that make the world match a persisted state, for restarts and for
//! every tick ("reconcile, don't remember").
//!
//! # Ordering of concurrent inputs: abort wins
//!
//! Inputs to one rollout are serialised: the shell loads the state, calls [`step`],
//! and stores the result with optimistic concurrency (compare-and-swap on a version);
//! a step whose store fails is discarded *with its actions* and retried on the fresh
//! state. Actions run only after their state is stored. Hence any two inputs (an
//! operator's abort and promote, or an abort and the engine's own tick) take effect
//! in one order, and:
//!
//! * the canary is promoted only by the step that moves the phase to `Succeeded`,
//!   which issues [`Action::PromoteCanary`]; once `Succeeded`, abort is refused;
//! * once `Aborted` or `Failed`, every promote is refused (409), and ticks are
//!   ignored: the weight stays 0 until a retry;
//! * a promote that has not completed the final promotion does not protect the
//!   canary: a manual promote of a non-final stage only moves to the next stage, and
//!   a promotion waiting for its `beforePromotion` gate hooks is cancelled by an abort
//!   that arrives first (the late gate result is then ignored). Pausing does not
//!   cancel a promotion already waiting for its gate: only abort does.
//!
//! # Observations
//!
//! The first observation of an attempt (and one taken while pending) is only a
//! baseline; each later one is differenced against its predecessor into a
//! [`TickDelta`] and fed to the current stage's judges (once the stage's weight is
//! applied). Criteria are judged while paused too: a paused rollout still fails on
//! evidence of harm, it only does not advance. A metric-source failure blocks
//! advancement until the next successful read.
//!
//! # Invariants (checked by `tests/properties.rs` after every step)
//!
//! * `Failed` and `Aborted` route 0% to the canary, and stay so until `retry`.
//! * Stages are visited in order, one at a time (or jumped to 100% by `promote --full`).
//! * A stage advances only after its duration (excluding paused time) with every
//!   criterion passing on the latest tick, or by an operator's promote.
//! * A `Fail` verdict fails the rollout in the same step.
//! * Paused time never counts toward a stage's duration.

use std::fmt;

use fledge_spec::{
    AnalysisMethod, Dimension, Hook, Metric, NoEvidencePolicy, NotifyEvent, RolloutSpec, Stage,
};
use fledge_stats::Observation;
use serde::{Deserialize, Serialize};

use crate::evidence::{
    AnalysisReport, ArmSample, CriterionStatus, Evidence, JudgeMethod, ValueUnit, format_count,
};
use crate::judge::{CriterionContext, CriterionJudge, JudgeSettings, TickDelta};

// === Timestamp ===

/// A point in time: milliseconds since the Unix epoch, handed in by the caller.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The point `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self`; 0 when `earlier` is not earlier (a clock
    /// that stepped back, e.g. after a fail-over to another machine).
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }

    /// The point `ms` milliseconds later (saturating).
    pub fn plus_millis(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }
}

// === Phase, Actor, Command ===

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
    /// Whether the rollout is over (until a retry, for `Failed` and `Aborted`).
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Aborted)
    }

    /// Whether the rollout still holds its app (one active rollout per app).
    pub fn is_active(self) -> bool {
        !self.is_terminal()
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

/// Who made a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "camelCase")]
pub enum Actor {
    /// The engine itself (judge, durations, budgets).
    Engine,
    /// An operator, by identity (token name, user).
    Operator(String),
}

impl Actor {
    /// An operator by name.
    pub fn operator(name: impl Into<String>) -> Self {
        Actor::Operator(name.into())
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Engine => f.write_str("engine"),
            Actor::Operator(name) => f.write_str(name),
        }
    }
}

/// An operator's action on a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    /// End the current stage now (`full: false`), or jump to 100% and make the canary
    /// stable (`full: true`). Allowed while `Progressing` or `Paused`.
    Promote {
        /// `promote --full`.
        #[serde(default)]
        full: bool,
    },
    /// Roll back now: the canary gets 0%. Allowed while `Pending`, `Progressing` or
    /// `Paused`.
    Abort {
        /// Why, in the operator's words.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Hold the current stage. Allowed while `Progressing`.
    Pause,
    /// Continue after a pause. Allowed while `Paused`.
    Resume,
    /// Start again from stage 0. Allowed while `Failed` or `Aborted`.
    Retry,
}

impl Command {
    /// The command's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Promote { full: false } => "promote",
            Command::Promote { full: true } => "promote --full",
            Command::Abort { .. } => "abort",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Retry => "retry",
        }
    }

    /// Whether the command is allowed in `phase` (a pending promotion gate aside).
    pub fn allowed_in(&self, phase: Phase) -> bool {
        use Phase::*;
        match self {
            Command::Promote { .. } => matches!(phase, Progressing | Paused),
            Command::Abort { .. } => matches!(phase, Pending | Progressing | Paused),
            Command::Pause => phase == Progressing,
            Command::Resume => phase == Paused,
            Command::Retry => matches!(phase, Failed | Aborted),
        }
    }
}

// === Inputs, actions, events ===

/// A point of a rollout's life where the spec's hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "point", rename_all = "camelCase")]
pub enum HookPoint {
    /// `hooks.beforeRollout`: before any traffic moves. A gate: the first stage's
    /// weight is applied only after they succeed; a failure fails the rollout.
    BeforeRollout,
    /// `hooks.eachStage`: after a stage's weight is applied. A failure fails the
    /// rollout.
    EachStage {
        /// The stage that started (0-based).
        #[serde(rename = "stageIndex")]
        stage_index: usize,
    },
    /// `hooks.beforePromotion`: a gate before the canary becomes stable; a failure
    /// fails the rollout.
    BeforePromotion,
    /// `hooks.afterPromotion`: after the canary became stable. Failures are recorded.
    AfterPromotion,
    /// `hooks.afterRollback`: after traffic is back on stable. Failures are recorded.
    AfterRollback,
}

impl HookPoint {
    /// The name of the spec's hook list.
    pub fn list_name(self) -> &'static str {
        match self {
            HookPoint::BeforeRollout => "beforeRollout",
            HookPoint::EachStage { .. } => "eachStage",
            HookPoint::BeforePromotion => "beforePromotion",
            HookPoint::AfterPromotion => "afterPromotion",
            HookPoint::AfterRollback => "afterRollback",
        }
    }

    /// Whether the rollout fails when these hooks fail.
    pub fn is_gate(self) -> bool {
        matches!(
            self,
            HookPoint::BeforeRollout | HookPoint::EachStage { .. } | HookPoint::BeforePromotion
        )
    }
}

/// Something that happened, handed to [`step`].
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
    /// An operator's command.
    Command {
        /// What to do.
        command: Command,
        /// Who asked.
        actor: Actor,
    },
}

/// Something the shell must do to the world. Every action is idempotent: it states a
/// desired result, so executing it twice (after a crash, or by [`reconcile`]) is
/// harmless. Hooks run at least once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Route `canary` percent of the app's requests to the canary and `100 − canary`
    /// to stable.
    SetWeight {
        /// The canary's share, 0–100.
        canary: u8,
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

/// The result of one [`step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The new state, to persist before executing `actions`.
    pub state: RolloutState,
    /// What the shell must do, in order.
    pub actions: Vec<Action>,
    /// What to append to the history, in order.
    pub events: Vec<Event>,
}

/// Why an input could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The command (or `start`) is not allowed in the rollout's phase. The API
    /// answers 409.
    #[error("cannot {command} a rollout that is {phase}")]
    NotAllowed {
        /// The rollout's phase.
        phase: Phase,
        /// The refused command, as the CLI spells it (or `start`).
        command: &'static str,
    },
    /// The rollout waits for gating hooks (`beforeRollout` before any traffic moves,
    /// `beforePromotion` before the canary becomes stable), so a promote cannot run
    /// now. The API answers 409.
    #[error("cannot {command}: the {hooks} hooks are still running")]
    HooksPending {
        /// The refused command.
        command: &'static str,
        /// The hook list that runs (`beforeRollout` or `beforePromotion`).
        hooks: &'static str,
    },
    /// The spec has no stages (validation refuses such a spec).
    #[error("the rollout spec has no stages")]
    NoStages,
    /// The persisted state does not fit the spec (it names a stage the spec lacks).
    #[error("the rollout state is at stage {index} but the spec has {count} stages")]
    StageOutOfRange {
        /// The state's stage index.
        index: usize,
        /// The spec's number of stages.
        count: usize,
    },
}

// === State ===

/// A promotion or a start held until hooks succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "gate", rename_all = "camelCase")]
pub enum Gate {
    /// The first stage's weight waits for `hooks.beforeRollout`.
    BeforeRollout {
        /// When the hooks were started.
        since: Timestamp,
    },
    /// The promotion waits for `hooks.beforePromotion`.
    BeforePromotion {
        /// Who asked for the promotion.
        requested_by: Actor,
        /// Whether it was `promote --full`.
        full: bool,
        /// When it was asked for.
        since: Timestamp,
    },
}

/// How long past the sum of its hooks' own timeouts a gate may wait for their
/// result before the rollout fails: covers queueing and a shell restart, and bounds
/// the wait if a result is lost.
pub const GATE_GRACE_MS: u64 = 60_000;

// === impl Gate ===

impl Gate {
    /// When the gate's hooks were started.
    pub fn since(&self) -> Timestamp {
        match self {
            Gate::BeforeRollout { since } | Gate::BeforePromotion { since, .. } => *since,
        }
    }

    /// The hook list the gate waits for.
    pub fn hook(&self) -> HookPoint {
        match self {
            Gate::BeforeRollout { .. } => HookPoint::BeforeRollout,
            Gate::BeforePromotion { .. } => HookPoint::BeforePromotion,
        }
    }
}

/// The longest `spec` lets the hooks at `hook` take, run one after the other, plus
/// [`GATE_GRACE_MS`].
pub fn gate_deadline_ms(spec: &RolloutSpec, hook: HookPoint) -> u64 {
    let h = &spec.hooks;
    let list = match hook {
        HookPoint::BeforeRollout => &h.before_rollout,
        HookPoint::EachStage { .. } => &h.each_stage,
        HookPoint::BeforePromotion => &h.before_promotion,
        HookPoint::AfterPromotion => &h.after_promotion,
        HookPoint::AfterRollback => &h.after_rollback,
    };
    list.iter()
        .map(|hook| match hook {
            Hook::Exec(e) => e.timeout,
            Hook::Http(h) => h.timeout,
        })
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .fold(GATE_GRACE_MS, u64::saturating_add)
}

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
}

impl RolloutState {
    /// A rollout that has not started.
    pub fn pending() -> Self {
        Self::default()
    }

    /// Milliseconds the current stage has run, paused time excluded.
    pub fn stage_active_ms(&self, now: Timestamp) -> u64 {
        let Some(start) = self.stage_started_at else {
            return 0;
        };
        let open_pause = self.paused_at.map_or(0, |p| now.millis_since(p));
        let unapplied = self
            .route_unapplied_since
            .map_or(0, |u| now.millis_since(u));
        now.millis_since(start)
            .saturating_sub(self.stage_paused_ms)
            .saturating_sub(open_pause)
            .saturating_sub(unapplied)
    }
}

impl RolloutState {
    /// The operator commands [`step`] would accept now, for the UI and CLI to offer
    /// (`promote` here stands for both `promote` and `promote --full`).
    pub fn allowed_commands(&self) -> Vec<&'static str> {
        let all = [
            Command::Promote { full: false },
            Command::Abort { reason: None },
            Command::Pause,
            Command::Resume,
            Command::Retry,
        ];
        all.iter()
            .filter(|c| c.allowed_in(self.phase))
            .filter(|c| !(matches!(c, Command::Promote { .. }) && self.gate.is_some()))
            .map(Command::name)
            .collect()
    }

    /// How long the current stage still has to run (paused time excluded) before it
    /// may end, for progress displays; `None` when it waits for a manual promote, or
    /// the rollout is not running a stage. Criteria may hold it longer.
    pub fn stage_remaining_ms(&self, spec: &RolloutSpec, now: Timestamp) -> Option<u64> {
        if !matches!(self.phase, Phase::Progressing | Phase::Paused) {
            return None;
        }
        self.stage_started_at?;
        let stage = spec.stages.get(self.stage_index)?;
        let last = self.stage_index + 1 == spec.stages.len();
        let total = match stage.duration {
            Some(d) if !last || stage.promote => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            None if last && stage.promote => 0,
            _ => return None,
        };
        Some(total.saturating_sub(self.stage_active_ms(now)))
    }
}

/// The actions that make the world match `state`: the shell runs them after a
/// restart before anything else, and may run them every tick.
pub fn reconcile(state: &RolloutState) -> Vec<Action> {
    match state.phase {
        Phase::Pending => Vec::new(),
        Phase::Progressing | Phase::Paused => vec![Action::SetWeight {
            canary: state.canary_weight,
        }],
        Phase::Succeeded => vec![Action::PromoteCanary],
        Phase::Failed | Phase::Aborted => vec![Action::SetWeight { canary: 0 }],
    }
}

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
    match dimension {
        Dimension::Ratio => ValueUnit::Ratio,
        Dimension::Seconds => ValueUnit::Seconds,
        Dimension::PerSecond => ValueUnit::PerSecond,
        Dimension::None => ValueUnit::Plain,
    }
}

/// Applies one input to a rollout.
///
/// Pure: the same `(spec, state, input, now)` always gives the same result. Errors
/// leave the rollout unchanged ([`EngineError::NotAllowed`] maps to HTTP 409).
/// Inputs that mean nothing in the phase (an observation of a finished rollout, a
/// stale hook result) give an unchanged state and no actions.
pub fn step(
    spec: &RolloutSpec,
    state: &RolloutState,
    input: Input,
    now: Timestamp,
) -> Result<Step, EngineError> {
    if spec.stages.is_empty() {
        return Err(EngineError::NoStages);
    }
    if state.stage_index >= spec.stages.len() {
        return Err(EngineError::StageOutOfRange {
            index: state.stage_index,
            count: spec.stages.len(),
        });
    }
    let mut m = Machine {
        spec,
        st: state.clone(),
        now,
        actions: Vec::new(),
        events: Vec::new(),
    };
    m.apply(input)?;
    m.expire_gate();
    m.advance_while_ready();
    if !matches!(m.st.phase, Phase::Progressing | Phase::Paused) {
        // An ended rollout has no stage clock to stop.
        m.st.route_unapplied_since = None;
    }
    Ok(Step {
        state: m.st,
        actions: m.actions,
        events: m.events,
    })
}

// === impl Machine ===

/// One step in progress.
struct Machine<'a> {
    spec: &'a RolloutSpec,
    st: RolloutState,
    now: Timestamp,
    actions: Vec<Action>,
    events: Vec<Event>,
}

impl Machine<'_> {
    fn apply(&mut self, input: Input) -> Result<(), EngineError> {
        match input {
            // A read of the metrics means the route is applied again.
            Input::Observe(_) | Input::MetricsUnavailable { .. } => self.close_route_window(true),
            // An operator's command starts its own clock (a pause, a new stage) or
            // ends the rollout.
            Input::Command { .. } => self.close_route_window(false),
            Input::Start | Input::Tick | Input::RouteUnapplied { .. } | Input::HookDone { .. } => {}
        }
        match input {
            Input::Start => {
                if self.st.phase != Phase::Pending {
                    return Err(EngineError::NotAllowed {
                        phase: self.st.phase,
                        command: "start",
                    });
                }
                self.begin_attempt(Actor::Engine, EventKind::Started);
            }
            Input::Tick => {}
            Input::Observe(obs) => self.observe(obs),
            Input::MetricsUnavailable { error } => self.metrics_unavailable(&error),
            Input::RouteUnapplied { error } => self.route_unapplied(&error),
            Input::HookDone {
                hook,
                attempt,
                error,
            } => self.hook_done(hook, attempt, error),
            Input::Command { command, actor } => self.command(command, actor)?,
        }
        Ok(())
    }

    // --- helpers ---

    fn stage(&self) -> &Stage {
        &self.spec.stages[self.st.stage_index]
    }

    fn is_last_stage(&self) -> bool {
        self.st.stage_index + 1 == self.spec.stages.len()
    }

    /// `stage 2/3 (50%)`.
    fn stage_label(&self, index: usize) -> String {
        format!(
            "stage {}/{} ({}%)",
            index + 1,
            self.spec.stages.len(),
            self.spec.stages[index].traffic
        )
    }

    fn event(&mut self, kind: EventKind, actor: Actor, message: String, evidence: Vec<Evidence>) {
        let stage_index = (self.st.phase != Phase::Pending).then_some(self.st.stage_index);
        self.events.push(Event {
            at: self.now,
            kind,
            actor,
            stage_index,
            attempt: self.st.attempt,
            message,
            evidence,
        });
    }

    fn hooks_configured(&self, hook: HookPoint) -> bool {
        let h = &self.spec.hooks;
        !match hook {
            HookPoint::BeforeRollout => h.before_rollout.is_empty(),
            HookPoint::EachStage { .. } => h.each_stage.is_empty(),
            HookPoint::BeforePromotion => h.before_promotion.is_empty(),
            HookPoint::AfterPromotion => h.after_promotion.is_empty(),
            HookPoint::AfterRollback => h.after_rollback.is_empty(),
        }
    }

    /// Issues `RunHook` when the spec has hooks there; returns whether it did.
    fn run_hook(&mut self, hook: HookPoint) -> bool {
        let configured = self.hooks_configured(hook);
        if configured {
            self.actions.push(Action::RunHook {
                hook,
                attempt: self.st.attempt,
            });
        }
        configured
    }

    fn set_weight(&mut self, canary: u8) {
        self.st.canary_weight = canary;
        self.actions.push(Action::SetWeight { canary });
    }

    fn contexts<'s>(
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

    // --- life cycle ---

    /// Starts attempt 1 (Start) or the next one (Retry) at stage 0.
    fn begin_attempt(&mut self, actor: Actor, kind: EventKind) {
        let st = &mut self.st;
        st.attempt += 1;
        st.phase = Phase::Progressing;
        st.started_at = Some(self.now);
        st.stage_index = 0;
        st.stage_started_at = None;
        st.stage_paused_ms = 0;
        st.stage_canary_requests = 0;
        st.paused_at = None;
        st.route_unapplied_since = None;
        st.gate = None;
        st.judges.clear();
        st.analysis = None;
        st.consecutive_metric_errors = 0;
        st.canary_requests = 0;
        st.canary_failures = 0;
        st.outcome = None;
        // A retry judges only what happens after it: the next observation is a
        // fresh baseline (the last one may be hours old and span the rollback).
        if kind == EventKind::Retried {
            st.last_observation = None;
        }
        let message = match kind {
            EventKind::Retried => format!(
                "attempt {} of {} {} started by {actor}",
                self.st.attempt, self.spec.app, self.spec.version
            ),
            _ => format!(
                "rollout of {} {} started ({} stages)",
                self.spec.app,
                self.spec.version,
                self.spec.stages.len()
            ),
        };
        self.event(kind, actor, message, Vec::new());
        if self.run_hook(HookPoint::BeforeRollout) {
            self.st.gate = Some(Gate::BeforeRollout { since: self.now });
            self.st.canary_weight = 0;
            self.actions.push(Action::SetWeight { canary: 0 });
        } else {
            self.enter_stage(0, None);
        }
    }

    /// Moves to stage `index`: fresh judges (or carried-over sequential ones), its
    /// weight, its hooks.
    fn enter_stage(&mut self, index: usize, previous: Option<usize>) {
        let spec = self.spec;
        let stage = &spec.stages[index];
        let settings = judge_settings(spec, stage.success_criteria.len());
        let ctxs = Self::contexts(spec, stage, &settings);

        let mut old: Vec<Option<CriterionJudge>> = std::mem::take(&mut self.st.judges)
            .into_iter()
            .map(Some)
            .collect();
        let old_criteria = previous.map_or(&[][..], |p| &spec.stages[p].success_criteria[..]);
        let judges: Vec<CriterionJudge> = ctxs
            .iter()
            .map(|ctx| {
                let carried = old_criteria
                    .iter()
                    .position(|c| c.source == ctx.criterion.source)
                    .and_then(|i| old.get_mut(i).and_then(Option::take));
                match carried {
                    Some(j) => j.into_next_stage(ctx),
                    None => CriterionJudge::new(ctx),
                }
            })
            .collect();
        let report = AnalysisReport {
            at: self.now,
            stage_index: index,
            criteria: judges
                .iter()
                .zip(&ctxs)
                .map(|(j, ctx)| j.assess(ctx))
                .collect(),
        };

        let st = &mut self.st;
        st.stage_index = index;
        st.stage_started_at = Some(self.now);
        st.stage_paused_ms = 0;
        st.stage_canary_requests = 0;
        st.paused_at = (st.phase == Phase::Paused).then_some(self.now);
        // A new weight: whether the router applies it is reported afresh.
        st.route_unapplied_since = None;
        st.judges = judges;
        st.analysis = Some(report);
        self.set_weight(stage.traffic);
        let duration = match stage.duration {
            Some(d) => format!("for {}", humanize(d.as_millis() as u64)),
            None if index + 1 == spec.stages.len() && stage.promote => "then promotes".to_string(),
            None => "until promoted".to_string(),
        };
        let message = format!(
            "{} started: canary at {}% {duration}",
            self.stage_label(index),
            stage.traffic
        );
        self.event(EventKind::StageStarted, Actor::Engine, message, Vec::new());
        self.run_hook(HookPoint::EachStage { stage_index: index });
    }

    /// Rolls back: weight 0, phase `Failed` or `Aborted`.
    fn roll_back(
        &mut self,
        phase: Phase,
        actor: Actor,
        reason: String,
        message: String,
        evidence: Vec<Evidence>,
    ) {
        debug_assert!(phase.is_rolled_back());
        self.st.route_unapplied_since = None;
        let kind = if phase == Phase::Aborted {
            EventKind::Aborted
        } else {
            EventKind::Failed
        };
        self.close_pause();
        self.st.phase = phase;
        self.st.gate = None;
        self.st.outcome = Some(Outcome {
            at: self.now,
            actor: actor.clone(),
            reason,
        });
        self.set_weight(0);
        self.event(kind, actor, message, evidence);
        if self.st.attempt > 0 {
            // Nothing to clean up after a rollout that never started.
            self.run_hook(HookPoint::AfterRollback);
        }
    }

    fn fail(&mut self, reason: String, evidence: Vec<Evidence>) {
        // Before the first stage's weight is applied (a deploy gate), the rollout is
        // not yet "at" that stage.
        let at = if self.st.stage_started_at.is_some() {
            "at"
        } else {
            "before"
        };
        let message = format!("{reason} {at} {}", self.stage_label(self.st.stage_index));
        self.roll_back(Phase::Failed, Actor::Engine, reason, message, evidence);
    }

    /// Ends the pause bookkeeping (the time paused so far stays excluded).
    fn close_pause(&mut self) {
        if let Some(p) = self.st.paused_at.take() {
            self.st.stage_paused_ms = self
                .st
                .stage_paused_ms
                .saturating_add(self.now.millis_since(p));
        }
    }

    /// Promotes the canary, through the `beforePromotion` gate when there is one.
    fn promote_canary(&mut self, actor: Actor, full: bool, evidence: Vec<Evidence>) {
        if self.run_hook(HookPoint::BeforePromotion) {
            self.st.gate = Some(Gate::BeforePromotion {
                requested_by: actor.clone(),
                full,
                since: self.now,
            });
            let message = "promotion waits for the beforePromotion hooks".to_string();
            self.event(EventKind::PromotionGate, actor, message, evidence);
            return;
        }
        self.finish_promotion(actor, evidence);
    }

    fn finish_promotion(&mut self, actor: Actor, evidence: Vec<Evidence>) {
        self.close_pause();
        self.st.gate = None;
        self.st.phase = Phase::Succeeded;
        // The new version takes all traffic before it is named stable, so a crash
        // between the two actions still leaves users on it.
        self.set_weight(100);
        self.actions.push(Action::PromoteCanary);
        let message = format!(
            "{} is the new stable version of {}",
            self.spec.version, self.spec.app
        );
        self.st.outcome = Some(Outcome {
            at: self.now,
            actor: actor.clone(),
            reason: message.clone(),
        });
        self.event(EventKind::Succeeded, actor, message, evidence);
        self.run_hook(HookPoint::AfterPromotion);
    }

    // --- inputs ---

    fn observe(&mut self, mut obs: Observation) {
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
            let ctxs = Self::contexts(spec, stage, &settings);
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

    fn metrics_unavailable(&mut self, error: &str) {
        if !matches!(self.st.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        let (n, limit) = self.count_failed_read();
        if n >= limit {
            let reason = format!("metrics unavailable for {n} reads in a row: {error}");
            self.fail(reason, Vec::new());
        } else if n == 1 {
            let message = format!(
                "metrics unavailable: {error} (the rollout fails after {limit} failed reads in a row)"
            );
            self.event(EventKind::AnalysisError, Actor::Engine, message, Vec::new());
        }
    }

    /// Counts one more analysis read that failed; returns how many in a row, and
    /// how many fail the rollout.
    fn count_failed_read(&mut self) -> (u32, u32) {
        self.st.consecutive_metric_errors = self.st.consecutive_metric_errors.saturating_add(1);
        let limit = self.spec.analysis.max_consecutive_errors.max(1);
        (self.st.consecutive_metric_errors, limit)
    }

    fn route_unapplied(&mut self, error: &str) {
        if !matches!(self.st.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        // A pause already stops the stage clock; the window opens only outside one.
        let opens = self.st.paused_at.is_none() && self.st.route_unapplied_since.is_none();
        if opens {
            self.st.route_unapplied_since = Some(self.now);
        }
        let (n, limit) = self.count_failed_read();
        if n >= limit {
            let reason = format!("no analysis for {n} reads in a row: {error}");
            self.fail(reason, Vec::new());
        } else if opens || n == 1 {
            let message = format!(
                "{error}; the stage clock stops (the rollout fails after {limit} such reads in a row)"
            );
            self.event(
                EventKind::RouteUnapplied,
                Actor::Engine,
                message,
                Vec::new(),
            );
        }
    }

    /// Ends a window in which the router did not apply the weight: its time is not
    /// the stage's, and the next observation only starts a new baseline (the
    /// traffic since the last one was not served at this stage's weight).
    /// `applied`: the router is known to apply the weight again (announced).
    fn close_route_window(&mut self, applied: bool) {
        if !matches!(self.st.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        let Some(since) = self.st.route_unapplied_since.take() else {
            return;
        };
        let held = self.now.millis_since(since);
        self.st.stage_paused_ms = self.st.stage_paused_ms.saturating_add(held);
        self.st.last_observation = None;
        if !applied {
            return;
        }
        self.st.consecutive_metric_errors = 0;
        let message = format!(
            "the router applies {}% again after {}; the stage clock runs on",
            self.st.canary_weight,
            humanize(held)
        );
        self.event(EventKind::RouteApplied, Actor::Engine, message, Vec::new());
    }

    fn hook_done(&mut self, hook: HookPoint, attempt: u32, error: Option<String>) {
        if attempt != self.st.attempt {
            return;
        }
        let active = matches!(self.st.phase, Phase::Progressing | Phase::Paused);
        if let Some(error) = error {
            let reason = format!("{} hooks failed: {error}", hook.list_name());
            let stale_stage = matches!(hook, HookPoint::EachStage { stage_index } if stage_index != self.st.stage_index);
            if active && hook.is_gate() && !stale_stage {
                self.fail(reason, Vec::new());
            } else {
                self.event(EventKind::HookFailed, Actor::Engine, reason, Vec::new());
            }
            return;
        }
        if !active {
            return;
        }
        match (hook, self.st.gate.clone()) {
            (HookPoint::BeforeRollout, Some(Gate::BeforeRollout { .. })) => {
                self.st.gate = None;
                self.enter_stage(0, None);
            }
            (HookPoint::BeforePromotion, Some(Gate::BeforePromotion { requested_by, .. })) => {
                self.finish_promotion(requested_by, Vec::new());
            }
            _ => {}
        }
    }

    fn command(&mut self, command: Command, actor: Actor) -> Result<(), EngineError> {
        let phase = self.st.phase;
        if !command.allowed_in(phase) {
            return Err(EngineError::NotAllowed {
                phase,
                command: command.name(),
            });
        }
        if let (Some(gate), Command::Promote { .. }) = (&self.st.gate, &command) {
            // Promoting past a beforeRollout gate would send traffic to a canary that
            // may not be deployed; a second promotion while one waits is meaningless.
            return Err(EngineError::HooksPending {
                command: command.name(),
                hooks: match gate {
                    Gate::BeforeRollout { .. } => "beforeRollout",
                    Gate::BeforePromotion { .. } => "beforePromotion",
                },
            });
        }
        match command {
            Command::Promote { full: true } => {
                let message = format!("{actor} promoted the canary fully (100%)");
                self.event(EventKind::Promoted, actor.clone(), message, Vec::new());
                self.promote_canary(actor, true, Vec::new());
            }
            Command::Promote { full: false } => {
                let label = self.stage_label(self.st.stage_index);
                if self.is_last_stage() {
                    let message = format!("{actor} ended {label}, the final stage");
                    self.event(EventKind::Promoted, actor.clone(), message, Vec::new());
                    self.promote_canary(actor, false, Vec::new());
                } else {
                    let message = format!("{actor} ended {label} early");
                    self.event(EventKind::Promoted, actor, message, Vec::new());
                    let from = self.st.stage_index;
                    self.enter_stage(from + 1, Some(from));
                }
            }
            Command::Abort { reason } => {
                let why = reason
                    .filter(|r| !r.trim().is_empty())
                    .unwrap_or_else(|| "no reason given".to_string());
                let message = if phase == Phase::Pending {
                    format!("{actor} aborted the rollout before it started: {why}")
                } else {
                    format!(
                        "{actor} aborted the rollout at {}: {why}",
                        self.stage_label(self.st.stage_index)
                    )
                };
                self.roll_back(Phase::Aborted, actor, why, message, Vec::new());
            }
            Command::Pause => {
                self.st.phase = Phase::Paused;
                self.st.paused_at = Some(self.now);
                let message = format!(
                    "{actor} paused the rollout at {}",
                    self.stage_label(self.st.stage_index)
                );
                self.event(EventKind::Paused, actor, message, Vec::new());
            }
            Command::Resume => {
                self.close_pause();
                self.st.phase = Phase::Progressing;
                let message = format!(
                    "{actor} resumed the rollout at {}",
                    self.stage_label(self.st.stage_index)
                );
                self.event(EventKind::Resumed, actor, message, Vec::new());
            }
            Command::Retry => self.begin_attempt(actor, EventKind::Retried),
        }
        Ok(())
    }

    // --- automatic progression ---

    /// Fails a rollout whose gate hooks have not reported within their deadline, so
    /// a lost result cannot hold a rollout forever.
    fn expire_gate(&mut self) {
        if !matches!(self.st.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        let Some(gate) = &self.st.gate else {
            return;
        };
        let hook = gate.hook();
        let deadline = gate_deadline_ms(self.spec, hook);
        if self.now.millis_since(gate.since()) > deadline {
            let reason = format!(
                "{} hooks did not report within {}",
                hook.list_name(),
                humanize(deadline)
            );
            self.fail(reason, Vec::new());
        }
    }

    /// Whether the latest analysis lets the current stage end.
    fn criteria_allow_advance(&self) -> bool {
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

    /// Ends stages whose duration has passed healthy, as long as that holds.
    fn advance_while_ready(&mut self) {
        // Each pass enters a later stage or stops, so this ends.
        for _ in 0..=self.spec.stages.len() {
            if self.st.phase != Phase::Progressing || self.st.gate.is_some() {
                return;
            }
            // Nothing moves on while the router has not applied the current weight.
            if self.st.stage_started_at.is_none() || self.st.route_unapplied_since.is_some() {
                return;
            }
            let stage = self.stage();
            let last = self.is_last_stage();
            let required_ms = match stage.duration {
                Some(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                None if last && stage.promote => 0,
                None => return,
            };
            if last && !stage.promote {
                return;
            }
            if self.st.stage_active_ms(self.now) < required_ms || !self.criteria_allow_advance() {
                return;
            }
            let evidence = self
                .st
                .analysis
                .as_ref()
                .map(|a| a.criteria.clone())
                .unwrap_or_default();
            let label = self.stage_label(self.st.stage_index);
            if last {
                self.promote_canary(Actor::Engine, false, evidence);
            } else {
                let ran = stage
                    .duration
                    .map(|d| format!(" ran {}", humanize(d.as_millis() as u64)))
                    .unwrap_or_default();
                let how = if stage.success_criteria.is_empty() {
                    ""
                } else if evidence.iter().all(|e| e.status.is_pass()) {
                    " with every criterion passing"
                } else {
                    // onNoEvidence: advance, and some test has not decided yet.
                    " with no evidence of harm"
                };
                let message = format!("{label}{ran}{how}");
                self.event(EventKind::StageAdvanced, Actor::Engine, message, evidence);
                let from = self.st.stage_index;
                self.enter_stage(from + 1, Some(from));
            }
        }
    }
}

/// `5m`, `1h30m`, `45s`, `1.5s`.
fn humanize(ms: u64) -> String {
    if !ms.is_multiple_of(1000) {
        return format!("{}s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}
