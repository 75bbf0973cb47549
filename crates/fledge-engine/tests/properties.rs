//! Property tests of the rollout state machine: random sequences of observations
//! (healthy and unhealthy counts, counter resets), metric-source failures, hook
//! results, operator commands and time advances, with the invariants of
//! `machine.rs` checked after every step.
//!
//! Case counts (all `CASES` = 256): `machine_invariants_hold_after_every_step` runs
//! 256 sequences of up to 81 inputs over 7 specs (about 10,000 checked steps);
//! `abort_and_promote_racing_never_promote_an_aborted_canary` 256 races after random
//! prefixes; the two threshold-judge properties, the hostile-source property and the
//! three anytime-validity properties (the e-processes under any schedule of looks)
//! 256 cases each. The whole file takes about 5–15 s in a debug build on a busy 2-core
//! machine.

mod common;

use common::{Counters, T0, add_arm, spec};
use fledge_engine::{
    Action, Actor, Command, CriterionStatus, EngineError, EventKind, Gate, HookPoint, Input, Phase,
    RolloutState, Step, Timestamp, step,
};
use fledge_spec::{NoEvidencePolicy, RolloutSpec};
use proptest::prelude::*;

const CASES: u32 = 256;

/// The specs the sequences run against: criteria with durations, time-only stages,
/// hook gates with an error budget and relative criteria, manual stages, and the
/// default (sequential) method starting dark (copies only) before going live, and
/// two blue/green rollouts (a judged preview on copies, a manual one for testers).
const SPECS: [&str; 7] = [
    common::THREE_STAGES,
    r#"
app: shop
version: v2
stages:
  - traffic: 5
    duration: 10s
  - traffic: 25
    duration: 20s
  - traffic: 60
    duration: 30s
  - traffic: 100
    duration: 5s
    final: true
    promote: true
"#,
    r#"
app: shop
version: v2
errorBudget: 50
analysis: {method: threshold, minRequests: 50, maxConsecutiveErrors: 3}
hooks:
  beforeRollout:
    - exec: {command: [deploy]}
  eachStage:
    - exec: {command: [smoke-test]}
  beforePromotion:
    - http: {url: "http://127.0.0.1:9/gate"}
  afterRollback:
    - exec: {command: [scale-down]}
stages:
  - traffic: 10
    duration: 30s
    successCriteria: ["error_rate <= stable + 1%"]
  - traffic: 40
    duration: 30s
    successCriteria: ["error_rate <= stable + 1%", "latency_p95 < stable * 2"]
  - traffic: 100
    duration: 15s
    final: true
    promote: true
"#,
    r#"
app: shop
version: v2
analysis: {method: threshold, minRequests: 100}
stages:
  - traffic: 10
    successCriteria: [error_rate < 2%]
  - traffic: 30
    duration: 20s
  - traffic: 100
    final: true
"#,
    r#"
app: shop
version: v2
stages:
  - traffic: 0
    mirror: 100
    duration: 30s
    successCriteria: [error_rate < 1%]
  - traffic: 20
    duration: 30s
    successCriteria: [error_rate < 1%]
  - traffic: 100
    duration: 30s
    successCriteria: [error_rate < 1%]
    final: true
    promote: true
"#,
    common::BLUE_GREEN,
    r#"
app: shop
version: v2
strategy: blueGreen
match: [{header: x-preview, value: "1"}]
analysis: {method: threshold, minRequests: 50}
stages:
  - traffic: 0
    successCriteria: [error_rate < 2%]
  - traffic: 100
    duration: 10s
    successCriteria: [error_rate < 2%]
    promote: true
"#,
];

/// One generated input, before it is bound to the rollout's attempt and counters.
#[derive(Debug, Clone)]
enum Op {
    Start,
    Tick,
    Observe {
        canary: u64,
        canary_errors: u64,
        stable: u64,
        stable_errors: u64,
        slow: bool,
        reset: bool,
    },
    MetricsDown,
    RouterDown,
    /// A matching alert fires.
    Alert,
    /// The rollout's group lets it go as far as this stage.
    GroupHold(usize),
    Hook {
        hook: HookPoint,
        ok: bool,
        stale: bool,
    },
    /// The result of the hooks the rollout waits for, if it waits.
    GateHook {
        ok: bool,
    },
    Cmd(Command),
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => prop::bool::weighted(0.3).prop_map(|full| Command::Promote { full }),
        1 => proptest::option::of("[a-z ]{0,12}").prop_map(|reason| Command::Abort { reason }),
        2 => Just(Command::Pause),
        3 => Just(Command::Resume),
        2 => Just(Command::Retry),
    ]
}

