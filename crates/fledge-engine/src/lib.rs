//! The decision core: the rollout state machine, the canary judge (threshold and
//! sequential), and a seeded simulator that drives them in virtual time.
//!
//! Pure: must never depend on tokio, do I/O, read the wall clock or draw randomness
//! except from a seeded generator handed in by the simulator.

pub mod baseline;
pub mod evidence;
pub mod judge;
pub mod machine;
pub mod sim;

pub use evidence::{
    AnalysisReport, ArmSample, CriterionStatus, Evidence, JudgeMethod, SequentialEvidence,
    ValueUnit,
};
pub use fledge_stats::{
    ArmCounters, CustomValue, LATENCY_BOUNDS_SECONDS, LatencyHistogram, Observation,
};
pub use judge::{CriterionJudge, JudgeSettings, TickDelta};
pub use machine::{
    Action, Actor, Command, EngineError, Event, EventKind, Gate, HookPoint, Input, Outcome, Phase,
    RolloutState, Step, TimedObservation, Timestamp, reconcile, step,
};
