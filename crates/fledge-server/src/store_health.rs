//! Whether the store takes writes, as the server last saw it: every lease renewal
//! (every `leader::RENEW_EVERY`) and every rollout write is a probe. `/readyz`
//! answers 503 naming the store's error while the last write failed because the
//! store was unavailable (unreachable, read-only, disk full).
//!
//! Only [`StoreError::is_unavailable`] errors count: a conflict or a fenced write
//! says nothing about the store's health.

use std::sync::Mutex;

use fledge_store::{StoreError, Timestamp};

use crate::clock::Clock;

/// The last write failure, until a write succeeds.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: Mutex<Option<Failing>>,
    /// Dates the first failure.
    clock: Clock,
}

#[derive(Debug, Clone)]
struct Failing {
    since: Timestamp,
    error: String,
}

// === impl StoreHealth ===

impl StoreHealth {
    /// A store not known to refuse writes, dating failures by `clock`.
    pub fn new(clock: Clock) -> Self {
        Self {
            failing: Mutex::default(),
            clock,
        }
    }

    /// Records the outcome of a write.
    pub fn wrote<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => {
                if let Some(f) = self.lock().take() {
                    tracing::info!(since = %f.since, "the store takes writes again");
                }
            }
            Err(e) if e.is_unavailable() => {
                let mut failing = self.lock();
                if failing.is_none() {
                    tracing::warn!(error = %e, "the store refuses writes; decisions wait until it takes them");
                }
                let since = failing
                    .as_ref()
                    .map_or_else(|| Timestamp(self.clock.now_ms()), |f| f.since);
                *failing = Some(Failing {
                    since,
                    error: e.to_string(),
                });
            }
            Err(_) => {}
        }
    }

    /// Why the store does not take writes, while it does not.
    pub fn problem(&self) -> Option<String> {
        self.lock().as_ref().map(|f| {
            format!(
                "the store has refused writes since {}: {}",
                f.since, f.error
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failing>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> StoreError {
        StoreError::Unavailable {
            operation: "renewing lease controller".into(),
            source: sqlx::Error::PoolTimedOut,
        }
    }

    #[test]
    fn a_refused_write_is_reported_until_one_succeeds() {
        let health = StoreHealth::default();
        assert_eq!(health.problem(), None);
        health.wrote::<()>(&Err(unavailable()));
        let first = health.problem().unwrap();
        assert!(first.contains("renewing lease controller"), "{first}");
        // Still failing: reported since the first failure.
        health.wrote::<()>(&Err(unavailable()));
        assert_eq!(health.problem().unwrap(), first);
        health.wrote(&Ok(()));
        assert_eq!(health.problem(), None);
    }

    #[test]
    fn a_refusal_of_this_write_only_is_not_a_store_problem() {
        let health = StoreHealth::default();
        health.wrote::<()>(&Err(StoreError::Conflict {
            id: "ro-1".into(),
            expected: 1,
            actual: 2,
        }));
        assert_eq!(health.problem(), None);
    }
}