fn observe() -> impl Strategy<Value = Op> {
    (
        0u64..400,
        0u64..1000,
        prop_oneof![8 => Just(false), 1 => Just(true)],
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(canary, stable, unhealthy, slow, reset)| {
            // Healthy: at most 0.25% errors; unhealthy: 5–30%.
            let canary_errors = if unhealthy {
                canary / 20 + canary / 4 * (canary % 2)
            } else {
                canary / 400
            };
            Op::Observe {
                canary,
                canary_errors,
                stable,
                stable_errors: stable / 400,
                slow,
                reset,
            }
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Start),
        6 => Just(Op::Tick),
        30 => observe(),
        3 => Just(Op::MetricsDown),
        3 => Just(Op::RouterDown),
        1 => Just(Op::Alert),
        2 => (0usize..5).prop_map(Op::GroupHold),
        3 => (
            prop_oneof![
                Just(HookPoint::BeforeRollout),
                Just(HookPoint::BeforePromotion),
                (0usize..3).prop_map(|stage_index| HookPoint::EachStage { stage_index }),
                Just(HookPoint::AfterRollback),
            ],
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(hook, ok, stale)| Op::Hook { hook, ok, stale }),
        3 => prop::bool::weighted(0.85).prop_map(|ok| Op::GateHook { ok }),
        6 => command().prop_map(Op::Cmd),
    ]
}

/// Time steps (mostly about a second, sometimes long) and inputs; most sequences
/// start the rollout first.
fn timed_ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(
            (
                prop_oneof![6 => 0u64..2_000, 2 => 0u64..20_000, 1 => 0u64..120_000],
                op(),
            ),
            1..80,
        ),
    )
        .prop_map(|(start, mut ops)| {
            if start {
                ops.insert(0, (0, Op::Start));
            }
            ops
        })
}

/// Binds a generated op to the rollout as it is now.
fn bind(op: &Op, state: &RolloutState, counters: &mut Counters) -> Input {
    match op {
        Op::Start => Input::Start,
        Op::Tick => Input::Tick,
        Op::Observe {
            canary,
            canary_errors,
            stable,
            stable_errors,
            slow,
            reset,
        } => {
            if *reset {
                counters.canary = Default::default();
            }
            let latency = if *slow { 0.9 } else { 0.05 };
            add_arm(&mut counters.canary, (*canary, *canary_errors), latency);
            add_arm(&mut counters.stable, (*stable, *stable_errors), 0.05);
            Input::Observe(counters.observation())
        }
        Op::MetricsDown => Input::MetricsUnavailable {
            error: "connection refused".into(),
        },
        Op::RouterDown => Input::RouteUnapplied {
            error: "router down".into(),
        },
        Op::GroupHold(stage) => Input::GroupHold { stage: *stage },
        Op::Alert => Input::AlertsFiring {
            alerts: vec![fledge_engine::FiringAlert {
                name: "CanaryErrors".into(),
                labels: [("service".to_owned(), "shop".to_owned())].into(),
                starts_at: "2023-11-14T22:13:20Z".into(),
            }],
        },
        Op::Hook { hook, ok, stale } => Input::HookDone {
            hook: *hook,
            attempt: if *stale {
                state.attempt.saturating_sub(1)
            } else {
                state.attempt
            },
            error: (!ok).then(|| "hook failed".into()),
        },
        Op::GateHook { ok } => Input::HookDone {
            hook: match state.gate {
                Some(Gate::BeforeRollout { .. }) => HookPoint::BeforeRollout,
                Some(Gate::BeforePromotion { .. }) => HookPoint::BeforePromotion,
                None => HookPoint::EachStage {
                    stage_index: state.stage_index,
                },
            },
            attempt: state.attempt,
            error: (!ok).then(|| "hook failed".into()),
        },
        Op::Cmd(c) => Input::Command {
            command: c.clone(),
            actor: Actor::operator("prop"),
        },
    }
}

fn duration_ms(spec: &RolloutSpec, stage: usize) -> Option<u64> {
    spec.stages[stage]
        .duration
        .map(|d| u64::try_from(d.as_millis()).unwrap())
}

/// The independent model the machine is checked against: active time in the
/// current stage (neither paused nor waiting for the router to apply the weight),
/// summed from the phases between steps.
#[derive(Debug, Default)]
struct Model {
    active_ms: u64,
}

