//! Time in the engine: the caller's [`Timestamp`]s, and the stage clock.
//!
//! A stage's clock counts only the time its weight was really in force: time paused
//! by an operator and time the router did not apply the weight are both left out.
//! The clock decides when a stage may end ([`RolloutState::stage_remaining_ms`] for
//! displays, the same rule in the step's automatic progression).

use std::time::Duration;

use fledge_spec::{RolloutSpec, Stage};

use super::step::Machine;
use super::{Actor, EventKind, RolloutState};

pub use fledge_stats::Timestamp;

/// A spec duration in milliseconds (saturating, though the grammar's longest, 36500d, fits).
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How long `stage` must run before it may end by itself: its duration, or 0 for a
/// final stage that promotes without one. `None` when only an operator's promote
/// ends it (no duration, or a final stage that does not promote).
pub(super) fn stage_run_ms(stage: &Stage, last: bool) -> Option<u64> {
    match stage.duration {
        Some(d) if !last || stage.promote => Some(millis(d)),
        None if last && stage.promote => Some(0),
        _ => None,
    }
}

/// `5m`, `1h30m`, `45s`, `1.5s`.
pub(super) fn humanize(ms: u64) -> String {
    if !ms.is_multiple_of(1000) {
        return format!("{}s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    let (h, m, sec) = (s / 3600, (s / 60) % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

// === impl RolloutState ===

impl RolloutState {
    /// Milliseconds the current stage has run, paused time excluded.
    pub fn stage_active_ms(&self, now: Timestamp) -> u64 {
        let Some(start) = self.stage_started_at else {
            return 0;
        };
        let open_pause = self.paused_at.map_or(0, |p| now.millis_since(p));
        let unapplied = self
            .route_unapplied_since
            .map_or(0, |u| now.millis_since(u));
        now.millis_since(start)
            .saturating_sub(self.stage_paused_ms)
            .saturating_sub(open_pause)
            .saturating_sub(unapplied)
    }

    /// How long the current stage still has to run (paused time excluded) before it
    /// may end, for progress displays; `None` when it waits for a manual promote, or
    /// the rollout is not running a stage. Criteria may hold it longer.
    pub fn stage_remaining_ms(&self, spec: &RolloutSpec, now: Timestamp) -> Option<u64> {
        if !self.phase.runs_stages() {
            return None;
        }
        self.stage_started_at?;
        let stage = spec.stages.get(self.stage_index)?;
        let last = self.stage_index + 1 == spec.stages.len();
        let total = stage_run_ms(stage, last)?;
        Some(total.saturating_sub(self.stage_active_ms(now)))
    }
}

// === impl Machine ===

impl Machine<'_> {
    /// Ends the pause bookkeeping (the time paused so far stays excluded).
    pub(super) fn close_pause(&mut self) {
        if let Some(p) = self.st.paused_at.take() {
            self.st.stage_paused_ms = self
                .st
                .stage_paused_ms
                .saturating_add(self.now.millis_since(p));
        }
    }

    pub(super) fn route_unapplied(&mut self, error: &str) {
        if !self.st.phase.runs_stages() {
            return;
        }
        // A pause already stops the stage clock; the window opens only outside one.
        let opens = self.st.paused_at.is_none() && self.st.route_unapplied_since.is_none();
        if opens {
            self.st.route_unapplied_since = Some(self.now);
        }
        self.failed_read(
            EventKind::RouteUnapplied,
            opens,
            |n| format!("no analysis for {n} reads in a row: {error}"),
            |limit| {
                format!(
                    "{error}; the stage clock stops (the rollout fails after {limit} such reads in a row)"
                )
            },
        );
    }

    /// Ends a window in which the router did not apply the weight: its time is not
    /// the stage's, and the next observation only starts a new baseline (the
    /// traffic since the last one was not served at this stage's weight).
    /// `applied`: the router is known to apply the weight again (announced).
    pub(super) fn close_route_window(&mut self, applied: bool) {
        if !self.st.phase.runs_stages() {
            return;
        }
        let Some(since) = self.st.route_unapplied_since.take() else {
            return;
        };
        let held = self.now.millis_since(since);
        self.st.stage_paused_ms = self.st.stage_paused_ms.saturating_add(held);
        self.st.last_observation = None;
        if !applied {
            return;
        }
        self.st.consecutive_metric_errors = 0;
        let message = format!(
            "the router applies {}% again after {}; the stage clock runs on",
            self.st.canary_weight,
            humanize(held)
        );
        self.event(EventKind::RouteApplied, Actor::Engine, message, Vec::new());
    }
}
