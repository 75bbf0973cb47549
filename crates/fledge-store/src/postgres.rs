//! The PostgreSQL store, for highly available setups where several fledge servers
//! share one database and elect a leader with a lease.
//!
//! Concurrency relies on the database, never on the process: revisions are checked
//! under the rollout's row lock (`SELECT … FOR UPDATE`), one active rollout per app is
//! a partial unique index (`INSERT … ON CONFLICT DO NOTHING` turns a lost race into
//! [`StoreError::ActiveRolloutExists`]), a fencing check takes the lease row
//! `FOR SHARE` so that a new leader's acquisition waits for the old leader's
//! in-flight write, and lease expiry is judged by the database server's clock so that
//! nodes with skewed clocks agree.
//!
//! Leader election uses a lease row with a TTL rather than `pg_try_advisory_lock` on a
//! dedicated connection: the row works the same on SQLite, carries the fencing epoch,
//! and does not silently vanish with a dropped connection while the old leader still
//! believes it leads.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::error::{Result, StoreError, redact_url};
use crate::model::{StateUpdate, Timestamp, to_json_text};
use crate::rows::{Migration, migrations, missed_update, select_rollouts};
use crate::sql::{Backend, Dialect, WriteTx, impl_store, lease_statements};

/// The PostgreSQL schema, oldest first.
const MIGRATIONS: &[Migration] = migrations!("postgres");

/// Session advisory lock held while migrating, so that servers starting together
/// migrate one at a time. (An arbitrary constant: "fledge" in ASCII.)
const MIGRATION_LOCK: i64 = 0x666c_6564_6765;

/// Transaction advisory lock taken before a transaction draws event ids (see
/// [`PgStore::before_events`]).
const EVENTS_LOCK: i64 = 0x666c_6564_6765 + 1;

/// How long a session of the store may sit idle inside a transaction before the
/// database ends it (`idle_in_transaction_session_timeout`) and releases its locks.
///
/// The store's transactions take milliseconds. One left open by a server that froze
/// or lost its network in the middle of a write (stopped with SIGSTOP, a paused VM, a
/// long stall) would otherwise keep its share lock on the lease row, and with it every
/// other server's take-over, waiting until that server woke up. Kept under the lease's
/// TTL (5 s in `fledge serve`), so that a frozen leader gives way about when its lease
/// runs out.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(3);

/// The PostgreSQL store. Open it with [`PgStore::connect`] or [`crate::connect`].
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    /// The URL without its password, for messages.
    location: String,
}

// === impl PgStore ===

