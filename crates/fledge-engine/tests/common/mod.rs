//! Helpers shared by the engine's integration tests: specs from YAML, cumulative
//! counters, and a driver that steps a rollout through time.

#![allow(dead_code)]

use fledge_engine::{
    Action, Actor, ArmCounters, Command, EngineError, Event, EventKind, HookPoint, Input,
    Observation, RolloutState, Step, Timestamp, step,
};
use fledge_spec::RolloutSpec;

/// Three stages judged by threshold (20% and 50% for a minute each, then 100%).
pub const THREE_STAGES: &str = r#"
app: shop
version: v2
analysis: {method: threshold, minRequests: 100}
stages:
  - traffic: 20
    duration: 60s
    successCriteria: [error_rate < 1%]
  - traffic: 50
    duration: 60s
    successCriteria: [error_rate < 1%]
  - traffic: 100
    final: true
    promote: true
"#;

/// A blue/green rollout: a 30 s preview on copies of every request, then the switch,
/// kept warm for 20 s.
pub const BLUE_GREEN: &str = r#"
app: shop
version: v2
strategy: blueGreen
analysis: {method: threshold, minRequests: 100}
stages:
  - traffic: 0
    mirror: 100
    duration: 30s
    successCriteria: [error_rate < 1%]
  - traffic: 100
    duration: 20s
    successCriteria: [error_rate < 1%]
    promote: true
"#;

/// Parses and validates a spec written in a test.
pub fn spec(yaml: &str) -> RolloutSpec {
    fledge_spec::parse_spec(yaml, "test.yaml").unwrap_or_else(|e| panic!("bad test spec: {e}"))
}

/// Cumulative counters of both arms, as a metric source reports them.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub canary: ArmCounters,
    pub stable: ArmCounters,
}

impl Counters {
    /// Adds requests and errors to each arm (latency 50 ms each) and returns the
    /// observation a source would report now.
    pub fn add(&mut self, canary: (u64, u64), stable: (u64, u64)) -> Observation {
        add_arm(&mut self.canary, canary, 0.05);
        add_arm(&mut self.stable, stable, 0.05);
        self.observation()
    }

    /// The current cumulative observation.
    pub fn observation(&self) -> Observation {
        Observation {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            custom: Default::default(),
        }
    }
}

pub fn add_arm(arm: &mut ArmCounters, (requests, errors): (u64, u64), latency_s: f64) {
    arm.requests += requests;
    arm.errors += errors;
    // Record latencies in bulk: one bucket, `requests` times.
    let idx = fledge_stats::bucket_index(latency_s);
    arm.latency.counts[idx] += requests;
    arm.latency.sum_seconds += latency_s * requests as f64;
}

/// A rollout under test: spec, state, clock, and everything it emitted.
pub struct Rollout {
    pub spec: RolloutSpec,
    pub state: RolloutState,
    pub now: Timestamp,
    pub counters: Counters,
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
}

pub const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);

impl Rollout {
    pub fn new(yaml: &str) -> Self {
        Self {
            spec: spec(yaml),
            state: RolloutState::pending(),
            now: T0,
            counters: Counters::default(),
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A rollout of this spec, started.
    pub fn started(yaml: &str) -> Self {
        let mut rollout = Self::new(yaml);
        rollout.start();
        rollout
    }

    /// Applies one input now; keeps the new state and returns the step.
    pub fn input(&mut self, input: Input) -> Result<Step, EngineError> {
        let s = step(&self.spec, &self.state, input, self.now)?;
        self.state = s.state.clone();
        self.actions.extend(s.actions.iter().cloned());
        self.events.extend(s.events.iter().cloned());
        Ok(s)
    }

    pub fn start(&mut self) -> Step {
        self.input(Input::Start).expect("start")
    }

    pub fn command(&mut self, command: Command) -> Result<Step, EngineError> {
        self.input(Input::Command {
            command,
            actor: Actor::operator("alice"),
        })
    }

    pub fn advance(&mut self, ms: u64) {
        self.now = self.now.plus_millis(ms);
    }

    /// Advances one second and reports `canary` and `stable` (requests, errors)
    /// served in it.
    pub fn second(&mut self, canary: (u64, u64), stable: (u64, u64)) -> Step {
        self.advance(1000);
        let obs = self.counters.add(canary, stable);
        self.input(Input::Observe(obs)).expect("observe")
    }

    /// Advances `ms` and ticks the clock.
    pub fn tick_after(&mut self, ms: u64) -> Step {
        self.advance(ms);
        self.input(Input::Tick).expect("tick")
    }

    /// Advances `ms` and reports that the router has not applied the current weight.
    pub fn route_unapplied_after(&mut self, ms: u64, error: &str) -> Step {
        self.advance(ms);
        let error = error.to_owned();
        self.input(Input::RouteUnapplied { error })
            .expect("route unapplied")
    }

    /// Advances `ms` and reports that the metrics could not be read.
    pub fn metrics_unavailable_after(&mut self, ms: u64, error: &str) -> Step {
        self.advance(ms);
        let error = error.to_owned();
        self.input(Input::MetricsUnavailable { error })
            .expect("metrics unavailable")
    }

    /// Reports that the hooks of `hook` in `attempt` ended: passed, or failed with
    /// `error`.
    pub fn hook_done(&mut self, hook: HookPoint, attempt: u32, error: Option<&str>) -> Step {
        let error = error.map(str::to_owned);
        self.input(Input::HookDone {
            hook,
            attempt,
            error,
        })
        .expect("hook done")
    }

    /// `n` healthy seconds at 200 canary / 800 stable requests per second.
    pub fn healthy(&mut self, n: u32) -> Step {
        let mut last = None;
        for _ in 0..n {
            last = Some(self.second((200, 0), (800, 0)));
        }
        last.expect("at least one second")
    }

    pub fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|e| e.kind).collect()
    }

    pub fn last_event(&self) -> &Event {
        self.events.last().expect("an event")
    }
}
