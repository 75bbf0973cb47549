//! Each transition of the rollout state machine, driven through the public API with
//! hand-made observations.

mod common;

use common::{Rollout, T0, THREE_STAGES};
use fledge_engine::{
    Action, Actor, Command, CriterionStatus, EngineError, EventKind, HookPoint, Input, Phase,
    RolloutState, Timestamp, reconcile, step,
};

fn weights(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetWeight { canary, .. } => Some(*canary),
            _ => None,
        })
        .collect()
}

/// The action setting the router to `canary`% of requests and `mirror`% of copies.
fn set_weight(canary: u8, mirror: u8) -> Action {
    Action::SetWeight { canary, mirror }
}

#[test]
fn start_enters_the_first_stage() {
    let mut r = Rollout::new(THREE_STAGES);
    let s = r.start();
    assert_eq!(s.state.phase, Phase::Progressing);
    assert_eq!(s.state.stage_index, 0);
    assert_eq!(s.state.canary_weight, 20);
    assert_eq!(s.state.attempt, 1);
    assert_eq!(s.actions, vec![set_weight(20, 0)]);
    assert_eq!(r.kinds(), vec![EventKind::Started, EventKind::StageStarted]);
    assert_eq!(
        r.last_event().message,
        "stage 1/3 (20%) started: canary at 20% for 1m"
    );
    let err = r.input(Input::Start).unwrap_err();
    assert_eq!(
        err,
        EngineError::NotAllowed {
            phase: Phase::Progressing,
            command: "start"
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot start a rollout that is Progressing"
    );
}

#[test]
fn a_healthy_stage_advances_only_after_its_duration() {
    let mut r = Rollout::new(THREE_STAGES);
    r.input(Input::Observe(r.counters.observation())).unwrap(); // baseline while pending
    r.start();
    let s = r.healthy(59);
    assert_eq!(s.state.stage_index, 0, "advanced before the duration");
    let a = s.state.analysis.as_ref().unwrap();
    assert_eq!(a.criteria[0].status, CriterionStatus::Pass);
    let s = r.healthy(1);
    assert_eq!(s.state.stage_index, 1);
    assert_eq!(s.state.canary_weight, 50);
    assert_eq!(weights(&s.actions), vec![50]);
    let advanced = s
        .events
        .iter()
        .find(|e| e.kind == EventKind::StageAdvanced)
        .expect("a StageAdvanced event");
    assert_eq!(advanced.actor, Actor::Engine);
    assert_eq!(advanced.stage_index, Some(0));
    assert_eq!(
        advanced.message,
        "stage 1/3 (20%) ran 1m with every criterion passing"
    );
    assert_eq!(advanced.evidence.len(), 1);
    assert_eq!(advanced.evidence[0].status, CriterionStatus::Pass);
    assert_eq!(advanced.evidence[0].canary.requests, 60 * 200);
    // The new stage judges a fresh window.
    let fresh = &s.state.analysis.as_ref().unwrap().criteria[0];
    assert_eq!(fresh.status, CriterionStatus::NotEnoughData);
    assert_eq!(fresh.canary.requests, 0);
}

#[test]
fn the_final_stage_with_promote_makes_the_canary_stable() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(120);
    assert_eq!(r.state.phase, Phase::Succeeded);
    // Reached stage 3 (no duration, promote: true) and promoted in the same step.
    assert_eq!(
        weights(&r.actions),
        vec![20, 50, 100, 100],
        "stages, then all traffic on the new version"
    );
    assert_eq!(r.actions.last(), Some(&Action::PromoteCanary));
    let ok = r.last_event();
    assert_eq!(ok.kind, EventKind::Succeeded);
    assert_eq!(ok.message, "v2 is the new stable version of shop");
    assert_eq!(reconcile(&r.state), vec![Action::PromoteCanary]);
    // Nothing moves a finished rollout.
    let s = r.second((10, 10), (10, 10));
    assert!(s.actions.is_empty() && s.events.is_empty());
    assert!(matches!(
        r.command(Command::Abort { reason: None }),
        Err(EngineError::NotAllowed {
            phase: Phase::Succeeded,
            command: "abort"
        })
    ));
}