impl PgStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`)
    /// and migrates it.
    pub async fn connect(url: &str) -> Result<Self> {
        let location = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl {
                url: location.clone(),
                reason: e.to_string(),
            })?
            .application_name("fledge");
        let op = || format!("connecting to PostgreSQL at {location}");
        // Migrate on a dedicated connection that is closed afterwards: it holds a
        // session lock that must not leak into the pool.
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::from_sqlx(op(), e))?;
        let migrated = migrate(&mut conn, &location).await;
        let _ = conn.close().await;
        migrated?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            // Set on each session rather than in the startup packet's `options`,
            // which connection poolers such as PgBouncer refuse.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "SET idle_in_transaction_session_timeout = {}",
                        IDLE_IN_TRANSACTION_TIMEOUT.as_millis()
                    )))
                    .execute(conn)
                    .await
                    .map(drop)
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| StoreError::from_sqlx(op(), e))?;
        tracing::info!(database = %location, "PostgreSQL store open");
        Ok(PgStore { pool, location })
    }
}

async fn migrate(conn: &mut PgConnection, location: &str) -> Result<()> {
    let op = || format!("migrating PostgreSQL database {location}");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op(), e))?;
    // A read-only database must still open (and then refuse writes clearly).
    <PgStore as Backend>::create_migrations_table(&mut *conn, &op()).await?;
    let migrated =
        <PgStore as Backend>::apply_migrations(&mut *conn, None, MIGRATIONS, location).await;
    // Closing the connection releases the lock as well; unlocking first keeps it
    // short if the close is slow.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    migrated
}

#[async_trait]
impl Backend for PgStore {
    type Db = Postgres;

    const NAME: &'static str = "postgres";

    const SQL: Dialect = Dialect {
        // The share lock keeps a new leader's acquisition waiting until the fenced
        // write commits, so the new leader then reads everything the old one wrote.
        fence: "SELECT holder, epoch FROM leases WHERE name = $1 FOR SHARE",
        current_rollout: "SELECT app, revision, last_seq FROM rollouts WHERE id = $1 FOR UPDATE",
        other_active_rollout: "SELECT id FROM rollouts \
             WHERE app = $1 AND phase IN ('Pending', 'Progressing', 'Paused') \
             AND ($2::text IS NULL OR id <> $2) LIMIT 1",
        list_rollouts: select_rollouts!(
            "WHERE ($1::text IS NULL OR app = $1) \
             AND ($2::text IS NULL OR phase = $2) ORDER BY ord DESC LIMIT $3"
        ),
        // The database server's clock (`clock_timestamp()` rather than `now()`: the
        // latter is frozen at the start of the transaction).
        lease: lease_statements!("(extract(epoch from clock_timestamp()) * 1000)::bigint"),
        migrations_table_exists: "SELECT 1 WHERE to_regclass('fledge_migrations') IS NOT NULL",
        create_migrations_table: "CREATE TABLE IF NOT EXISTS fledge_migrations (
             version BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at BIGINT NOT NULL)",
    };

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn location(&self) -> &str {
        &self.location
    }

    async fn begin_write(&self, operation: &str) -> Result<WriteTx<'_, Postgres>> {
        let tx = self
            .pool
            .begin()
            .await
            .map_err(|e| StoreError::from_sqlx(operation, e))?;
        Ok(WriteTx { tx, _guard: None })
    }

    /// One statement for the whole batch: one round trip instead of one a rollout.
    async fn write_states(
        &self,
        conn: &mut PgConnection,
        updates: &[StateUpdate],
        now: Timestamp,
        op: &str,
    ) -> Result<Vec<Result<i64>>> {
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        let revisions: Vec<i64> = updates.iter().map(|u| u.expected_revision).collect();
        let states: Vec<String> = updates.iter().map(|u| to_json_text(&u.state)).collect();
        let written: Vec<String> = sqlx::query_scalar(
            "UPDATE rollouts AS r SET state = u.state, revision = r.revision + 1, \
             updated_at = $4 \
             FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(id, expected, state) \
             WHERE r.id = u.id AND r.revision = u.expected RETURNING r.id",
        )
        .bind(&ids)
        .bind(&revisions)
        .bind(&states)
        .bind(now.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op, e))?;
        let written: HashSet<&str> = written.iter().map(String::as_str).collect();
        let missed: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !written.contains(id))
            .collect();
        let actual: HashMap<String, i64> = if missed.is_empty() {
            HashMap::new()
        } else {
            sqlx::query_as("SELECT id, revision FROM rollouts WHERE id = ANY($1)")
                .bind(&missed)
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| StoreError::from_sqlx(op, e))?
                .into_iter()
                .collect()
        };
        Ok(updates
            .iter()
            .map(|u| {
                if written.contains(u.id.as_str()) {
                    Ok(u.expected_revision + 1)
                } else {
                    Err(missed_update(
                        &u.id,
                        u.expected_revision,
                        actual.get(&u.id).copied(),
                    ))
                }
            })
            .collect())
    }

    /// Takes a transaction advisory lock, held until the transaction commits, so that
    /// event ids become visible in increasing order and a live stream resuming "after
    /// id N" never skips an event that commits late.
    async fn before_events(conn: &mut PgConnection, op: &str) -> Result<()> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(EVENTS_LOCK)
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_sqlx(op, e))
    }
}

impl_store!(PgStore);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_url_is_reported_without_its_password() {
        let err = PgStore::connect("postgres://u:hunter2@127.0.0.1:notaport/db")
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable() {
        // Port 1 on loopback: nothing listens there, the connection is refused at once.
        let err = PgStore::connect("postgres://fledge:pw@127.0.0.1:1/fledge")
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }
}
