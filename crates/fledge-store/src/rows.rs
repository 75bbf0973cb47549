//! Turning result rows into records, shared by both backends (the column names and
//! types are the same on SQLite and PostgreSQL: TEXT and 64-bit integers).

use fledge_stats::ArmHealth;
use serde_json::Value;
use sqlx::{ColumnIndex, Decode, Row, Type};

use crate::error::{Result, StoreError};
use crate::model::{AppRecord, EventRecord, GroupRecord, RolloutRecord, Timestamp, from_json_text};
use crate::samples::Sample;

/// The rollout columns, in the order every rollout query selects them.
macro_rules! rollout_columns {
    () => {
        "id, app, version, phase, spec_text, spec, state, revision, created_at, updated_at, \
         finished_at, group_id"
    };
}
pub(crate) use rollout_columns;

/// The rollout group columns, in the order every group query selects them.
macro_rules! group_columns {
    () => {
        "id, name, phase, spec, state, revision, created_at, updated_at, finished_at"
    };
}
pub(crate) use group_columns;

/// `SELECT` [`group_columns!`] `FROM rollout_groups`, then the rest of the statement.
macro_rules! select_groups {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            $crate::rows::group_columns!(),
            " FROM rollout_groups ",
            $rest
        )
    };
}
pub(crate) use select_groups;

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

