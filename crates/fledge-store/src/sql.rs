//! The store's logic, written once over any sqlx database: validation, transaction
//! shapes, fencing checks, event numbering and row mapping. A backend supplies its
//! pool, how a write transaction begins, the few statements whose SQL differs, and
//! the batch state update (see [`Backend`]).
//!
//! Statements number their parameters (`$1`, `$2`, …), which both SQLite and
//! PostgreSQL understand, so most of them are shared text. A statement that would need
//! a dialect's own syntax (row locks, casts, the database clock) is a constant of the
//! backend.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use fledge_stats::ArmHealth;
use serde_json::Value;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use crate::error::{Result, StoreError, is_foreign_key_violation, is_unique_violation};
use crate::model::{
    AppRecord, EventRecord, Fence, GroupRecord, GroupUpdate, Lease, NewEvent, NewGroup, NewRollout,
    RolloutFilter, RolloutRecord, RolloutUpdate, StateUpdate, Timestamp, check_events,
    check_group_phase, check_name, check_phase, check_ttl, is_active_group_phase, is_active_phase,
    new_group_id, new_rollout_id, to_json_text,
};
use crate::rows::{
    self, Migration, event_columns, group_columns, missed_update, rollout_columns, sample_columns,
    select_groups, select_rollouts,
};
use crate::samples::{Sample, SampleBounds, check_samples, thin};

/// The app columns, in the order every app query selects them.
macro_rules! app_columns {
    () => {
        "name, config, created_at, updated_at"
    };
}

/// `SELECT` [`app_columns!`] `FROM apps`, before the rest of the statement.
macro_rules! select_apps {
    () => {
        concat!("SELECT ", app_columns!(), " FROM apps ")
    };
}

/// `SELECT` [`event_columns!`] of events joined with their rollouts, before the rest
/// of the statement.
macro_rules! select_events {
    () => {
        concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e JOIN rollouts r ON r.id = e.rollout_id "
        )
    };
}

/// Creates an app or replaces its config (`$1` name, `$2` config, `$3` now).
macro_rules! upsert_app {
    () => {
        "INSERT INTO apps (name, config, created_at, updated_at) VALUES ($1, $2, $3, $3) \
         ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, \
         updated_at = EXCLUDED.updated_at"
    };
}

/// A revision-checked update of a row of `$table` (rollouts or rollout groups) that
/// sets its phase (`$1`), state (`$2`) and update time (`$3`), sets or clears
/// `finished_at` by whether the phase is active (`$4`), bumps the revision and sets
/// `$extra` (further columns, from `$7` on), where the id is `$5` and the revision
/// still `$6`; returns `$columns`. See [`Backend::revised`] for the parameters.
macro_rules! revised_update {
    ($table:literal, $extra:literal, $columns:expr) => {
        concat!(
            "UPDATE ",
            $table,
            " SET phase = $1, state = $2, revision = revision + 1, updated_at = $3, \
             finished_at = CASE WHEN $4 THEN NULL ELSE COALESCE(finished_at, $3) END",
            $extra,
            " WHERE id = $5 AND revision = $6 RETURNING ",
            $columns
        )
    };
}

/// The lease statements, around the dialect's SQL for the database clock in Unix
/// milliseconds. Lease expiry is judged by that clock so that nodes with skewed clocks
/// agree.
macro_rules! lease_statements {
    ($now:literal) => {
        $crate::sql::LeaseSql {
            // Insert the lease, or take it over when it is free, released or expired
            // (new epoch), or extend it when `holder` already has it (same epoch).
            // Under a concurrent acquisition the row lock makes one wait and then
            // re-check the condition against the winner's row.
            acquire: concat!(
                "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, ",
                $now,
                " + $3) ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                 epoch = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > ",
                $now,
                " THEN leases.epoch ELSE leases.epoch + 1 END, expires_at = EXCLUDED.expires_at \
                 WHERE leases.holder IS NULL OR leases.holder = EXCLUDED.holder \
                 OR leases.expires_at <= ",
                $now,
                " RETURNING epoch, expires_at"
            ),
            renew: concat!(
                "UPDATE leases SET expires_at = ",
                $now,
                " + $4 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > ",
                $now,
                " RETURNING expires_at"
            ),
        }
    };
}
pub(crate) use lease_statements;

/// The statements whose SQL differs between backends; every one takes the same
/// parameters on both.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// `holder, epoch` of lease `$1`, locked against a new holder where the database
    /// can, so that the new leader's acquisition waits for the write being fenced.
    pub fence: &'static str,
    /// `app, revision, last_seq` of rollout `$1`, locked for the update that follows
    /// where the database can.
    pub current_rollout: &'static str,
    /// The `id` of an active rollout of app `$1` other than `$2` (NULL: any).
    pub other_active_rollout: &'static str,
    /// [`rollout_columns!`] of the rollouts of app `$1` (NULL: all) in phase `$2`
    /// (NULL: all), newest first, at most `$3` (NULL: no limit).
    pub list_rollouts: &'static str,
    /// Taking and renewing leases.
    pub lease: LeaseSql,
    /// A row when `fledge_migrations` exists, none when it does not.
    pub migrations_table_exists: &'static str,
    /// Creates `fledge_migrations (version, name, applied_at)`.
    pub create_migrations_table: &'static str,
}

