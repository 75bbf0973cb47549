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

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::error::{Result, StoreError, is_unique_violation, redact_url};
use crate::model::{
    AppRecord, EventRecord, Fence, Lease, NewEvent, NewRollout, RolloutFilter, RolloutRecord,
    RolloutUpdate, StateUpdate, Timestamp, check_events, check_name, check_phase, check_ttl,
    is_active_phase, new_rollout_id, to_json_text,
};
use crate::rows::{self, Migration, event_columns, missed_state_update, rollout_columns};
use crate::store::Store;

/// The PostgreSQL schema, oldest first.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "apps, rollouts, events, leases",
    sql: include_str!("../migrations/postgres/0001_init.sql"),
}];

/// Session advisory lock held while migrating, so that servers starting together
/// migrate one at a time. (An arbitrary constant: "fledge" in ASCII.)
const MIGRATION_LOCK: i64 = 0x666c_6564_6765;

/// Transaction advisory lock taken before a transaction draws event ids and held
/// until it commits, so that event ids become visible in increasing order and a
/// live stream resuming "after id N" never skips an event that commits late.
const EVENTS_LOCK: i64 = 0x666c_6564_6765 + 1;

/// The database server's clock in Unix milliseconds (`clock_timestamp()` rather than
/// `now()`: the latter is frozen at the start of the transaction).
macro_rules! db_now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

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
            .connect_with(options)
            .await
            .map_err(|e| StoreError::from_sqlx(op(), e))?;
        tracing::info!(database = %location, "PostgreSQL store open");
        Ok(PgStore { pool, location })
    }

    async fn begin(&self, operation: &str) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|e| StoreError::from_sqlx(operation, e))
    }

    async fn fetch_rollouts(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
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

    /// The app's active rollout other than `except`, read outside any transaction
    /// (after a unique violation aborted one).
    async fn active_rollout_id(
        &self,
        app: &str,
        except: Option<&str>,
        op: &str,
    ) -> Result<Option<String>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StoreError::from_sqlx(op, e))?;
        active_rollout_id(&mut conn, app, except, op).await
    }
}

