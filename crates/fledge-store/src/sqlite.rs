//! The embedded default store: one SQLite file in WAL mode with `synchronous=FULL`,
//! so that a committed rollout update survives a crash or power loss.
//!
//! Writes are serialized twice: by a mutex in the process (SQLite allows one writer,
//! and waiting on a mutex is cheaper than SQLite's busy-retry loop) and by
//! `BEGIN IMMEDIATE`, which takes the write lock at the start of the transaction so
//! that another process on the same file waits (up to the busy timeout) instead of
//! failing half-way. Reads run concurrently on the pool thanks to WAL.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::SqliteConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Mutex, MutexGuard};

use crate::error::{Result, StoreError, is_unique_violation, redact_url};
use crate::model::{
    AppRecord, EventRecord, Fence, Lease, NewEvent, NewRollout, RolloutFilter, RolloutRecord,
    RolloutUpdate, StateUpdate, Timestamp, check_events, check_name, check_phase, check_ttl,
    is_active_phase, new_rollout_id, to_json_text,
};
use crate::rows::{self, Migration, event_columns, missed_state_update, rollout_columns};
use crate::store::Store;

/// How long a writer waits for another process's write lock before giving up with
/// [`StoreError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite schema, oldest first.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "apps, rollouts, events, leases",
    sql: include_str!("../migrations/sqlite/0001_init.sql"),
}];

/// The SQLite store. Open it with [`SqliteStore::open`] or [`crate::connect`].
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Serializes this process's write transactions.
    write: Mutex<()>,
    /// The file, for messages.
    location: String,
    /// When an operation last failed with the store unavailable (see
    /// [`FailedWrite`]).
    failed_write: FailedWrite,
}