/// Checks every invariant of one step.
#[allow(clippy::too_many_lines)]
fn check(
    spec: &RolloutSpec,
    prev: &RolloutState,
    input: &Input,
    result: &Result<Step, EngineError>,
    prev_now: Timestamp,
    now: Timestamp,
    model: &mut Model,
) -> Result<(), TestCaseError> {
    // Time in the stage before this input, as the model sees it.
    if prev.phase == Phase::Progressing
        && prev.stage_started_at.is_some()
        && prev.route_unapplied_since.is_none()
    {
        model.active_ms += now.millis_since(prev_now);
    }
    let active_before = model.active_ms;

    let command = match input {
        Input::Command { command, .. } => Some(command),
        _ => None,
    };
    // The `beforePromotion` hooks reported that they passed.
    let promotion_hooks_passed = matches!(
        input,
        Input::HookDone {
            hook: HookPoint::BeforePromotion,
            error: None,
            ..
        }
    );
    // Canary requests this input adds to the stage's judged window.
    let judged_canary = match (input, &prev.last_observation) {
        (Input::Observe(obs), Some(before))
            if matches!(prev.phase, Phase::Progressing | Phase::Paused)
                && prev.stage_started_at.is_some()
                && prev.route_unapplied_since.is_none() =>
        {
            obs.canary.delta_since(&before.observation.canary).requests
        }
        _ => 0,
    };

    // What the UI offers is exactly what is accepted.
    if let Some(c) = command {
        let name = match c {
            Command::Promote { .. } => Command::Promote { full: false }.name(),
            other => other.name(),
        };
        let offered = prev.allowed_commands().contains(&name);
        prop_assert_eq!(offered, result.is_ok(), "{:?} offered={}", c, offered);
    }

    // Refusals: exactly the documented ones, and they change nothing.
    let s = match result {
        Err(EngineError::NotAllowed { phase, .. }) => {
            prop_assert_eq!(*phase, prev.phase);
            match input {
                Input::Start => prop_assert_ne!(prev.phase, Phase::Pending),
                Input::Command { command, .. } => prop_assert!(!command.allowed_in(prev.phase)),
                other => prop_assert!(false, "{other:?} refused"),
            }
            return Ok(());
        }
        Err(EngineError::HeldByGroup { .. }) => {
            let is_promote = matches!(command, Some(Command::Promote { .. }));
            prop_assert!(is_promote, "only a promote waits for the group");
            prop_assert!(!prev.group_allows_next());
            return Ok(());
        }
        Err(EngineError::HooksPending { .. }) => {
            let is_promote = matches!(command, Some(Command::Promote { .. }));
            prop_assert!(is_promote, "only a promote waits for hooks");
            prop_assert!(prev.gate.is_some());
            return Ok(());
        }
        Err(e) => {
            prop_assert!(false, "unexpected error {e}");
            unreachable!()
        }
        Ok(s) => s,
    };
    if let Some(c) = command {
        prop_assert!(c.allowed_in(prev.phase), "{c:?} accepted in {}", prev.phase);
    }
    let st = &s.state;
    let promoted = s.actions.contains(&Action::PromoteCanary);
    let last_route = s.actions.iter().rev().find_map(|a| match a {
        Action::SetWeight { canary, mirror } => Some((*canary, *mirror)),
        _ => None,
    });
    if let Some(route) = last_route {
        prop_assert_eq!(
            route,
            (st.canary_weight, st.canary_mirror),
            "the last SetWeight is the state's weight and mirror"
        );
    }
    // Copies go to the canary only while a stage that asks for them runs.
    if st.canary_mirror > 0 {
        prop_assert!(matches!(st.phase, Phase::Progressing | Phase::Paused));
        prop_assert_eq!(st.canary_mirror, spec.stages[st.stage_index].mirror);
    }

    // Rolled back: 0%, no copies, and nothing else until a retry.
    if st.phase.is_rolled_back() {
        prop_assert_eq!(st.canary_weight, 0);
        prop_assert_eq!(st.canary_mirror, 0);
        prop_assert!(!promoted);
        prop_assert!(st.outcome.is_some());
    }
    let retried = matches!(command, Some(Command::Retry));
    if prev.phase.is_rolled_back() && !retried {
        prop_assert_eq!(st.phase, prev.phase);
        let harmless = s.actions.iter().all(|a| {
            *a == Action::SetWeight {
                canary: 0,
                mirror: 0,
            } || matches!(a, Action::RunHook { .. })
        });
        prop_assert!(harmless, "a rolled-back rollout acted: {:?}", s.actions);
    }
    // A firing alert fails a running rollout in the same step.
    if matches!(input, Input::AlertsFiring { .. }) {
        if matches!(prev.phase, Phase::Progressing | Phase::Paused) {
            prop_assert_eq!(st.phase, Phase::Failed);
        } else {
            prop_assert_eq!(st.phase, prev.phase);
        }
    }
    // Abort wins: an accepted abort always ends in Aborted.
    if matches!(command, Some(Command::Abort { .. })) {
        prop_assert_eq!(st.phase, Phase::Aborted);
    }
    // Succeeded is final, and reached only by the step that issues PromoteCanary.
    if prev.phase == Phase::Succeeded {
        prop_assert_eq!(st, prev);
        prop_assert!(s.actions.is_empty());
    }
    prop_assert_eq!(
        promoted,
        st.phase == Phase::Succeeded && prev.phase != Phase::Succeeded,
        "PromoteCanary exactly when the rollout succeeds"
    );
    // No member of a group is ahead of its group's stage, by the engine or by hand.
    if let Some(hold) = st.group_hold {
        if st.attempt == prev.attempt && st.stage_index > prev.stage_index {
            prop_assert!(
                st.stage_index <= hold,
                "stage {} past hold {hold}",
                st.stage_index
            );
        }
        if promoted && !promotion_hooks_passed {
            prop_assert!(hold >= spec.stages.len(), "promoted past hold {hold}");
        }
    }
    if promoted {
        prop_assert_eq!(last_route, Some((100, 0)));
        let by_operator = matches!(command, Some(Command::Promote { .. }));
        let by_gate =
            promotion_hooks_passed && matches!(prev.gate, Some(Gate::BeforePromotion { .. }));
        if !by_gate && !by_operator {
            // The engine promotes only at the end of a healthy final stage, after
            // its duration and with enough of its own traffic.
            let last = spec.stages.len() - 1;
            prop_assert_eq!(st.stage_index, last);
            prop_assert!(spec.stages[last].promote);
            if prev.stage_index == last {
                let d = duration_ms(spec, last).unwrap_or(0);
                prop_assert!(
                    active_before >= d,
                    "promoted after {active_before} ms of {d}"
                );
                if !spec.stages[last].success_criteria.is_empty() {
                    prop_assert!(
                        prev.stage_canary_requests + judged_canary >= spec.analysis.min_requests,
                        "promoted on too little traffic of its own"
                    );
                }
            }
        }
    }

    // Stages in order.
    if retried {
        prop_assert_eq!(st.stage_index, 0);
        prop_assert_eq!(st.attempt, prev.attempt + 1);
    } else if st.attempt == prev.attempt {
        let advanced = st.stage_index - prev.stage_index.min(st.stage_index);
        prop_assert!(st.stage_index >= prev.stage_index, "stages went backwards");
        prop_assert!(advanced <= 1, "skipped a stage");
        if advanced == 1 && !matches!(command, Some(Command::Promote { .. })) {
            // The engine advanced: the duration passed (paused time excluded) and
            // every criterion passed on the latest tick.
            let d = duration_ms(spec, prev.stage_index);
            prop_assert!(d.is_some(), "a stage without duration advanced by itself");
            prop_assert!(
                active_before >= d.unwrap_or(u64::MAX),
                "advanced after {active_before} ms of a {d:?} stage"
            );
            let ev = s
                .events
                .iter()
                .find(|e| e.kind == EventKind::StageAdvanced)
                .expect("a StageAdvanced event");
            prop_assert_eq!(ev.actor.clone(), Actor::Engine);
            prop_assert_eq!(
                ev.evidence.len(),
                spec.stages[prev.stage_index].success_criteria.len()
            );
            if !spec.stages[prev.stage_index].success_criteria.is_empty() {
                prop_assert!(
                    prev.stage_canary_requests + judged_canary >= spec.analysis.min_requests,
                    "advanced on too little traffic of its own"
                );
            }
            let undecided_ok = spec.analysis.on_no_evidence == NoEvidencePolicy::Advance;
            for e in &ev.evidence {
                prop_assert!(
                    e.status == CriterionStatus::Pass
                        || (undecided_ok && e.status == CriterionStatus::Undecided),
                    "advanced on {}",
                    e.summary
                );
            }
        }
    }

    // A failing verdict fails the rollout in the same step.
    if st.phase.is_active()
        && let Some(a) = &st.analysis
    {
        prop_assert!(a.criteria.iter().all(|e| e.status != CriterionStatus::Fail));
    }

    // Weight follows the stage while the rollout runs.
    if matches!(st.phase, Phase::Progressing | Phase::Paused) {
        if matches!(st.gate, Some(Gate::BeforeRollout { .. })) {
            prop_assert_eq!(st.canary_weight, 0);
        } else {
            prop_assert_eq!(st.canary_weight, spec.stages[st.stage_index].traffic);
        }
    }

    // Blue/green: every route is all or nothing, and all only from the switch on.
    if spec.strategy == fledge_spec::Strategy::BlueGreen {
        for a in &s.actions {
            if let Action::SetWeight { canary, .. } = a {
                prop_assert!(matches!(canary, 0 | 100), "blue/green at {canary}%");
            }
        }
        if st.canary_weight == 100 {
            let switched = st.stage_index + 1 == spec.stages.len();
            prop_assert!(switched || st.phase == Phase::Succeeded);
        }
    }

    // Pause accounting matches the model; a new stage starts from zero.
    if st.stage_started_at != prev.stage_started_at || st.attempt != prev.attempt {
        model.active_ms = 0;
    }
    if matches!(st.phase, Phase::Progressing | Phase::Paused) && st.stage_started_at.is_some() {
        prop_assert_eq!(st.stage_active_ms(now), model.active_ms, "active time");
        prop_assert_eq!(st.paused_at.is_some(), st.phase == Phase::Paused);
        // Eager: a running stage whose time is up and whose criteria all pass has
        // already advanced.
        let stage = &spec.stages[st.stage_index];
        let last = st.stage_index + 1 == spec.stages.len();
        let due = match stage.duration {
            Some(_) => st.stage_active_ms(now) >= duration_ms(spec, st.stage_index).unwrap(),
            None => last && stage.promote,
        } && (!last || stage.promote);
        let all_pass = st.consecutive_metric_errors == 0
            && st.stage_canary_requests >= spec.analysis.min_requests
            && st.analysis.as_ref().is_some_and(|a| {
                a.stage_index == st.stage_index
                    && a.criteria.iter().all(|e| e.status == CriterionStatus::Pass)
            });
        // ... unless its weight is not applied, or its group has not passed the
        // stage: then nothing moves on.
        if st.phase == Phase::Progressing
            && st.gate.is_none()
            && st.route_unapplied_since.is_none()
            && st.group_allows_next()
            && due
        {
            prop_assert!(
                !(stage.success_criteria.is_empty() || all_pass),
                "stage {} is due and healthy but did not advance",
                st.stage_index
            );
        }
    }

    // The persisted form resumes exactly.
    let json = serde_json::to_string(st).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let back: RolloutState =
        serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, st, "JSON round trip");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn machine_invariants_hold_after_every_step(which in 0usize..SPECS.len(), ops in timed_ops()) {
        let spec = spec(SPECS[which]);
        let mut state = RolloutState::pending();
        let mut counters = Counters::default();
        let mut model = Model::default();
        let mut now = T0;
        for (dt, op) in &ops {
            let prev_now = now;
            now = now.plus_millis(*dt);
            let input = bind(op, &state, &mut counters);
            let result = step(&spec, &state, input.clone(), now);
            check(&spec, &state, &input, &result, prev_now, now, &mut model)?;
            // Deterministic: the same inputs give the same step.
            prop_assert_eq!(&step(&spec, &state, input, now), &result);
            if let Ok(s) = result {
                state = s.state;
            }
        }
    }

    /// An operator's abort and promote arriving together, in either order, from any
    /// reachable state: the canary is promoted only if the abort was refused
    /// because the rollout had already succeeded, and an accepted abort always
    /// leaves 0% on the canary.
    #[test]
    fn abort_and_promote_racing_never_promote_an_aborted_canary(
        which in 0usize..SPECS.len(),
        ops in timed_ops(),
        full in any::<bool>(),
        abort_first in any::<bool>(),
    ) {
        let spec = spec(SPECS[which]);
        let mut state = RolloutState::pending();
        let mut counters = Counters::default();
        let mut now = T0;
        for (dt, op) in &ops {
            now = now.plus_millis(*dt);
            let input = bind(op, &state, &mut counters);
            if let Ok(s) = step(&spec, &state, input, now) {
                state = s.state;
            }
        }
        let abort = Input::Command { command: Command::Abort { reason: None }, actor: Actor::operator("a") };
        let promote = Input::Command { command: Command::Promote { full }, actor: Actor::operator("b") };
        let (first, second) = if abort_first { (abort, promote) } else { (promote, abort) };
        let mut actions = Vec::new();
        let mut abort_accepted = false;
        for input in [first, second] {
            let is_abort = matches!(input, Input::Command { command: Command::Abort { .. }, .. });
            if let Ok(s) = step(&spec, &state, input, now) {
                abort_accepted |= is_abort;
                actions.extend(s.actions);
                state = s.state;
            }
        }
        if abort_accepted {
            prop_assert_eq!(state.phase, Phase::Aborted);
            prop_assert_eq!(state.canary_weight, 0);
            // Whatever ran before the abort, nothing after it promotes.
            let last_promote = actions.iter().rposition(|a| *a == Action::PromoteCanary);
            prop_assert!(last_promote.is_none(), "an aborted canary was promoted");
        }
        if actions.contains(&Action::PromoteCanary) {
            prop_assert_eq!(state.phase, Phase::Succeeded);
            prop_assert!(!abort_accepted);
        }
    }
}

