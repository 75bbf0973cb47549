//! A member of a rollout group moving in lock step: it enters a stage only once its
//! group lets it (`Input::GroupHold`), waits when its stage is done before that,
//! and cannot be promoted ahead of its group by hand.

mod common;

use common::{Rollout, THREE_STAGES};
use fledge_engine::{Command, EngineError, EventKind, Input, Phase};

#[test]
fn a_done_stage_waits_for_the_group_then_moves_on_in_the_same_step() {
    let mut r = Rollout::new(THREE_STAGES);
    r.input(Input::GroupHold { stage: 0 }).unwrap();
    r.start();
    let s = r.healthy(61);
    assert_eq!(s.state.stage_index, 0, "held at the end of stage 1");
    assert!(s.state.held_by_group);
    assert!(
        r.events.iter().any(|e| e.kind == EventKind::StageAdvanced
            && e.message.ends_with("waiting for the rest of its group")),
        "{:?}",
        r.kinds()
    );
    // Said once, however long it waits.
    let waits = r.events.len();
    r.healthy(5);
    assert_eq!(r.events.len(), waits);

    let s = r.input(Input::GroupHold { stage: 1 }).unwrap();
    assert_eq!((s.state.stage_index, s.state.canary_weight), (1, 50));
    assert!(!s.state.held_by_group);
}

#[test]
fn promote_cannot_move_a_member_ahead_of_its_group() {
    let mut r = Rollout::new(THREE_STAGES);
    r.input(Input::GroupHold { stage: 0 }).unwrap();
    r.start();
    assert!(!r.state.allowed_commands().contains(&"promote"));
    let err = r.command(Command::Promote { full: false }).unwrap_err();
    assert_eq!(
        err,
        EngineError::HeldByGroup {
            command: "promote",
            stage: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot promote: the rollout's group has not passed stage 1 yet"
    );
    // Once the group lets it, `--full` moves it one stage only.
    r.input(Input::GroupHold { stage: 2 }).unwrap();
    let s = r.command(Command::Promote { full: true }).unwrap();
    assert_eq!(
        (s.state.phase, s.state.stage_index),
        (Phase::Progressing, 1)
    );
}

#[test]
fn a_member_completes_only_when_its_group_lets_it() {
    let mut r = Rollout::new(THREE_STAGES);
    r.input(Input::GroupHold { stage: 2 }).unwrap();
    r.start();
    r.healthy(61);
    let s = r.healthy(61);
    assert_eq!(
        (s.state.stage_index, s.state.phase),
        (2, Phase::Progressing)
    );
    let s = r.healthy(2);
    assert_eq!(
        s.state.phase,
        Phase::Progressing,
        "the last stage waits too"
    );
    let s = r.input(Input::GroupHold { stage: 3 }).unwrap();
    assert_eq!(s.state.phase, Phase::Succeeded);
}
