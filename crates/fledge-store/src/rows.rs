//! Turning result rows into records, shared by both backends (the column names and
//! types are the same on SQLite and PostgreSQL: TEXT and 64-bit integers).

use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::error::{Result, StoreError};
use crate::model::{AppRecord, EventRecord, RolloutRecord, StateUpdate, Timestamp, from_json_text};
use crate::samples::{ArmSample, Sample};

/// The rollout columns, in the order every rollout query selects them.
macro_rules! rollout_columns {
    () => {
        "id, app, version, phase, spec_text, spec, state, revision, created_at, updated_at, finished_at"
    };
}
pub(crate) use rollout_columns;

/// `SELECT` [`rollout_columns!`] `FROM rollouts`, then the rest of the statement.
macro_rules! select_rollouts {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            $crate::rows::rollout_columns!(),
            " FROM rollouts ",
            $rest
        )
    };
}
pub(crate) use select_rollouts;

/// The event columns (`e` is events, `r` its rollout).
macro_rules! event_columns {
    () => {
        "e.id, e.rollout_id, r.app, e.seq, e.at, e.kind, e.actor, e.message, e.evidence"
    };
}
pub(crate) use event_columns;

/// Reads one column, naming it when its type is not the expected one.
pub(crate) fn col<'r, R, T>(row: &'r R, name: &'static str) -> Result<T>
where
    R: Row,
    T: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    row.try_get(name).map_err(|e| StoreError::Database {
        operation: format!("reading column `{name}`"),
        source: e,
    })
}

/// A row of `rollout_columns!()`.
pub(crate) fn rollout<R>(row: &R) -> Result<RolloutRecord>
where
    R: Row,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    let id: String = col(row, "id")?;
    let spec_text: String = col(row, "spec")?;
    let state_text: String = col(row, "state")?;
    let spec = from_json_text(|| format!("spec of rollout {id}"), &spec_text)?;
    let state = from_json_text(|| format!("state of rollout {id}"), &state_text)?;
    Ok(RolloutRecord {
        app: col(row, "app")?,
        version: col(row, "version")?,
        phase: col(row, "phase")?,
        spec_text: col(row, "spec_text")?,
        spec,
        state,
        revision: col(row, "revision")?,
        created_at: Timestamp(col(row, "created_at")?),
        updated_at: Timestamp(col(row, "updated_at")?),
        finished_at: col::<R, Option<i64>>(row, "finished_at")?.map(Timestamp),
        id,
    })
}

/// A row of `event_columns!()`.
pub(crate) fn event<R>(row: &R) -> Result<EventRecord>
where
    R: Row,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    let id: i64 = col(row, "id")?;
    let evidence_text: String = col(row, "evidence")?;
    Ok(EventRecord {
        evidence: from_json_text(|| format!("evidence of event {id}"), &evidence_text)?,
        id,
        rollout_id: col(row, "rollout_id")?,
        app: col(row, "app")?,
        seq: col(row, "seq")?,
        at: Timestamp(col(row, "at")?),
        kind: col(row, "kind")?,
        actor: col(row, "actor")?,
        message: col(row, "message")?,
    })
}

/// The sample columns, in the order every sample query selects and inserts them.
macro_rules! sample_columns {
    () => {
        "rollout_id, at, snapshots, phase, canary_weight, \
         stable_version, stable_request_rate, stable_error_rate, stable_p50_ms, \
         stable_p95_ms, stable_p99_ms, stable_requests, stable_errors, stable_total_requests, \
         canary_version, canary_request_rate, canary_error_rate, canary_p50_ms, \
         canary_p95_ms, canary_p99_ms, canary_requests, canary_errors, canary_total_requests"
    };
}
pub(crate) use sample_columns;

/// The columns of one version's health in a sample row.
struct ArmColumns {
    version: &'static str,
    request_rate: &'static str,
    error_rate: &'static str,
    p50_ms: &'static str,
    p95_ms: &'static str,
    p99_ms: &'static str,
    requests: &'static str,
    errors: &'static str,
    total_requests: &'static str,
}

/// Declares the [`ArmColumns`] of one version, by its column prefix.
macro_rules! arm_columns {
    ($prefix:literal) => {
        ArmColumns {
            version: concat!($prefix, "_version"),
            request_rate: concat!($prefix, "_request_rate"),
            error_rate: concat!($prefix, "_error_rate"),
            p50_ms: concat!($prefix, "_p50_ms"),
            p95_ms: concat!($prefix, "_p95_ms"),
            p99_ms: concat!($prefix, "_p99_ms"),
            requests: concat!($prefix, "_requests"),
            errors: concat!($prefix, "_errors"),
            total_requests: concat!($prefix, "_total_requests"),
        }
    };
}

const STABLE: ArmColumns = arm_columns!("stable");
const CANARY: ArmColumns = arm_columns!("canary");

/// A row of `sample_columns!()`.
pub(crate) fn sample<R>(row: &R) -> Result<Sample>
where
    R: Row,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<f64>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    Ok(Sample {
        rollout_id: col(row, "rollout_id")?,
        at: Timestamp(col(row, "at")?),
        snapshots: col(row, "snapshots")?,
        phase: col(row, "phase")?,
        canary_weight: col(row, "canary_weight")?,
        stable: arm(row, &STABLE)?,
        canary: arm(row, &CANARY)?,
    })
}

/// One version's health in a sample row; `None` when its columns are NULL.
fn arm<R>(row: &R, c: &ArmColumns) -> Result<Option<ArmSample>>
where
    R: Row,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<f64>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    let Some(version) = col::<R, Option<String>>(row, c.version)? else {
        return Ok(None);
    };
    let count = |name| col::<R, Option<i64>>(row, name).map(Option::unwrap_or_default);
    Ok(Some(ArmSample {
        version,
        request_rate: col::<R, Option<f64>>(row, c.request_rate)?.unwrap_or_default(),
        error_rate: col(row, c.error_rate)?,
        p50_ms: col(row, c.p50_ms)?,
        p95_ms: col(row, c.p95_ms)?,
        p99_ms: col(row, c.p99_ms)?,
        requests: count(c.requests)?,
        errors: count(c.errors)?,
        total_requests: count(c.total_requests)?,
    }))
}

/// A row of `name, config, created_at, updated_at` from `apps`.
pub(crate) fn app<R>(row: &R) -> Result<AppRecord>
where
    R: Row,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    let name: String = col(row, "name")?;
    let config_text: String = col(row, "config")?;
    Ok(AppRecord {
        config: from_json_text(|| format!("config of app {name}"), &config_text)?,
        name,
        created_at: Timestamp(col(row, "created_at")?),
        updated_at: Timestamp(col(row, "updated_at")?),
    })
}

/// One schema migration: applied in order, each in its own transaction together with
/// its row in `fledge_migrations`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Increasing from 1 without gaps.
    pub version: i64,
    /// A short name for messages.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Why a state update wrote nothing, given the rollout's revision now (`None`: gone).
pub(crate) fn missed_state_update(update: &StateUpdate, actual: Option<i64>) -> StoreError {
    match actual {
        Some(actual) => StoreError::Conflict {
            id: update.id.clone(),
            expected: update.expected_revision,
            actual,
        },
        None => StoreError::NotFound {
            id: update.id.clone(),
        },
    }
}