async fn migrate(conn: &mut PgConnection, location: &str) -> Result<()> {
    let op = || format!("migrating PostgreSQL database {location}");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op(), e))?;
    // Only create the table when it is missing: even `IF NOT EXISTS` is refused by a
    // read-only database, which must still open (and then refuse writes clearly).
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('fledge_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op(), e))?;
    if !exists {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS fledge_migrations (
             version BIGINT PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op(), e))?;
    }
    let current: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM fledge_migrations")
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| StoreError::from_sqlx(op(), e))?;
    let supported = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let failed = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let mut tx = conn.begin().await.map_err(failed)?;
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
    // Closing the connection releases the lock as well; unlocking first keeps it
    // short if the close is slow.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *conn)
        .await;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn put_app(&self, name: &str, config: &Value) -> Result<AppRecord> {
        check_name("app name", name)?;
        let op = format!("saving app {name}");
        let mut tx = self.begin(&op).await?;
        let row = sqlx::query(
            "INSERT INTO apps (name, config, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, updated_at = EXCLUDED.updated_at \
             RETURNING name, config, created_at, updated_at",
        )
        .bind(name)
        .bind(to_json_text(config))
        .bind(Timestamp::now().0)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| StoreError::from_sqlx(&op, e))?;
        let app = rows::app(&row)?;
        tx.commit()
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
        Ok(app)
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        sqlx::query("SELECT name, config, created_at, updated_at FROM apps WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| StoreError::from_sqlx(format!("reading app {name}"), e))?
            .as_ref()
            .map(rows::app)
            .transpose()
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        sqlx::query("SELECT name, config, created_at, updated_at FROM apps ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| StoreError::from_sqlx("listing apps", e))?
            .iter()
            .map(rows::app)
            .collect()
    }

    async fn delete_app(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM apps WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::from_sqlx(format!("deleting app {name}"), e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_rollout(&self, new: NewRollout) -> Result<RolloutRecord> {
        check_name("app name", &new.app)?;
        check_name("version", &new.version)?;
        check_phase(&new.phase)?;
        check_events(&new.events)?;
        let op = format!("creating a rollout of app {}", new.app);
        let mut tx = self.begin(&op).await?;
        if let Some(fence) = &new.fence {
            check_fence(&mut tx, fence, &op).await?;
        }
        let active = is_active_phase(&new.phase);
        let now = Timestamp::now();
        let spec = to_json_text(&new.spec);
        let state = to_json_text(&new.state);
        let n_events = i64::try_from(new.events.len()).unwrap_or(i64::MAX);
        let mut attempt = 0;
        let (id, record) = loop {
            attempt += 1;
            let id = new_rollout_id();
            // DO NOTHING covers both unique constraints: the one-active-per-app
            // index (a racing creator won; this waits for it to commit or abort)
            // and, with odds of about n / 2^60, the id.
            let inserted = sqlx::query(concat!(
                "INSERT INTO rollouts (id, app, version, phase, spec_text, spec, state, revision, \
                 last_seq, created_at, updated_at, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $9, $9, $10) \
                 ON CONFLICT DO NOTHING RETURNING ",
                rollout_columns!()
            ))
            .bind(&id)
            .bind(&new.app)
            .bind(&new.version)
            .bind(&new.phase)
            .bind(&new.spec_text)
            .bind(&spec)
            .bind(&state)
            .bind(n_events)
            .bind(now.0)
            .bind((!active).then_some(now.0))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
            if let Some(row) = inserted {
                break (id, rows::rollout(&row)?);
            }
            if active && let Some(other) = active_rollout_id(&mut tx, &new.app, None, &op).await? {
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
        insert_events(&mut tx, &id, 0, &new.events, now, &op).await?;
        tx.commit()
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
        Ok(record)
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::from_sqlx(format!("reading rollout {id}"), e))?
        .as_ref()
        .map(rows::rollout)
        .transpose()
    }

    async fn list_rollouts(&self, filter: &RolloutFilter) -> Result<Vec<RolloutRecord>> {
        let query = sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE ($1::text IS NULL OR app = $1) \
             AND ($2::text IS NULL OR phase = $2) ORDER BY ord DESC LIMIT $3"
        ))
        .bind(filter.app.as_deref())
        .bind(filter.phase.as_deref())
        .bind(filter.limit.map(i64::from));
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
            " FROM rollouts WHERE app = $1 ORDER BY ord DESC LIMIT 1"
        ))
        .bind(app);
        let op = format!("reading the latest rollout of app {app}");
        Ok(self.fetch_rollouts(query, &op).await?.pop())
    }

    async fn active_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>> {
        let query = sqlx::query(concat!(
            "SELECT ",
            rollout_columns!(),
            " FROM rollouts WHERE app = $1 AND phase IN ('Pending', 'Progressing', 'Paused') \
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
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        let revisions: Vec<i64> = updates.iter().map(|u| u.expected_revision).collect();
        let states: Vec<String> = updates.iter().map(|u| to_json_text(&u.state)).collect();
        let mut tx = self.begin(&op).await?;
        if let Some(fence) = fence {
            check_fence(&mut tx, fence, &op).await?;
        }
        // One statement for the whole batch: one round trip instead of one a rollout.
        let written: Vec<String> = sqlx::query_scalar(
            "UPDATE rollouts AS r SET state = u.state, revision = r.revision + 1, \
             updated_at = $4 \
             FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(id, expected, state) \
             WHERE r.id = u.id AND r.revision = u.expected RETURNING r.id",
        )
        .bind(&ids)
        .bind(&revisions)
        .bind(&states)
        .bind(Timestamp::now().0)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| StoreError::from_sqlx(&op, e))?;
        let written: std::collections::HashSet<&str> = written.iter().map(String::as_str).collect();
        let missed: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !written.contains(id))
            .collect();
        let actual: std::collections::HashMap<String, i64> = if missed.is_empty() {
            std::collections::HashMap::new()
        } else {
            sqlx::query_as("SELECT id, revision FROM rollouts WHERE id = ANY($1)")
                .bind(&missed)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(&op, e))?
                .into_iter()
                .collect()
        };
        tx.commit()
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
        Ok(updates
            .iter()
            .map(|u| {
                if written.contains(u.id.as_str()) {
                    Ok(u.expected_revision + 1)
                } else {
                    Err(missed_state_update(u, actual.get(&u.id).copied()))
                }
            })
            .collect())
    }

    async fn update_rollout(&self, update: RolloutUpdate) -> Result<RolloutRecord> {
        check_phase(&update.phase)?;
        check_events(&update.events)?;
        if let Some(app) = &update.app_update {
            check_name("app name", &app.name)?;
        }
        let id = update.id.as_str();
        let op = format!("updating rollout {id}");
        let mut tx = self.begin(&op).await?;
        if let Some(fence) = &update.fence {
            check_fence(&mut tx, fence, &op).await?;
        }
        // The row lock makes the revision check and the write one step: a racing
        // writer waits here and then sees the new revision.
        let current =
            sqlx::query("SELECT app, revision, last_seq FROM rollouts WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| StoreError::from_sqlx(&op, e))?;
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
        // No look-up of other active rollouts here: the unique index refuses a second
        // one (below), which saves a round trip on every controller tick.
        let active = is_active_phase(&update.phase);
        let now = Timestamp::now();
        let n_events = i64::try_from(update.events.len()).unwrap_or(i64::MAX);
        let updated = sqlx::query(concat!(
            "UPDATE rollouts SET phase = $1, state = $2, revision = revision + 1, \
             last_seq = last_seq + $3, updated_at = $4, \
             finished_at = CASE WHEN $5 THEN NULL ELSE COALESCE(finished_at, $4) END \
             WHERE id = $6 AND revision = $7 RETURNING ",
            rollout_columns!()
        ))
        .bind(&update.phase)
        .bind(to_json_text(&update.state))
        .bind(n_events)
        .bind(now.0)
        .bind(active)
        .bind(id)
        .bind(update.expected_revision)
        .fetch_optional(&mut *tx)
        .await;
        let updated = match updated {
            Ok(updated) => updated,
            // Another rollout of the app is active (a retry while a newer rollout
            // runs, or two racing retries); the index refused this one.
            Err(e) if active && is_unique_violation(&e) => {
                drop(tx);
                return match self.active_rollout_id(&app, Some(id), &op).await? {
                    Some(other) => Err(StoreError::ActiveRolloutExists { app, id: other }),
                    None => Err(StoreError::from_sqlx(&op, e)),
                };
            }
            Err(e) => return Err(StoreError::from_sqlx(&op, e)),
        };
        // The row is locked, so it cannot have moved; checked all the same so that a
        // change of locking can never turn into a lost update.
        let Some(updated) = updated else {
            return Err(StoreError::Conflict {
                id: id.to_owned(),
                expected: update.expected_revision,
                actual: revision,
            });
        };
        // Events and the app do not touch the rollout row: this is its final state.
        let record = rows::rollout(&updated)?;
        insert_events(&mut tx, id, last_seq, &update.events, now, &op).await?;
        if let Some(app) = &update.app_update {
            sqlx::query(
                "INSERT INTO apps (name, config, created_at, updated_at) VALUES ($1, $2, $3, $3) \
                 ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config, \
                 updated_at = EXCLUDED.updated_at",
            )
            .bind(&app.name)
            .bind(to_json_text(&app.config))
            .bind(now.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
        }
        tx.commit()
            .await
            .map_err(|e| StoreError::from_sqlx(&op, e))?;
        Ok(record)
    }

    async fn events(&self, rollout_id: &str, after_seq: i64) -> Result<Vec<EventRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e JOIN rollouts r ON r.id = e.rollout_id \
             WHERE e.rollout_id = $1 AND e.seq > $2 ORDER BY e.seq"
        ))
        .bind(rollout_id)
        .bind(after_seq)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::from_sqlx(format!("reading events of rollout {rollout_id}"), e))?
        .iter()
        .map(rows::event)
        .collect()
    }

    async fn recent_events(&self, after_id: i64, limit: u32) -> Result<Vec<EventRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            event_columns!(),
            " FROM events e JOIN rollouts r ON r.id = e.rollout_id \
             WHERE e.id > $1 ORDER BY e.id LIMIT $2"
        ))
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| StoreError::from_sqlx("reading recent events", e))?
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
        // One statement: insert the lease, or take it over when it is free, released
        // or expired (new epoch), or extend it when `holder` already has it (same
        // epoch). Under a concurrent acquisition the row lock makes one wait and then
        // re-check the condition against the winner's row.
        let row = sqlx::query(concat!(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, ",
            db_now_ms!(),
            " + $3) ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
             epoch = CASE WHEN leases.holder = EXCLUDED.holder AND leases.expires_at > ",
            db_now_ms!(),
            " THEN leases.epoch ELSE leases.epoch + 1 END, expires_at = EXCLUDED.expires_at \
             WHERE leases.holder IS NULL OR leases.holder = EXCLUDED.holder OR leases.expires_at <= ",
            db_now_ms!(),
            " RETURNING epoch, expires_at"
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::from_sqlx(format!("acquiring lease {name}"), e))?;
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
        let row = sqlx::query(concat!(
            "UPDATE leases SET expires_at = ",
            db_now_ms!(),
            " + $4 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > ",
            db_now_ms!(),
            " RETURNING expires_at"
        ))
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.epoch)
        .bind(ttl_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::from_sqlx(format!("renewing lease {}", lease.name), e))?;
        row.map(|row| {
            Ok(Lease {
                expires_at: Timestamp(rows::col(&row, "expires_at")?),
                ..lease.clone()
            })
        })
        .transpose()
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE leases SET holder = NULL, expires_at = 0 \
             WHERE name = $1 AND holder = $2 AND epoch = $3",
        )
        .bind(&lease.name)
        .bind(&lease.holder)
        .bind(lease.epoch)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::from_sqlx(format!("releasing lease {}", lease.name), e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::from_sqlx(format!("checking {}", self.location), e))
    }

    async fn close(&self) {
        tracing::debug!(database = %self.location, "closing PostgreSQL store");
        self.pool.close().await;
    }
}

// === queries used inside transactions ===

/// Refuses the write unless the lease still has the fence's epoch and a holder. The
/// share lock keeps a new leader's acquisition waiting until this write commits, so
/// the new leader then reads everything the old one wrote.
async fn check_fence(conn: &mut PgConnection, fence: &Fence, op: &str) -> Result<()> {
    let row = sqlx::query("SELECT holder, epoch FROM leases WHERE name = $1 FOR SHARE")
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
    conn: &mut PgConnection,
    app: &str,
    except: Option<&str>,
    op: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT id FROM rollouts WHERE app = $1 AND phase IN ('Pending', 'Progressing', 'Paused') \
         AND ($2::text IS NULL OR id <> $2) LIMIT 1",
    )
    .bind(app)
    .bind(except)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::from_sqlx(op, e))
}

async fn insert_events(
    conn: &mut PgConnection,
    rollout_id: &str,
    last_seq: i64,
    events: &[NewEvent],
    now: Timestamp,
    op: &str,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(EVENTS_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::from_sqlx(op, e))?;
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
