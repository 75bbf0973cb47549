//! The decision core: the rollout state machine, the canary judge (threshold and
//! sequential), and a seeded simulator that drives them in virtual time.
//!
//! Pure: must never depend on tokio, do I/O, read the wall clock or draw randomness
//! except from a seeded generator handed in by the simulator.

pub use fledge_stats::{
    ArmCounters, CustomValue, LATENCY_BOUNDS_SECONDS, LatencyHistogram, Observation,
};