mod threshold_judge {
    use super::*;
    use fledge_engine::ValueUnit;
    use fledge_engine::judge::{CriterionContext, CriterionJudge, JudgeSettings, TickDelta};
    use fledge_engine::{ArmCounters, Evidence, JudgeMethod};
    use fledge_spec::Criterion;

    fn run(text: &str, min: u64, ticks: &[(u64, u64, u64, u64)]) -> Evidence {
        let criterion = Criterion::parse(text).unwrap();
        let settings = JudgeSettings {
            method: JudgeMethod::Threshold,
            min_requests: min,
            ..JudgeSettings::default()
        };
        let ctx = CriterionContext {
            criterion: &criterion,
            unit: ValueUnit::Ratio,
            settings: &settings,
        };
        let mut judge = CriterionJudge::new(&ctx);
        let mut last = judge.assess(&ctx);
        for &(cn, ce, sn, se) in ticks {
            let mut canary = ArmCounters::default();
            let mut stable = ArmCounters::default();
            add_arm(&mut canary, (cn, ce), 0.05);
            add_arm(&mut stable, (sn, se), 0.05);
            let delta = TickDelta {
                window_ms: 1000,
                canary,
                stable,
                ..TickDelta::default()
            };
            last = judge.update(&ctx, &delta);
        }
        last
    }