/// See [`lease_statements!`].
#[derive(Debug)]
pub(crate) struct LeaseSql {
    /// `$1` name, `$2` holder, `$3` TTL in ms; returns `epoch, expires_at` when taken.
    pub acquire: &'static str,
    /// `$1` name, `$2` holder, `$3` epoch, `$4` TTL in ms; returns `expires_at` when
    /// still held.
    pub renew: &'static str,
}

/// A statement with its parameters, for the database `DB`.
pub(crate) type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments>;

/// A write transaction, with whatever else the backend holds while it is open.
pub(crate) struct WriteTx<'a, DB: Database> {
    pub tx: sqlx::Transaction<'static, DB>,
    /// Held until the transaction ends (SQLite's in-process write lock).
    pub _guard: Option<tokio::sync::MutexGuard<'a, ()>>,
}

/// A database backend of the store: what differs between SQLite and PostgreSQL.
/// [`Store`](crate::Store) is implemented for every backend over these pieces.
///
/// The `where` clauses are the driver features the shared code uses: connections that
/// run statements, and the column types of the schema (TEXT, 64-bit integers) plus
/// booleans as parameters.
#[async_trait]
pub(crate) trait Backend: fmt::Debug + Send + Sync + Sized + 'static
where
    for<'c> &'c mut <Self::Db as Database>::Connection: Executor<'c, Database = Self::Db>,
    <Self::Db as Database>::Arguments: IntoArguments<Self::Db>,
    for<'r> String: Decode<'r, Self::Db> + Encode<'r, Self::Db> + Type<Self::Db>,
    for<'r> i64: Decode<'r, Self::Db> + Encode<'r, Self::Db> + Type<Self::Db>,
    for<'r> Option<String>: Decode<'r, Self::Db> + Type<Self::Db>,
    for<'r> Option<i64>: Decode<'r, Self::Db> + Encode<'r, Self::Db> + Type<Self::Db>,
    for<'r> Option<f64>: Decode<'r, Self::Db> + Encode<'r, Self::Db> + Type<Self::Db>,
    for<'r> &'r str: Encode<'r, Self::Db> + Type<Self::Db>,
    for<'r> Option<&'r str>: Encode<'r, Self::Db> + Type<Self::Db>,
    for<'r> bool: Encode<'r, Self::Db> + Type<Self::Db>,
    &'static str: ColumnIndex<<Self::Db as Database>::Row>,
{
    /// The sqlx database.
    type Db: Database;

    /// `"sqlite"` or `"postgres"`.
    const NAME: &'static str;

    /// The statements written in the backend's own dialect.
    const SQL: Dialect;

    /// The connection pool.
    fn pool(&self) -> &Pool<Self::Db>;

    /// Where the database is, for messages (no password).
    fn location(&self) -> &str;

    /// Starts a write transaction.
    async fn begin_write(&self, operation: &str) -> Result<WriteTx<'_, Self::Db>>;

    /// Writes the new states of `updates` inside the transaction `conn` at `now`, and
    /// says for each whether it was written (its new revision) or why not.
    async fn write_states(
        &self,
        conn: &mut <Self::Db as Database>::Connection,
        updates: &[StateUpdate],
        now: Timestamp,
        operation: &str,
    ) -> Result<Vec<Result<i64>>>;

    /// Called inside a write transaction before it draws event ids.
    async fn before_events(
        _conn: &mut <Self::Db as Database>::Connection,
        _operation: &str,
    ) -> Result<()> {
        Ok(())
    }

    /// Sees every error the store returns (SQLite recycles its connections after the
    /// database could not take a write).
    fn note(&self, _error: &StoreError) {}

    /// Passes `result` on, showing its error to [`note`](Self::note).
    fn noted<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.note(e);
        }
        result
    }

    // === shared: transactions ===

    /// Starts a write transaction, refused when `fence` is stale.
    async fn begin_fenced(&self, fence: Option<&Fence>, op: &str) -> Result<WriteTx<'_, Self::Db>> {
        let mut write = self.begin_write(op).await?;
        if let Some(fence) = fence {
            Self::check_fence(&mut write.tx, fence, op).await?;
        }
        Ok(write)
    }

    /// Commits a write transaction.
    async fn commit(write: WriteTx<'_, Self::Db>, op: &str) -> Result<()> {
        write
            .tx
            .commit()
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))
    }

    /// Creates `fledge_migrations` when it is missing, and only then: even
    /// `CREATE TABLE IF NOT EXISTS` writes (or is refused by a read-only database), and
    /// an up-to-date database must open without writing anything. `op` names the work
    /// in errors.
    async fn create_migrations_table(
        conn: &mut <Self::Db as Database>::Connection,
        op: &str,
    ) -> Result<()> {
        let exists = sqlx::query(Self::SQL.migrations_table_exists)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        if exists.is_none() {
            sqlx::raw_sql(Self::SQL.create_migrations_table)
                .execute(&mut *conn)
                .await
                .map_err(|e| StoreError::from_sqlx(op, e))?;
        }
        Ok(())
    }

    /// Applies the `migrations` the database on `conn` has not seen yet, each in its
    /// own transaction (begun with `begin`, or the default) together with its row in
    /// `fledge_migrations`. The version is read inside that transaction, so that a
    /// second process migrating the same database skips what the first applied.
    async fn apply_migrations(
        conn: &mut <Self::Db as Database>::Connection,
        begin: Option<&'static str>,
        migrations: &[Migration],
        location: &str,
    ) -> Result<()> {
        let supported = migrations.last().map_or(0, |m| m.version);
        for m in migrations {
            let failed = |source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            };
            let mut tx = match begin {
                Some(statement) => sqlx::Connection::begin_with(&mut *conn, statement).await,
                None => sqlx::Connection::begin(&mut *conn).await,
            }
            .map_err(failed)?;
            let row =
                sqlx::query("SELECT COALESCE(MAX(version), 0) AS version FROM fledge_migrations")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| {
                        StoreError::from_sqlx(format!("migrating database {location}"), e)
                    })?;
            let current: i64 = rows::col(&row, "version")?;
            if current > supported {
                return Err(StoreError::SchemaTooNew {
                    found: current,
                    supported,
                });
            }
            if current >= m.version {
                continue;
            }
            sqlx::raw_sql(m.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query(
                "INSERT INTO fledge_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(Timestamp::now().0)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(database = %location, version = m.version, name = m.name, "applied schema migration");
        }
        Ok(())
    }

    // === shared: queries inside transactions ===

    /// Refuses the write unless the lease still has the fence's epoch and a holder.
    async fn check_fence(
        conn: &mut <Self::Db as Database>::Connection,
        fence: &Fence,
        op: &str,
    ) -> Result<()> {
        let row = sqlx::query(Self::SQL.fence)
            .bind(&fence.lease)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        let current = match &row {
            None => None,
            Some(row) => {
                let holder: Option<String> = rows::col(row, "holder")?;
                let epoch: i64 = rows::col(row, "epoch")?;
                holder.map(|_| epoch)
            }
        };
        if current == Some(fence.epoch) {
            Ok(())
        } else {
            Err(StoreError::Fenced {
                lease: fence.lease.clone(),
                epoch: fence.epoch,
                current,
            })
        }
    }

    /// The app's active rollout other than `except`, if any.
    async fn other_active_rollout(
        conn: &mut <Self::Db as Database>::Connection,
        app: &str,
        except: Option<&str>,
        op: &str,
    ) -> Result<Option<String>> {
        let query = sqlx::query(Self::SQL.other_active_rollout)
            .bind(app)
            .bind(except);
        Self::fetch_col(conn, query, "id", op).await
    }

    /// Runs `query` and reads `column` of the row it returns, if it returns one.
    async fn fetch_col<T>(
        conn: &mut <Self::Db as Database>::Connection,
        query: Query<'_, Self::Db>,
        column: &'static str,
        op: &str,
    ) -> Result<Option<T>>
    where
        T: for<'r> Decode<'r, Self::Db> + Type<Self::Db>,
    {
        query
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?
            .map(|row| rows::col(&row, column))
            .transpose()
    }

    /// Appends `events` to a rollout's history after `last_seq`: gapless numbers,
    /// because the caller holds the rollout's row (or the write lock).
    async fn insert_events(
        conn: &mut <Self::Db as Database>::Connection,
        rollout_id: &str,
        last_seq: i64,
        events: &[NewEvent],
        now: Timestamp,
        op: &str,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        Self::before_events(&mut *conn, op).await?;
        for (seq, event) in (last_seq + 1..).zip(events) {
            sqlx::query(
                "INSERT INTO events (rollout_id, seq, at, kind, actor, message, evidence) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(rollout_id)
            .bind(seq)
            .bind(event.at.unwrap_or(now).0)
            .bind(&event.kind)
            .bind(&event.actor)
            .bind(&event.message)
            .bind(to_json_text(&event.evidence))
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        }
        Ok(())
    }

    /// Inserts one sample unless its rollout has one at the same time.
    async fn insert_sample(
        conn: &mut <Self::Db as Database>::Connection,
        s: &Sample,
        op: &str,
    ) -> Result<()> {
        let query = sqlx::query(concat!(
            "INSERT INTO samples (",
            sample_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
             $16, $17, $18, $19, $20, $21, $22, $23) ON CONFLICT (rollout_id, at) DO NOTHING"
        ))
        .bind(s.rollout_id.as_str())
        .bind(s.at.0)
        .bind(s.snapshots)
        .bind(s.phase.as_deref())
        .bind(s.canary_weight);
        let query = bind_arm::<Self::Db>(query, s.stable.as_ref());
        bind_arm::<Self::Db>(query, s.canary.as_ref())
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_sqlx(op, e))
    }

    /// Thins the rollout's older samples once it has more than `bounds` allow.
    async fn bound_samples(
        conn: &mut <Self::Db as Database>::Connection,
        rollout_id: &str,
        bounds: SampleBounds,
        op: &str,
    ) -> Result<()> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM samples WHERE rollout_id = $1")
            .bind(rollout_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        let count: i64 = rows::col(&row, "n")?;
        let max = i64::try_from(bounds.max_per_rollout).unwrap_or(i64::MAX);
        if count <= max {
            return Ok(());
        }
        let full = i64::try_from(bounds.full_resolution).unwrap_or(i64::MAX);
        let mut older = sqlx::query(concat!(
            "SELECT ",
            sample_columns!(),
            " FROM samples WHERE rollout_id = $1 ORDER BY at LIMIT $2"
        ))
        .bind(rollout_id)
        .bind(count - full)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op, e))?
        .iter()
        .map(rows::sample)
        .collect::<Result<Vec<_>>>()?;
        let Some(last) = older.last().map(|s| s.at) else {
            return Ok(());
        };
        thin(&mut older, bounds.thinned_len());
        sqlx::query("DELETE FROM samples WHERE rollout_id = $1 AND at <= $2")
            .bind(rollout_id)
            .bind(last.0)
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        for s in &older {
            Self::insert_sample(&mut *conn, s, op).await?;
        }
        Ok(())
    }

    /// Binds the parameters `$1` to `$6` of a [`revised_update!`] statement: the row
    /// `id` at revision `expected` gets `phase`, `state` and the time `now`.
    fn revised<'q>(
        statement: &'static str,
        id: &'q str,
        expected: i64,
        phase: &'q str,
        state: &Value,
        active: bool,
        now: Timestamp,
    ) -> Query<'q, Self::Db> {
        sqlx::query(statement)
            .bind(phase)
            .bind(to_json_text(state))
            .bind(now.0)
            .bind(active)
            .bind(id)
            .bind(expected)
    }

    // === shared: statements of their own ===

    /// Runs a read on the pool and turns each row into a record with `record`.
    async fn read<T, F>(&self, query: Query<'_, Self::Db>, op: &str, record: F) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(&<Self::Db as Database>::Row) -> Result<T> + Send,
    {
        query
            .fetch_all(self.pool())
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?
            .iter()
            .map(record)
            .collect()
    }

    /// Runs `query`, which returns one row, in `write`; turns the row into a record
    /// with `record` and commits.
    async fn write_record<T, F>(
        mut write: WriteTx<'_, Self::Db>,
        query: Query<'_, Self::Db>,
        op: &str,
        record: F,
    ) -> Result<T>
    where
        T: Send,
        F: FnOnce(&<Self::Db as Database>::Row) -> Result<T> + Send,
    {
        let row = query
            .fetch_one(&mut *write.tx)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        let record = record(&row)?;
        Self::commit(write, op).await?;
        Ok(record)
    }

    /// Runs one statement in a write transaction of its own; the row it returned, if
    /// any.
    async fn write_one(
        &self,
        query: Query<'_, Self::Db>,
        op: &str,
    ) -> Result<Option<<Self::Db as Database>::Row>> {
        let mut write = self.begin_write(op).await?;
        let row = query
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        Self::commit(write, op).await?;
        Ok(row)
    }

    // === shared: the store's operations ===

    async fn put_app(&self, name: &str, config: &Value) -> Result<AppRecord> {
        check_name("app name", name)?;
        let op = format!("saving app {name}");
        let write = self.begin_write(&op).await?;
        let query = sqlx::query(concat!(upsert_app!(), " RETURNING ", app_columns!()))
            .bind(name)
            .bind(to_json_text(config))
            .bind(Timestamp::now().0);
        Self::write_record(write, query, &op, rows::app).await
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        let query = sqlx::query(concat!(select_apps!(), "WHERE name = $1")).bind(name);
        let op = format!("reading app {name}");
        Ok(self.read(query, &op, rows::app).await?.pop())
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let query = sqlx::query(concat!(select_apps!(), "ORDER BY name"));
        self.read(query, "listing apps", rows::app).await
    }

    async fn delete_app(&self, name: &str) -> Result<bool> {
        let query = sqlx::query("DELETE FROM apps WHERE name = $1 RETURNING name").bind(name);
        let deleted = self
            .write_one(query, &format!("deleting app {name}"))
            .await?;
        Ok(deleted.is_some())
    }

    async fn create_rollout(&self, new: NewRollout) -> Result<RolloutRecord> {
        check_name("app name", &new.app)?;
        check_name("version", &new.version)?;
        check_phase(&new.phase)?;
        check_events(&new.events)?;
        let op = format!("creating a rollout of app {}", new.app);
        let mut write = self.begin_fenced(new.fence.as_ref(), &op).await?;
        let active = is_active_phase(&new.phase);
        let now = Timestamp::now();
        let spec = to_json_text(&new.spec);
        let state = to_json_text(&new.state);
        let mut attempt = 0;
        let record = loop {
            attempt += 1;
            // DO NOTHING covers both unique constraints: the one-active-per-app index
            // (another rollout is active, or a racing creator won and this waits for
            // it to commit or abort) and, with odds of about n / 2^60, the id.
            let inserted = sqlx::query(concat!(
                "INSERT INTO rollouts (id, app, version, phase, spec_text, spec, state, revision, \
                 last_seq, created_at, updated_at, finished_at, group_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $9, $10, $11) \
                 ON CONFLICT DO NOTHING RETURNING ",
                rollout_columns!()
            ))
            .bind(new_rollout_id())
            .bind(&new.app)
            .bind(&new.version)
            .bind(&new.phase)
            .bind(&new.spec_text)
            .bind(&spec)
            .bind(&state)
            .bind(count(&new.events))
            .bind(now.0)
            .bind((!active).then_some(now.0))
            .bind(new.group.as_deref())
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(|e| match &new.group {
                // The only reference the row makes on insert.
                Some(group) if is_foreign_key_violation(&e) => {
                    StoreError::NotFound { id: group.clone() }
                }
                _ => StoreError::from_sqlx(&op, e),
            })?;
            if let Some(row) = inserted {
                break rows::rollout(&row)?;
            }
            if active
                && let Some(other) =
                    Self::other_active_rollout(&mut write.tx, &new.app, None, &op).await?
            {
                return Err(StoreError::ActiveRolloutExists {
                    app: new.app,
                    id: other,
                });
            }
            if attempt >= 3 {
                return Err(StoreError::Database {
                    operation: op,
                    source: sqlx::Error::Protocol(
                        "three fresh rollout ids in a row were already taken".into(),
                    ),
                });
            }
        };
        Self::insert_events(&mut write.tx, &record.id, 0, &new.events, now, &op).await?;
        Self::commit(write, &op).await?;
        Ok(record)
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        let query = sqlx::query(select_rollouts!("WHERE id = $1")).bind(id);
        let op = format!("reading rollout {id}");
        Ok(self.read(query, &op, rows::rollout).await?.pop())
    }

    async fn list_rollouts(&self, filter: &RolloutFilter) -> Result<Vec<RolloutRecord>> {
        let query = sqlx::query(Self::SQL.list_rollouts)
            .bind(filter.app.as_deref())
            .bind(filter.phase.as_deref())
            .bind(filter.limit.map(i64::from));
        self.read(query, "listing rollouts", rows::rollout).await
    }

    async fn count_rollouts_by_phase(&self) -> Result<Vec<(String, u64)>> {
        let query = sqlx::query("SELECT phase, COUNT(*) AS n FROM rollouts GROUP BY phase");
        self.read(query, "counting rollouts by phase", |row| {
            let n: i64 = rows::col(row, "n")?;
            Ok((rows::col(row, "phase")?, u64::try_from(n).unwrap_or(0)))
        })
        .await
    }

    async fn active_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let query = sqlx::query(select_rollouts!(
            "WHERE phase IN ('Pending', 'Progressing', 'Paused') ORDER BY ord"
        ));
        self.read(query, "listing active rollouts", rows::rollout)
            .await
    }

    async fn latest_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>> {
        let query =
            sqlx::query(select_rollouts!("WHERE app = $1 ORDER BY ord DESC LIMIT 1")).bind(app);
        let op = format!("reading the latest rollout of app {app}");
        Ok(self.read(query, &op, rows::rollout).await?.pop())
    }

    async fn active_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>> {
        let query = sqlx::query(select_rollouts!(
            "WHERE app = $1 AND phase IN ('Pending', 'Progressing', 'Paused') \
             ORDER BY ord DESC LIMIT 1"
        ))
        .bind(app);
        let op = format!("reading the active rollout of app {app}");
        Ok(self.read(query, &op, rows::rollout).await?.pop())
    }

    async fn update_states(
        &self,
        updates: &[StateUpdate],
        fence: Option<&Fence>,
    ) -> Result<Vec<Result<i64>>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let op = format!("updating the state of {} rollouts", updates.len());
        let mut write = self.begin_fenced(fence, &op).await?;
        let results = self
            .write_states(&mut write.tx, updates, Timestamp::now(), &op)
            .await?;
        Self::commit(write, &op).await?;
        Ok(results)
    }

    async fn update_rollout(&self, update: RolloutUpdate) -> Result<RolloutRecord> {
        check_phase(&update.phase)?;
        check_events(&update.events)?;
        if let Some(app) = &update.app_update {
            check_name("app name", &app.name)?;
        }
        let id = update.id.as_str();
        let op = format!("updating rollout {id}");
        let mut write = self.begin_fenced(update.fence.as_ref(), &op).await?;
        // Under the row lock (or the write lock) the revision check and the write are
        // one step: a racing writer waits and then sees the new revision.
        let current = sqlx::query(Self::SQL.current_rollout)
            .bind(id)
            .fetch_optional(&mut *write.tx)
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
        let Some(current) = current else {
            return Err(StoreError::NotFound { id: id.to_owned() });
        };
        let app: String = rows::col(&current, "app")?;
        let revision: i64 = rows::col(&current, "revision")?;
        let last_seq: i64 = rows::col(&current, "last_seq")?;
        let conflict = || missed_update(id, update.expected_revision, Some(revision));
        if revision != update.expected_revision {
            return Err(conflict());
        }
        // No look-up of other active rollouts here: the unique index refuses a second
        // one (below), which saves a round trip on every controller tick.
        let active = is_active_phase(&update.phase);
        let now = Timestamp::now();
        let updated = Self::revised(
            revised_update!("rollouts", ", last_seq = last_seq + $7", rollout_columns!()),
            id,
            update.expected_revision,
            &update.phase,
            &update.state,
            active,
            now,
        )
        .bind(count(&update.events))
        .fetch_optional(&mut *write.tx)
        .await;
        let updated = match updated {
            Ok(updated) => updated,
            // Another rollout of the app is active (a retry while a newer rollout
            // runs, or two racing retries); the index refused this one. The failed
            // statement aborted the transaction: look the other one up outside it.
            Err(e) if active && is_unique_violation(&e) => {
                drop(write);
                let mut conn = self
                    .pool()
                    .acquire()
                    .await
                    .map_err(|e| StoreError::from_sqlx(&op, e))?;
                return match Self::other_active_rollout(&mut conn, &app, Some(id), &op).await? {
                    Some(other) => Err(StoreError::ActiveRolloutExists { app, id: other }),
                    None => Err(StoreError::from_sqlx(&op, e)),
                };
            }
            Err(e) => return Err(StoreError::from_sqlx(&op, e)),
        };
        // The row is locked, so it cannot have moved; checked all the same so that a
        // change of locking can never turn into a lost update.
        let Some(updated) = updated else {
            return Err(conflict());
        };
        // Events and the app do not touch the rollout row: this is its final state.
        let record = rows::rollout(&updated)?;
        Self::insert_events(&mut write.tx, id, last_seq, &update.events, now, &op).await?;
        if let Some(app) = &update.app_update {
            sqlx::query(upsert_app!())
                .bind(&app.name)
                .bind(to_json_text(&app.config))
                .bind(now.0)
                .execute(&mut *write.tx)
                .await
                .map_err(|e| StoreError::from_sqlx(&op, e))?;
        }
        Self::commit(write, &op).await?;
        Ok(record)
    }

    async fn create_group(&self, new: NewGroup) -> Result<GroupRecord> {
        check_name("group name", &new.name)?;
        check_group_phase(&new.phase)?;
        let op = format!("creating rollout group {}", new.name);
        let write = self.begin_fenced(new.fence.as_ref(), &op).await?;
        let now = Timestamp::now();
        // A fresh id is taken with odds of about n / 2^60: that insert fails as a
        // database error rather than being retried.
        let query = sqlx::query(concat!(
            "INSERT INTO rollout_groups (id, name, phase, spec, state, revision, created_at, \
             updated_at, finished_at) VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7) RETURNING ",
            group_columns!()
        ))
        .bind(new_group_id())
        .bind(&new.name)
        .bind(&new.phase)
        .bind(to_json_text(&new.spec))
        .bind(to_json_text(&new.state))
        .bind(now.0)
        .bind((!is_active_group_phase(&new.phase)).then_some(now.0));
        Self::write_record(write, query, &op, rows::group).await
    }

    async fn get_group(&self, id: &str) -> Result<Option<GroupRecord>> {
        let query = sqlx::query(select_groups!("WHERE id = $1")).bind(id);
        let op = format!("reading rollout group {id}");
        Ok(self.read(query, &op, rows::group).await?.pop())
    }

    async fn list_groups(&self, active_only: bool, limit: Option<u32>) -> Result<Vec<GroupRecord>> {
        // Two statements rather than a parameter, so that the active ones can use
        // their partial index.
        let statement = if active_only {
            select_groups!("WHERE phase IN ('Progressing', 'Paused') ORDER BY ord DESC LIMIT $1")
        } else {
            select_groups!("ORDER BY ord DESC LIMIT $1")
        };
        // Both databases take the largest integer as no limit.
        let query = sqlx::query(statement).bind(limit.map_or(i64::MAX, i64::from));
        self.read(query, "listing rollout groups", rows::group)
            .await
    }

    async fn update_group(&self, update: GroupUpdate) -> Result<GroupRecord> {
        check_group_phase(&update.phase)?;
        let id = update.id.as_str();
        let op = format!("updating rollout group {id}");
        let mut write = self.begin_fenced(update.fence.as_ref(), &op).await?;
        // The revision check is part of the statement: a racing writer waits for the
        // row (or the write lock) and then finds the revision moved.
        let updated = Self::revised(
            revised_update!("rollout_groups", "", group_columns!()),
            id,
            update.expected_revision,
            &update.phase,
            &update.state,
            is_active_group_phase(&update.phase),
            Timestamp::now(),
        )
        .fetch_optional(&mut *write.tx)
        .await
        .map_err(|e| StoreError::from_sqlx(&op, e))?;
        let Some(updated) = updated else {
            let query = sqlx::query("SELECT revision FROM rollout_groups WHERE id = $1").bind(id);
            let actual = Self::fetch_col(&mut write.tx, query, "revision", &op).await?;
            return Err(missed_update(id, update.expected_revision, actual));
        };
        let record = rows::group(&updated)?;
        Self::commit(write, &op).await?;
        Ok(record)
    }

    async fn rollouts_of_group(&self, group_id: &str) -> Result<Vec<RolloutRecord>> {
        let query =
            sqlx::query(select_rollouts!("WHERE group_id = $1 ORDER BY ord")).bind(group_id);
        let op = format!("listing the rollouts of group {group_id}");
        self.read(query, &op, rows::rollout).await
    }

    async fn events(&self, rollout_id: &str, after_seq: i64) -> Result<Vec<EventRecord>> {
        let query = sqlx::query(concat!(
            select_events!(),
            "WHERE e.rollout_id = $1 AND e.seq > $2 ORDER BY e.seq"
        ))
        .bind(rollout_id)
        .bind(after_seq);
        let op = format!("reading events of rollout {rollout_id}");
        self.read(query, &op, rows::event).await
    }

    async fn recent_events(&self, after_id: i64, limit: u32) -> Result<Vec<EventRecord>> {
        // Event ids become visible in increasing order: see `Backend::before_events`.
        let query = sqlx::query(concat!(
            select_events!(),
            "WHERE e.id > $1 ORDER BY e.id LIMIT $2"
        ))
        .bind(after_id)
        .bind(i64::from(limit));
        self.read(query, "reading recent events", rows::event).await
    }

    async fn append_samples(&self, samples: &[Sample], bounds: SampleBounds) -> Result<()> {
        bounds.check()?;
        check_samples(samples)?;
        if samples.is_empty() {
            return Ok(());
        }
        let op = format!("recording {} chart samples", samples.len());
        let mut write = self.begin_write(&op).await?;
        for s in samples {
            Self::insert_sample(&mut write.tx, s, &op).await?;
        }
        let rollouts: std::collections::BTreeSet<&str> =
            samples.iter().map(|s| s.rollout_id.as_str()).collect();
        for id in rollouts {
            Self::bound_samples(&mut write.tx, id, bounds, &op).await?;
        }
        Self::commit(write, &op).await
    }

    async fn samples(&self, rollout_id: &str, since: Timestamp) -> Result<Vec<Sample>> {
        let query = sqlx::query(concat!(
            "SELECT ",
            sample_columns!(),
            " FROM samples WHERE rollout_id = $1 AND at >= $2 ORDER BY at"
        ))
        .bind(rollout_id)
        .bind(since.0);
        let op = format!("reading chart samples of rollout {rollout_id}");
        self.read(query, &op, rows::sample).await
    }

    async fn prune_samples(&self, finished_before: Timestamp) -> Result<u64> {
        let op = "deleting the chart samples of old rollouts";
        let mut write = self.begin_write(op).await?;
        let done = sqlx::query(
            "DELETE FROM samples WHERE rollout_id IN \
             (SELECT id FROM rollouts WHERE finished_at < $1) RETURNING at",
        )
        .bind(finished_before.0)
        .fetch_all(&mut *write.tx)
        .await
        .map_err(|e| StoreError::from_sqlx(op, e))?;
        Self::commit(write, op).await?;
        Ok(u64::try_from(done.len()).unwrap_or(u64::MAX))
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        check_name("lease name", name)?;
        check_name("lease holder", holder)?;
        let ttl_ms = check_ttl(ttl)?;
        let query = sqlx::query(Self::SQL.lease.acquire)
            .bind(name)
            .bind(holder)
            .bind(ttl_ms);
        let row = self
            .write_one(query, &format!("acquiring lease {name}"))
            .await?;
        row.map(|row| {
            Ok(Lease {
                name: name.to_owned(),
                holder: holder.to_owned(),
                epoch: rows::col(&row, "epoch")?,
                expires_at: Timestamp(rows::col(&row, "expires_at")?),
            })
        })
        .transpose()
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let ttl_ms = check_ttl(ttl)?;
        let query = sqlx::query(Self::SQL.lease.renew)
            .bind(&lease.name)
            .bind(&lease.holder)
            .bind(lease.epoch)
            .bind(ttl_ms);
        let row = self
            .write_one(query, &format!("renewing lease {}", lease.name))
            .await?;
        row.map(|row| {
            Ok(Lease {
                expires_at: Timestamp(rows::col(&row, "expires_at")?),
                ..lease.clone()
            })
        })
        .transpose()
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let query = sqlx::query(
            "UPDATE leases SET holder = NULL, expires_at = 0 \
             WHERE name = $1 AND holder = $2 AND epoch = $3 RETURNING name",
        )
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.epoch);
        let released = self
            .write_one(query, &format!("releasing lease {}", lease.name))
            .await?;
        Ok(released.is_some())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(self.pool())
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_sqlx(format!("checking {}", self.location()), e))
    }

    async fn close(&self) {
        tracing::debug!(database = %self.location(), "closing the store");
        self.pool().close().await;
    }
}

