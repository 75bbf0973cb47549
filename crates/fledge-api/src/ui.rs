//! The endpoints only the web UI uses: its session (`/session`, `/login`,
//! `/logout`) and the recorded chart points (`/ui/api/series`).

use fledge_engine::Phase;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::app::Role;
use crate::status::{AppStatus, ArmHealth};

/// Who the browser is signed in as (`GET /session`, `POST /login`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// Whether the server asks for a token (it has tokens configured).
    pub auth_required: bool,
    /// Whether this browser has a session (always, without tokens).
    pub signed_in: bool,
    /// The token's name (`anonymous` without tokens).
    pub name: Option<String>,
    /// The token's role.
    pub role: Option<Role>,
    /// Whether the role may act on rollouts (operator or admin).
    pub can_operate: bool,
    /// The token to send as `X-CSRF-Token` with the session cookie's writes.
    pub csrf_token: Option<String>,
}

/// The body of `POST /login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// An API token.
    pub token: String,
}

/// The query of `GET /ui/api/series`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// The rollout: its id, or an app name (the app's active rollout, else its latest).
    pub rollout: String,
    /// Only points taken at or after this time (milliseconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

/// The body of `GET /ui/api/series`: a rollout's recorded health points, kept by
/// the store, so they cover the rollout's whole life across server restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Series {
    /// The app.
    pub app: String,
    /// The rollout the points belong to.
    pub rollout_id: String,
    /// The points, oldest first.
    pub points: Vec<SeriesPoint>,
}

/// One recorded point of an app's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// When (milliseconds since the epoch).
    pub t: i64,
    /// The active rollout then, if any.
    pub rollout_id: Option<String>,
    /// Its phase then.
    pub phase: Option<Phase>,
    /// The canary's weight then.
    pub canary_weight: u8,
    /// The stable version's health then.
    pub stable: Option<ArmHealth>,
    /// The canary's health then.
    pub canary: Option<ArmHealth>,
    /// How many two-second snapshots the point stands for: 1, or more for the older
    /// points of a long rollout, merged with their neighbours (mean request rate and
    /// weight, worst error rate and latency, the counts of the latest).
    #[serde(default = "one")]
    pub snapshots: u32,
}

fn one() -> u32 {
    1
}

impl SeriesPoint {
    /// The point an app's status gives at `t`.
    pub fn of(app: &AppStatus, t: i64) -> Self {
        Self {
            t,
            rollout_id: app.rollout.as_ref().map(|r| r.id.clone()),
            phase: app.rollout.as_ref().map(|r| r.phase),
            canary_weight: app.rollout.as_ref().map_or(0, |r| r.canary_weight),
            stable: app.stable.health.clone(),
            canary: app.canary.clone(),
            snapshots: 1,
        }
    }
}
