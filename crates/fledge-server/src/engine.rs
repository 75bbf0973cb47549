//! The one place the server talks to the pure engine: starting a rollout, feeding it
//! an observation or an operator's command, and reading a summary of its state.
//!
//! The engine's state is kept in the store as opaque JSON; this module turns it back
//! into the engine's type and turns the engine's events into store events.

use std::time::SystemTime;

use fledge_engine as engine;
use fledge_spec::RolloutSpec;
use fledge_stats::Observation;
use fledge_store::{NewEvent, RolloutRecord, Timestamp};
use serde_json::Value;

/// The actor recorded for the engine's own decisions.
pub const ENGINE_ACTOR: &str = "engine";

/// What one engine step decided, ready to be persisted.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The new state, serialized.
    pub state: Value,
    /// The new phase's name.
    pub phase: String,
    /// The events to append, with their evidence.
    pub events: Vec<NewEvent>,
    /// Whether the canary must become the app's stable version (persisted with
    /// this decision).
    pub promote: bool,
    /// Hook lists the engine asked to run, with the attempt that asked.
    pub hooks: Vec<(engine::HookPoint, u32)>,
}

/// An operator's command: the engine's own type.
pub use fledge_engine::Command;
/// What the controller tells the engine on a tick: the engine's own type.
pub use fledge_engine::Input;

/// Why the engine refused a command.
#[derive(Debug, Clone)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the API and controller need to know about a state without the engine's types.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The phase's name.
    pub phase: String,
    /// The current stage (0-based).
    pub stage_index: usize,
    /// The canary's current share of traffic, 0–100.
    pub canary_weight: u8,
    /// The share of stable's requests copied to the canary now, 0–100.
    pub canary_mirror: u8,
    /// The latest analysis, with its evidence, if any.
    pub analysis: Option<engine::AnalysisReport>,
    /// The operator commands the phase allows now (`promote`, `abort`, …).
    pub allowed_commands: Vec<&'static str>,
    /// When the current stage started (its weight was applied).
    pub stage_started_at: Option<Timestamp>,
    /// Whether the stage clock runs (not paused, the route applied).
    pub stage_clock_running: bool,
}

fn load(state: &Value) -> anyhow::Result<engine::RolloutState> {
    serde_json::from_value(state.clone())
        .map_err(|e| anyhow::anyhow!("the stored rollout state cannot be read: {e}"))
}

fn actor_name(actor: &engine::Actor) -> String {
    match actor {
        engine::Actor::Engine => ENGINE_ACTOR.to_owned(),
        engine::Actor::Operator(name) => name.clone(),
    }
}

fn decide(step: engine::Step) -> anyhow::Result<Decision> {
    let state = serde_json::to_value(&step.state)?;
    let phase = step.state.phase.as_str().to_owned();
    let mut promote = false;
    let mut hooks = Vec::new();
    for action in &step.actions {
        match action {
            engine::Action::PromoteCanary => promote = true,
            engine::Action::RunHook { hook, attempt } => hooks.push((*hook, *attempt)),
            engine::Action::SetWeight { .. } => {}
        }
    }
    let events = step
        .events
        .into_iter()
        .map(|e| {
            let mut evidence = serde_json::Map::new();
            if let Some(stage) = e.stage_index {
                evidence.insert("stageIndex".into(), stage.into());
            }
            if !e.evidence.is_empty() {
                evidence.insert(
                    "criteria".into(),
                    serde_json::to_value(&e.evidence).unwrap_or(Value::Null),
                );
            }
            let evidence = if evidence.is_empty() {
                Value::Null
            } else {
                Value::Object(evidence)
            };
            NewEvent::new(format!("{:?}", e.kind), actor_name(&e.actor), e.message)
                .with_evidence(evidence)
                .at(e.at)
        })
        .collect();
    Ok(Decision {
        state,
        phase,
        events,
        promote,
        hooks,
    })
}

/// The state of a rollout that has not started.
pub fn pending_state() -> anyhow::Result<Value> {
    Ok(serde_json::to_value(engine::RolloutState::pending())?)
}