#[test]
fn a_violated_criterion_fails_the_rollout_at_once() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(1); // baseline (no previous observation yet)
    let s = r.second((200, 10), (800, 0));
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!(s.state.canary_weight, 0);
    assert_eq!(s.actions, vec![set_weight(0, 0)]);
    let failed = s.events.last().unwrap();
    assert_eq!(failed.kind, EventKind::Failed);
    assert_eq!(failed.actor, Actor::Engine);
    assert_eq!(
        failed.message,
        "error_rate 5% (n=200) ≥ 1% at stage 1/3 (20%)"
    );
    let ev = &failed.evidence[0];
    assert_eq!(ev.criterion, "error_rate < 1%");
    assert_eq!((ev.canary.requests, ev.canary.bad), (200, Some(10)));
    assert_eq!(ev.threshold, Some(0.01));
    assert_eq!(reconcile(&s.state), vec![set_weight(0, 0)]);
    assert!(matches!(
        r.command(Command::Promote { full: true }),
        Err(EngineError::NotAllowed {
            phase: Phase::Failed,
            ..
        })
    ));
}

#[test]
fn too_few_requests_never_pass_and_never_fail() {
    let mut r = Rollout::started(THREE_STAGES);
    // 1 request per second, all failing, for two minutes: 99 < minRequests 100.
    r.healthy(1);
    for _ in 0..99 {
        r.second((1, 1), (4, 0));
    }
    assert_eq!(r.state.phase, Phase::Progressing);
    assert_eq!(r.state.stage_index, 0);
    let c = &r.state.analysis.as_ref().unwrap().criteria[0];
    assert_eq!(c.status, CriterionStatus::NotEnoughData);
    assert_eq!(
        c.summary,
        "error_rate: not enough data (canary n=99 of 100 needed)"
    );
    // The hundredth request decides.
    let s = r.second((1, 1), (4, 0));
    assert_eq!(s.state.phase, Phase::Failed);
}

#[test]
fn a_stage_without_duration_waits_for_a_promote() {
    let mut r = Rollout::started(
        r#"
app: shop
version: v2
analysis: {method: threshold}
stages:
  - traffic: 10
    successCriteria: [error_rate < 1%]
  - traffic: 100
    final: true
"#,
    );
    r.healthy(600);
    assert_eq!(r.state.stage_index, 0);
    assert_eq!(r.state.stage_remaining_ms(&r.spec, r.now), None);
    let s = r.command(Command::Promote { full: false }).unwrap();
    assert_eq!(s.state.stage_index, 1);
    assert_eq!(s.actions, vec![set_weight(100, 0)]);
    assert_eq!(s.events[0].kind, EventKind::Promoted);
    assert_eq!(s.events[0].actor, Actor::operator("alice"));
    assert_eq!(s.events[0].message, "alice ended stage 1/2 (10%) early");
    // The final stage has no `promote: true`: it waits too.
    r.healthy(600);
    assert_eq!(r.state.phase, Phase::Progressing);
    let s = r.command(Command::Promote { full: false }).unwrap();
    assert_eq!(s.state.phase, Phase::Succeeded);
    assert!(s.actions.contains(&Action::PromoteCanary));
    assert_eq!(
        s.events.last().unwrap().actor,
        Actor::operator("alice"),
        "the operator made the final decision"
    );
}

#[test]
fn promote_full_jumps_to_100_and_succeeds() {
    let mut r = Rollout::started(THREE_STAGES);
    let s = r.command(Command::Promote { full: true }).unwrap();
    assert_eq!(s.state.phase, Phase::Succeeded);
    assert_eq!(s.actions, vec![set_weight(100, 0), Action::PromoteCanary]);
    assert_eq!(
        s.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Promoted, EventKind::Succeeded]
    );
}

#[test]
fn abort_rolls_back_and_then_refuses_promote() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(70);
    assert_eq!(r.state.stage_index, 1);
    let s = r
        .command(Command::Abort {
            reason: Some("wrong build".into()),
        })
        .unwrap();
    assert_eq!(s.state.phase, Phase::Aborted);
    assert_eq!(s.state.canary_weight, 0);
    assert_eq!(s.actions, vec![set_weight(0, 0)]);
    let e = &s.events[0];
    assert_eq!(e.kind, EventKind::Aborted);
    assert_eq!(
        e.message,
        "alice aborted the rollout at stage 2/3 (50%): wrong build"
    );
    assert_eq!(s.state.outcome.as_ref().unwrap().reason, "wrong build");
    for c in [
        Command::Promote { full: false },
        Command::Promote { full: true },
        Command::Pause,
        Command::Resume,
        Command::Abort { reason: None },
    ] {
        assert!(r.command(c).is_err());
    }
    // Healthy traffic afterwards changes nothing.
    let s = r.healthy(200);
    assert_eq!(s.state.phase, Phase::Aborted);
    assert!(r.actions.iter().all(|a| *a != Action::PromoteCanary));
}

