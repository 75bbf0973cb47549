//! Rollout groups: creating one, the coordinator pass that moves its members
//! (run by the controller every tick, and at once after an operator's action),
//! and the operator's actions on a whole group.
//!
//! The decisions are the engine's ([`fledge_engine::group::plan`]); this module
//! reads the members' rollouts from the store, acts on the plan through the same
//! paths as an operator (creating rollouts, feeding the engine, commands), and
//! writes the group's phase and history with the store's revision check. What a
//! member is doing is always read from its rollout, never remembered, so a pass
//! cut short by a crash is finished by the next one.

use fledge_engine::group::{self as plan, GroupPhase, Member, MemberRollout, Move};
use fledge_engine::{Command, Input, RolloutState};
use fledge_spec::GroupSpec;
use fledge_store::{
    Fence, GroupRecord, GroupUpdate, NewGroup, RolloutRecord, StoreError, Timestamp,
};
use std::time::SystemTime;

use fledge_api::group::{Group, GroupEvent, GroupMember};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::auth::Principal;
use super::engine;
use super::error::ApiError;
use super::rollouts::{self, MAX_ATTEMPTS, Membership, spec_of, store_error};
use crate::config::Role;

/// The most history entries a group keeps (the oldest go first).
const MAX_GROUP_EVENTS: usize = 500;

/// What the coordinator keeps of a group besides its members' rollouts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupState {
    /// Who created it: the actor of its members' creation.
    pub created_by: String,
    /// Set when the group was stopped from outside its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// The last lock-step hold announced in the history.
    #[serde(default)]
    pub hold: usize,
    /// Why it ended, once it failed or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The group's own history, oldest first.
    #[serde(default)]
    pub events: Vec<GroupEventRecord>,
}

/// A stop from outside the members: an operator's abort, or a member that could
/// not start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    /// `Aborted` or `Failed`.
    pub phase: GroupPhase,
    /// Who stopped it.
    pub actor: String,
    /// Why, for the members' abort events and the group's message.
    pub reason: String,
}

/// One stored entry of a group's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupEventRecord {
    /// When, in Unix milliseconds.
    pub at: Timestamp,
    /// What happened.
    pub kind: String,
    /// Who decided.
    pub actor: String,
    /// The member it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// One sentence for people.
    pub message: String,
}

impl GroupState {
    fn push(&mut self, at: Timestamp, kind: &str, actor: &str, app: Option<&str>, message: String) {
        tracing::info!(kind, actor, app = app.unwrap_or("-"), "{message}");
        self.events.push(GroupEventRecord {
            at,
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            app: app.map(str::to_owned),
            message,
        });
        let excess = self.events.len().saturating_sub(MAX_GROUP_EVENTS);
        self.events.drain(..excess);
    }
}

/// A stored group's document.
pub fn spec_of_group(record: &GroupRecord) -> Result<GroupSpec, ApiError> {
    serde_json::from_value(record.spec.clone()).map_err(|e| {
        ApiError::internal(format!(
            "the stored document of group {} cannot be read: {e}",
            record.id
        ))
    })
}

/// A stored group's coordinator state.
pub fn state_of_group(record: &GroupRecord) -> Result<GroupState, ApiError> {
    serde_json::from_value(record.state.clone()).map_err(|e| {
        ApiError::internal(format!(
            "the stored state of group {} cannot be read: {e}",
            record.id
        ))
    })
}

/// A stored group's phase (`Progressing` for a name only a newer server writes).
pub fn phase_of_group(record: &GroupRecord) -> GroupPhase {
    GroupPhase::parse(&record.phase).unwrap_or(GroupPhase::Progressing)
}