/// A row of either backend, its columns read by name as the schema's types (TEXT,
/// 64-bit integers, and reals in samples), each read naming its column when it fails.
pub(crate) trait Columns {
    /// A TEXT column.
    fn text(&self, name: &'static str) -> Result<String>;
    /// An integer column.
    fn int(&self, name: &'static str) -> Result<i64>;
    /// A TEXT column that may be NULL.
    fn opt_text(&self, name: &'static str) -> Result<Option<String>>;
    /// An integer column that may be NULL.
    fn opt_int(&self, name: &'static str) -> Result<Option<i64>>;
    /// A real column that may be NULL.
    fn opt_real(&self, name: &'static str) -> Result<Option<f64>>;

    /// A TEXT column holding JSON; `what` says whose it is when it does not parse.
    fn json(&self, name: &'static str, what: impl FnOnce() -> String) -> Result<Value> {
        from_json_text(what, &self.text(name)?)
    }
}

impl<R> Columns for R
where
    R: Row,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<f64>: Decode<'r, R::Database> + Type<R::Database>,
    &'static str: ColumnIndex<R>,
{
    fn text(&self, name: &'static str) -> Result<String> {
        col(self, name)
    }
    fn int(&self, name: &'static str) -> Result<i64> {
        col(self, name)
    }
    fn opt_text(&self, name: &'static str) -> Result<Option<String>> {
        col(self, name)
    }
    fn opt_int(&self, name: &'static str) -> Result<Option<i64>> {
        col(self, name)
    }
    fn opt_real(&self, name: &'static str) -> Result<Option<f64>> {
        col(self, name)
    }
}

/// A row of `rollout_columns!()`.
pub(crate) fn rollout(row: &impl Columns) -> Result<RolloutRecord> {
    let id = row.text("id")?;
    let spec = row.json("spec", || format!("spec of rollout {id}"))?;
    let state = row.json("state", || format!("state of rollout {id}"))?;
    Ok(RolloutRecord {
        app: row.text("app")?,
        version: row.text("version")?,
        phase: row.text("phase")?,
        spec_text: row.text("spec_text")?,
        spec,
        state,
        revision: row.int("revision")?,
        created_at: Timestamp(row.int("created_at")?),
        updated_at: Timestamp(row.int("updated_at")?),
        finished_at: row.opt_int("finished_at")?.map(Timestamp),
        group: row.opt_text("group_id")?,
        id,
    })
}

/// A row of `group_columns!()`.
pub(crate) fn group(row: &impl Columns) -> Result<GroupRecord> {
    let id = row.text("id")?;
    let spec = row.json("spec", || format!("spec of rollout group {id}"))?;
    let state = row.json("state", || format!("state of rollout group {id}"))?;
    Ok(GroupRecord {
        name: row.text("name")?,
        phase: row.text("phase")?,
        spec,
        state,
        revision: row.int("revision")?,
        created_at: Timestamp(row.int("created_at")?),
        updated_at: Timestamp(row.int("updated_at")?),
        finished_at: row.opt_int("finished_at")?.map(Timestamp),
        id,
    })
}

/// A row of `event_columns!()`.
pub(crate) fn event(row: &impl Columns) -> Result<EventRecord> {
    let id = row.int("id")?;
    Ok(EventRecord {
        evidence: row.json("evidence", || format!("evidence of event {id}"))?,
        id,
        rollout_id: row.text("rollout_id")?,
        app: row.text("app")?,
        seq: row.int("seq")?,
        at: Timestamp(row.int("at")?),
        kind: row.text("kind")?,
        actor: row.text("actor")?,
        message: row.text("message")?,
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
pub(crate) fn sample(row: &impl Columns) -> Result<Sample> {
    Ok(Sample {
        rollout_id: row.text("rollout_id")?,
        at: Timestamp(row.int("at")?),
        snapshots: row.int("snapshots")?,
        phase: row.opt_text("phase")?,
        canary_weight: row.int("canary_weight")?,
        stable: arm(row, &STABLE)?,
        canary: arm(row, &CANARY)?,
    })
}

/// One version's health in a sample row; `None` when its columns are NULL. A count
/// that is NULL or negative (written behind the store's back) reads as 0.
fn arm(row: &impl Columns, c: &ArmColumns) -> Result<Option<ArmHealth>> {
    let Some(version) = row.opt_text(c.version)? else {
        return Ok(None);
    };
    let count = |name| {
        row.opt_int(name)
            .map(|n| u64::try_from(n.unwrap_or_default()).unwrap_or(0))
    };
    Ok(Some(ArmHealth {
        version,
        request_rate: row.opt_real(c.request_rate)?.unwrap_or_default(),
        error_rate: row.opt_real(c.error_rate)?,
        p50_ms: row.opt_real(c.p50_ms)?,
        p95_ms: row.opt_real(c.p95_ms)?,
        p99_ms: row.opt_real(c.p99_ms)?,
        requests: count(c.requests)?,
        errors: count(c.errors)?,
        total_requests: count(c.total_requests)?,
    }))
}

/// A row of `name, config, created_at, updated_at` from `apps`.
pub(crate) fn app(row: &impl Columns) -> Result<AppRecord> {
    let name = row.text("name")?;
    Ok(AppRecord {
        config: row.json("config", || format!("config of app {name}"))?,
        name,
        created_at: Timestamp(row.int("created_at")?),
        updated_at: Timestamp(row.int("updated_at")?),
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

/// The schema migrations, oldest first, of the backend whose statements are in
/// `migrations/<dir>/`: every backend has the same versions under the same names.
macro_rules! migrations {
    ($dir:literal) => {
        &[
            $crate::rows::Migration {
                version: 1,
                name: "apps, rollouts, events, leases",
                sql: include_str!(concat!("../migrations/", $dir, "/0001_init.sql")),
            },
            $crate::rows::Migration {
                version: 2,
                name: "chart samples",
                sql: include_str!(concat!("../migrations/", $dir, "/0002_samples.sql")),
            },
            $crate::rows::Migration {
                version: 3,
                name: "rollout groups",
                sql: include_str!(concat!("../migrations/", $dir, "/0003_groups.sql")),
            },
        ]
    };
}
pub(crate) use migrations;

/// Why a revision-checked update of record `id` from `expected` wrote nothing, given
/// the record's revision now (`None`: gone).
pub(crate) fn missed_update(id: &str, expected: i64, actual: Option<i64>) -> StoreError {
    match actual {
        Some(actual) => StoreError::Conflict {
            id: id.to_owned(),
            expected,
            actual,
        },
        None => StoreError::NotFound { id: id.to_owned() },
    }
}
