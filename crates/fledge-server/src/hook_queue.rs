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
        let key = (
            job.rollout_id.clone(),
            job.point.list_name().to_owned(),
            job.attempt,
        );
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key)
    }

    pub(crate) fn release(&self, job: &HookJob) {
        let key = (
            job.rollout_id.clone(),
            job.point.list_name().to_owned(),
            job.attempt,
        );
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}