    /// The criterion under test: a bound relative to stable's, or a fixed one.
    fn criterion(relative: bool) -> &'static str {
        if relative {
            "error_rate <= stable + 1%"
        } else {
            "error_rate < 2%"
        }
    }

    fn ticks() -> impl Strategy<Value = Vec<(u64, u64, u64, u64)>> {
        prop::collection::vec(
            (0u64..300, 0u64..1000).prop_flat_map(|(cn, sn)| {
                (Just(cn), 0..=cn / 10 + 1, Just(sn), 0..=sn / 50 + 1)
                    .prop_map(|(cn, ce, sn, se)| (cn, ce.min(cn), sn, se.min(sn)))
            }),
            1..30,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// The threshold judge judges the stage's whole window: how the same traffic
        /// is cut into ticks does not change the verdict.
        #[test]
        fn the_verdict_does_not_depend_on_how_ticks_are_cut(
            ticks in ticks(),
            relative in any::<bool>(),
            min in 0u64..2000,
        ) {
            let text = criterion(relative);
            let total = ticks.iter().fold((0, 0, 0, 0), |a, t| {
                (a.0 + t.0, a.1 + t.1, a.2 + t.2, a.3 + t.3)
            });
            let split = run(text, min, &ticks);
            let whole = run(text, min, &[total]);
            prop_assert_eq!(split.status, whole.status);
            prop_assert_eq!(&split.canary, &whole.canary);
            prop_assert_eq!(split.threshold, whole.threshold);
        }

        /// Below `minRequests` the verdict is "not enough data", never a pass and
        /// never a failure, whatever the errors; at or above it, a verdict.
        #[test]
        fn below_the_minimum_sample_there_is_no_verdict(
            ticks in ticks(),
            relative in any::<bool>(),
            min in 1u64..3000,
        ) {
            let text = criterion(relative);
            let e = run(text, min, &ticks);
            let canary: u64 = ticks.iter().map(|t| t.0).sum();
            let stable: u64 = ticks.iter().map(|t| t.2).sum();
            let enough = canary >= min && (!relative || stable >= min);
            prop_assert_eq!(e.status != CriterionStatus::NotEnoughData, enough, "{}", e.summary);
            if enough {
                let value = e.canary.value.unwrap();
                let holds = value < e.threshold.unwrap()
                    || (relative && value <= e.threshold.unwrap() + 1e-12);
                prop_assert_eq!(e.status == CriterionStatus::Pass, holds, "{}", e.summary);
            }
        }
    }
}