/// Parses a group document, checks every member as a rollout create would, and
/// starts the group: every member at once for `together`, else the first in its
/// order. Nothing is created when a member's app is unknown, already has an active
/// rollout, or refuses its spec.
pub async fn create(
    shared: &Shared,
    text: &str,
    origin: &str,
    principal: &Principal,
) -> Result<GroupRecord, ApiError> {
    let mut group =
        fledge_spec::parse_group(text, origin).map_err(|e| rollouts::invalid_spec(&e))?;
    for (i, member) in std::mem::take(&mut group.rollouts).into_iter().enumerate() {
        let member = rollouts::admit(shared, member, &format!("{origin}: rollouts[{i}]")).await?;
        if let Some(active) = shared
            .store
            .active_rollout_for_app(&member.app)
            .await
            .map_err(store_error)?
        {
            return Err(ApiError::conflict(
                "active_rollout",
                format!(
                    "{origin}: rollouts[{i}]: app `{}` already has an active rollout ({}); abort \
                     it or wait for it to finish",
                    member.app, active.id
                ),
            ));
        }
        group.rollouts.push(member);
    }
    let mut state = GroupState {
        created_by: principal.name.clone(),
        ..GroupState::default()
    };
    let order = match &group.order {
        fledge_spec::GroupOrder::Together => "together".to_owned(),
        fledge_spec::GroupOrder::Sequence(apps) => format!("in order {}", apps.join(" → ")),
    };
    let members: Vec<String> = group
        .rollouts
        .iter()
        .map(|r| format!("{} {}", r.app, r.version))
        .collect();
    state.push(
        shared.timestamp(),
        "Created",
        &principal.name,
        None,
        format!(
            "group {} of {} created by {}, moving {order}",
            group.name,
            members.join(", "),
            principal.name
        ),
    );
    let record = shared
        .store
        .create_group(NewGroup {
            name: group.name.clone(),
            phase: GroupPhase::Progressing.as_str().to_owned(),
            spec: to_json(&group)?,
            state: to_json(&state)?,
            fence: None,
        })
        .await
        .map_err(store_error)?;
    tracing::info!(group = %record.id, name = %record.name, actor = %principal.name, "rollout group created");
    coordinate_here(shared, record).await
}

/// A pass over one group right after an operator's change, when this replica leads
/// the controller (fenced by its lease); otherwise the leader's next tick moves it.
async fn coordinate_here(shared: &Shared, record: GroupRecord) -> Result<GroupRecord, ApiError> {
    match shared.leader.fence() {
        Some(fence) => coordinate(shared, record, Some(&fence)).await,
        None => Ok(record),
    }
}

/// One coordinator pass over every active group (the controller's, fenced by its
/// lease). A group that cannot be moved now is logged and tried again next tick.
pub async fn coordinate_all(shared: &Shared, fence: &Fence) {
    let groups = match shared.store.list_groups(true, None).await {
        Ok(groups) => groups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list active rollout groups; retrying next tick");
            return;
        }
    };
    for group in groups {
        let id = group.id.clone();
        if let Err(e) = coordinate(shared, group, Some(fence)).await {
            tracing::warn!(group = %id, error = %e.message(), "cannot move the rollout group; retrying next tick");
        }
    }
}

