//! The canary judge: one verdict per success criterion per tick.
//!
//! # Contract
//!
//! The state machine ([`crate::machine`]) owns one [`CriterionJudge`] per success
//! criterion of the current stage, in spec order, inside the persisted rollout state.
//! Every tick it turns the cumulative [`Observation`] into a
//! [`TickDelta`] (the increase since the previous observation, with counter resets
//! handled) and calls [`CriterionJudge::update`] on each judge. A judge:
//!
//! * is **pure and deterministic**: the same sequence of deltas gives the same
//!   verdicts, on any machine, before and after a JSON round trip of its state;
//! * keeps **all** its memory in its own (serde) state, which must stay finite (no
//!   NaN or infinity: JSON cannot hold them) and reasonably small;
//! * returns [`Evidence`] whose `status` is the verdict *now*, given everything seen:
//!   - [`CriterionStatus::Fail`]: the criterion is violated with enough evidence. The
//!     machine fails the rollout at once, even while paused.
//!   - [`CriterionStatus::Pass`]: the criterion holds with enough evidence. A stage
//!     advances only when its duration has passed *and* every criterion says `Pass`
//!     on the latest tick (and no metric read failed since).
//!   - [`CriterionStatus::Undecided`]: the sample is big enough (`minRequests` on
//!     every arm the criterion needs) but there is no evidence either way yet. With
//!     `analysis.onNoEvidence: advance` (the default) the machine treats it like
//!     `Pass` once the duration is over; with `requirePass` the stage waits.
//!   - [`CriterionStatus::NotEnoughData`]: below the minimum sample, or no value; the
//!     stage waits. Missing data is never a pass and never by itself a failure.
//! * treats a tick with no requests as no evidence (never a failure);
//! * fills `Evidence` completely: the criterion text, the measured canary value and
//!   sample size, the stable value and sample size when it compared with stable, the
//!   threshold actually used, and (sequential judges) [`SequentialEvidence`].
//!
//! When the rollout moves to the next stage, the machine builds judges for that
//! stage's criteria. A criterion whose text also appears in the previous stage is
//! handed the previous judge through [`CriterionJudge::into_next_stage`]: a threshold
//! judge starts a fresh window (it judges "the counts accumulated since the stage
//! started"), while a sequential judge keeps its evidence, since its e-process takes
//! the observed request share per tick and needs no reset (`JUDGE.md` §4.5).
//!
//! Adding a method: add a variant holding its state, a constructor branch in
//! [`CriterionJudge::new`], and an arm in each `match` below. Nothing else in the
//! machine changes.
//!
//! [`Observation`]: crate::Observation
//! [`Evidence`]: crate::evidence::Evidence
//! [`SequentialEvidence`]: crate::evidence::SequentialEvidence
//! [`CriterionStatus::Fail`]: crate::evidence::CriterionStatus::Fail
//! [`CriterionStatus::Pass`]: crate::evidence::CriterionStatus::Pass
//! [`CriterionStatus::NotEnoughData`]: crate::evidence::CriterionStatus::NotEnoughData
//! [`CriterionStatus::Undecided`]: crate::evidence::CriterionStatus::Undecided

pub mod evalue;
pub mod sequential;
pub mod threshold;

use std::collections::BTreeMap;

use fledge_spec::Criterion;
use fledge_stats::{ArmCounters, CustomValue, Observation};
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::evidence::{Evidence, JudgeMethod, ValueUnit};

pub use sequential::SequentialCriterionJudge;
pub use threshold::ThresholdJudge;

/// The smallest sample judged when the spec does not set `analysis.minRequests`.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;

/// The false-abort probability per rollout when the spec does not set
/// `analysis.alpha`.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// The largest count the engine keeps: 2^50 (about 10^15 requests). Counts from a
/// source beyond this are clamped, so sums over every bucket and every tick stay far
/// from `u64` overflow, and persisted numbers stay exact in JSON readers that use
/// doubles.
pub const MAX_COUNT: u64 = 1 << 50;

/// The largest latency sum the engine keeps: [`MAX_COUNT`] requests of 100 s each.
/// Sums of sums over any number of ticks then stay finite.
pub const MAX_LATENCY_SUM_SECONDS: f64 = MAX_COUNT as f64 * 100.0;

/// Makes an observation from an untrusted metric source safe to keep and judge:
/// counts clamped to [`MAX_COUNT`], a latency sum that is not a finite non-negative
/// number set to 0 (and one above [`MAX_LATENCY_SUM_SECONDS`] clamped), and custom values that are not finite dropped (no data). The
/// rollout state is persisted as JSON, which cannot hold NaN or infinity.
pub fn sanitize_observation(obs: &mut Observation) {
    for arm in [&mut obs.stable, &mut obs.canary] {
        arm.requests = arm.requests.min(MAX_COUNT);
        arm.errors = arm.errors.min(MAX_COUNT);
        for c in &mut arm.latency.counts {
            *c = (*c).min(MAX_COUNT);
        }
        let sum = arm.latency.sum_seconds;
        arm.latency.sum_seconds = if sum.is_finite() && sum >= 0.0 {
            sum.min(MAX_LATENCY_SUM_SECONDS)
        } else {
            0.0
        };
    }
    obs.custom.retain(|_, v| v.canary.is_finite());
    for v in obs.custom.values_mut() {
        v.stable = v.stable.filter(|s| s.is_finite());
    }
}