mod hostile_sources {
    use super::*;
    use fledge_engine::{ArmCounters, LatencyHistogram, Observation};

    fn counter() -> impl Strategy<Value = u64> {
        prop_oneof![
            4 => 0u64..10_000,
            1 => Just(u64::MAX),
            1 => Just(u64::MAX / 3),
            1 => (1u64 << 60)..u64::MAX,
        ]
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0..1e6,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(-1.0),
            1 => Just(f64::MAX),
        ]
    }

    fn arm() -> impl Strategy<Value = ArmCounters> {
        (
            counter(),
            counter(),
            prop_oneof![
                3 => Just(Vec::new()),
                1 => prop::collection::vec(counter(), 0..130),
            ],
            float(),
        )
            .prop_map(|(requests, errors, counts, sum_seconds)| ArmCounters {
                requests,
                errors,
                latency: LatencyHistogram {
                    counts,
                    sum_seconds,
                },
            })
    }

    fn observation() -> impl Strategy<Value = Observation> {
        (arm(), arm(), float(), proptest::option::of(float())).prop_map(|(stable, canary, c, s)| {
            let mut obs = Observation {
                stable,
                canary,
                custom: Default::default(),
            };
            obs.custom.insert(
                "checkout_success".into(),
                fledge_engine::CustomValue {
                    canary: c,
                    stable: s,
                },
            );
            obs
        })
    }

    const HOSTILE: &str = r#"