/// Moves one group as far as its members allow now, and returns it as stored.
///
/// One pass at a time in this process (`Shared::group_pass`): a pass acts on the
/// members it read, so two at once could both start a member or undo one. Across
/// replicas only the leader makes passes.
pub async fn coordinate(
    shared: &Shared,
    mut record: GroupRecord,
    fence: Option<&Fence>,
) -> Result<GroupRecord, ApiError> {
    let _pass = shared.group_pass.lock().await;
    // What was read before the lock may be stale.
    record = get(shared, &record.id).await?;
    for _ in 0..MAX_ATTEMPTS {
        let phase = phase_of_group(&record);
        if !phase.is_active() {
            return Ok(record);
        }
        let (spec, rollouts) = read_members(shared, &record).await?;
        let members = members_of(&spec, &rollouts);
        let mut state = state_of_group(&record)?;
        let moves = plan::plan(
            &spec,
            phase,
            state.stop.as_ref().map(|s| s.phase),
            &members.iter().map(|m| m.member).collect::<Vec<_>>(),
        );
        if moves.is_empty() {
            return Ok(record);
        }
        // Who ended the group and why, once, for the members' aborts and undoes and
        // the group's own message (the plan ends a group with every such move).
        let why = moves.iter().find_map(|m| match *m {
            Move::End { phase, cause } if phase != GroupPhase::Succeeded => {
                Some(stop_reason(&spec, &state, &members, cause))
            }
            _ => None,
        });
        let (actor, reason) = why.unwrap_or_default();
        let mut next_phase = phase;
        let mut stopped = false;
        for mv in moves {
            match mv {
                Move::Start { member, hold } => {
                    let m = &spec.rollouts[member];
                    let creator = Principal {
                        name: state.created_by.clone(),
                        role: Role::Operator,
                    };
                    let why = format!("member of group {} ({})", spec.name, record.id);
                    let membership = Membership {
                        group: &record.id,
                        hold,
                    };
                    match rollouts::create_member(shared, m, &creator, &why, membership).await {
                        Ok(r) => state.push(
                            shared.timestamp(),
                            "MemberStarted",
                            &creator.name,
                            Some(&m.app),
                            format!("{} {} started (rollout {})", m.app, m.version, r.id),
                        ),
                        // Started by this group already (a pass cut short before it
                        // recorded it): the next round sees it.
                        Err(e)
                            if e.code() == "active_rollout"
                                && started_here(shared, &m.app, &record.id).await => {}
                        Err(e) => {
                            // It cannot start (its app is busy or gone): the group fails,
                            // and the next round rolls the others back.
                            let reason =
                                format!("{} {} could not start: {}", m.app, m.version, e.message());
                            state.push(
                                shared.timestamp(),
                                "MemberNotStarted",
                                "engine",
                                Some(&m.app),
                                reason.clone(),
                            );
                            state.stop = Some(Stop {
                                phase: GroupPhase::Failed,
                                actor: "engine".to_owned(),
                                reason,
                            });
                            stopped = true;
                            break;
                        }
                    }
                }
                Move::Hold { member, stage } => {
                    let Some(rollout) = members[member].rollout else {
                        continue;
                    };
                    hold(shared, rollout, stage, fence).await?;
                    if stage > state.hold {
                        state.hold = stage;
                        let what = match spec.rollouts.iter().map(|r| r.stages.len()).max() {
                            Some(n) if stage >= n => "every member may complete".to_owned(),
                            _ => format!("the group moves on to stage {}", stage + 1),
                        };
                        state.push(
                            shared.timestamp(),
                            "Held",
                            "engine",
                            None,
                            format!("every member passed stage {stage}; {what}"),
                        );
                    }
                }
                Move::Abort { member } => {
                    let Some(rollout) = members[member].rollout else {
                        continue;
                    };
                    let by = Principal {
                        name: actor.clone(),
                        role: Role::Operator,
                    };
                    let command = Command::Abort {
                        reason: Some(reason.clone()),
                    };
                    match rollouts::command(shared, &rollout.id, command, &by).await {
                        Ok(_) => state.push(
                            shared.timestamp(),
                            "MemberAborted",
                            &actor,
                            Some(&rollout.app),
                            format!("{} {} rolled back: {reason}", rollout.app, rollout.version),
                        ),
                        // It ended meanwhile: the next round sees how.
                        Err(e) if e.status() == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
                Move::Undo { member } => {
                    let app = &spec.rollouts[member].app;
                    let by = Principal {
                        name: actor.clone(),
                        role: Role::Operator,
                    };
                    let why = format!("group {}: {reason}", spec.name);
                    match rollouts::undo_for(shared, app, true, Some(&why), &by, Some(&record.id)).await {
                        Ok(r) => state.push(
                            shared.timestamp(),
                            "MemberUndone",
                            &actor,
                            Some(app),
                            format!("{app} goes back to {} at once (rollout {}), as the group asks (rollbackSucceeded)", r.version, r.id),
                        ),
                        Err(e) => state.push(
                            shared.timestamp(),
                            "MemberNotUndone",
                            &actor,
                            Some(app),
                            format!("{app} could not be taken back to its previous version: {}", e.message()),
                        ),
                    }
                }
                Move::End { phase, .. } => {
                    next_phase = phase;
                    let message = match phase {
                        GroupPhase::Succeeded => {
                            format!("group {} succeeded: every member is stable", spec.name)
                        }
                        _ => {
                            state.message = Some(reason.clone());
                            format!(
                                "group {} {} by {actor}: {reason}",
                                spec.name,
                                if phase == GroupPhase::Failed {
                                    "failed"
                                } else {
                                    "aborted"
                                }
                            )
                        }
                    };
                    state.push(shared.timestamp(), phase.as_str(), "engine", None, message);
                }
            }
        }
        match write(shared, &record, next_phase, &state, fence).await? {
            Ok(updated) => {
                shared.note_write();
                record = updated;
                if !stopped {
                    return Ok(record);
                }
            }
            // Changed meanwhile (an operator's action): read it again and re-plan.
            Err(StoreError::Conflict { .. }) => {
                record = get(shared, &record.id).await?;
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(record)
}

/// Whether `app`'s active rollout is a member of group `id`.
async fn started_here(shared: &Shared, app: &str, id: &str) -> bool {
    matches!(
        shared.store.active_rollout_for_app(app).await,
        Ok(Some(r)) if r.group.as_deref() == Some(id)
    )
}

/// A group's document and its members' rollouts (oldest first), for
/// [`members_of`].
async fn read_members(
    shared: &Shared,
    record: &GroupRecord,
) -> Result<(GroupSpec, Vec<RolloutRecord>), ApiError> {
    let spec = spec_of_group(record)?;
    let rollouts = shared
        .store
        .rollouts_of_group(&record.id)
        .await
        .map_err(store_error)?;
    Ok((spec, rollouts))
}

/// A member as the coordinator reads it: its rollout (the first of its app in the
/// group) and whether a later one of its app (an undo) exists.
#[derive(Debug, Clone, Copy)]
pub struct MemberRecord<'a> {
    /// What the plan needs.
    pub member: Member,
    /// Its rollout, once started.
    pub rollout: Option<&'a RolloutRecord>,
    /// The rollout that undid it, if any.
    pub undo: Option<&'a RolloutRecord>,
}

/// The members of `spec` from the group's rollouts (oldest first).
pub fn members_of<'a>(spec: &GroupSpec, rollouts: &'a [RolloutRecord]) -> Vec<MemberRecord<'a>> {
    spec.rollouts
        .iter()
        .map(|m| {
            let mut of_app = rollouts.iter().filter(|r| r.app == m.app);
            let rollout = of_app.next();
            let undo = of_app.next();
            let member = Member {
                rollout: rollout.map(|r| member_rollout(r, m.stages.len())),
                undone: undo.is_some(),
            };
            MemberRecord {
                member,
                rollout,
                undo,
            }
        })
        .collect()
}

fn member_rollout(record: &RolloutRecord, stages: usize) -> MemberRollout {
    let state: RolloutState = serde_json::from_value(record.state.clone()).unwrap_or_default();
    MemberRollout {
        // The stored phase is the one the store's active-rollout rule sees.
        phase: super::view::phase_of(&record.phase),
        stage_index: state.stage_index,
        stages,
        held_by_group: state.held_by_group,
        group_hold: state.group_hold,
    }
}

/// Who stopped the group and why: the operator's or the engine's stop, else the
/// member that failed or was aborted.
fn stop_reason(
    spec: &GroupSpec,
    state: &GroupState,
    members: &[MemberRecord<'_>],
    cause: Option<usize>,
) -> (String, String) {
    if let Some(stop) = &state.stop {
        return (stop.actor.clone(), stop.reason.clone());
    }
    let reason = match cause.and_then(|i| Some((members.get(i)?.rollout?, spec.rollouts.get(i)?))) {
        Some((r, s)) => format!(
            "member {} {} {} (rollout {})",
            s.app,
            s.version,
            r.phase.to_ascii_lowercase(),
            r.id
        ),
        None => "the group was stopped".to_owned(),
    };
    ("engine".to_owned(), reason)
}

/// Tells a member how far its group lets it go.
async fn hold(
    shared: &Shared,
    rollout: &RolloutRecord,
    stage: usize,
    fence: Option<&Fence>,
) -> Result<(), ApiError> {
    let spec = spec_of(rollout).map_err(|e| ApiError::internal(format!("{e:#}")))?;
    let decision = engine::feed(
        &spec,
        &rollout.state,
        Input::GroupHold { stage },
        shared.clock.now(),
    )
    .map_err(|e| ApiError::internal(format!("{e:#}")))?;
    match rollouts::persist_fenced(shared, rollout, &spec, decision, fence.cloned()).await {
        // Moved meanwhile: the next pass holds it again from what it is now.
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(e) => Err(store_error(e)),
    }
}

/// A group by id, or by name (the newest group of that name).
pub async fn get(shared: &Shared, key: &str) -> Result<GroupRecord, ApiError> {
    if let Some(g) = shared.store.get_group(key).await.map_err(store_error)? {
        return Ok(g);
    }
    let newest = shared
        .store
        .list_groups(false, None)
        .await
        .map_err(store_error)?
        .into_iter()
        .find(|g| g.name == key);
    newest.ok_or_else(|| ApiError::not_found(format!("no group with id or name `{key}`")))
}

/// An operator's action on a whole group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupCommand {
    /// End the current stage of every active member, or take them to 100%.
    Promote {
        /// Go to 100% and succeed.
        full: bool,
    },
    /// Stop the group: roll its members back.
    Abort,
    /// Pause every active member; start none.
    Pause,
    /// Resume a paused group.
    Resume,
}

impl GroupCommand {
    /// Refuses the command (409) when the group's phase does not allow it.
    fn check(self, record: &GroupRecord) -> Result<(), ApiError> {
        if allowed(phase_of_group(record)).contains(&self.name()) {
            return Ok(());
        }
        Err(ApiError::conflict(
            "invalid_phase",
            format!(
                "cannot {} group {} in phase {}",
                self.name(),
                record.id,
                record.phase
            ),
        ))
    }

    fn name(self) -> &'static str {
        match self {
            GroupCommand::Promote { .. } => "promote",
            GroupCommand::Abort => "abort",
            GroupCommand::Pause => "pause",
            GroupCommand::Resume => "resume",
        }
    }
}

/// The commands a group in `phase` allows.
pub fn allowed(phase: GroupPhase) -> &'static [&'static str] {
    match phase {
        GroupPhase::Progressing => &["promote", "abort", "pause"],
        GroupPhase::Paused => &["promote", "abort", "resume"],
        _ => &[],
    }
}

