//! The coordinator of a rollout group, as a pure function: given what each member's
//! rollout is doing, [`plan`] says what to do next (start a member, raise the
//! lock-step hold, abort or undo members, end the group).
//!
//! The shell reads the members' rollouts from the store on every pass and acts on
//! the plan, so a crash between two moves is mended by the next pass: every move is
//! derived from the members' states, never from a memory of what was done.
//!
//! The rules:
//! - **Lock step** (`order: together`): every member starts at once, held at stage 0;
//!   the hold is the lowest stage every member has passed (a member passed stage k
//!   when its stage k is done and it waits, or it is past k), so no member enters
//!   stage k+1 before every member passed stage k, and none completes before all
//!   are done.
//! - **In order** (`order: [a, b]`): a member starts when the one before it has
//!   succeeded (and the group is not paused).
//! - **One failure or one abort ends the group**: every member still active is
//!   aborted, none starts, and with `rollbackSucceeded` every member that had
//!   succeeded is undone. Nothing is promoted once the group has failed.

use serde::{Deserialize, Serialize};

use fledge_spec::{GroupOrder, GroupSpec};

use crate::machine::Phase;

/// A group's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum GroupPhase {
    /// Its members are moving.
    Progressing,
    /// An operator paused it: members are paused, none starts.
    Paused,
    /// Every member succeeded.
    Succeeded,
    /// A member failed; the others were rolled back.
    Failed,
    /// An operator aborted it, or one of its members; the others were rolled back.
    Aborted,
}

impl GroupPhase {
    /// The phase's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupPhase::Progressing => "Progressing",
            GroupPhase::Paused => "Paused",
            GroupPhase::Succeeded => "Succeeded",
            GroupPhase::Failed => "Failed",
            GroupPhase::Aborted => "Aborted",
        }
    }

    /// The phase named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [
            GroupPhase::Progressing,
            GroupPhase::Paused,
            GroupPhase::Succeeded,
            GroupPhase::Failed,
            GroupPhase::Aborted,
        ]
        .into_iter()
        .find(|p| p.as_str() == name)
    }

    /// Whether the group is still moving (or paused).
    pub fn is_active(self) -> bool {
        matches!(self, GroupPhase::Progressing | GroupPhase::Paused)
    }
}

/// What the coordinator knows of one member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// Its rollout, once created.
    pub rollout: Option<MemberRollout>,
    /// Whether a rollout undoing it (back to its previous stable version) was made.
    pub undone: bool,
}

/// A member's rollout, as its stored state says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberRollout {
    /// Its phase.
    pub phase: Phase,
    /// The stage it is in.
    pub stage_index: usize,
    /// How many stages its spec has.
    pub stages: usize,
    /// Its current stage is done and it waits for the group.
    pub held_by_group: bool,
    /// The furthest stage its group lets it enter, as last told.
    pub group_hold: Option<usize>,
}

impl MemberRollout {
    /// The stages it has passed: all of them once it succeeded.
    pub fn passed(&self) -> usize {
        match self.phase {
            Phase::Succeeded => self.stages,
            _ => self.stage_index + usize::from(self.held_by_group),
        }
    }

    /// Whether it is still moving (or paused or pending).
    pub fn is_active(&self) -> bool {
        matches!(
            self.phase,
            Phase::Pending | Phase::Progressing | Phase::Paused
        )
    }
}

/// One thing for the shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Move {
    /// Create member `member`'s rollout; for a lock-step group held at `hold` from
    /// before its start.
    Start {
        /// The member's index.
        member: usize,
        /// Its first hold, for a lock-step group.
        hold: Option<usize>,
    },
    /// Tell an active member how far it may go.
    Hold {
        /// The member's index.
        member: usize,
        /// The furthest stage it may enter; its number of stages lets it complete.
        stage: usize,
    },
    /// Abort an active member (the group failed or was aborted).
    Abort {
        /// The member's index.
        member: usize,
    },
    /// Roll a succeeded member back to its previous stable version.
    Undo {
        /// The member's index.
        member: usize,
    },
    /// The group is over, after the moves before this one.
    End {
        /// Its final phase.
        phase: GroupPhase,
        /// The member whose failure or abort ended it, if one did.
        cause: Option<usize>,
    },
}