app: shop
version: v2
errorBudget: 1000
analysis: {method: threshold, minRequests: 10}
metrics:
  checkout_success: {query: "x"}
stages:
  - traffic: 20
    duration: 10s
    successCriteria:
      - error_rate < 5%
      - latency_p99 < stable * 2
      - latency_mean < 1s
      - request_rate > 1rps
      - checkout_success >= 0.5
  - traffic: 100
    final: true
    promote: true
"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// Absurd counters (near u64::MAX, resets, short or long histograms) and
        /// non-finite values from a broken metric source never panic the engine, and
        /// the state always survives a JSON round trip.
        #[test]
        fn a_hostile_metric_source_never_panics_or_corrupts_the_state(
            observations in prop::collection::vec((0u64..5_000, observation()), 1..8),
            sequential in any::<bool>(),
        ) {
            let yaml = if sequential {
                HOSTILE.replace("method: threshold", "method: sequential")
            } else {
                HOSTILE.to_string()
            };
            let spec = spec(&yaml);
            let mut now = T0;
            let mut state = step(&spec, &RolloutState::pending(), Input::Start, now)
                .map_err(|e| TestCaseError::fail(e.to_string()))?
                .state;
            for (dt, obs) in observations {
                now = now.plus_millis(dt);
                let s = step(&spec, &state, Input::Observe(obs), now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let json = serde_json::to_string(&s.state)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let back: RolloutState = serde_json::from_str(&json)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
                prop_assert_eq!(&back, &s.state);
                for e in &s.events {
                    let json = serde_json::to_string(e)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let back: fledge_engine::Event = serde_json::from_str(&json)
                        .map_err(|e| TestCaseError::fail(format!("{e}: {json}")))?;
                    prop_assert_eq!(&back, e, "an event lost a number in JSON");
                }
                state = s.state;
            }
        }
    }
}

/// The e-processes stay valid however the evidence is cut into looks: the server
/// judges the built-in proxy's counters every 50–100 ms (or every few dozen
/// requests), other sources once a second, and an anytime-valid test must not care.
/// Ville's inequality bounds the chance that an e-process ever reaches 1/α by α over
/// *all* looks, provided each look's factor has expectation at most 1 under the
/// null, whatever its size. These properties check exactly that, for any batch:
///
/// * the threshold test's e-value is a function of the counts seen so far, not of
///   how they were cut (so a finer schedule only adds stopping times);
/// * one look of either test, of any size, has expectation exactly 1 on the
///   boundary of its null (the binomial sum, computed exactly), and below 1 inside.
mod anytime_validity {
    use super::*;
    use fledge_engine::judge::evalue::{RatioTest, ThresholdTest, null_share};
    use statrs::distribution::{Binomial, Discrete};

