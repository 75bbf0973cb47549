//! Rollout groups as the API shows them: several apps' rollouts moving in lock step
//! or in order, rolled back together.

use fledge_engine::group::GroupPhase;
use fledge_spec::GroupOrder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::{Action, Rollout};

/// A rollout group: its members side by side, where it is, and what the caller may
/// do now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// The group's id (`gr-…`).
    pub id: String,
    /// The group document's `name`.
    pub name: String,
    /// Where it is in its life.
    pub phase: GroupPhase,
    /// How its members move: `together`, or the apps in the order they roll out.
    pub order: GroupOrder,
    /// Whether a failure also rolls back the members that had succeeded.
    pub rollback_succeeded: bool,
    /// The members, in the order of the document's `rollouts`.
    pub members: Vec<GroupMember>,
    /// Why it ended, once it has failed or been aborted.
    pub message: Option<String>,
    /// When the group was created (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// When it last changed (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
    /// When it ended (RFC 3339), once it has.
    #[schemars(extend("format" = "date-time"))]
    pub finished_at: Option<String>,
    /// Bumped by every stored change of the group itself.
    pub revision: i64,
    /// The actions the group's phase allows and the caller's role permits:
    /// `promote`, `abort`, `pause`, `resume`.
    pub allowed_actions: Vec<Action>,
    /// The group's own history (members' histories are on their rollouts), oldest
    /// first.
    pub events: Vec<GroupEvent>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    /// The member's app.
    pub app: String,
    /// The version it rolls out.
    pub version: String,
    /// Its rollout, once started (an `order` group starts a member when the one
    /// before it has succeeded); without its events.
    pub rollout: Option<Rollout>,
    /// Its current stage is done and it waits for the rest of the group.
    pub waiting_for_group: bool,
    /// The rollout that took it back to its previous stable version, when the group
    /// failed after it had succeeded (`rollbackSucceeded`).
    pub undo_rollout_id: Option<String>,
}

/// One entry of a group's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupEvent {
    /// When it happened (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    /// What happened: `Created`, `MemberStarted`, `Held`, `Paused`, `Resumed`,
    /// `Promoted`, `MemberAborted`, `MemberUndone`, `Succeeded`, `Failed`, `Aborted`.
    pub kind: String,
    /// Who decided: `engine`, or the name of the caller's token.
    pub actor: String,
    /// The member it is about, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// One sentence for people.
    pub message: String,
}

/// The query of `GET /groups`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupListQuery {
    /// Only groups still moving (`Progressing` or `Paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// At most this many (100 by default, 1000 at most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}