/// Binds the nine columns of one version's health in a sample (all NULL without it).
/// The columns are signed 64-bit integers: a count beyond them is stored as their
/// largest value.
fn bind_arm<'q, DB>(query: Query<'q, DB>, arm: Option<&'q ArmHealth>) -> Query<'q, DB>
where
    DB: Database,
    for<'r> Option<&'r str>: Encode<'r, DB> + Type<DB>,
    for<'r> Option<f64>: Encode<'r, DB> + Type<DB>,
    for<'r> Option<i64>: Encode<'r, DB> + Type<DB>,
{
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    query
        .bind(arm.map(|a| a.version.as_str()))
        .bind(arm.map(|a| a.request_rate))
        .bind(arm.and_then(|a| a.error_rate))
        .bind(arm.and_then(|a| a.p50_ms))
        .bind(arm.and_then(|a| a.p95_ms))
        .bind(arm.and_then(|a| a.p99_ms))
        .bind(arm.map(|a| count(a.requests)))
        .bind(arm.map(|a| count(a.errors)))
        .bind(arm.map(|a| count(a.total_requests)))
}

/// How many events, as the SQL integer `last_seq` grows by.
fn count(events: &[NewEvent]) -> i64 {
    i64::try_from(events.len()).unwrap_or(i64::MAX)
}