/// Starts a pending rollout (stage 0). With `baseline` (the app's counters read
/// as it starts, from a source that is cheap to read), the first stage's analysis
/// counts from the start instead of from the first read after it. A member of a
/// lock-step group is held at `group_hold` from before its start.
pub fn start(
    spec: &RolloutSpec,
    now: SystemTime,
    baseline: Option<Observation>,
    group_hold: Option<usize>,
) -> anyhow::Result<Decision> {
    let mut state = engine::RolloutState::pending();
    let now = Timestamp::from_system_time(now);
    let refused = |e| anyhow::anyhow!("the engine refused to start the rollout: {e}");
    if let Some(stage) = group_hold {
        state = engine::step(spec, &state, engine::Input::GroupHold { stage }, now)
            .map_err(refused)?
            .state;
    }
    let mut step = engine::step(spec, &state, engine::Input::Start, now).map_err(refused)?;
    if let Some(observation) = baseline {
        let next = engine::step(spec, &step.state, engine::Input::Observe(observation), now)
            .map_err(refused)?;
        step.state = next.state;
        step.actions.extend(next.actions);
        step.events.extend(next.events);
    }
    decide(step)
}

/// Feeds the engine what the server saw of the rollout on this tick: an
/// observation, or why there is none to judge.
pub fn feed(
    spec: &RolloutSpec,
    state: &Value,
    input: Input,
    now: SystemTime,
) -> anyhow::Result<Decision> {
    let state = load(state)?;
    let step = engine::step(spec, &state, input, Timestamp::from_system_time(now))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    decide(step)
}

/// Applies an operator's command; `Err(Refused)` when the phase does not allow it.
pub fn command(
    spec: &RolloutSpec,
    state: &Value,
    command: &Command,
    actor: &str,
    now: SystemTime,
) -> anyhow::Result<Result<Decision, Refused>> {
    let state = load(state)?;
    let input = engine::Input::Command {
        command: command.clone(),
        actor: engine::Actor::operator(actor),
    };
    match engine::step(spec, &state, input, Timestamp::from_system_time(now)) {
        Ok(step) => Ok(Ok(decide(step)?)),
        Err(e) => Ok(Err(Refused(e.to_string()))),
    }
}

/// Reports that a hook list finished (`error` is `None` when every hook passed).
pub fn hook_done(
    spec: &RolloutSpec,
    state: &Value,
    hook: engine::HookPoint,
    attempt: u32,
    error: Option<String>,
    now: SystemTime,
) -> anyhow::Result<Decision> {
    let state = load(state)?;
    let input = engine::Input::HookDone {
        hook,
        attempt,
        error,
    };
    let step = engine::step(spec, &state, input, Timestamp::from_system_time(now))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    decide(step)
}

/// The gate a stored state waits on, if any: the hook list to (re)run and its
/// attempt.
pub fn pending_gate(state: &Value) -> Option<(engine::HookPoint, u32)> {
    load(state).ok()?.waiting_hooks()
}

/// Reads a stored rollout's spec.
pub fn spec_of(record: &RolloutRecord) -> anyhow::Result<RolloutSpec> {
    serde_json::from_value(record.spec.clone()).map_err(|e| {
        anyhow::anyhow!(
            "the stored spec of rollout {} cannot be read: {e}",
            record.id
        )
    })
}

/// Reads the summary of a stored state.
pub fn summary(state: &Value) -> anyhow::Result<Summary> {
    let state = load(state)?;
    Ok(Summary {
        phase: state.phase.as_str().to_owned(),
        stage_index: state.stage_index,
        canary_weight: state.canary_weight,
        canary_mirror: state.canary_mirror,
        allowed_commands: state.allowed_commands(),
        stage_started_at: state.stage_started_at,
        stage_clock_running: state.phase == engine::Phase::Progressing
            && state.route_unapplied_since.is_none(),
        analysis: state.analysis,
    })
}

/// Whether a stored state may be judged as its evidence arrives rather than once
/// per `analysis.interval` (see [`engine::judged_as_evidence_arrives`]).
pub fn judged_as_evidence_arrives(spec: &RolloutSpec, state: &Value) -> bool {
    load(state).is_ok_and(|s| engine::judged_as_evidence_arrives(spec, &s))
}

/// Milliseconds of the current stage still to run at `now`; `None` for a stage that
/// waits for a promote, or a rollout that is not moving through its stages.
pub fn stage_remaining_ms(spec: &RolloutSpec, state: &Value, now: SystemTime) -> Option<u64> {
    load(state)
        .ok()?
        .stage_remaining_ms(spec, Timestamp::from_system_time(now))
}