    /// A stream of looks: (requests, bad) each.
    fn looks() -> impl Strategy<Value = Vec<(u64, u64)>> {
        prop::collection::vec(
            (0u64..400)
                .prop_flat_map(|n| (Just(n), 0..=n / 8 + 1).prop_map(|(n, b)| (n, b.min(n)))),
            1..40,
        )
    }

    /// E[e^{log e-value}] of one fresh look of `n` trials, each bad with `p`, where
    /// `log_e(k)` is the look's log e-value with `k` bad.
    fn expectation(n: u64, p: f64, log_e: impl Fn(u64) -> f64) -> f64 {
        let b = Binomial::new(p, n).expect("a valid binomial");
        // Summed in logs: a look with every request bad has a tiny probability and a
        // huge e-value, each out of range alone.
        (0..=n).map(|k| (b.ln_pmf(k) + log_e(k)).exp()).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(CASES))]

        /// Cutting the same requests into more or fewer looks leaves the e-value
        /// where it is; the running maximum (the p-value) only sees more of it.
        #[test]
        fn the_threshold_e_value_does_not_depend_on_the_looks(
            looks in looks(),
            tau in 0.001f64..0.2,
            cut in 1usize..8,
        ) {
            let mut fine = ThresholdTest::new(tau).unwrap();
            for &(n, bad) in &looks {
                fine.update(n, bad);
            }
            let mut coarse = ThresholdTest::new(tau).unwrap();
            for chunk in looks.chunks(cut) {
                let (n, bad) = chunk.iter().fold((0, 0), |a, l| (a.0 + l.0, a.1 + l.1));
                coarse.update(n, bad);
            }
            let scale = 1.0 + fine.log_abort().abs();
            prop_assert!((fine.log_abort() - coarse.log_abort()).abs() <= 1e-9 * scale);
            prop_assert!((fine.log_pass() - coarse.log_pass()).abs() <= 1e-9 * scale);
            prop_assert!(fine.p_value() <= coarse.p_value() + 1e-12);
        }

        /// One look of the threshold test, of any size, is a fair bet at p = τ and a
        /// losing one below it: E[E] = 1, then ≤ 1.
        #[test]
        fn a_threshold_look_of_any_size_is_fair_under_the_null(
            n in 1u64..300,
            tau in 0.001f64..0.3,
            inside in 0.0f64..1.0,
        ) {
            let at = |p: f64| expectation(n, p, |k| {
                let mut t = ThresholdTest::new(tau).unwrap();
                t.update(n, k);
                t.log_abort()
            });
            let boundary = at(tau);
            prop_assert!((boundary - 1.0).abs() <= 1e-9, "E[E] = {boundary} at p = τ");
            let below = at(tau * inside);
            prop_assert!(below <= 1.0 + 1e-9, "E[E] = {below} at p = {}", tau * inside);
        }

        /// One look of the comparative test, whatever the arms' sizes and however
        /// many bad events it holds: given y bad events, the canary's share of them
        /// is binomial with the null share ρ0 when the canary fails exactly R times as
        /// often as stable, and less when it fails less; the look's e-value has
        /// expectation 1, then at most 1.
        #[test]
        fn a_comparative_look_of_any_size_is_fair_under_the_null(
            canary in 1u64..500,
            stable in 1u64..2000,
            events in 1u64..60,
            tolerance in 1.0f64..3.0,
            inside in 0.0f64..1.0,
        ) {
            // Bad events counted within both arms' sizes, so none is clamped.
            let y = events.min(canary).min(stable);
            let rho = canary as f64 / (canary + stable) as f64;
            let rho0 = null_share(rho, tolerance);
            let at = |share: f64| expectation(y, share, |yc| {
                let mut t = RatioTest::new(tolerance).unwrap();
                t.update(canary, yc, stable, y - yc);
                t.log_abort()
            });
            let boundary = at(rho0);
            prop_assert!((boundary - 1.0).abs() <= 1e-9, "E[E] = {boundary} at ρ0 = {rho0}");
            let below = at(rho0 * inside);
            prop_assert!(below <= 1.0 + 1e-9, "E[E] = {below} below ρ0");
        }
    }
}
