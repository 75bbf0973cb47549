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

/// A whole group driven by [`plan`](fledge_engine::group::plan) over real member
/// rollouts, second by second, with random traffic, failures and operators: the
/// group rules hold after every pass.
mod coordinated {
    use fledge_engine::group::{GroupPhase, Member, MemberRollout, Move, plan};
    use fledge_engine::{Command, EngineError, Input, Phase};
    use proptest::prelude::*;

    use super::common::{Rollout, THREE_STAGES};

    /// What happens to the group in one second.
    #[derive(Debug, Clone)]
    enum Op {
        /// Every running member serves its traffic.
        Second,
        /// Member `i` starts failing half its requests.
        Breaks(usize),
        /// An operator aborts member `i`.
        AbortMember(usize),
        /// An operator promotes member `i` (refused while its group holds it).
        PromoteMember(usize),
        /// An operator aborts the group.
        AbortGroup,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            40 => Just(Op::Second),
            1 => (0usize..3).prop_map(Op::Breaks),
            1 => (0usize..3).prop_map(Op::AbortMember),
            2 => (0usize..3).prop_map(Op::PromoteMember),
            1 => Just(Op::AbortGroup),
        ]
    }

    /// Member `i`'s spec: three stages, the first two lasting `secs` each.
    fn member(i: usize, secs: u64) -> String {
        THREE_STAGES
            .replace("app: shop", &format!("app: app{i}"))
            .replace("duration: 60s", &format!("duration: {secs}s"))
    }

    fn group(
        members: &[String],
        together: bool,
        rollback_succeeded: bool,
    ) -> fledge_spec::GroupSpec {
        let n = members.len();
        let members: String = members
            .iter()
            .map(|spec| {
                let indented: String = spec
                    .trim()
                    .lines()
                    .enumerate()
                    .map(|(j, l)| {
                        if j == 0 {
                            format!("  - {l}\n")
                        } else {
                            format!("    {l}\n")
                        }
                    })
                    .collect();
                indented
            })
            .collect();
        let order = if together {
            "together".to_owned()
        } else {
            format!(
                "[{}]",
                (0..n)
                    .rev()
                    .map(|i| format!("app{i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let text = format!(
            "name: g\norder: {order}\nrollbackSucceeded: {rollback_succeeded}\nrollouts:\n{members}"
        );
        fledge_spec::parse_group(&text, "group.yaml").unwrap_or_else(|e| panic!("{e}"))
    }

    /// One member: its rollout once started, its requests a second (so members pass
    /// their stages at different times), whether it fails, whether it was undone.
    struct Sim {
        rollout: Option<Rollout>,
        rps: u64,
        broken: bool,
        undone: bool,
    }

    impl Sim {
        fn view(&self) -> Member {
            Member {
                rollout: self.rollout.as_ref().map(|r| MemberRollout {
                    phase: r.state.phase,
                    stage_index: r.state.stage_index,
                    stages: r.spec.stages.len(),
                    held_by_group: r.state.held_by_group,
                    group_hold: r.state.group_hold,
                }),
                undone: self.undone,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn no_member_runs_ahead_and_nothing_is_promoted_after_a_failure(
            n in 2usize..4,
            together in any::<bool>(),
            rollback_succeeded in any::<bool>(),
            rps in proptest::collection::vec(2u64..300, 3),
            secs in proptest::collection::vec(5u64..90, 3),
            ops in proptest::collection::vec(op(), 50..500),
        ) {
            let specs: Vec<String> = (0..n).map(|i| member(i, secs[i])).collect();
            let spec = group(&specs, together, rollback_succeeded);
            let mut sims: Vec<Sim> = (0..n)
                .map(|i| Sim { rollout: None, rps: rps[i], broken: false, undone: false })
                .collect();
            let mut phase = GroupPhase::Progressing;
            let mut stop = None;
            let mut succeeded_at_end: Option<Vec<bool>> = None;
            for op in ops {
                match op {
                    Op::Second => {
                        for sim in &mut sims {
                            let (rps, broken) = (sim.rps, sim.broken);
                            if let Some(r) = sim.rollout.as_mut().filter(|r| r.state.phase.is_active()) {
                                let errors = if broken { rps / 2 } else { 0 };
                                r.second((rps, errors), (rps * 4, 0));
                            }
                        }
                    }
                    Op::Breaks(i) => if let Some(sim) = sims.get_mut(i) { sim.broken = true },
                    Op::AbortMember(i) => {
                        if let Some(r) = sims.get_mut(i).and_then(|s| s.rollout.as_mut()) {
                            let _ = r.command(Command::Abort { reason: None });
                        }
                    }
                    Op::PromoteMember(i) => {
                        if let Some(r) = sims.get_mut(i).and_then(|s| s.rollout.as_mut()) {
                            let before = r.state.clone();
                            if let Err(EngineError::HeldByGroup { .. }) = r.command(Command::Promote { full: false }) {
                                prop_assert!(!before.group_allows_next());
                            }
                        }
                    }
                    Op::AbortGroup => if phase.is_active() { stop = Some(GroupPhase::Aborted) },
                }
                // The coordinator's pass, acted on as the server acts on it.
                let views: Vec<Member> = sims.iter().map(Sim::view).collect();
                for mv in plan(&spec, phase, stop, &views) {
                    match mv {
                        Move::Start { member, hold } => {
                            let mut r = Rollout::new(&specs[member]);
                            if let Some(stage) = hold {
                                r.input(Input::GroupHold { stage }).unwrap();
                            }
                            r.start();
                            sims[member].rollout = Some(r);
                        }
                        Move::Hold { member, stage } => {
                            sims[member].rollout.as_mut().unwrap().input(Input::GroupHold { stage }).unwrap();
                        }
                        Move::Abort { member } => {
                            let r = sims[member].rollout.as_mut().unwrap();
                            r.command(Command::Abort { reason: Some("group".into()) }).unwrap();
                        }
                        Move::Undo { member } => {
                            prop_assert!(rollback_succeeded);
                            prop_assert_eq!(sims[member].rollout.as_ref().unwrap().state.phase, Phase::Succeeded);
                            sims[member].undone = true;
                        }
                        Move::End { phase: end, .. } => {
                            phase = end;
                            succeeded_at_end = Some(sims.iter().map(|s| {
                                s.rollout.as_ref().is_some_and(|r| r.state.phase == Phase::Succeeded)
                            }).collect());
                        }
                    }
                }
                let views: Vec<Member> = sims.iter().map(Sim::view).collect();
                // Lock step: no running member is in a stage some member has not
                // reached the end of (by the engine, or by an operator's promote).
                if together {
                    let lowest = views.iter().map(|m| m.rollout.map_or(0, |r| r.passed())).min().unwrap();
                    for r in views.iter().filter_map(|m| m.rollout).filter(|r| r.is_active()) {
                        prop_assert!(r.stage_index <= lowest, "a member in stage {} while the group passed {lowest}: {views:?}", r.stage_index);
                    }
                }
                // In order: at most one member runs, and only after the ones before it
                // succeeded.
                if !together {
                    let running = views.iter().filter(|m| m.rollout.is_some_and(|r| r.is_active())).count();
                    prop_assert!(running <= 1, "{views:?}");
                }
                if let Some(at_end) = &succeeded_at_end {
                    // The group has ended: nothing runs, nothing starts, and nothing is
                    // promoted that had not succeeded before the end.
                    prop_assert!(!phase.is_active());
                    for (i, m) in views.iter().enumerate() {
                        let r = m.rollout;
                        prop_assert!(!r.is_some_and(|r| r.is_active()), "member {i} still runs: {views:?}");
                        let now_succeeded = r.is_some_and(|r| r.phase == Phase::Succeeded);
                        prop_assert!(!now_succeeded || at_end[i], "member {i} promoted after the end");
                        if rollback_succeeded && phase != GroupPhase::Succeeded && at_end[i] {
                            prop_assert!(m.undone, "member {i} succeeded and was not undone");
                        }
                    }
                    if stop.is_some() {
                        prop_assert_eq!(phase, GroupPhase::Aborted, "an operator's abort wins");
                    }
                    if phase == GroupPhase::Succeeded {
                        prop_assert!(views.iter().all(|m| m.rollout.is_some_and(|r| r.phase == Phase::Succeeded)));
                    }
                }
            }
        }
    }
}