#[test]
fn abort_of_a_pending_rollout() {
    let mut r = Rollout::new(THREE_STAGES);
    let s = r.command(Command::Abort { reason: None }).unwrap();
    assert_eq!(s.state.phase, Phase::Aborted);
    assert_eq!(
        s.events[0].message,
        "alice aborted the rollout before it started: no reason given"
    );
    assert!(matches!(
        r.command(Command::Pause),
        Err(EngineError::NotAllowed { .. })
    ));
}

#[test]
fn paused_time_does_not_count_toward_the_duration() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(10);
    let s = r.command(Command::Pause).unwrap();
    assert_eq!(s.state.phase, Phase::Paused);
    assert_eq!(s.events[0].kind, EventKind::Paused);
    assert!(s.actions.is_empty(), "pausing keeps the weight");
    r.healthy(300); // paused: criteria pass, but nothing advances
    assert_eq!(r.state.stage_index, 0);
    assert_eq!(r.state.stage_active_ms(r.now), 10_000);
    assert!(matches!(
        r.command(Command::Pause),
        Err(EngineError::NotAllowed {
            phase: Phase::Paused,
            command: "pause"
        })
    ));
    assert_eq!(r.state.stage_remaining_ms(&r.spec, r.now), Some(50_000));
    r.command(Command::Resume).unwrap();
    assert_eq!(r.state.phase, Phase::Progressing);
    r.healthy(49);
    assert_eq!(r.state.stage_remaining_ms(&r.spec, r.now), Some(1_000));
    assert_eq!(r.state.stage_index, 0, "59 s active out of 60");
    r.healthy(1);
    assert_eq!(r.state.stage_index, 1);
}

#[test]
fn a_paused_rollout_still_fails_on_bad_evidence() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(5);
    r.command(Command::Pause).unwrap();
    let s = r.second((200, 50), (800, 0));
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!(s.state.paused_at, None);
}

#[test]
fn promote_while_paused_moves_one_stage_and_stays_paused() {
    let mut r = Rollout::started(THREE_STAGES);
    r.command(Command::Pause).unwrap();
    let s = r.command(Command::Promote { full: false }).unwrap();
    assert_eq!((s.state.phase, s.state.stage_index), (Phase::Paused, 1));
    assert_eq!(s.actions, vec![set_weight(50, 0)]);
    r.healthy(120);
    assert_eq!(r.state.stage_index, 1);
}

#[test]
fn retry_starts_again_from_stage_zero() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(1);
    r.second((100, 100), (100, 0));
    assert_eq!(r.state.phase, Phase::Failed);
    let s = r.command(Command::Retry).unwrap();
    assert_eq!(s.state.phase, Phase::Progressing);
    assert_eq!((s.state.stage_index, s.state.canary_weight), (0, 20));
    assert_eq!(s.state.attempt, 2);
    assert_eq!(s.state.outcome, None);
    assert_eq!(s.state.canary_failures, 0);
    assert_eq!(s.events[0].kind, EventKind::Retried);
    assert_eq!(s.events[0].message, "attempt 2 of shop v2 started by alice");
    assert_eq!(s.actions, vec![set_weight(20, 0)]);
    // The first observation after a retry is a fresh baseline: nothing from before
    // the retry is judged.
    let s = r.second((500, 500), (800, 0));
    assert_eq!(s.state.phase, Phase::Progressing);
    assert_eq!(s.state.canary_failures, 0);
    let s = r.healthy(1);
    assert_eq!(
        s.state.analysis.as_ref().unwrap().criteria[0]
            .canary
            .requests,
        200
    );
    assert!(matches!(
        r.command(Command::Retry),
        Err(EngineError::NotAllowed {
            phase: Phase::Progressing,
            command: "retry"
        })
    ));
}

