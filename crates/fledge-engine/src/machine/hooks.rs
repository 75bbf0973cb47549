//! Hooks: the points of a rollout's life where the spec's hooks run, the [`Gate`]s
//! that hold a start or a promotion until gating hooks succeed, and how long a gate
//! may wait for their result.

use fledge_spec::{Hook, HookList, RolloutSpec};
use serde::{Deserialize, Serialize};

use super::step::Machine;
use super::timing::{humanize, millis};
use super::{Action, Actor, EventKind, RolloutState, Timestamp};

// === HookPoint ===

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
    /// The spec's hook list that runs at this point.
    pub fn list(self) -> HookList {
        match self {
            HookPoint::BeforeRollout => HookList::BeforeRollout,
            HookPoint::EachStage { .. } => HookList::EachStage,
            HookPoint::BeforePromotion => HookList::BeforePromotion,
            HookPoint::AfterPromotion => HookList::AfterPromotion,
            HookPoint::AfterRollback => HookList::AfterRollback,
        }
    }

    /// The name of the spec's hook list.
    pub fn list_name(self) -> &'static str {
        self.list().as_str()
    }

    /// Whether the rollout fails when these hooks fail.
    pub fn is_gate(self) -> bool {
        self.list().is_gate()
    }

    /// The spec's hooks at this point, in the order they run.
    fn hooks(self, spec: &RolloutSpec) -> &[Hook] {
        spec.hooks.list(self.list())
    }
}

// === Gate ===

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

// === impl RolloutState ===

impl RolloutState {
    /// The gate an active rollout waits at (its hook list and the attempt that asked
    /// for it), if any: a shell that lost the hooks' result in a restart runs them
    /// again (hooks run at least once).
    pub fn waiting_hooks(&self) -> Option<(HookPoint, u32)> {
        if !self.phase.is_active() {
            return None;
        }
        self.gate.as_ref().map(|g| (g.hook(), self.attempt))
    }
}

/// The longest `spec` lets the hooks at `hook` take, run one after the other, plus
/// [`GATE_GRACE_MS`].
pub fn gate_deadline_ms(spec: &RolloutSpec, hook: HookPoint) -> u64 {
    hook.hooks(spec)
        .iter()
        .map(|hook| match hook {
            Hook::Exec(e) => e.timeout,
            Hook::Http(h) => h.timeout,
        })
        .map(millis)
        .fold(GATE_GRACE_MS, u64::saturating_add)
}

// === impl Machine ===

impl Machine<'_> {
    /// Issues `RunHook` when the spec has hooks there; returns whether it did.
    pub(super) fn run_hook(&mut self, hook: HookPoint) -> bool {
        let configured = !hook.hooks(self.spec).is_empty();
        if configured {
            self.actions.push(Action::RunHook {
                hook,
                attempt: self.st.attempt,
            });
        }
        configured
    }

    /// Takes a hook list's result: a gating failure fails the rollout, and a gate's
    /// success lets what it held go on. Results of another attempt are ignored.
    pub(super) fn hook_done(&mut self, hook: HookPoint, attempt: u32, error: Option<String>) {
        if attempt != self.st.attempt {
            return;
        }
        let active = self.st.phase.runs_stages();
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

    /// Fails a rollout whose gate hooks have not reported within their deadline, so
    /// a lost result cannot hold a rollout forever.
    pub(super) fn expire_gate(&mut self) {
        if !self.st.phase.runs_stages() {
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
}