/// When an operation last failed because the database could not take it (disk full,
/// I/O error, busy). A connection that saw such an error may stay unusable after the
/// cause is gone (SQLite keeps the pager in its error state while the connection
/// holds a read transaction), so the pool replaces every connection opened before
/// it. Errors raised in the helper functions below the store's methods are not
/// noted; the ones that meet a full disk are the commits, noted here.
#[derive(Debug, Clone, Default)]
struct FailedWrite(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl FailedWrite {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<std::time::Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes `error` if it says the database could not take the write.
    fn note(&self, error: &StoreError) {
        if error.is_unavailable() {
            *self.lock() = Some(std::time::Instant::now());
        }
    }

    /// Whether a connection of this `age` was opened before the last failure.
    fn predates(&self, age: Duration) -> bool {
        self.lock().is_some_and(|at| age >= at.elapsed())
    }
}

/// Where the database lives, from the URL.
enum Location {
    File(PathBuf),
    Memory,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if missing) the database named by `url` (`sqlite://PATH`,
    /// `sqlite:PATH`, a bare path, or `sqlite::memory:`) and migrates it.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(url, |o| o).await
    }

    /// Like [`open`](Self::open), with a hook to adjust the connection options; tests
    /// use it to cap the file size and simulate a full disk.
    #[doc(hidden)]
    pub async fn open_with(
        url: &str,
        adjust: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> Result<Self> {
        let location = parse_url(url)?;
        let failed_write = FailedWrite::default();
        let failed = failed_write.clone();
        let base = SqliteConnectOptions::new()
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let (options, pool_options, shown) = match &location {
            Location::File(path) => (
                base.filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(30))
                    .before_acquire(move |_, meta| {
                        let keep = !failed.predates(meta.age);
                        Box::pin(async move { Ok(keep) })
                    }),
                path.display().to_string(),
            ),
            // One connection that never closes: an in-memory database lives as long
            // as its connection.
            Location::Memory => (
                base.in_memory(true),
                SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .acquire_timeout(Duration::from_secs(30)),
                ":memory:".to_owned(),
            ),
        };
        let pool = pool_options
            .connect_with(adjust(options))
            .await
            .map_err(|e| StoreError::from_sqlx(format!("opening SQLite database {shown}"), e))?;
        let store = SqliteStore {
            pool,
            write: Mutex::new(()),
            location: shown,
            failed_write,
        };
        store.migrate().await?;
        tracing::info!(database = %store.location, "SQLite store open");
        Ok(store)
    }

    /// Applies the migrations this database has not seen yet. Running it again is a
    /// no-op.
    async fn migrate(&self) -> Result<()> {
        let op = || format!("migrating SQLite database {}", self.location);
        let _guard = self.write.lock().await;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StoreError::from_sqlx(op(), e))?;
        // Only create the table when it is missing, so that an up-to-date database
        // opens without writing anything.
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fledge_migrations')",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op(), e))?;
        if !exists {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS fledge_migrations (
                     version INTEGER PRIMARY KEY NOT NULL,
                     name TEXT NOT NULL,
                     applied_at INTEGER NOT NULL)",
            )
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op(), e))?;
        }
        let supported = MIGRATIONS.last().map_or(0, |m| m.version);
        for m in MIGRATIONS {
            let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
                .await
                .map_err(|e| StoreError::from_sqlx(op(), e))?;
            let current: i64 =
                sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM fledge_migrations")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(|e| StoreError::from_sqlx(op(), e))?;
            if current > supported {
                return Err(StoreError::SchemaTooNew {
                    found: current,
                    supported,
                });
            }
            if current >= m.version {
                continue;
            }
            let failed = |source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            };
            sqlx::raw_sql(m.sql)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            sqlx::query(
                "INSERT INTO fledge_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(Timestamp::now().0)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
            tx.commit().await.map_err(failed)?;
            tracing::info!(database = %self.location, version = m.version, name = m.name, "applied schema migration");
        }
        Ok(())
    }

    /// Starts a write transaction under the process's write lock.
    async fn begin_write(
        &self,
        operation: &str,
    ) -> Result<(MutexGuard<'_, ()>, sqlx::Transaction<'static, sqlx::Sqlite>)> {
        let guard = self.write.lock().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.error(operation, e))?;
        Ok((guard, tx))
    }

    /// Classifies a driver error, noting it when the database could not take the
    /// operation (see [`FailedWrite`]).
    fn error(&self, operation: impl Into<String>, source: sqlx::Error) -> StoreError {
        let e = StoreError::from_sqlx(operation, source);
        self.failed_write.note(&e);
        e
    }

    /// Commits a write transaction. In WAL mode the commit is what writes to disk,
    /// so this is where a full disk shows.
    async fn commit(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Sqlite>,
        operation: &str,
    ) -> Result<()> {
        tx.commit().await.map_err(|e| self.error(operation, e))
    }

    async fn fetch_rollouts(
        &self,
        query: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>,
        operation: &str,
    ) -> Result<Vec<RolloutRecord>> {
        query
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::from_sqlx(operation, e))?
            .iter()
            .map(rows::rollout)
            .collect()
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn put_app(&self, name: &str, config: &Value) -> Result<AppRecord> {
        check_name("app name", name)?;
        let op = format!("saving app {name}");
        let (_guard, mut tx) = self.begin_write(&op).await?;
        upsert_app(&mut tx, name, config, Timestamp::now())
            .await
            .map_err(|e| self.error(&op, e))?;
        let app = select_app(&mut tx, name)
            .await?
            .ok_or_else(|| StoreError::Database {
                operation: op.clone(),
                source: sqlx::Error::RowNotFound,
            })?;
        self.commit(tx, &op).await?;
        Ok(app)
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| self.error(format!("reading app {name}"), e))?;
        select_app(&mut conn, name).await
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        sqlx::query("SELECT name, config, created_at, updated_at FROM apps ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.error("listing apps", e))?
            .iter()
            .map(rows::app)
            .collect()
    }

    async fn delete_app(&self, name: &str) -> Result<bool> {
        let op = format!("deleting app {name}");
        let (_guard, mut tx) = self.begin_write(&op).await?;
        let done = sqlx::query("DELETE FROM apps WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.error(&op, e))?;
        self.commit(tx, &op).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_rollout(&self, new: NewRollout) -> Result<RolloutRecord> {
        check_name("app name", &new.app)?;
        check_name("version", &new.version)?;
        check_phase(&new.phase)?;
        check_events(&new.events)?;
        let op = format!("creating a rollout of app {}", new.app);
        let (_guard, mut tx) = self.begin_write(&op).await?;
        if let Some(fence) = &new.fence {
            check_fence(&mut tx, fence, &op).await?;
        }
        let active = is_active_phase(&new.phase);
        if active && let Some(id) = active_rollout_id(&mut tx, &new.app, None, &op).await? {
            return Err(StoreError::ActiveRolloutExists { app: new.app, id });
        }
        let now = Timestamp::now();
        let spec = to_json_text(&new.spec);
        let state = to_json_text(&new.state);
        let n_events = i64::try_from(new.events.len()).unwrap_or(i64::MAX);
        // A fresh id collides with an existing one with odds of about n / 2^60; retry
        // rather than fail when it happens.
        let mut attempt = 0;
        let id = loop {
            attempt += 1;
            let id = new_rollout_id();
            let inserted = sqlx::query(
                "INSERT INTO rollouts (id, app, version, phase, spec_text, spec, state, revision, \
                 last_seq, created_at, updated_at, finished_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
            )
            .bind(&id)
            .bind(&new.app)
            .bind(&new.version)
            .bind(&new.phase)
            .bind(&new.spec_text)
            .bind(&spec)
            .bind(&state)
            .bind(n_events)
            .bind(now.0)
            .bind(now.0)
            .bind((!active).then_some(now.0))
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => break id,
                Err(e) if is_unique_violation(&e) => {
                    if active
                        && let Some(other) = active_rollout_id(&mut tx, &new.app, None, &op).await?
                    {
                        return Err(StoreError::ActiveRolloutExists {
                            app: new.app,
                            id: other,
                        });
                    }
                    if attempt >= 3 {
                        return Err(self.error(&op, e));
                    }
                }
                Err(e) => return Err(self.error(&op, e)),
            }
        };
        insert_events(&mut tx, &id, 0, &new.events, now, &op).await?;
        let record = select_rollout(&mut tx, &id, &op).await?;
        self.commit(tx, &op).await?;
        Ok(record)
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.error(format!("reading rollout {id}"), e))?
        .as_ref()
        .map(rows::rollout)
        .transpose()
    }

    async fn list_rollouts(&self, filter: &RolloutFilter) -> Result<Vec<RolloutRecord>> {
        let limit = filter.limit.map_or(-1, i64::from);
        let query = sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE (? IS NULL OR app = ?) AND (? IS NULL OR phase = ?) \
             ORDER BY ord DESC LIMIT ?"
        ))
        .bind(filter.app.as_deref())
        .bind(filter.app.as_deref())
        .bind(filter.phase.as_deref())
        .bind(filter.phase.as_deref())
        .bind(limit);
        self.fetch_rollouts(query, "listing rollouts").await
    }

    async fn active_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        let query = sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE phase IN ('Pending', 'Progressing', 'Paused') ORDER BY ord"
        ));
        self.fetch_rollouts(query, "listing active rollouts").await
    }

    async fn latest_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>> {
        let query = sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE app = ? ORDER BY ord DESC LIMIT 1"
        ))
        .bind(app);
        let op = format!("reading the latest rollout of app {app}");
        Ok(self.fetch_rollouts(query, &op).await?.pop())
    }

    async fn active_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>> {
        let query = sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE app = ? AND phase IN ('Pending', 'Progressing', 'Paused') \
             ORDER BY ord DESC LIMIT 1"
        ))
        .bind(app);
        let op = format!("reading the active rollout of app {app}");
        Ok(self.fetch_rollouts(query, &op).await?.pop())
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
        let (_guard, mut tx) = self.begin_write(&op).await?;
        if let Some(fence) = fence {
            check_fence(&mut tx, fence, &op).await?;
        }
        let now = Timestamp::now();
        let mut results = Vec::with_capacity(updates.len());
        for update in updates {
            let done = sqlx::query(
                "UPDATE rollouts SET state = ?, revision = revision + 1, updated_at = ? \
                 WHERE id = ? AND revision = ?",
            )
            .bind(to_json_text(&update.state))
            .bind(now.0)
            .bind(&update.id)
            .bind(update.expected_revision)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
            results.push(if done.rows_affected() == 1 {
                Ok(update.expected_revision + 1)
            } else {
                let actual: Option<i64> =
                    sqlx::query_scalar("SELECT revision FROM rollouts WHERE id = ?")
                        .bind(&update.id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(|e| StoreError::from_sqlx(&op, e))?;
                Err(missed_state_update(update, actual))
            });
        }
        tx.commit()
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
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
        let (_guard, mut tx) = self.begin_write(&op).await?;
        if let Some(fence) = &update.fence {
            check_fence(&mut tx, fence, &op).await?;
        }
        let current = sqlx::query("SELECT app, revision, last_seq FROM rollouts WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(&op, e))?;
        let Some(current) = current else {
            return Err(StoreError::NotFound { id: id.to_owned() });
        };
        let app: String = rows::col(&current, "app")?;
        let revision: i64 = rows::col(&current, "revision")?;
        let last_seq: i64 = rows::col(&current, "last_seq")?;
        if revision != update.expected_revision {
            return Err(StoreError::Conflict {
                id: id.to_owned(),
                expected: update.expected_revision,
                actual: revision,
            });
        }
        let active = is_active_phase(&update.phase);
        if active && let Some(other) = active_rollout_id(&mut tx, &app, Some(id), &op).await? {
            return Err(StoreError::ActiveRolloutExists { app, id: other });
        }
        let now = Timestamp::now();
        let n_events = i64::try_from(update.events.len()).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "UPDATE rollouts SET phase = ?, state = ?, revision = revision + 1, \
             last_seq = last_seq + ?, updated_at = ?, \
             finished_at = CASE WHEN ? THEN NULL ELSE COALESCE(finished_at, ?) END \
             WHERE id = ? AND revision = ?",
        )
        .bind(&update.phase)
        .bind(to_json_text(&update.state))
        .bind(n_events)
        .bind(now.0)
        .bind(active)
        .bind(now.0)
        .bind(id)
        .bind(update.expected_revision)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(&op, e))?;
        if done.rows_affected() != 1 {
            // Cannot happen under the write lock; kept so that a change of locking
            // can never turn into a lost update.
            return Err(StoreError::Conflict {
                id: id.to_owned(),
                expected: update.expected_revision,
                actual: revision,
            });
        }
        insert_events(&mut tx, id, last_seq, &update.events, now, &op).await?;
        if let Some(app) = &update.app_update {
            upsert_app(&mut tx, &app.name, &app.config, now)
                .await
                .map_err(|e| self.error(&op, e))?;
        }
        let record = select_rollout(&mut tx, id, &op).await?;
        self.commit(tx, &op).await?;
        Ok(record)
    }

    async fn events(&self, rollout_id: &str, after_seq: i64) -> Result<Vec<EventRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e JOIN rollouts r ON r.id = e.rollout_id \
             WHERE e.rollout_id = ? AND e.seq > ? ORDER BY e.seq"
        ))
        .bind(rollout_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error(format!("reading events of rollout {rollout_id}"), e))?
        .iter()
        .map(rows::event)
        .collect()
    }

    async fn recent_events(&self, after_id: i64, limit: u32) -> Result<Vec<EventRecord>> {
        // Ids are assigned inside serialized write transactions, so they become
        // visible in increasing order.
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e JOIN rollouts r ON r.id = e.rollout_id \
             WHERE e.id > ? ORDER BY e.id LIMIT ?"
        ))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.error("reading recent events", e))?
        .iter()
        .map(rows::event)
        .collect()
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
        let op = format!("acquiring lease {name}");
        let (_guard, mut tx) = self.begin_write(&op).await?;
        let now = Timestamp::now().0;
        let expires_at = now.saturating_add(ttl_ms);
        let row = sqlx::query("SELECT holder, epoch, expires_at FROM leases WHERE name = ?")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.error(&op, e))?;
        let epoch = match row {
            None => {
                sqlx::query(
                    "INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, ?, 1, ?)",
                )
                .bind(name)
                .bind(holder)
                .bind(expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(&op, e))?;
                1
            }
            Some(row) => {
                let current: Option<String> = rows::col(&row, "holder")?;
                let epoch: i64 = rows::col(&row, "epoch")?;
                let live = rows::col::<_, i64>(&row, "expires_at")? > now;
                let epoch = match (current.as_deref(), live) {
                    (Some(h), true) if h == holder => epoch,
                    (Some(_), true) => return Ok(None),
                    // Free, released or expired: a new term begins.
                    _ => epoch + 1,
                };
                sqlx::query(
                    "UPDATE leases SET holder = ?, epoch = ?, expires_at = ? WHERE name = ?",
                )
                .bind(holder)
                .bind(epoch)
                .bind(expires_at)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.error(&op, e))?;
                epoch
            }
        };
        self.commit(tx, &op).await?;
        Ok(Some(Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            epoch,
            expires_at: Timestamp(expires_at),
        }))
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        let ttl_ms = check_ttl(ttl)?;
        let op = format!("renewing lease {}", lease.name);
        let (_guard, mut tx) = self.begin_write(&op).await?;
        let now = Timestamp::now().0;
        let expires_at = now.saturating_add(ttl_ms);
        let done = sqlx::query(
            "UPDATE leases SET expires_at = ? \
             WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > ?",
        )
        .bind(expires_at)
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.epoch)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(&op, e))?;
        self.commit(tx, &op).await?;
        Ok((done.rows_affected() == 1).then(|| Lease {
            expires_at: Timestamp(expires_at),
            ..lease.clone()
        }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let op = format!("releasing lease {}", lease.name);
        let (_guard, mut tx) = self.begin_write(&op).await?;
        let done = sqlx::query(
            "UPDATE leases SET holder = NULL, expires_at = 0 \
             WHERE name = ? AND holder = ? AND epoch = ?",
        )
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.epoch)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.error(&op, e))?;
        self.commit(tx, &op).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| self.error(format!("checking {}", self.location), e))
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