/// Applies an operator's command to the group `key` and returns it afterwards.
pub async fn command(
    shared: &Shared,
    key: &str,
    command: GroupCommand,
    reason: Option<String>,
    principal: &Principal,
) -> Result<GroupRecord, ApiError> {
    principal.require(Role::Operator)?;
    let mut record = get(shared, key).await?;
    let phase = phase_of_group(&record);
    command.check(&record)?;
    if command == (GroupCommand::Promote { full: true })
        && matches!(
            spec_of_group(&record)?.order,
            fledge_spec::GroupOrder::Together
        )
    {
        return Err(ApiError::conflict(
            "invalid_phase",
            format!(
                "cannot promote group {} fully: its members move together stage by stage; \
                 promote without `full` to end the current stage of every member",
                record.id
            ),
        ));
    }
    let why = reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    // The group's own change first (revision-checked), then its members.
    let next_phase = match command {
        GroupCommand::Pause => GroupPhase::Paused,
        GroupCommand::Resume => GroupPhase::Progressing,
        _ => phase,
    };
    for attempt in 1..=MAX_ATTEMPTS {
        let mut state = state_of_group(&record)?;
        if command == GroupCommand::Abort {
            state.stop = Some(Stop {
                phase: GroupPhase::Aborted,
                actor: principal.name.clone(),
                reason: format!("aborted by {}{why}", principal.name),
            });
        }
        let kind = match command {
            GroupCommand::Promote { .. } => "PromoteRequested",
            GroupCommand::Abort => "AbortRequested",
            GroupCommand::Pause => "Paused",
            GroupCommand::Resume => "Resumed",
        };
        state.push(
            shared.timestamp(),
            kind,
            &principal.name,
            None,
            format!("{} by {}{why}", command.name(), principal.name),
        );
        match write(shared, &record, next_phase, &state, None).await? {
            Ok(updated) => {
                record = updated;
                break;
            }
            Err(StoreError::Conflict { .. }) if attempt < MAX_ATTEMPTS => {
                record = get(shared, &record.id).await?;
                command.check(&record)?;
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    let (spec, rollouts) = read_members(shared, &record).await?;
    let members = members_of(&spec, &rollouts);
    let mut refused = Vec::new();
    let mut moved = 0;
    for m in &members {
        let (Some(rollout), Some(view)) = (m.rollout, m.member.rollout) else {
            continue;
        };
        if !view.is_active() {
            continue;
        }
        let member_command = match command {
            // At once, from any replica: the leader's pass then ends the group (and
            // undoes what it must).
            GroupCommand::Abort => Command::Abort {
                reason: Some(format!(
                    "group {}: aborted by {}{why}",
                    spec.name, principal.name
                )),
            },
            GroupCommand::Pause => Command::Pause,
            GroupCommand::Resume => Command::Resume,
            GroupCommand::Promote { full } => {
                // Lock step: the group lets every member past its current stage first.
                if view.group_hold.is_some() {
                    hold(shared, rollout, view.stage_index + 1, None).await?;
                }
                Command::Promote { full }
            }
        };
        match rollouts::command(shared, &rollout.id, member_command, principal).await {
            Ok(_) => moved += 1,
            Err(e) if e.status() == 409 => {
                refused.push(format!("{}: {}", rollout.app, e.message()))
            }
            Err(e) => return Err(e),
        }
    }
    if matches!(command, GroupCommand::Promote { .. }) && moved == 0 {
        return Err(ApiError::conflict(
            "conflict",
            format!(
                "no member of group {} could be promoted{}",
                record.id,
                if refused.is_empty() {
                    String::new()
                } else {
                    format!(": {}", refused.join("; "))
                }
            ),
        ));
    }
    coordinate_here(shared, record).await
}

/// A group as `role` sees it at `now`, its members' rollouts read from
/// `rollouts` (the group's, oldest first).
pub fn view(
    record: &GroupRecord,
    rollouts: &[RolloutRecord],
    role: Role,
    now: SystemTime,
    stables: &super::view::Stables,
) -> Result<Group, ApiError> {
    let spec = spec_of_group(record)?;
    let state = state_of_group(record)?;
    let phase = phase_of_group(record);
    let members = members_of(&spec, rollouts)
        .iter()
        .zip(&spec.rollouts)
        .map(|(m, s)| GroupMember {
            app: s.app.clone(),
            version: s.version.clone(),
            rollout: m
                .rollout
                .map(|r| super::view::rollout(r, None, role, now, stables)),
            waiting_for_group: m
                .member
                .rollout
                .is_some_and(|r| r.held_by_group && r.is_active()),
            undo_rollout_id: m.undo.map(|r| r.id.clone()),
        })
        .collect();
    let allowed_actions = if role >= Role::Operator {
        allowed(phase)
            .iter()
            .filter_map(|name| fledge_api::rollout::Action::from_name(name))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Group {
        id: record.id.clone(),
        name: record.name.clone(),
        phase,
        order: spec.order,
        rollback_succeeded: spec.rollback_succeeded,
        members,
        message: state.message,
        created_at: record.created_at.to_string(),
        updated_at: record.updated_at.to_string(),
        finished_at: record.finished_at.map(|t| t.to_string()),
        revision: record.revision,
        allowed_actions,
        events: state
            .events
            .into_iter()
            .map(|e| GroupEvent {
                at: e.at.to_string(),
                kind: e.kind,
                actor: e.actor,
                app: e.app,
                message: e.message,
            })
            .collect(),
    })
}

/// Writes the group's phase and state at the revision it was read at.
async fn write(
    shared: &Shared,
    record: &GroupRecord,
    phase: GroupPhase,
    state: &GroupState,
    fence: Option<&Fence>,
) -> Result<Result<GroupRecord, StoreError>, ApiError> {
    Ok(shared
        .store
        .update_group(GroupUpdate {
            id: record.id.clone(),
            expected_revision: record.revision,
            phase: phase.as_str().to_owned(),
            state: to_json(state)?,
            fence: fence.cloned(),
        })
        .await)
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests;
