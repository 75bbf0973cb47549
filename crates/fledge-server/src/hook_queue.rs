//! The queue of hook lists waiting to run: what the controller and the API push when
//! the engine asks for hooks, and what `hooks::run_worker` takes them from. Kept
//! apart from the runner so that those who ask need nothing of how hooks run.

use std::collections::HashSet;
use std::sync::Mutex;

use fledge_engine as engine;
use tokio::sync::mpsc;

/// One list of hooks to run for a rollout.
#[derive(Debug, Clone)]
pub struct HookJob {
    /// The rollout.
    pub rollout_id: String,
    /// Which hook list, as the engine names it.
    pub point: engine::HookPoint,
    /// The attempt that asked for it.
    pub attempt: u32,
}

/// Queues hook jobs for the worker.
#[derive(Debug)]
pub struct HookQueue {
    tx: mpsc::UnboundedSender<HookJob>,
    in_flight: Mutex<HashSet<(String, String, u32)>>,
}

// === impl HookQueue ===

impl HookQueue {
    /// A queue and the receiving end for `hooks::run_worker`.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<HookJob>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                in_flight: Mutex::new(HashSet::new()),
            },
            rx,
        )
    }

    /// Asks for a job; a job already running is not started twice.
    pub fn push(&self, job: HookJob) {
        let _ = self.tx.send(job);
    }

    pub(crate) fn claim(&self, job: &HookJob) -> bool {
        self.in_flight().insert(key(job))
    }

    pub(crate) fn release(&self, job: &HookJob) {
        self.in_flight().remove(&key(job));
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String, u32)>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A job's identity in the in-flight set: rollout, hook list and attempt.
fn key(job: &HookJob) -> (String, String, u32) {
    (
        job.rollout_id.clone(),
        job.point.list_name().to_owned(),
        job.attempt,
    )
}
