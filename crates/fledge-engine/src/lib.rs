//! The decision core: the rollout state machine, the canary judge (threshold and
//! sequential), and a seeded simulator that drives them in virtual time.
//!
//! Pure: must never depend on tokio, do I/O, read the wall clock or draw randomness
//! except from a seeded generator handed in by the simulator.
//!
//! The shell drives a rollout with [`step`]: it persists the new state, then runs
//! the actions, then records the events.
//!
//! ```
//! use fledge_engine::{Action, Input, Observation, Phase, RolloutState, Timestamp, step};
//!
//! let spec = fledge_spec::parse_spec(
//!     "app: shop\nversion: v2\nstages:\n  - traffic: 20\n    duration: 1m\n  \
//!      - traffic: 100\n    final: true\n    promote: true\n",
//!     "example.yaml",
//! )
//! .unwrap();
//! let t0 = Timestamp::from_millis(1_700_000_000_000);
//! let started = step(&spec, &RolloutState::pending(), Input::Start, t0).unwrap();
//! assert_eq!(started.actions, vec![Action::SetWeight { canary: 20, mirror: 0 }]);
//!
//! // A minute later the stage (which has no criteria) is over: the canary is promoted.
//! let later = t0.plus_millis(60_000);
//! let done = step(&spec, &started.state, Input::Observe(Observation::default()), later).unwrap();
//! assert_eq!(done.state.phase, Phase::Succeeded);
//! assert!(done.actions.contains(&Action::PromoteCanary));
//! ```

pub mod baseline;
pub mod evidence;
pub mod group;
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
    Action, Actor, Command, EngineError, Event, EventKind, FiringAlert, Gate, HookPoint, Input,
    Outcome, Phase, RolloutState, Step, TimedObservation, Timestamp, judged_as_evidence_arrives,
    reconcile, step,
};
