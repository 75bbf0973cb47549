//! The `Store` trait every backend implements, and [`connect`], which picks the backend
//! from a URL.
//!
//! The trait uses `async-trait` (boxed futures) rather than native `async fn` in
//! traits: the server holds the store as `Arc<dyn Store>`, and native async trait
//! methods are not object-safe.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use crate::error::{Result, StoreError, redact_url};
use crate::model::{
    AppRecord, EventRecord, Fence, GroupRecord, GroupUpdate, Lease, NewGroup, NewRollout,
    RolloutFilter, RolloutRecord, RolloutUpdate, StateUpdate, Timestamp,
};
use crate::samples::{Sample, SampleBounds};

/// Durable state of fledge: apps, rollouts, their event history, and leader leases.
///
/// Every method is one transaction: either all of it is written, or nothing is.
/// Implementations are cheap to share (`Arc<dyn Store>`) and safe to call from many
/// tasks at once.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Which backend this is: `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Creates or replaces an app's config.
    async fn put_app(&self, name: &str, config: &Value) -> Result<AppRecord>;

    /// One app, or `None`.
    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>>;

    /// Every app, by name.
    async fn list_apps(&self) -> Result<Vec<AppRecord>>;

    /// Removes an app's config; its rollouts and their history stay. Returns whether
    /// it existed.
    async fn delete_app(&self, name: &str) -> Result<bool>;

    /// Creates a rollout at revision 1 with its first events (seq 1, 2, …).
    ///
    /// Fails with [`StoreError::ActiveRolloutExists`] when `new.phase` is active and the
    /// app already has an active rollout; the database enforces this, so of two racing
    /// creators exactly one wins. Fails with [`StoreError::NotFound`] naming the group
    /// when `new.group` is not the id of an existing group.
    async fn create_rollout(&self, new: NewRollout) -> Result<RolloutRecord>;

    /// One rollout, or `None`.
    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>>;

    /// Rollouts matching the filter, newest first.
    async fn list_rollouts(&self, filter: &RolloutFilter) -> Result<Vec<RolloutRecord>>;

    /// How many rollouts each phase holds, counted by the database without reading
    /// them (phases with none are left out).
    async fn count_rollouts_by_phase(&self) -> Result<Vec<(String, u64)>>;

    /// Every rollout in an active phase, oldest first: what the controller drives.
    async fn active_rollouts(&self) -> Result<Vec<RolloutRecord>>;

    /// The app's newest rollout, active or not.
    async fn latest_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>>;

    /// The app's active rollout, if it has one (there is at most one).
    async fn active_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>>;

    /// Writes a new phase and state, appends the events and applies the optional app
    /// update, all in one transaction, and returns the rollout at its new revision.
    ///
    /// Fails with [`StoreError::Conflict`] when the rollout is no longer at
    /// `expected_revision` (of two racing writers exactly one wins),
    /// [`StoreError::NotFound`], [`StoreError::Fenced`] when the fence is stale, and
    /// [`StoreError::ActiveRolloutExists`] when moving back to an active phase while
    /// the app has another active rollout.
    async fn update_rollout(&self, update: RolloutUpdate) -> Result<RolloutRecord>;

    /// Writes the new states of many rollouts in one transaction (one disk flush for a
    /// whole controller tick). Each update keeps or changes its rollout's phase as it
    /// is, appends no event, and bumps the revision by one.
    ///
    /// Every update is checked on its own: one whose rollout moved on since
    /// (`expected_revision`) or is gone is left alone and reported in its slot as
    /// [`StoreError::Conflict`] or [`StoreError::NotFound`], while the others are
    /// written; the `Ok` slot holds the new revision. The fence is checked once for
    /// all: a stale one refuses the whole batch with [`StoreError::Fenced`], as does
    /// any database error.
    async fn update_states(
        &self,
        updates: &[StateUpdate],
        fence: Option<&Fence>,
    ) -> Result<Vec<Result<i64>>>;

    /// Creates a rollout group at revision 1. Its rollouts are created afterwards
    /// with [`NewRollout::group`] set to its id.
    ///
    /// Fails with [`StoreError::Invalid`] for an empty name or a phase that is not
    /// one of [`GROUP_PHASES`](crate::GROUP_PHASES), and [`StoreError::Fenced`] when
    /// the fence is stale.
    async fn create_group(&self, new: NewGroup) -> Result<GroupRecord>;

    /// One rollout group, or `None`.
    async fn get_group(&self, id: &str) -> Result<Option<GroupRecord>>;

    /// Rollout groups, newest first: only the active ones (`Progressing`, `Paused`)
    /// if `active_only`, at most `limit` of them.
    async fn list_groups(&self, active_only: bool, limit: Option<u32>) -> Result<Vec<GroupRecord>>;

    /// Writes a group's new phase and state and returns it at its new revision.
    ///
    /// Fails with [`StoreError::Conflict`] when the group is no longer at
    /// `expected_revision` (of two racing writers exactly one wins),
    /// [`StoreError::NotFound`], [`StoreError::Fenced`] when the fence is stale, and
    /// [`StoreError::Invalid`] for an unknown phase.
    async fn update_group(&self, update: GroupUpdate) -> Result<GroupRecord>;

    /// The rollouts created as part of the group, oldest first.
    async fn rollouts_of_group(&self, group_id: &str) -> Result<Vec<RolloutRecord>>;

    /// A rollout's events with `seq > after_seq`, in order (`after_seq = 0` for all).
    async fn events(&self, rollout_id: &str, after_seq: i64) -> Result<Vec<EventRecord>>;

    /// Events of all rollouts with a global `id > after_id`, in id order, at most
    /// `limit`: live streams poll this and resume from the last id they sent.
    ///
    /// Ids become visible in increasing order: an event with a smaller id never
    /// appears after one with a larger id has been returned.
    async fn recent_events(&self, after_id: i64, limit: u32) -> Result<Vec<EventRecord>>;

    /// Appends chart samples (of any rollouts) in one transaction, then keeps each of
    /// their rollouts within `bounds` by merging its older samples (see
    /// [`thin`](crate::thin)). A sample whose rollout already has one taken at the
    /// same time is skipped, so a repeated write changes nothing.
    ///
    /// Fails with [`StoreError::Invalid`] for a sample that could not be charted or
    /// bounds that could not be kept, writing nothing.
    async fn append_samples(&self, samples: &[Sample], bounds: SampleBounds) -> Result<()>;

    /// A rollout's samples taken at or after `since`, oldest first.
    async fn samples(&self, rollout_id: &str, since: Timestamp) -> Result<Vec<Sample>>;

    /// Deletes the samples of every rollout that finished before `finished_before`,
    /// and says how many went. The rollouts and their events stay.
    async fn prune_samples(&self, finished_before: Timestamp) -> Result<u64>;

    /// Takes the lease if it is free, expired or released, with a new epoch; extends it
    /// (same epoch) if `holder` already holds it; `None` if someone else holds it.
    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>>;

    /// Extends a held lease by `ttl` from now. `None` means it was lost (expired, or
    /// taken by another holder): the caller must stop acting as leader.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>>;

    /// Gives the lease up so that another holder can take it at once. Returns whether
    /// it was still held. Writes fenced with its epoch are refused afterwards.
    async fn release_lease(&self, lease: &Lease) -> Result<bool>;

    /// Checks that the database answers, for readiness probes.
    async fn ping(&self) -> Result<()> {
        self.list_apps().await.map(|_| ())
    }

    /// Closes the connections; later calls fail with [`StoreError::Unavailable`].
    async fn close(&self);
}

/// Opens the store named by `url`, creating and migrating the database as needed.
///
/// - `sqlite://PATH`, `sqlite:PATH` or a bare path: the embedded SQLite store in that
///   file (created if missing); `sqlite::memory:` for a throwaway one.
/// - `postgres://…` or `postgresql://…`: PostgreSQL.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    match url.split_once("://") {
        Some((scheme, _)) => match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => {
                Ok(Arc::new(crate::postgres::PgStore::connect(url).await?))
            }
            "sqlite" => Ok(Arc::new(crate::sqlite::SqliteStore::open(url).await?)),
            other => Err(StoreError::InvalidUrl {
                url: redact_url(url),
                reason: format!(
                    "unknown scheme `{other}`: expected sqlite://PATH or postgres://USER@HOST/DB"
                ),
            }),
        },
        // `sqlite:PATH`, `sqlite::memory:` or a bare path.
        None => Ok(Arc::new(crate::sqlite::SqliteStore::open(url).await?)),
    }
}