#[test]
fn a_stage_is_not_credited_with_time_its_weight_was_not_applied() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(30);
    // The router cannot apply 20% for 100 s: never a pass, the clock stops.
    let s = r.route_unapplied_after(1000, "haproxy is down");
    assert_eq!(s.events[0].kind, EventKind::RouteUnapplied);
    assert_eq!(
        s.events[0].message,
        "haproxy is down; the stage clock stops (the rollout fails after 5 such reads in a row)"
    );
    for _ in 0..3 {
        let s = r.route_unapplied_after(33_000, "haproxy is down");
        assert_eq!(s.state.stage_index, 0);
        assert_eq!(s.state.phase, Phase::Progressing);
        assert!(s.events.is_empty());
    }
    // 130 s after the stage started, only the 31 s before the failure count.
    let s = r.input(Input::Tick).unwrap();
    assert_eq!(s.state.stage_active_ms(r.now), 31_000);
    // What the metrics saw meanwhile was not served at this stage's weight (here,
    // failures that would fail the criterion): not judged.
    r.counters.add((5_000, 2_500), (800, 0));
    r.advance(1000);
    let s = r.input(Input::Observe(r.counters.observation())).unwrap();
    assert_eq!(s.events[0].kind, EventKind::RouteApplied);
    assert_eq!(
        s.events[0].message,
        "the router applies 20% again after 1m40s; the stage clock runs on"
    );
    assert_eq!(s.state.phase, Phase::Progressing);
    assert_eq!(s.state.stage_index, 0);
    // Then 29 more healthy seconds end the stage's minute, and not one sooner.
    let s = r.healthy(28);
    assert_eq!(s.state.stage_index, 0, "credited with unapplied time");
    let s = r.healthy(1);
    assert_eq!(s.state.stage_index, 1);
}

#[test]
fn a_router_that_stays_down_fails_the_rollout_back_to_zero() {
    let mut r = Rollout::started(THREE_STAGES);
    for i in 1..=5 {
        let s = r.route_unapplied_after(1000, "haproxy is down");
        assert_eq!(s.state.phase == Phase::Failed, i == 5, "read {i}");
    }
    let s = r.input(Input::Tick).unwrap();
    assert_eq!(s.state.canary_weight, 0);
    assert_eq!(s.state.route_unapplied_since, None);
    assert_eq!(
        r.last_event().message,
        "no analysis for 5 reads in a row: haproxy is down at stage 1/3 (20%)"
    );
    assert_eq!(reconcile(&s.state), vec![set_weight(0, 0)]);
}

#[test]
fn an_abort_while_the_router_is_down_is_taken_at_once() {
    let mut r = Rollout::started(THREE_STAGES);
    r.route_unapplied_after(1000, "down");
    let s = r.command(Command::Abort { reason: None }).unwrap();
    assert_eq!(s.state.phase, Phase::Aborted);
    assert_eq!(weights(&s.actions), vec![0]);
    assert!(!s.events.iter().any(|e| e.kind == EventKind::RouteApplied));
}

#[test]
fn metric_source_failures_block_advance_and_then_fail() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(59);
    let s = r.metrics_unavailable_after(1000, "connection refused");
    assert_eq!(s.state.stage_index, 0, "a failed read is never a pass");
    assert_eq!(s.events[0].kind, EventKind::AnalysisError);
    assert_eq!(
        s.events[0].message,
        "metrics unavailable: connection refused (the rollout fails after 5 failed reads in a row)"
    );
    // Recovery: judged again, and the stage ends.
    let s = r.healthy(1);
    assert_eq!(s.events[0].kind, EventKind::AnalysisRecovered);
    assert_eq!(s.state.stage_index, 1);
    for i in 1..=5 {
        let s = r.metrics_unavailable_after(1000, "timeout");
        assert_eq!(s.state.phase == Phase::Failed, i == 5, "read {i}");
        assert_eq!(s.events.len(), usize::from(i == 1 || i == 5));
    }
    assert_eq!(
        r.last_event().message,
        "metrics unavailable for 5 reads in a row: timeout at stage 2/3 (50%)"
    );
}

#[test]
fn the_error_budget_fails_whatever_the_statistics_say() {
    let mut r = Rollout::started(
        r#"
app: shop
version: v2
errorBudget: 10
analysis: {method: threshold}
stages:
  - traffic: 20
    duration: 10m
    successCriteria: [error_rate < 50%]
  - traffic: 100
    final: true
    promote: true
"#,
    );
    r.healthy(1);
    for _ in 0..5 {
        r.second((200, 2), (800, 0));
    }
    assert_eq!(
        r.state.phase,
        Phase::Progressing,
        "10 failures is the budget"
    );
    let s = r.second((200, 1), (800, 0));
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!(
        s.events.last().unwrap().message,
        "error budget spent: the canary failed 11 requests (budget 10) at stage 1/2 (20%)"
    );
    let ev = &s.events.last().unwrap().evidence[0];
    assert_eq!(ev.criterion, "errorBudget: 10");
    assert_eq!((ev.canary.bad, ev.threshold), (Some(11), Some(10.0)));
    assert_eq!(ev.canary.requests, 6 * 200);
}