/// Implements [`Store`](crate::Store) for a [`Backend`]: every method runs the shared
/// logic and shows its error to [`Backend::note`].
macro_rules! impl_store {
    ($backend:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $backend {
            fn backend(&self) -> &'static str {
                <$backend as $crate::sql::Backend>::NAME
            }
            async fn put_app(
                &self,
                name: &str,
                config: &serde_json::Value,
            ) -> $crate::Result<$crate::AppRecord> {
                self.noted($crate::sql::Backend::put_app(self, name, config).await)
            }
            async fn get_app(&self, name: &str) -> $crate::Result<Option<$crate::AppRecord>> {
                self.noted($crate::sql::Backend::get_app(self, name).await)
            }
            async fn list_apps(&self) -> $crate::Result<Vec<$crate::AppRecord>> {
                self.noted($crate::sql::Backend::list_apps(self).await)
            }
            async fn delete_app(&self, name: &str) -> $crate::Result<bool> {
                self.noted($crate::sql::Backend::delete_app(self, name).await)
            }
            async fn create_rollout(
                &self,
                new: $crate::NewRollout,
            ) -> $crate::Result<$crate::RolloutRecord> {
                self.noted($crate::sql::Backend::create_rollout(self, new).await)
            }
            async fn get_rollout(&self, id: &str) -> $crate::Result<Option<$crate::RolloutRecord>> {
                self.noted($crate::sql::Backend::get_rollout(self, id).await)
            }
            async fn list_rollouts(
                &self,
                filter: &$crate::RolloutFilter,
            ) -> $crate::Result<Vec<$crate::RolloutRecord>> {
                self.noted($crate::sql::Backend::list_rollouts(self, filter).await)
            }
            async fn count_rollouts_by_phase(&self) -> $crate::Result<Vec<(String, u64)>> {
                self.noted($crate::sql::Backend::count_rollouts_by_phase(self).await)
            }
            async fn active_rollouts(&self) -> $crate::Result<Vec<$crate::RolloutRecord>> {
                self.noted($crate::sql::Backend::active_rollouts(self).await)
            }
            async fn latest_rollout_for_app(
                &self,
                app: &str,
            ) -> $crate::Result<Option<$crate::RolloutRecord>> {
                self.noted($crate::sql::Backend::latest_rollout_for_app(self, app).await)
            }
            async fn active_rollout_for_app(
                &self,
                app: &str,
            ) -> $crate::Result<Option<$crate::RolloutRecord>> {
                self.noted($crate::sql::Backend::active_rollout_for_app(self, app).await)
            }
            async fn update_rollout(
                &self,
                update: $crate::RolloutUpdate,
            ) -> $crate::Result<$crate::RolloutRecord> {
                self.noted($crate::sql::Backend::update_rollout(self, update).await)
            }
            async fn update_states(
                &self,
                updates: &[$crate::StateUpdate],
                fence: Option<&$crate::Fence>,
            ) -> $crate::Result<Vec<$crate::Result<i64>>> {
                self.noted($crate::sql::Backend::update_states(self, updates, fence).await)
            }
            async fn create_group(
                &self,
                new: $crate::NewGroup,
            ) -> $crate::Result<$crate::GroupRecord> {
                self.noted($crate::sql::Backend::create_group(self, new).await)
            }
            async fn get_group(&self, id: &str) -> $crate::Result<Option<$crate::GroupRecord>> {
                self.noted($crate::sql::Backend::get_group(self, id).await)
            }
            async fn list_groups(
                &self,
                active_only: bool,
                limit: Option<u32>,
            ) -> $crate::Result<Vec<$crate::GroupRecord>> {
                self.noted($crate::sql::Backend::list_groups(self, active_only, limit).await)
            }
            async fn update_group(
                &self,
                update: $crate::GroupUpdate,
            ) -> $crate::Result<$crate::GroupRecord> {
                self.noted($crate::sql::Backend::update_group(self, update).await)
            }
            async fn rollouts_of_group(
                &self,
                group_id: &str,
            ) -> $crate::Result<Vec<$crate::RolloutRecord>> {
                self.noted($crate::sql::Backend::rollouts_of_group(self, group_id).await)
            }
            async fn events(
                &self,
                rollout_id: &str,
                after_seq: i64,
            ) -> $crate::Result<Vec<$crate::EventRecord>> {
                self.noted($crate::sql::Backend::events(self, rollout_id, after_seq).await)
            }
            async fn recent_events(
                &self,
                after_id: i64,
                limit: u32,
            ) -> $crate::Result<Vec<$crate::EventRecord>> {
                self.noted($crate::sql::Backend::recent_events(self, after_id, limit).await)
            }
            async fn append_samples(
                &self,
                samples: &[$crate::Sample],
                bounds: $crate::SampleBounds,
            ) -> $crate::Result<()> {
                self.noted($crate::sql::Backend::append_samples(self, samples, bounds).await)
            }
            async fn samples(
                &self,
                rollout_id: &str,
                since: $crate::Timestamp,
            ) -> $crate::Result<Vec<$crate::Sample>> {
                self.noted($crate::sql::Backend::samples(self, rollout_id, since).await)
            }
            async fn prune_samples(
                &self,
                finished_before: $crate::Timestamp,
            ) -> $crate::Result<u64> {
                self.noted($crate::sql::Backend::prune_samples(self, finished_before).await)
            }
            async fn try_acquire_lease(
                &self,
                name: &str,
                holder: &str,
                ttl: std::time::Duration,
            ) -> $crate::Result<Option<$crate::Lease>> {
                self.noted($crate::sql::Backend::try_acquire_lease(self, name, holder, ttl).await)
            }
            async fn renew_lease(
                &self,
                lease: &$crate::Lease,
                ttl: std::time::Duration,
            ) -> $crate::Result<Option<$crate::Lease>> {
                self.noted($crate::sql::Backend::renew_lease(self, lease, ttl).await)
            }
            async fn release_lease(&self, lease: &$crate::Lease) -> $crate::Result<bool> {
                self.noted($crate::sql::Backend::release_lease(self, lease).await)
            }
            async fn ping(&self) -> $crate::Result<()> {
                self.noted($crate::sql::Backend::ping(self).await)
            }
            async fn close(&self) {
                $crate::sql::Backend::close(self).await
            }
        }
    };
}
pub(crate) use impl_store;
