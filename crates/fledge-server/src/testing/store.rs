//! The store for tests under tokio's paused clock.
//!
//! The SQLite pool arms tokio timers of its own (the acquire timeout) and waits on
//! its worker thread: on a paused runtime, which auto-advances to the next timer
//! whenever it is idle, those timeouts fire at once. So every call runs on a
//! separate runtime with a real clock, from a blocking task, which also keeps the
//! paused clock from auto-advancing while the call runs.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fledge_store::{
    AppRecord, EventRecord, Fence, GroupRecord, GroupUpdate, Lease, NewGroup, NewRollout, Result,
    RolloutFilter, RolloutRecord, RolloutUpdate, Sample, SampleBounds, StateUpdate, Store,
    StoreError, Timestamp,
};
use serde_json::Value;
use tokio::runtime::{Handle, Runtime};

/// An in-memory SQLite store on its own real-time runtime, whose writes fail with
/// [`StoreError::Unavailable`] while [`refuse`](Self::refuse) is on (as a
/// read-only or full disk makes them); reads always go through.
#[derive(Debug)]
pub struct TestStore {
    runtime: Option<Runtime>,
    handle: Handle,
    inner: Arc<dyn Store>,
    refusing: AtomicBool,
}

impl TestStore {
    /// A fresh in-memory SQLite store, taking writes.
    pub async fn in_memory() -> Arc<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the store starts");
        let handle = runtime.handle().clone();
        let opener = handle.clone();
        let inner = tokio::task::spawn_blocking(move || {
            opener.block_on(fledge_store::connect("sqlite::memory:"))
        })
        .await
        .expect("the store opens")
        .expect("an in-memory store opens");
        Arc::new(Self {
            runtime: Some(runtime),
            handle,
            inner,
            refusing: AtomicBool::new(false),
        })
    }

    /// Whether writes are refused from now on.
    pub fn refuse(&self, on: bool) {
        self.refusing.store(on, Ordering::SeqCst);
    }

    async fn run<T, F>(&self, call: impl FnOnce(Arc<dyn Store>) -> F + Send + 'static) -> T
    where
        F: Future<Output = T>,
        T: Send + 'static,
    {
        let (handle, inner) = (self.handle.clone(), self.inner.clone());
        tokio::task::spawn_blocking(move || handle.block_on(call(inner)))
            .await
            .expect("the store call finishes")
    }

    fn write(&self, operation: &str) -> Result<()> {
        if self.refusing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                operation: operation.to_owned(),
                source: sqlx::Error::Io(std::io::Error::other(
                    "attempt to write a readonly database",
                )),
            });
        }
        Ok(())
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        // Dropping a runtime may block, which async code must not do.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[async_trait]
impl Store for TestStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn put_app(&self, name: &str, config: &Value) -> Result<AppRecord> {
        self.write("putting an app")?;
        let (name, config) = (name.to_owned(), config.clone());
        self.run(move |s| async move { s.put_app(&name, &config).await })
            .await
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        let name = name.to_owned();
        self.run(move |s| async move { s.get_app(&name).await })
            .await
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        self.run(|s| async move { s.list_apps().await }).await
    }

    async fn delete_app(&self, name: &str) -> Result<bool> {
        self.write("deleting an app")?;
        let name = name.to_owned();
        self.run(move |s| async move { s.delete_app(&name).await })
            .await
    }

    async fn create_rollout(&self, new: NewRollout) -> Result<RolloutRecord> {
        self.write("creating a rollout")?;
        self.run(move |s| async move { s.create_rollout(new).await })
            .await
    }

    async fn get_rollout(&self, id: &str) -> Result<Option<RolloutRecord>> {
        let id = id.to_owned();
        self.run(move |s| async move { s.get_rollout(&id).await })
            .await
    }

    async fn list_rollouts(&self, filter: &RolloutFilter) -> Result<Vec<RolloutRecord>> {
        let filter = filter.clone();
        self.run(move |s| async move { s.list_rollouts(&filter).await })
            .await
    }

    async fn count_rollouts_by_phase(&self) -> Result<Vec<(String, u64)>> {
        self.run(|s| async move { s.count_rollouts_by_phase().await })
            .await
    }

    async fn active_rollouts(&self) -> Result<Vec<RolloutRecord>> {
        self.run(|s| async move { s.active_rollouts().await }).await
    }

    async fn latest_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>> {
        let app = app.to_owned();
        self.run(move |s| async move { s.latest_rollout_for_app(&app).await })
            .await
    }

    async fn active_rollout_for_app(&self, app: &str) -> Result<Option<RolloutRecord>> {
        let app = app.to_owned();
        self.run(move |s| async move { s.active_rollout_for_app(&app).await })
            .await
    }

    async fn update_rollout(&self, update: RolloutUpdate) -> Result<RolloutRecord> {
        self.write("updating a rollout")?;
        self.run(move |s| async move { s.update_rollout(update).await })
            .await
    }

    async fn update_states(
        &self,
        updates: &[StateUpdate],
        fence: Option<&Fence>,
    ) -> Result<Vec<Result<i64>>> {
        self.write("updating rollout states")?;
        let (updates, fence) = (updates.to_vec(), fence.cloned());
        self.run(move |s| async move { s.update_states(&updates, fence.as_ref()).await })
            .await
    }

    async fn create_group(&self, new: NewGroup) -> Result<GroupRecord> {
        self.write("creating a rollout group")?;
        self.run(move |s| async move { s.create_group(new).await })
            .await
    }

    async fn get_group(&self, id: &str) -> Result<Option<GroupRecord>> {
        let id = id.to_owned();
        self.run(move |s| async move { s.get_group(&id).await })
            .await
    }

    async fn list_groups(&self, active_only: bool, limit: Option<u32>) -> Result<Vec<GroupRecord>> {
        self.run(move |s| async move { s.list_groups(active_only, limit).await })
            .await
    }

    async fn update_group(&self, update: GroupUpdate) -> Result<GroupRecord> {
        self.write("updating a rollout group")?;
        self.run(move |s| async move { s.update_group(update).await })
            .await
    }

    async fn rollouts_of_group(&self, group_id: &str) -> Result<Vec<RolloutRecord>> {
        let id = group_id.to_owned();
        self.run(move |s| async move { s.rollouts_of_group(&id).await })
            .await
    }

    async fn events(&self, rollout_id: &str, after_seq: i64) -> Result<Vec<EventRecord>> {
        let id = rollout_id.to_owned();
        self.run(move |s| async move { s.events(&id, after_seq).await })
            .await
    }

    async fn recent_events(&self, after_id: i64, limit: u32) -> Result<Vec<EventRecord>> {
        self.run(move |s| async move { s.recent_events(after_id, limit).await })
            .await
    }

    async fn append_samples(&self, samples: &[Sample], bounds: SampleBounds) -> Result<()> {
        self.write("recording chart samples")?;
        let samples = samples.to_vec();
        self.run(move |s| async move { s.append_samples(&samples, bounds).await })
            .await
    }

    async fn samples(&self, rollout_id: &str, since: Timestamp) -> Result<Vec<Sample>> {
        let id = rollout_id.to_owned();
        self.run(move |s| async move { s.samples(&id, since).await })
            .await
    }

    async fn prune_samples(&self, finished_before: Timestamp) -> Result<u64> {
        self.write("deleting old chart samples")?;
        self.run(move |s| async move { s.prune_samples(finished_before).await })
            .await
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        self.write("taking a lease")?;
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.run(move |s| async move { s.try_acquire_lease(&name, &holder, ttl).await })
            .await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Option<Lease>> {
        self.write("renewing a lease")?;
        let lease = lease.clone();
        self.run(move |s| async move { s.renew_lease(&lease, ttl).await })
            .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        self.write("releasing a lease")?;
        let lease = lease.clone();
        self.run(move |s| async move { s.release_lease(&lease).await })
            .await
    }

    async fn close(&self) {
        self.run(|s| async move { s.close().await }).await;
    }
}