#[test]
fn a_counter_reset_counts_the_new_value() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(10);
    // The canary process restarted: its counters start again from a small value.
    r.counters.canary = Default::default();
    let s = r.second((150, 0), (800, 0));
    let c = &s.state.analysis.as_ref().unwrap().criteria[0];
    assert_eq!(c.canary.requests, 9 * 200 + 150);
}

#[test]
fn relative_criteria_compare_with_stable_in_the_same_window() {
    let mut r = Rollout::started(
        r#"
app: shop
version: v2
analysis: {method: threshold, minRequests: 100}
stages:
  - traffic: 20
    duration: 1m
    successCriteria: ["error_rate <= stable + 0.5%"]
  - traffic: 100
    final: true
    promote: true
"#,
    );
    r.healthy(1);
    // Both arms at 2% errors: within stable + 0.5%.
    let s = r.second((200, 4), (800, 16));
    let c = &s.state.analysis.as_ref().unwrap().criteria[0];
    assert_eq!(c.status, CriterionStatus::Pass, "{}", c.summary);
    assert_eq!(c.stable.as_ref().unwrap().requests, 800);
    // The canary gets worse than stable + 0.5%.
    let s = r.second((200, 20), (800, 16));
    assert_eq!(s.state.phase, Phase::Failed, "{:?}", s.events);
}

const GATED: &str = r#"
app: shop
version: v2
analysis: {method: threshold}
hooks:
  beforeRollout:
    - exec: {command: [deploy-canary]}
  beforePromotion:
    - http: {url: "http://127.0.0.1:9/gate"}
  afterRollback:
    - exec: {command: [scale-down]}
stages:
  - traffic: 20
    duration: 10s
  - traffic: 100
    final: true
    promote: true
"#;

#[test]
fn before_rollout_hooks_gate_the_first_weight() {
    let mut r = Rollout::new(GATED);
    let s = r.start();
    assert_eq!(s.state.canary_weight, 0);
    assert_eq!(
        s.actions,
        vec![
            Action::RunHook {
                hook: HookPoint::BeforeRollout,
                attempt: 1
            },
            set_weight(0, 0)
        ]
    );
    r.tick_after(60_000);
    assert_eq!(
        r.state.canary_weight, 0,
        "no traffic before the deploy hook"
    );
    assert!(matches!(
        r.command(Command::Promote { full: true }),
        Err(EngineError::HooksPending {
            hooks: "beforeRollout",
            ..
        })
    ));
    let s = r.hook_done(HookPoint::BeforeRollout, 1, None);
    assert_eq!(s.state.canary_weight, 20);
    assert_eq!(s.state.stage_started_at, Some(r.now));
}

#[test]
fn a_failed_before_rollout_hook_fails_the_rollout() {
    let mut r = Rollout::started(GATED);
    let s = r.hook_done(
        HookPoint::BeforeRollout,
        1,
        Some("deploy-canary exited with status 1"),
    );
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!(
        s.actions,
        vec![
            set_weight(0, 0),
            Action::RunHook {
                hook: HookPoint::AfterRollback,
                attempt: 1
            }
        ]
    );
}

fn through_the_first_gate(r: &mut Rollout) {
    r.start();
    r.hook_done(HookPoint::BeforeRollout, 1, None);
}

#[test]
fn before_promotion_hooks_gate_the_promotion() {
    let mut r = Rollout::new(GATED);
    through_the_first_gate(&mut r);
    r.healthy(10);
    assert_eq!(r.state.stage_index, 1);
    // Reaching the final stage asks for the gate instead of promoting.
    assert_eq!(r.state.phase, Phase::Progressing);
    assert_eq!(r.last_event().kind, EventKind::PromotionGate);
    assert_eq!(
        r.actions.last(),
        Some(&Action::RunHook {
            hook: HookPoint::BeforePromotion,
            attempt: 1
        })
    );
    assert!(matches!(
        r.command(Command::Promote { full: false }),
        Err(EngineError::HooksPending { .. })
    ));
    let s = r.hook_done(HookPoint::BeforePromotion, 1, None);
    assert_eq!(s.state.phase, Phase::Succeeded);
    assert_eq!(s.actions, vec![set_weight(100, 0), Action::PromoteCanary]);
}