/// The judge settings of a rollout, resolved from the spec's `analysis` block with
/// defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeSettings {
    /// Which method judges the criteria.
    pub method: JudgeMethod,
    /// Requests per arm below which a criterion is "not enough data".
    pub min_requests: u64,
    /// The false-abort probability of the whole rollout (sequential judges split it
    /// across criteria).
    pub alpha: f64,
    /// How many criteria share `alpha` (the union bound), at least 1.
    pub criteria_count: usize,
    /// The tolerated canary/stable ratios of relative criteria (sequential method).
    pub tolerance: fledge_spec::Tolerance,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        Self {
            method: JudgeMethod::Threshold,
            min_requests: DEFAULT_MIN_REQUESTS,
            alpha: DEFAULT_ALPHA,
            criteria_count: 1,
            tolerance: fledge_spec::Tolerance::default(),
        }
    }
}

/// Everything a judge needs to know about the criterion it judges, handed in on every
/// call so that the persisted judge state need not copy the spec.
#[derive(Debug, Clone, Copy)]
pub struct CriterionContext<'a> {
    /// The criterion, parsed.
    pub criterion: &'a Criterion,
    /// The unit its values are in (resolved from `metrics:` for custom metrics).
    pub unit: ValueUnit,
    /// The rollout's judge settings.
    pub settings: &'a JudgeSettings,
}

/// What happened between two consecutive observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickDelta {
    /// When the later observation was taken.
    pub at: Timestamp,
    /// Milliseconds between the two observations.
    pub window_ms: u64,
    /// The stable arm's increase.
    pub stable: ArmCounters,
    /// The canary arm's increase.
    pub canary: ArmCounters,
    /// The custom metrics of the later observation (values, not increases: the metric
    /// source evaluates them).
    pub custom: BTreeMap<String, CustomValue>,
}

impl TickDelta {
    /// The increase from `earlier` (taken at `earlier_at`) to `later` (taken at `at`).
    /// A counter that went down is a reset, and counts from zero (as Prometheus'
    /// `increase` does). Each arm's errors are at most its requests.
    pub fn between(
        earlier: &Observation,
        earlier_at: Timestamp,
        later: &Observation,
        at: Timestamp,
    ) -> Self {
        // A tick cannot fail more requests than it served; a source whose error
        // counter runs ahead of its request counter is not trusted beyond that.
        let arm = |later: &ArmCounters, earlier: &ArmCounters| {
            let mut d = later.delta_since(earlier);
            d.errors = d.errors.min(d.requests);
            d
        };
        Self {
            at,
            window_ms: at.millis_since(earlier_at),
            stable: arm(&later.stable, &earlier.stable),
            canary: arm(&later.canary, &earlier.canary),
            custom: later.custom.clone(),
        }
    }
}

/// The per-criterion judge state, one variant per method. Persisted as part of the
/// rollout state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "camelCase")]
pub enum CriterionJudge {
    /// Compare the value over the stage's window with the bound.
    Threshold(ThresholdJudge),
    /// An anytime-valid sequential test on bad-event counts.
    Sequential(SequentialCriterionJudge),
}

// === impl CriterionJudge ===

impl CriterionJudge {
    /// A fresh judge for `ctx.criterion`, of the method the settings ask for.
    ///
    /// A criterion that is not about a fraction of bad requests (request rate, mean
    /// latency, custom gauges, `stable + x`) has no sequential form and is judged by
    /// threshold (which is always available).
    pub fn new(ctx: &CriterionContext<'_>) -> Self {
        match ctx.settings.method {
            JudgeMethod::Sequential => SequentialCriterionJudge::new(ctx).map_or_else(
                || CriterionJudge::Threshold(ThresholdJudge::default()),
                CriterionJudge::Sequential,
            ),
            JudgeMethod::Threshold => CriterionJudge::Threshold(ThresholdJudge::default()),
        }
    }

    /// Feeds one tick and returns the verdict with its evidence.
    pub fn update(&mut self, ctx: &CriterionContext<'_>, delta: &TickDelta) -> Evidence {
        match self {
            CriterionJudge::Threshold(j) => j.update(ctx, delta),
            CriterionJudge::Sequential(j) => j.update(ctx, delta),
        }
    }

    /// The verdict on what has been seen so far, without new data (for the analysis
    /// shown when a stage starts).
    pub fn assess(&self, ctx: &CriterionContext<'_>) -> Evidence {
        match self {
            CriterionJudge::Threshold(j) => j.assess(ctx),
            CriterionJudge::Sequential(j) => j.assess(ctx),
        }
    }

    /// The judge to use for the same criterion in the next stage.
    pub fn into_next_stage(self, ctx: &CriterionContext<'_>) -> Self {
        match self {
            CriterionJudge::Threshold(_) => CriterionJudge::new(ctx),
            // Evidence carries across weight steps: no reset, no re-spent alpha.
            s @ CriterionJudge::Sequential(_) => s,
        }
    }

    /// The method this judge implements.
    pub fn method(&self) -> JudgeMethod {
        match self {
            CriterionJudge::Threshold(_) => JudgeMethod::Threshold,
            CriterionJudge::Sequential(_) => JudgeMethod::Sequential,
        }
    }
}
