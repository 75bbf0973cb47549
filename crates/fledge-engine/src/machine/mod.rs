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
//! [`TickDelta`](crate::judge::TickDelta) and fed to the current stage's judges
//! (once the stage's weight is applied). Criteria are judged while paused too: a paused rollout still fails on
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
//!
//! # Layout
//!
//! * `step`: [`step`] and [`reconcile`], and the life cycle every input can lead to;
//! * `state`: the [`Phase`] and the persisted [`RolloutState`];
//! * `messages`: the [`Input`]s, [`Action`]s and [`Event`]s exchanged with the shell;
//! * `command`: the operator's [`Command`]s, when each is allowed, what each does;
//! * `hooks`: [`HookPoint`]s and the [`Gate`]s that wait for them;
//! * `analysis`: observations fed to the stage's judges, and what they allow;
//! * `timing`: [`Timestamp`] and the stage clock.

mod analysis;
mod command;
mod hooks;
mod messages;
mod state;
mod step;
mod timing;

pub use analysis::{judge_settings, judged_as_evidence_arrives, metric_unit};
pub use command::{Actor, Command};
pub use hooks::{GATE_GRACE_MS, Gate, HookPoint, gate_deadline_ms};
pub use messages::{Action, Event, EventKind, FiringAlert, Input};
pub use state::{Outcome, Phase, RolloutState, TimedObservation};
pub use step::{EngineError, Step, reconcile, step};
pub use timing::Timestamp;
