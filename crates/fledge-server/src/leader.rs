//! Leadership of the controller loop when several `fledge serve` replicas share one
//! store (PostgreSQL): every replica serves the API and its own proxies, but only
//! the holder of the `controller` lease judges rollouts.
//!
//! The lease has a TTL and a fencing epoch (see `fledge_store::Lease`). The leader
//! renews it every [`RENEW_EVERY`]; it stops acting as leader as soon as a renewal
//! fails or a TTL has passed since the last good one by its own monotonic clock,
//! whichever comes first. That local deadline is only an optimisation: a deposed
//! leader that is paused (GC, swap, SIGSTOP) and wakes up after another replica took
//! over still carries its old epoch in [`Leadership::fence`], and the store refuses
//! the write (`StoreError::Fenced`). So two controllers never both commit a decision.
//!
//! With SQLite (one process) the lease is always free, so the single server simply
//! leads; the code path is the same.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use fledge_store::{Fence, Lease, Store};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Shared;
use super::store_health::StoreHealth;

/// The name of the controller's lease row.
pub const LEASE: &str = "controller";
/// How long a lease lasts without renewal: how long a dead leader's rollouts wait
/// before another replica takes them over.
pub const TTL: Duration = Duration::from_secs(5);
/// How often the leader renews (and a follower tries to take over). Under a third of
/// the TTL, so that one lost renewal does not cost the lease.
pub const RENEW_EVERY: Duration = Duration::from_millis(1500);

// A frozen leader's open transaction must not outlast a lease, or it holds up
// the take-over (see `fledge_store::IDLE_IN_TRANSACTION_TIMEOUT`).
const _: () = assert!(fledge_store::IDLE_IN_TRANSACTION_TIMEOUT.as_millis() < TTL.as_millis());

/// This replica's view of the controller lease.
#[derive(Debug)]
pub struct Leadership {
    holder: String,
    held: Mutex<Option<Held>>,
}

#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    /// Past this instant the lease may have expired in the store: stop acting.
    valid_until: Instant,
}

// === impl Leadership ===

impl Leadership {
    /// A replica that does not lead yet, named uniquely (host, pid, random part).
    pub fn new() -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| "host".to_owned());
        let random: u32 = rand::random();
        Self {
            holder: format!("{host}-{}-{random:08x}", std::process::id()),
            held: Mutex::new(None),
        }
    }

    /// Who this replica is in the lease table.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The fencing token for the controller's writes, while this replica leads.
    pub fn fence(&self) -> Option<Fence> {
        self.current().map(|h| h.lease.fence())
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.current().is_some()
    }

    /// The epoch held now, if leading.
    pub fn epoch(&self) -> Option<i64> {
        self.current().map(|h| h.lease.epoch)
    }

    fn current(&self) -> Option<Held> {
        let held = self.lock().clone()?;
        (Instant::now() < held.valid_until).then_some(held)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        // A panic while holding this lock cannot leave it half-written (one
        // assignment), so a poisoned lock is still good.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives up leadership locally, e.g. after a write was fenced: another replica
    /// holds a newer epoch.
    pub fn lose(&self, why: &str) {
        if let Some(held) = self.lock().take() {
            tracing::warn!(epoch = held.lease.epoch, holder = %self.holder, reason = why,
                "lost the controller lease; this replica stops judging rollouts");
        }
    }

    /// One round: renew the lease if held, else try to take it. Store errors count
    /// as a failed renewal (the replica cannot prove it still leads).
    /// The write is also the server's probe of whether the store takes writes.
    pub async fn step(&self, store: &dyn Store, health: &StoreHealth) {
        let started = Instant::now();
        let held = self.lock().clone();
        let result = match &held {
            Some(h) if started < h.valid_until => store.renew_lease(&h.lease, TTL).await,
            _ => store.try_acquire_lease(LEASE, &self.holder, TTL).await,
        };
        health.wrote(&result);
        match result {
            Ok(Some(lease)) => {
                let was = held.as_ref().map(|h| h.lease.epoch);
                if was != Some(lease.epoch) {
                    tracing::info!(epoch = lease.epoch, holder = %self.holder,
                        "took the controller lease; this replica judges rollouts");
                }
                // Measured from before the request: the store's TTL started no
                // earlier than that.
                *self.lock() = Some(Held {
                    lease,
                    valid_until: started + TTL,
                });
            }
            Ok(None) => {
                if held.is_some() {
                    self.lose("the lease expired or another replica took it");
                }
            }
            Err(e) => {
                if held.is_some() {
                    self.lose(&format!("cannot renew the lease: {e}"));
                } else {
                    tracing::debug!(error = %e, "cannot try the controller lease");
                }
            }
        }
    }

    /// Gives the lease back so that another replica can take over at once.
    pub async fn release(&self, store: &dyn Store) {
        let held = self.lock().take();
        if let Some(h) = held
            && let Err(e) = store.release_lease(&h.lease).await
        {
            tracing::warn!(error = %e, "cannot release the controller lease; it expires by itself");
        }
    }
}

impl Default for Leadership {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps the lease (or keeps trying to take it) until `stop`, then releases it.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RENEW_EVERY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        shared
            .leader
            .step(shared.store.as_ref(), &shared.store_health)
            .await;
        shared.metrics.set_leader(shared.leader.epoch());
    }
    shared.leader.release(shared.store.as_ref()).await;
    shared.metrics.set_leader(None);
}