// === queries used inside write transactions ===

/// Reads the store location out of a `sqlite:` URL or a bare path.
fn parse_url(url: &str) -> Result<Location> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let invalid = |reason: &str| StoreError::InvalidUrl {
        url: redact_url(url),
        reason: reason.to_owned(),
    };
    if rest == ":memory:" {
        return Ok(Location::Memory);
    }
    if rest.is_empty() {
        return Err(invalid(
            "no file name: expected sqlite://PATH, e.g. sqlite://fledge.db",
        ));
    }
    if rest.contains('?') {
        return Err(invalid(
            "query parameters are not supported: fledge sets WAL mode, synchronous=FULL \
             and the busy timeout itself",
        ));
    }
    Ok(Location::File(PathBuf::from(rest)))
}

async fn check_fence(conn: &mut SqliteConnection, fence: &Fence, op: &str) -> Result<()> {
    let row = sqlx::query("SELECT holder, epoch FROM leases WHERE name = ?")
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
async fn active_rollout_id(
    conn: &mut SqliteConnection,
    app: &str,
    except: Option<&str>,
    op: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT id FROM rollouts WHERE app = ? AND phase IN ('Pending', 'Progressing', 'Paused') \
         AND (? IS NULL OR id <> ?) LIMIT 1",
    )
    .bind(app)
    .bind(except)
    .bind(except)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::from_sqlx(op, e))
}

async fn insert_events(
    conn: &mut SqliteConnection,
    rollout_id: &str,
    last_seq: i64,
    events: &[NewEvent],
    now: Timestamp,
    op: &str,
) -> Result<()> {
    for (seq, event) in (last_seq + 1..).zip(events) {
        sqlx::query(
            "INSERT INTO events (rollout_id, seq, at, kind, actor, message, evidence) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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

async fn select_rollout(conn: &mut SqliteConnection, id: &str, op: &str) -> Result<RolloutRecord> {
    let row = sqlx::query(concat!(
        "SELECT ",
        rollout_columns!(),
        " FROM rollouts WHERE id = ?"
    ))
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::from_sqlx(op, e))?;
    rows::rollout(&row)
}

async fn upsert_app(
    conn: &mut SqliteConnection,
    name: &str,
    config: &Value,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO apps (name, config, created_at, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(to_json_text(config))
    .bind(now.0)
    .bind(now.0)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

async fn select_app(conn: &mut SqliteConnection, name: &str) -> Result<Option<AppRecord>> {
    sqlx::query("SELECT name, config, created_at, updated_at FROM apps WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(format!("reading app {name}"), e))?
        .as_ref()
        .map(rows::app)
        .transpose()
}