#[test]
fn an_abort_during_the_promotion_gate_wins() {
    let mut r = Rollout::new(GATED);
    through_the_first_gate(&mut r);
    r.command(Command::Promote { full: true }).unwrap();
    assert_eq!(r.state.phase, Phase::Progressing, "waiting for the gate");
    let s = r
        .command(Command::Abort {
            reason: Some("bad smell".into()),
        })
        .unwrap();
    assert_eq!(s.state.phase, Phase::Aborted);
    assert_eq!(s.state.gate, None);
    // The gate's late success changes nothing.
    let s = r.hook_done(HookPoint::BeforePromotion, 1, None);
    assert_eq!(s.state.phase, Phase::Aborted);
    assert!(s.actions.is_empty());
    assert!(!r.actions.contains(&Action::PromoteCanary));
}

#[test]
fn stale_hook_results_of_an_earlier_attempt_are_ignored() {
    let mut r = Rollout::started(GATED);
    r.command(Command::Abort { reason: None }).unwrap();
    r.command(Command::Retry).unwrap();
    assert_eq!(r.state.attempt, 2);
    let s = r.hook_done(HookPoint::BeforeRollout, 1, None);
    assert_eq!(
        s.state.canary_weight, 0,
        "attempt 2's deploy has not finished"
    );
}

#[test]
fn a_stage_without_criteria_advances_on_time_alone() {
    let mut r = Rollout::started(
        r#"
app: shop
version: v2
stages:
  - traffic: 5
    duration: 30s
  - traffic: 100
    final: true
    promote: true
"#,
    );
    r.tick_after(29_999);
    assert_eq!(r.state.stage_index, 0);
    let s = r.tick_after(1);
    assert_eq!(s.state.phase, Phase::Succeeded);
}

#[test]
fn the_state_survives_a_json_round_trip_and_resumes_identically() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(30);
    r.command(Command::Pause).unwrap();
    r.advance(5000);
    let json = serde_json::to_string(&r.state).unwrap();
    let restored: RolloutState = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, r.state);
    let obs = r.counters.add((200, 0), (800, 0));
    r.advance(1000);
    let a = step(&r.spec, &r.state, Input::Observe(obs.clone()), r.now).unwrap();
    let b = step(&r.spec, &restored, Input::Observe(obs), r.now).unwrap();
    assert_eq!(a, b);
}

#[test]
fn the_state_json_is_readable() {
    let r = Rollout::started(THREE_STAGES);
    let v = serde_json::to_value(&r.state).unwrap();
    assert_eq!(v["phase"], "Progressing");
    assert_eq!(v["stageIndex"], 0);
    assert_eq!(v["canaryWeight"], 20);
    assert_eq!(v["stageStartedAt"], T0.as_millis());
    assert_eq!(v["analysis"]["criteria"][0]["status"], "notEnoughData");
    let e = serde_json::to_value(&r.events[0]).unwrap();
    assert_eq!(e["kind"], "started");
    assert_eq!(e["actor"]["kind"], "engine");
}

#[test]
fn reconcile_restores_the_weight_of_each_phase() {
    let mut s = RolloutState::pending();
    assert!(reconcile(&s).is_empty());
    s.phase = Phase::Paused;
    s.canary_weight = 50;
    assert_eq!(reconcile(&s), vec![set_weight(50, 0)]);
    s.phase = Phase::Aborted;
    assert_eq!(reconcile(&s), vec![set_weight(0, 0)]);
}

#[test]
fn a_clock_that_steps_back_never_advances_a_stage() {
    let mut r = Rollout::started(THREE_STAGES);
    r.healthy(30);
    // A fail-over to a machine whose clock is ten minutes behind.
    r.now = Timestamp::from_millis(r.now.as_millis() - 600_000);
    let s = r.healthy(5);
    assert_eq!(s.state.stage_index, 0);
    assert_eq!(s.state.stage_active_ms(r.now), 0);
    assert_eq!(s.state.phase, Phase::Progressing);
}

#[test]
fn a_failed_stage_hook_fails_the_rollout_and_stale_ones_do_not() {
    let mut r = Rollout::new(
        r#"
app: shop
version: v2
hooks:
  eachStage:
    - exec: {command: [smoke-test]}
  afterPromotion:
    - exec: {command: [scale-down-old]}
stages:
  - traffic: 10
    duration: 10s
  - traffic: 50
    duration: 10s
  - traffic: 100
    final: true
    promote: true
"#,
    );
    let s = r.start();
    assert_eq!(
        s.actions,
        vec![
            set_weight(10, 0),
            Action::RunHook {
                hook: HookPoint::EachStage { stage_index: 0 },
                attempt: 1
            }
        ]
    );
    r.tick_after(10_000);
    assert_eq!(r.state.stage_index, 1);
    // Stage 0's smoke test reports late: recorded, but stage 1 is not failed by it.
    let s = r.hook_done(
        HookPoint::EachStage { stage_index: 0 },
        1,
        Some("smoke-test exited with status 2"),
    );
    assert_eq!(s.state.phase, Phase::Progressing);
    assert_eq!(s.events[0].kind, EventKind::HookFailed);
    let s = r.hook_done(
        HookPoint::EachStage { stage_index: 1 },
        1,
        Some("smoke-test exited with status 2"),
    );
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!(
        s.events[0].message,
        "eachStage hooks failed: smoke-test exited with status 2 at stage 2/3 (50%)"
    );
}

