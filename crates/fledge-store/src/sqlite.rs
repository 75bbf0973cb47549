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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection};
use tokio::sync::Mutex;

use crate::error::{Result, StoreError, redact_url};
use crate::model::{StateUpdate, Timestamp, to_json_text};
use crate::rows::{Migration, migrations, missed_update, select_rollouts};
use crate::sql::{Backend, Dialect, WriteTx, impl_store, lease_statements};

/// How long a writer waits for another process's write lock before giving up with
/// [`StoreError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite schema, oldest first.
const MIGRATIONS: &[Migration] = migrations!("sqlite");

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
/// it. Every error the store returns is shown to it.
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
        let options = adjust(options);
        // Servers starting together on a new file race to turn it to WAL mode, and
        // SQLite answers the losers "busy" at once instead of waiting its busy
        // timeout: try again, for as long as that timeout.
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        let pool = loop {
            match pool_options.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && started.elapsed() + pause < BUSY_TIMEOUT => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Err(e) => {
                    return Err(StoreError::from_sqlx(
                        format!("opening SQLite database {shown}"),
                        e,
                    ));
                }
            }
        };
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
        Self::create_migrations_table(&mut conn, &op()).await?;
        Self::apply_migrations(
            &mut conn,
            Some("BEGIN IMMEDIATE"),
            MIGRATIONS,
            &self.location,
        )
        .await
    }
}

/// Whether `e` is SQLite's "database is busy" or "locked" (primary result codes 5
/// and 6, with their extended forms).
fn is_busy(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

#[async_trait]
impl Backend for SqliteStore {
    type Db = Sqlite;

    const NAME: &'static str = "sqlite";

    const SQL: Dialect = Dialect {
        // No row locks in SQLite: the write lock that `begin_write` takes covers the
        // whole database.
        fence: "SELECT holder, epoch FROM leases WHERE name = $1",
        current_rollout: "SELECT app, revision, last_seq FROM rollouts WHERE id = $1",
        other_active_rollout: "SELECT id FROM rollouts \
             WHERE app = $1 AND phase IN ('Pending', 'Progressing', 'Paused') \
             AND ($2 IS NULL OR id <> $2) LIMIT 1",
        // A negative limit is no limit.
        list_rollouts: select_rollouts!(
            "WHERE ($1 IS NULL OR app = $1) AND ($2 IS NULL OR phase = $2) \
             ORDER BY ord DESC LIMIT COALESCE($3, -1)"
        ),
        // SQLite's clock is the writer's clock (the database is a local file).
        lease: lease_statements!("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"),
        migrations_table_exists: "SELECT 1 FROM sqlite_master \
             WHERE type = 'table' AND name = 'fledge_migrations'",
        create_migrations_table: "CREATE TABLE IF NOT EXISTS fledge_migrations (
             version INTEGER PRIMARY KEY NOT NULL,
             name TEXT NOT NULL,
             applied_at INTEGER NOT NULL)",
    };

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn location(&self) -> &str {
        &self.location
    }

    /// Takes the process's write lock, then SQLite's (`BEGIN IMMEDIATE`).
    async fn begin_write(&self, operation: &str) -> Result<WriteTx<'_, Sqlite>> {
        let guard = self.write.lock().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| StoreError::from_sqlx(operation, e))?;
        Ok(WriteTx {
            tx,
            _guard: Some(guard),
        })
    }

    /// One statement per rollout: under the write lock, with no round trip to a
    /// server, a loop is as fast as a batch.
    async fn write_states(
        &self,
        conn: &mut SqliteConnection,
        updates: &[StateUpdate],
        now: Timestamp,
        op: &str,
    ) -> Result<Vec<Result<i64>>> {
        let mut results = Vec::with_capacity(updates.len());
        for update in updates {
            let done = sqlx::query(
                "UPDATE rollouts SET state = $1, revision = revision + 1, updated_at = $2 \
                 WHERE id = $3 AND revision = $4",
            )
            .bind(to_json_text(&update.state))
            .bind(now.0)
            .bind(&update.id)
            .bind(update.expected_revision)
            .execute(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
            results.push(if done.rows_affected() == 1 {
                Ok(update.expected_revision + 1)
            } else {
                let query =
                    sqlx::query("SELECT revision FROM rollouts WHERE id = $1").bind(&update.id);
                let actual = Self::fetch_col(&mut *conn, query, "revision", op).await?;
                Err(missed_update(&update.id, update.expected_revision, actual))
            });
        }
        Ok(results)
    }

    fn note(&self, error: &StoreError) {
        self.failed_write.note(error);
    }
}

impl_store!(SqliteStore);

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
