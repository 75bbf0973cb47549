//! The server's wall clock, injected so that tests can hold it.
//!
//! Everything the server decides by the time of day (stage clocks, event times,
//! when a router or the store went out of order) reads [`Clock::now`]; waits and
//! expiries measured on a monotonic clock (judging intervals, router checks, the
//! lease's local deadline, sessions, rate limits) use `tokio::time::Instant`, which
//! `tokio::time::pause()` holds the same way. The system clock is the default;
//! [`Clock::tokio`] follows tokio's clock instead, so a test that runs under
//! `tokio::time::pause()` moves the wall clock forward exactly as far as it
//! advances (or auto-advances) tokio's time: a whole rollout runs in milliseconds
//! of real time with every timer and timestamp agreeing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub enum Clock {
    /// The operating system's clock.
    #[default]
    System,
    /// `start` plus however far tokio's clock has moved since `origin`.
    Tokio {
        /// The wall-clock time at `origin`.
        start: SystemTime,
        /// Tokio's time when the clock was made.
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's time from `start` on (for tests under
    /// `tokio::time::pause()`).
    pub fn tokio(start: SystemTime) -> Self {
        Clock::Tokio {
            start,
            origin: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::Tokio { start, origin } => *start + origin.elapsed(),
        }
    }

    /// The current time in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        let since = self
            .now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let clock = Clock::tokio(start);
        assert_eq!(clock.now(), start);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start + Duration::from_secs(90));
        assert_eq!(clock.now_ms(), 1_090_000);
    }
}