#[test]
fn after_promotion_hook_failures_are_recorded_only() {
    let mut r = Rollout::new(
        r#"
app: shop
version: v2
hooks:
  afterPromotion:
    - exec: {command: [scale-down-old]}
stages:
  - traffic: 100
    final: true
    promote: true
"#,
    );
    let s = r.start();
    assert_eq!(s.state.phase, Phase::Succeeded);
    assert_eq!(
        s.actions.last(),
        Some(&Action::RunHook {
            hook: HookPoint::AfterPromotion,
            attempt: 1
        })
    );
    let s = r.hook_done(HookPoint::AfterPromotion, 1, Some("timeout after 30s"));
    assert_eq!(s.state.phase, Phase::Succeeded);
    assert_eq!(s.events[0].kind, EventKind::HookFailed);
}

#[test]
fn observations_during_the_deploy_gate_are_not_judged() {
    let mut r = Rollout::started(GATED);
    r.healthy(1);
    let s = r.second((100, 100), (800, 0));
    assert_eq!(s.state.phase, Phase::Progressing);
    assert_eq!(s.state.analysis, None);
}

#[test]
fn events_carry_their_attempt_and_notification_name() {
    let mut r = Rollout::started(THREE_STAGES);
    r.command(Command::Abort { reason: None }).unwrap();
    r.command(Command::Retry).unwrap();
    let attempts: Vec<(EventKind, u32)> = r.events.iter().map(|e| (e.kind, e.attempt)).collect();
    assert_eq!(
        attempts,
        vec![
            (EventKind::Started, 1),
            (EventKind::StageStarted, 1),
            (EventKind::Aborted, 1),
            (EventKind::Retried, 2),
            (EventKind::StageStarted, 2),
        ]
    );
    assert_eq!(
        EventKind::Aborted.notify_event(),
        Some(fledge_spec::NotifyEvent::Aborted)
    );
    assert_eq!(EventKind::AnalysisRecovered.notify_event(), None);
}

const SEQUENTIAL: &str = r#"
app: shop
version: v2
stages:
  - traffic: 20
    duration: 30s
    successCriteria: [error_rate < 1%]
  - traffic: 50
    duration: 30s
    successCriteria: [error_rate < 1%]
  - traffic: 100
    final: true
    promote: true
"#;

#[test]
fn the_default_sequential_judge_promotes_a_healthy_canary() {
    let mut r = Rollout::started(SEQUENTIAL);
    r.healthy(120);
    assert_eq!(r.state.phase, Phase::Succeeded, "{:#?}", r.events);
    let advanced = r
        .events
        .iter()
        .find(|e| e.kind == EventKind::StageAdvanced)
        .unwrap();
    assert_eq!(
        advanced.evidence[0].method,
        fledge_engine::JudgeMethod::Sequential
    );
}

#[test]
fn the_default_sequential_judge_fails_a_broken_canary_within_seconds() {
    let mut r = Rollout::started(SEQUENTIAL);
    r.healthy(1);
    for _ in 0..5 {
        r.second((200, 20), (800, 1));
        if r.state.phase == Phase::Failed {
            break;
        }
    }
    assert_eq!(r.state.phase, Phase::Failed);
    let failed = r.last_event();
    assert_eq!(failed.kind, EventKind::Failed);
    let seq = failed.evidence[0]
        .sequential
        .as_ref()
        .expect("e-value evidence");
    assert!(seq.e_value >= seq.e_threshold, "{seq:?}");
}

