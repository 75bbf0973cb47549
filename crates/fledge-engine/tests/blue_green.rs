//! Blue/green rollouts through the state machine: a preview with users on stable,
//! one switch to 100%, stable kept warm for the switch stage, and a way back.

mod common;

use common::{BLUE_GREEN, Rollout};
use fledge_engine::{Action, Actor, Command, EventKind, Phase};

/// The routes the rollout asked for, in order, each once.
fn routes(r: &Rollout) -> Vec<(u8, u8)> {
    let mut routes: Vec<(u8, u8)> = r
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::SetWeight { canary, mirror } => Some((*canary, *mirror)),
            _ => None,
        })
        .collect();
    routes.dedup();
    routes
}

fn started(r: &Rollout) -> Vec<&str> {
    r.events
        .iter()
        .filter(|e| e.kind == EventKind::StageStarted)
        .map(|e| e.message.as_str())
        .collect()
}

#[test]
fn a_healthy_preview_switches_at_once_and_is_promoted_after_the_delay() {
    let mut r = Rollout::started(BLUE_GREEN);
    let s = r.healthy(29);
    assert_eq!((s.state.stage_index, s.state.canary_weight), (0, 0));
    let s = r.healthy(2);
    assert_eq!((s.state.stage_index, s.state.canary_weight), (1, 100));
    // The switch came at 30 s; stable stays warm until 50 s.
    let s = r.healthy(18);
    assert_eq!(s.state.phase, Phase::Progressing, "stable is kept warm");
    let s = r.healthy(2);
    assert_eq!(s.state.phase, Phase::Succeeded);
    // Preview on copies, then one step to all traffic: never a share in between.
    assert_eq!(routes(&r), [(0, 100), (100, 0)]);
    assert_eq!(
        started(&r),
        [
            "preview 1/2 (0%, mirror 100%) started: canary at 0%, with copies of 100% of stable's requests, for 30s",
            "switch 2/2 (100%) started: canary at 100% with stable kept warm for 20s",
        ]
    );
}

#[test]
fn an_abort_during_the_delay_switches_everyone_back() {
    let mut r = Rollout::started(BLUE_GREEN);
    r.healthy(31);
    r.healthy(5);
    let s = r
        .command(Command::Abort {
            reason: Some("checkout errors".into()),
        })
        .unwrap();
    assert_eq!(s.state.phase, Phase::Aborted);
    assert_eq!(
        s.actions.first(),
        Some(&Action::SetWeight {
            canary: 0,
            mirror: 0
        })
    );
    assert_eq!(routes(&r), [(0, 100), (100, 0), (0, 0)]);
}

#[test]
fn a_failure_after_the_switch_switches_back_and_nothing_is_promoted() {
    let mut r = Rollout::started(BLUE_GREEN);
    r.healthy(31);
    let s = r.second((200, 40), (0, 0));
    assert_eq!(s.state.phase, Phase::Failed);
    assert_eq!(s.state.canary_weight, 0);
    assert!(!r.actions.contains(&Action::PromoteCanary));
    let promote = r.command(Command::Promote { full: true });
    assert!(promote.is_err(), "a failed blue/green is not promoted");
    assert_eq!(r.events.last().unwrap().actor, Actor::Engine);
}