/// What to do next for `group` in `phase` whose members (in the order of its
/// `rollouts`) are `members`. `stop` is set when the group was stopped from outside
/// its members: `Aborted` by an operator, `Failed` when a member could not start.
pub fn plan(
    group: &GroupSpec,
    phase: GroupPhase,
    stop: Option<GroupPhase>,
    members: &[Member],
) -> Vec<Move> {
    if !phase.is_active() {
        return Vec::new();
    }
    let rollouts = || {
        members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| Some((i, m.rollout?)))
    };
    let cause = rollouts()
        .find(|(_, r)| matches!(r.phase, Phase::Failed | Phase::Aborted))
        .map(|(i, r)| (i, r.phase));
    if stop.is_some() || cause.is_some() {
        let mut moves: Vec<Move> = rollouts()
            .filter(|(_, r)| r.is_active())
            .map(|(member, _)| Move::Abort { member })
            .collect();
        if group.rollback_succeeded {
            moves.extend(
                rollouts()
                    .filter(|(i, r)| r.phase == Phase::Succeeded && !members[*i].undone)
                    .map(|(member, _)| Move::Undo { member }),
            );
        }
        let end = match (stop, cause) {
            (Some(phase), _) => Move::End { phase, cause: None },
            (None, Some((i, Phase::Failed))) => Move::End {
                phase: GroupPhase::Failed,
                cause: Some(i),
            },
            (None, cause) => Move::End {
                phase: GroupPhase::Aborted,
                cause: cause.map(|(i, _)| i),
            },
        };
        moves.push(end);
        return moves;
    }
    if !members.is_empty()
        && members
            .iter()
            .all(|m| m.rollout.is_some_and(|r| r.phase == Phase::Succeeded))
    {
        return vec![Move::End {
            phase: GroupPhase::Succeeded,
            cause: None,
        }];
    }
    match &group.order {
        GroupOrder::Together => {
            // A member not created yet has passed nothing.
            let hold = members
                .iter()
                .map(|m| m.rollout.map_or(0, |r| r.passed()))
                .min()
                .unwrap_or(0);
            members
                .iter()
                .enumerate()
                .filter_map(|(member, m)| match m.rollout {
                    None => Some(Move::Start {
                        member,
                        hold: Some(hold),
                    }),
                    Some(r) if r.is_active() && r.group_hold != Some(hold) => Some(Move::Hold {
                        member,
                        stage: hold,
                    }),
                    Some(_) => None,
                })
                .collect()
        }
        GroupOrder::Sequence(_) => {
            if phase == GroupPhase::Paused {
                return Vec::new();
            }
            for member in group.start_order() {
                match members.get(member).and_then(|m| m.rollout) {
                    Some(r) if r.phase == Phase::Succeeded => {}
                    Some(_) => return Vec::new(),
                    None => return vec![Move::Start { member, hold: None }],
                }
            }
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group of `n` three-stage members in `order`.
    fn group(order: &str, n: usize, rollback_succeeded: bool) -> GroupSpec {
        let members: String = (0..n)
            .map(|i| {
                format!(
                    "  - {{app: app{i}, version: v2, stages: [{{traffic: 10, duration: 1m}}, \
                     {{traffic: 50, duration: 1m}}, {{traffic: 100}}]}}\n"
                )
            })
            .collect();
        let text = format!(
            "name: g\norder: {order}\nrollbackSucceeded: {rollback_succeeded}\nrollouts:\n{members}"
        );
        fledge_spec::parse_group(&text, "group.yaml").unwrap()
    }

    /// The plan of a two-member lock-step group moving on.
    fn together(members: &[Member]) -> Vec<Move> {
        together_undoing(false, members)
    }

    /// [`together`], with `rollbackSucceeded` as given.
    fn together_undoing(rollback_succeeded: bool, members: &[Member]) -> Vec<Move> {
        let group = group("together", 2, rollback_succeeded);
        plan(&group, GroupPhase::Progressing, None, members)
    }

    fn end(phase: GroupPhase, cause: Option<usize>) -> Move {
        Move::End { phase, cause }
    }

    fn at(phase: Phase, stage_index: usize, held: bool) -> Member {
        Member {
            rollout: Some(MemberRollout {
                phase,
                stage_index,
                stages: 3,
                held_by_group: held,
                group_hold: Some(stage_index),
            }),
            undone: false,
        }
    }

    #[test]
    fn lock_step_holds_everyone_at_the_lowest_stage_passed() {
        let members = [
            at(Phase::Progressing, 1, true),
            at(Phase::Progressing, 1, false),
        ];
        assert!(together(&members).is_empty());
        let members = [
            at(Phase::Progressing, 1, true),
            at(Phase::Progressing, 1, true),
        ];
        assert_eq!(
            together(&members),
            vec![
                Move::Hold {
                    member: 0,
                    stage: 2
                },
                Move::Hold {
                    member: 1,
                    stage: 2
                }
            ]
        );
    }

    #[test]
    fn lock_step_starts_every_member_held_at_the_first_stage() {
        let members = [Member::default(), Member::default()];
        assert_eq!(
            together(&members),
            vec![
                Move::Start {
                    member: 0,
                    hold: Some(0)
                },
                Move::Start {
                    member: 1,
                    hold: Some(0)
                }
            ]
        );
    }

    #[test]
    fn a_sequence_starts_the_next_member_after_a_success_unless_paused() {
        let order = group("[app1, app0]", 2, false);
        let members = [Member::default(), at(Phase::Succeeded, 2, false)];
        assert_eq!(
            plan(&order, GroupPhase::Progressing, None, &members),
            vec![Move::Start {
                member: 0,
                hold: None
            }]
        );
        assert!(plan(&order, GroupPhase::Paused, None, &members).is_empty());
        let members = [Member::default(), at(Phase::Progressing, 2, false)];
        assert!(plan(&order, GroupPhase::Progressing, None, &members).is_empty());
    }

    #[test]
    fn a_failure_aborts_the_rest_and_undoes_the_succeeded_when_asked() {
        let order = group("[app0, app1, app2]", 3, false);
        let undoing = group("[app0, app1, app2]", 3, true);
        let members = [
            at(Phase::Succeeded, 2, false),
            at(Phase::Failed, 1, false),
            Member::default(),
        ];
        let failed = end(GroupPhase::Failed, Some(1));
        assert_eq!(
            plan(&order, GroupPhase::Progressing, None, &members),
            vec![failed.clone()]
        );
        assert_eq!(
            plan(&undoing, GroupPhase::Progressing, None, &members),
            vec![Move::Undo { member: 0 }, failed]
        );
        let members = [
            at(Phase::Progressing, 0, false),
            at(Phase::Aborted, 0, false),
        ];
        assert_eq!(
            together_undoing(true, &members),
            vec![Move::Abort { member: 0 }, end(GroupPhase::Aborted, Some(1))]
        );
    }

    #[test]
    fn an_operator_abort_ends_even_a_group_with_nothing_running() {
        let order = group("[app0, app1]", 2, true);
        let mut done = at(Phase::Succeeded, 2, false);
        done.undone = true;
        assert_eq!(
            plan(
                &order,
                GroupPhase::Paused,
                Some(GroupPhase::Aborted),
                &[done, Member::default()]
            ),
            vec![end(GroupPhase::Aborted, None)]
        );
    }

    #[test]
    fn a_group_succeeds_once_every_member_did_and_then_does_nothing() {
        let members = [
            at(Phase::Succeeded, 2, false),
            at(Phase::Succeeded, 2, false),
        ];
        assert_eq!(
            together_undoing(true, &members),
            vec![end(GroupPhase::Succeeded, None)]
        );
        assert!(
            plan(
                &group("together", 2, true),
                GroupPhase::Succeeded,
                Some(GroupPhase::Aborted),
                &members
            )
            .is_empty()
        );
    }
}