#[test]
fn a_gate_whose_result_never_comes_fails_after_its_deadline() {
    let mut r = Rollout::started(GATED);
    // One exec hook (30 s default timeout) plus the grace period.
    let deadline = fledge_engine::machine::gate_deadline_ms(&r.spec, HookPoint::BeforeRollout);
    assert_eq!(deadline, 30_000 + fledge_engine::machine::GATE_GRACE_MS);
    r.tick_after(deadline);
    assert_eq!(r.state.phase, Phase::Progressing);
    let s = r.tick_after(1);
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!(
        s.events[0].message,
        "beforeRollout hooks did not report within 1m30s before stage 1/2 (20%)"
    );
}

#[test]
fn carried_over_evidence_does_not_replace_a_stage_s_own_traffic() {
    let mut r = Rollout::started(SEQUENTIAL);
    r.healthy(30);
    assert_eq!(r.state.stage_index, 1);
    // The second stage's 30 s pass without a single observation of it: its judge
    // carries stage 1's evidence, but the stage has no traffic of its own yet.
    let s = r.tick_after(60_000);
    assert_eq!(s.state.phase, Phase::Progressing);
    assert_eq!(s.state.stage_canary_requests, 0);
    // Its own traffic (minRequests 100 by default) lets it end, and the final
    // stage (no criteria, promote: true) promotes at once.
    r.healthy(1);
    assert_eq!(r.state.phase, Phase::Succeeded);
}

#[test]
fn only_stages_judged_by_sequential_tests_are_judged_as_evidence_arrives() {
    use fledge_engine::judged_as_evidence_arrives as live;
    let sequential = THREE_STAGES.replace("method: threshold, ", "");
    let mut r = Rollout::new(&sequential);
    assert!(!live(&r.spec, &r.state), "pending: nothing to judge yet");
    r.start();
    assert!(live(&r.spec, &r.state));
    r.command(Command::Pause).unwrap();
    assert!(
        live(&r.spec, &r.state),
        "a paused rollout still fails on evidence"
    );
    r.command(Command::Abort { reason: None }).unwrap();
    assert!(!live(&r.spec, &r.state), "a rolled back one is not judged");

    // Re-testing a threshold window at every look would inflate false aborts.
    let r = Rollout::started(THREE_STAGES);
    assert!(!live(&r.spec, &r.state));
    // So would a criterion with no sequential form (a mean latency).
    let mean = sequential.replace("[error_rate < 1%]", "[latency_mean < 200ms]");
    let r = Rollout::started(&mean);
    assert!(!live(&r.spec, &r.state));
    // A stage with nothing to judge gains nothing from looking more often, unless an
    // error budget counts its failures.
    let bare = "app: shop\nversion: v2\nstages:\n  - traffic: 20\n    duration: 1m\n  - traffic: 100\n    final: true\n";
    let r = Rollout::started(bare);
    assert!(!live(&r.spec, &r.state));
    let budget = format!("{bare}errorBudget: 10\n");
    let r = Rollout::started(&budget);
    assert!(live(&r.spec, &r.state));
}

/// THREE_STAGES with a dark first stage: copies only, then live at 50%.
fn dark_then_live() -> String {
    THREE_STAGES.replace("  - traffic: 20\n", "  - traffic: 0\n    mirror: 100\n")
}

#[test]
fn a_dark_stage_routes_copies_only_and_then_goes_live() {
    let mut r = Rollout::new(&dark_then_live());
    let s = r.start();
    assert_eq!(s.actions, vec![set_weight(0, 100)]);
    assert_eq!((s.state.canary_weight, s.state.canary_mirror), (0, 100));
    assert_eq!(
        r.last_event().message,
        "stage 1/3 (0%, mirror 100%) started: canary at 0%, with copies of 100% of \
         stable's requests, for 1m"
    );
    assert_eq!(reconcile(&r.state), vec![set_weight(0, 100)]);
    // The canary's answers to the copies are its requests: judged like live ones.
    let s = r.healthy(60);
    assert_eq!(s.state.stage_index, 1);
    assert_eq!((s.state.canary_weight, s.state.canary_mirror), (50, 0));
    assert!(s.actions.contains(&set_weight(50, 0)));
}

#[test]
fn a_dark_canary_failing_its_copies_is_rolled_back() {
    let mut r = Rollout::started(&dark_then_live());
    r.healthy(2);
    // 5% of the copies fail in this second: 10 of 600 in the stage, over 1%.
    let s = r.second((200, 10), (800, 0));
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!((s.state.canary_weight, s.state.canary_mirror), (0, 0));
    assert!(s.actions.contains(&set_weight(0, 0)));
    assert!(
        r.last_event()
            .message
            .contains("stage 1/3 (0%, mirror 100%)"),
        "{}",
        r.last_event().message
    );
}
