//! The sequential judge: anytime-valid tests of success criteria on live counters
//! (JUDGE.md §4).
//!
//! Each criterion that can be read as "the fraction of bad requests" becomes one
//! e-process from [`super::evalue`]:
//!
//! * an absolute bound (`error_rate < 0.5%`, `latency_p95 < 500ms`) becomes a
//!   [`ThresholdTest`] on the canary's bad fraction (bad = failed, or slower than
//!   500 ms with τ = 1 − 0.95);
//! * a comparison with stable (`error_rate < stable * 1.25`, `latency_p95 < stable *
//!   1.5`, or a default regression guard) becomes a [`RatioTest`] ("T3") on the
//!   canary's share of bad events, with bad = failed or slower than a bound `b` taken
//!   from the stable arm's own quantile, frozen once stable has served enough requests
//!   and snapped up to a histogram bucket bound so that counts are exact.
//!
//! **α budget.** The rollout's `α` is split evenly over the criteria (the union bound:
//! each test is anytime-valid at `α/m`, so P(any false abort, ever) ≤ α). Pass
//! evidence uses the same per-criterion level against its own null (canary at least
//! as bad as the bound), so P(any wrong pass evidence) ≤ α as well.
//!
//! The judge consumes cumulative [`Observation`]s and differences consecutive ones
//! itself, with Prometheus-style reset handling. The same counter stream always
//! yields the same decisions.

use fledge_spec::{Bound, CmpOp, Criterion, Metric, Tolerance};
use fledge_stats::{ArmCounters, LATENCY_BOUNDS_SECONDS, Observation, bucket_index};
use serde::{Deserialize, Serialize};

use super::evalue::{EvalueError, RatioTest, ThresholdTest};
use super::{CriterionContext, TickDelta};
use crate::evidence::{
    ArmSample, CriterionStatus as EvidenceStatus, Evidence, JudgeMethod, SequentialEvidence,
    ValueUnit, format_count,
};

/// Default tolerated canary/stable ratio of error rates for a comparative test.
pub const DEFAULT_ERROR_TOLERANCE: f64 = 1.25;

/// Default tolerated canary/stable ratio of slow-request rates for a comparative test.
pub const DEFAULT_LATENCY_TOLERANCE: f64 = 1.5;

/// Stable requests needed before a comparative latency bound is frozen: enough that
/// about 25 of them lie above the quantile (500 for a p95). The bound only defines
/// what "slow" means for both arms; validity needs it fixed before the ticks it
/// judges, not exact, so a quick, rough bound beats a late, precise one.
const MIN_TAIL_REQUESTS: f64 = 25.0;

/// Which requests count as bad for a criterion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BadEvent {
    /// Failed requests (5xx, or the upstream could not be reached).
    Errors,
    /// Requests slower than a fixed bound, in seconds (snapped up to the bucket
    /// ladder so the count is exact).
    SlowerThan {
        /// The bound in seconds.
        seconds: f64,
    },
    /// Requests slower than the stable arm's `quantile` (e.g. 0.95), measured once
    /// stable has served enough requests, then frozen.
    SlowerThanStableQuantile {
        /// The quantile of stable's latency, strictly between 0 and 1.
        quantile: f64,
    },
}

/// How a criterion's bad events are tested.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TestKind {
    /// The canary's bad fraction must stay at or below `tau`.
    Threshold {
        /// The bound on the bad fraction, strictly between 0 and 1.
        tau: f64,
    },
    /// The canary's bad rate must stay at or below `tolerance ×` stable's.
    Compare {
        /// The tolerated ratio `R ≥ 1`.
        tolerance: f64,
    },
}

/// One criterion in the form the sequential judge tests it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequentialCriterion {
    /// How the criterion is shown to people, e.g. `error_rate < 0.5%`.
    pub name: String,
    /// Which requests are bad.
    pub bad: BadEvent,
    /// How they are tested.
    pub test: TestKind,
}

impl SequentialCriterion {
    /// `error_rate < tau` (a fraction, e.g. 0.005).
    pub fn error_rate_below(tau: f64) -> Self {
        Self {
            name: format!("error_rate < {}%", tau * 100.0),
            bad: BadEvent::Errors,
            test: TestKind::Threshold { tau },
        }
    }

    /// `latency_pQ < seconds`: at most a fraction `1 − quantile` slower than the bound.
    pub fn latency_quantile_below(quantile: f64, seconds: f64) -> Self {
        Self {
            name: format!(
                "latency_p{} < {}ms",
                quantile_label(quantile),
                seconds * 1000.0
            ),
            bad: BadEvent::SlowerThan { seconds },
            test: TestKind::Threshold {
                tau: 1.0 - quantile,
            },
        }
    }

    /// `error_rate < stable * tolerance`.
    pub fn errors_compared(tolerance: f64) -> Self {
        Self {
            name: format!("error_rate < stable * {tolerance}"),
            bad: BadEvent::Errors,
            test: TestKind::Compare { tolerance },
        }
    }

    /// `latency_pQ < stable * tolerance`, tested as the share of requests slower than
    /// stable's frozen quantile.
    pub fn latency_compared(quantile: f64, tolerance: f64) -> Self {
        Self {
            name: format!(
                "latency_p{} < stable * {tolerance}",
                quantile_label(quantile)
            ),
            bad: BadEvent::SlowerThanStableQuantile { quantile },
            test: TestKind::Compare { tolerance },
        }
    }
}

/// The criteria language's name of a quantile: 0.5 → "50", 0.95 → "95", 0.999 → "999".
fn quantile_label(q: f64) -> String {
    let pct = q * 100.0;
    if (pct - pct.round()).abs() < 1e-9 {
        format!("{}", pct.round())
    } else {
        format!("{}", (q * 1000.0).round())
    }
}

/// An error in the configuration of the sequential judge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SequentialError {
    /// A criterion's test parameters are out of range.
    #[error("criterion `{criterion}`: {source}")]
    Parameter {
        /// The criterion's name.
        criterion: String,
        /// What was wrong.
        #[source]
        source: EvalueError,
    },
    /// A latency bound or quantile is out of range.
    #[error("criterion `{criterion}`: {what} must be {expected}, found {found}")]
    Latency {
        /// The criterion's name.
        criterion: String,
        /// Which value.
        what: &'static str,
        /// The accepted range.
        expected: &'static str,
        /// The value found.
        found: f64,
    },
    /// The overall false-abort budget is out of range.
    #[error("analysis alpha must be strictly between 0 and 1, found {0}")]
    Alpha(f64),
    /// Nothing to test.
    #[error("the sequential judge needs at least one criterion")]
    NoCriteria,
}

/// Where one criterion stands after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CriterionStatus {
    /// Not enough evidence either way (yet).
    Pending,
    /// Evidence that the criterion holds reached its threshold (it stays reached:
    /// an e-process that crossed `1/α` once is valid evidence from then on).
    Passing,
    /// Evidence that the criterion is violated reached its threshold.
    Failing,
}

/// Bad and total request counts of one arm, cumulative since the judge started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmCounts {
    /// Bad events (failed, or slower than the bound).
    pub bad: u64,
    /// Requests.
    pub total: u64,
}

/// The evidence behind one criterion's status: what an operator needs to read
/// "E = 37 ≥ 20 (α = 0.025)".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CriterionEvidence {
    /// The criterion, as written.
    pub criterion: String,
    /// `threshold` or `compare`.
    pub mode: &'static str,
    /// Where it stands.
    pub status: CriterionStatus,
    /// This criterion's share of the false-abort budget.
    pub alpha: f64,
    /// The e-value an abort (or pass) needs: `1/alpha`.
    pub threshold: f64,
    /// Current e-value of the abort test.
    pub e_abort: f64,
    /// Current e-value of the pass (threshold) or non-inferiority (compare) test.
    pub e_pass: f64,
    /// Anytime-valid p-value of "the criterion holds".
    pub p_value: f64,
    /// The canary's counts.
    pub canary: ArmCounts,
    /// Stable's counts (comparative tests only).
    pub stable: Option<ArmCounts>,
    /// Threshold mode: the bound τ on the bad fraction. Compare mode: the tolerated
    /// ratio R.
    pub bound: f64,
    /// Compare mode: the canary/stable ratio of bad rates, posterior-weighted over
    /// the alternatives (meaningful once the canary looks worse); threshold mode: the
    /// canary's bad fraction, likewise.
    pub estimate: Option<f64>,
    /// Compare mode: the plain ratio of cumulative bad rates, when defined.
    pub observed_ratio: Option<f64>,
    /// Compare mode: a lower confidence bound (level `1 − alpha`, valid at all
    /// times) on the canary/stable ratio of bad rates, once above 1.
    pub ratio_lower_bound: Option<f64>,
    /// The latency bound in seconds that defines "slow", once known.
    pub latency_bound_seconds: Option<f64>,
}

/// The outcome of one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SequentialDecision {
    /// A criterion is violated with enough evidence: roll back. Holds the index of
    /// the first failing criterion.
    Abort {
        /// Index into the judge's criteria.
        criterion: usize,
    },
    /// Every criterion has pass evidence: the canary may advance early.
    Pass,
    /// Keep watching.
    Continue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Test {
    Threshold(ThresholdTest),
    Ratio(RatioTest),
}

/// The e-process of one criterion, with the bad-event definition it counts: the
/// persisted state of one sequentially judged criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionTest {
    spec: SequentialCriterion,
    test: Test,
    /// The latency bound, snapped to the ladder (fixed or, once frozen, stable's).
    bound: Option<f64>,
    status: CriterionStatus,
    /// Stable requests seen while waiting to freeze a stable-quantile bound.
    warmup: ArmCounters,
}

/// The per-rollout sequential judge: one e-process per criterion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialJudge {
    alpha: f64,
    per_criterion_alpha: f64,
    log_threshold: f64,
    criteria: Vec<CriterionTest>,
    last: Option<Observation>,
}

/// Snaps a latency (seconds) up to the bucket bound that holds it.
fn snap(seconds: f64) -> f64 {
    let i = bucket_index(seconds).min(LATENCY_BOUNDS_SECONDS.len() - 1);
    LATENCY_BOUNDS_SECONDS[i]
}

// === impl SequentialJudge ===

impl SequentialJudge {
    /// A judge for `criteria`, with a total false-abort budget `alpha` split evenly.
    pub fn new(criteria: Vec<SequentialCriterion>, alpha: f64) -> Result<Self, SequentialError> {
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(SequentialError::Alpha(alpha));
        }
        if criteria.is_empty() {
            return Err(SequentialError::NoCriteria);
        }
        let per = alpha / criteria.len() as f64;
        let states = criteria
            .into_iter()
            .map(CriterionTest::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            alpha,
            per_criterion_alpha: per,
            log_threshold: (1.0 / per).ln(),
            criteria: states,
            last: None,
        })
    }

    /// The total false-abort budget.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Each criterion's share of the budget (`alpha / number of criteria`).
    pub fn criterion_alpha(&self) -> f64 {
        self.per_criterion_alpha
    }

    /// Takes the next cumulative observation and updates every test with the
    /// increase since the previous one (the first observation only sets the origin).
    pub fn observe(&mut self, obs: &Observation) -> SequentialDecision {
        if let Some(last) = &self.last {
            let canary = obs.canary.delta_since(&last.canary);
            let stable = obs.stable.delta_since(&last.stable);
            for c in &mut self.criteria {
                c.update(&canary, &stable, self.log_threshold);
            }
        }
        self.last = Some(obs.clone());
        self.decision()
    }

    /// Takes one tick's increments directly (what [`Self::observe`] computes).
    pub fn observe_delta(
        &mut self,
        canary: &ArmCounters,
        stable: &ArmCounters,
    ) -> SequentialDecision {
        for c in &mut self.criteria {
            c.update(canary, stable, self.log_threshold);
        }
        self.decision()
    }

    /// The decision as of the last tick.
    pub fn decision(&self) -> SequentialDecision {
        if let Some(i) = self
            .criteria
            .iter()
            .position(|c| c.status == CriterionStatus::Failing)
        {
            return SequentialDecision::Abort { criterion: i };
        }
        if self
            .criteria
            .iter()
            .all(|c| c.status == CriterionStatus::Passing)
        {
            return SequentialDecision::Pass;
        }
        SequentialDecision::Continue
    }

    /// The evidence of every criterion, in order.
    pub fn evidence(&self) -> Vec<CriterionEvidence> {
        self.criteria
            .iter()
            .map(|c| c.evidence(self.per_criterion_alpha))
            .collect()
    }
}

// === impl CriterionTest ===

impl CriterionTest {
    /// A fresh test of `spec`.
    pub fn new(spec: SequentialCriterion) -> Result<Self, SequentialError> {
        let param = |source| SequentialError::Parameter {
            criterion: spec.name.clone(),
            source,
        };
        let test = match spec.test {
            TestKind::Threshold { tau } => Test::Threshold(ThresholdTest::new(tau).map_err(param)?),
            TestKind::Compare { tolerance } => {
                Test::Ratio(RatioTest::new(tolerance).map_err(param)?)
            }
        };
        let bound = match spec.bad {
            BadEvent::Errors => None,
            BadEvent::SlowerThan { seconds } => {
                if !(seconds.is_finite() && seconds > 0.0) {
                    return Err(SequentialError::Latency {
                        criterion: spec.name.clone(),
                        what: "the latency bound",
                        expected: "a positive number of seconds",
                        found: seconds,
                    });
                }
                Some(snap(seconds))
            }
            BadEvent::SlowerThanStableQuantile { quantile } => {
                if !(quantile > 0.0 && quantile < 1.0) {
                    return Err(SequentialError::Latency {
                        criterion: spec.name.clone(),
                        what: "the latency quantile",
                        expected: "strictly between 0 and 1",
                        found: quantile,
                    });
                }
                None
            }
        };
        Ok(Self {
            spec,
            test,
            bound,
            status: CriterionStatus::Pending,
            warmup: ArmCounters::default(),
        })
    }

    /// Counts (bad, total) of one arm's increment, or `None` while the bad events
    /// cannot be counted yet (a stable-quantile bound not frozen).
    fn counts(&self, arm: &ArmCounters) -> Option<(u64, u64)> {
        match self.spec.bad {
            BadEvent::Errors => Some((arm.errors, arm.requests)),
            BadEvent::SlowerThan { .. } | BadEvent::SlowerThanStableQuantile { .. } => {
                let b = self.bound?;
                // Latency counts come from the histogram so both sides agree.
                Some((arm.latency.count_above(b), arm.latency.total()))
            }
        }
    }

    /// Adds one tick's increments of both arms; `log_threshold` is `ln(1/α_m)` for
    /// this criterion's share `α_m` of the budget.
    pub fn update(&mut self, canary: &ArmCounters, stable: &ArmCounters, log_threshold: f64) {
        if let BadEvent::SlowerThanStableQuantile { quantile } = self.spec.bad
            && self.bound.is_none()
        {
            // Freeze b from stable data seen *before* this tick, so the tick that
            // sets the bound is not also tested against it.
            let needed = MIN_TAIL_REQUESTS / (1.0 - quantile);
            if self.warmup.latency.total() as f64 >= needed
                && let Some(q) = self.warmup.latency.quantile(quantile)
            {
                self.bound = Some(snap(q));
                self.warmup = ArmCounters::default();
            } else {
                self.warmup.latency.merge(&stable.latency);
                return;
            }
        }
        let Some((cb, cn)) = self.counts(canary) else {
            return;
        };
        let (sb, sn) = self.counts(stable).unwrap_or((0, 0));
        match &mut self.test {
            Test::Threshold(t) => t.update(cn, cb),
            Test::Ratio(t) => t.update(cn, cb, sn, sb),
        }
        let (log_abort, log_pass) = match &self.test {
            Test::Threshold(t) => (t.log_abort(), t.log_pass()),
            Test::Ratio(t) => (t.log_abort(), t.log_pass()),
        };
        // Failing is final. Pass evidence, once reached, is kept unless abort
        // evidence later appears (an e-process may cross 1/α and drift back; the
        // crossing is what Ville's bound is about).
        if log_abort >= log_threshold {
            self.status = CriterionStatus::Failing;
        } else if self.status == CriterionStatus::Pending && log_pass >= log_threshold {
            self.status = CriterionStatus::Passing;
        }
    }

    /// Where the criterion stands.
    pub fn status(&self) -> CriterionStatus {
        self.status
    }

    /// The criterion under test.
    pub fn criterion(&self) -> &SequentialCriterion {
        &self.spec
    }

    /// The evidence so far, reported against this criterion's share `alpha`.
    pub fn evidence(&self, alpha: f64) -> CriterionEvidence {
        let lower = match &self.test {
            Test::Ratio(t) => t.ratio_lower_bound((1.0 / alpha).ln()),
            Test::Threshold(_) => None,
        };
        let (mode, e_abort, e_pass, p_value, canary, stable, bound, estimate, observed_ratio) =
            match &self.test {
                Test::Threshold(t) => (
                    "threshold",
                    t.log_abort().exp(),
                    t.log_pass().exp(),
                    t.p_value(),
                    ArmCounts {
                        bad: t.bad(),
                        total: t.total(),
                    },
                    None,
                    t.tau(),
                    (t.total() > 0).then(|| {
                        if t.log_abort() >= t.log_pass() {
                            t.abort_estimate()
                        } else {
                            t.pass_estimate()
                        }
                    }),
                    None,
                ),
                Test::Ratio(t) => {
                    let (cb, cn) = t.canary();
                    let (sb, sn) = t.stable();
                    (
                        "compare",
                        t.log_abort().exp(),
                        t.log_pass().exp(),
                        t.p_value(),
                        ArmCounts { bad: cb, total: cn },
                        Some(ArmCounts { bad: sb, total: sn }),
                        t.tolerance(),
                        (cb + sb > 0).then(|| t.posterior_ratio()),
                        t.naive_ratio(),
                    )
                }
            };
        CriterionEvidence {
            criterion: self.spec.name.clone(),
            mode,
            status: self.status,
            alpha,
            threshold: 1.0 / alpha,
            e_abort,
            e_pass,
            p_value,
            canary,
            stable,
            bound,
            estimate,
            observed_ratio,
            ratio_lower_bound: lower,
            latency_bound_seconds: self.bound,
        }
    }
}

// === Spec criteria ===

/// The sequential form of a spec criterion, or `None` when it is not a statement
/// about a fraction of bad requests (request rate, mean latency, custom gauges,
/// `stable + x` offsets, `>` on an error rate…): those are judged by threshold.
///
/// * `error_rate < x`, `success_rate > 1 − x` → threshold test on errors, τ = x;
/// * `latency_pQ < L` → threshold test on "slower than L", τ = 1 − Q;
/// * `error_rate < stable * k` → comparative test on errors, R = max(k, `errors`);
/// * `latency_pQ < stable * k` → comparative test on "slower than stable's pQ",
///   R = max(k, `latency`), with the tolerances of `analysis.tolerance`.
pub fn sequential_form(
    criterion: &Criterion,
    tolerance: &Tolerance,
) -> Option<SequentialCriterion> {
    let below = matches!(criterion.op, CmpOp::Lt | CmpOp::Le);
    let above = matches!(criterion.op, CmpOp::Gt | CmpOp::Ge);
    let fraction = |x: f64| x > 0.0 && x < 1.0;
    let (bad, test) = match (&criterion.metric, criterion.bound) {
        (Metric::ErrorRate, Bound::Absolute(t)) if below && fraction(t) => {
            (BadEvent::Errors, TestKind::Threshold { tau: t })
        }
        (Metric::SuccessRate, Bound::Absolute(s)) if above && fraction(s) => {
            (BadEvent::Errors, TestKind::Threshold { tau: 1.0 - s })
        }
        (Metric::Latency { quantile }, Bound::Absolute(l))
            if below && fraction(*quantile) && l.is_finite() && l > 0.0 =>
        {
            (
                BadEvent::SlowerThan { seconds: l },
                TestKind::Threshold {
                    tau: 1.0 - quantile,
                },
            )
        }
        (Metric::ErrorRate, Bound::StableTimes(k)) if below && k.is_finite() && k > 0.0 => (
            BadEvent::Errors,
            TestKind::Compare {
                tolerance: k.max(tolerance.errors).max(1.0),
            },
        ),
        (Metric::Latency { quantile }, Bound::StableTimes(k))
            if below && fraction(*quantile) && k.is_finite() && k > 0.0 =>
        {
            (
                BadEvent::SlowerThanStableQuantile {
                    quantile: *quantile,
                },
                TestKind::Compare {
                    tolerance: k.max(tolerance.latency).max(1.0),
                },
            )
        }
        _ => return None,
    };
    Some(SequentialCriterion {
        name: criterion.source.clone(),
        bad,
        test,
    })
}

/// The sequential judge of one spec criterion: the state
/// [`CriterionJudge::Sequential`](super::CriterionJudge) holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SequentialCriterionJudge {
    /// The e-process and its bad-event definition.
    test: CriterionTest,
    /// The canary's counters since the judge started (for the values shown).
    canary: ArmCounters,
    /// Stable's counters over the same ticks.
    stable: ArmCounters,
}

// === impl SequentialCriterionJudge ===

impl SequentialCriterionJudge {
    /// A judge for `ctx.criterion`, or `None` when the criterion has no sequential
    /// form (see [`sequential_form`]).
    pub fn new(ctx: &CriterionContext<'_>) -> Option<Self> {
        let form = sequential_form(ctx.criterion, &ctx.settings.tolerance)?;
        let test = CriterionTest::new(form).ok()?;
        Some(Self {
            test,
            canary: ArmCounters::default(),
            stable: ArmCounters::default(),
        })
    }

    /// This criterion's share of the rollout's false-abort budget.
    fn alpha(ctx: &CriterionContext<'_>) -> f64 {
        ctx.settings.alpha / ctx.settings.criteria_count.max(1) as f64
    }

    /// Feeds one tick and returns the verdict with its evidence.
    pub fn update(&mut self, ctx: &CriterionContext<'_>, delta: &TickDelta) -> Evidence {
        let alpha = Self::alpha(ctx);
        self.test
            .update(&delta.canary, &delta.stable, (1.0 / alpha).ln());
        add(&mut self.canary, &delta.canary);
        add(&mut self.stable, &delta.stable);
        self.assess(ctx)
    }

    /// The verdict on what has been seen so far.
    pub fn assess(&self, ctx: &CriterionContext<'_>) -> Evidence {
        let criterion = ctx.criterion;
        let alpha = Self::alpha(ctx);
        let ev = self.test.evidence(alpha);
        let compare = ev.stable.is_some();
        let canary = sample(&criterion.metric, &self.canary, ev.canary.bad);
        let stable = sample(
            &criterion.metric,
            &self.stable,
            ev.stable.map_or(0, |s| s.bad),
        );
        let min = ctx.settings.min_requests;
        // Sample sizes as the test counted them: a latency criterion over a source
        // without histograms has requests but nothing judged.
        let (canary_n, stable_n) = (ev.canary.total, ev.stable.map_or(0, |s| s.total));
        let status = match ev.status {
            CriterionStatus::Failing => EvidenceStatus::Fail,
            CriterionStatus::Passing if canary_n >= min => EvidenceStatus::Pass,
            _ if canary_n < min || (compare && stable_n < min) => EvidenceStatus::NotEnoughData,
            _ => EvidenceStatus::Undecided,
        };
        let threshold = criterion
            .bound
            .threshold(stable.value)
            .filter(|t| t.is_finite());
        let e_abort = finite(ev.e_abort);
        let e_pass = finite(ev.e_pass);
        let mut summary = format!(
            "{} {} (n={})",
            criterion.metric,
            canary
                .value
                .map_or_else(|| "no data".to_string(), |v| ctx.unit.format(v)),
            format_count(canary.requests),
        );
        if compare {
            summary.push_str(&format!(
                " vs stable {} (n={})",
                stable
                    .value
                    .map_or_else(|| "no data".to_string(), |v| ctx.unit.format(v)),
                format_count(stable.requests),
            ));
        }
        let (shown_e, word) = match status {
            EvidenceStatus::Pass => (e_pass, "pass evidence"),
            _ => (e_abort, "abort evidence"),
        };
        summary.push_str(&format!(
            ": {word} E = {} {} {} (α = {})",
            trim3(shown_e),
            if shown_e >= ev.threshold { "≥" } else { "<" },
            trim3(ev.threshold),
            trim3(alpha),
        ));
        if let (true, Some(r)) = (compare, ev.observed_ratio) {
            summary.push_str(&format!(
                ", canary/stable {} ≈ {}× (tolerated {}×)",
                if ev.latency_bound_seconds.is_some() {
                    "slow share"
                } else {
                    "error rate"
                },
                trim3(r),
                trim3(ev.bound)
            ));
        }
        if let Some(lb) = ev.ratio_lower_bound {
            summary.push_str(&format!(
                ", at least {}× stable with {}% confidence",
                trim3(lb),
                trim3(100.0 * (1.0 - alpha))
            ));
        }
        if let Some(b) = ev.latency_bound_seconds {
            summary.push_str(&format!(", slow = over {}", ValueUnit::Seconds.format(b)));
        }
        Evidence {
            criterion: criterion.source.clone(),
            metric: criterion.metric.to_string(),
            method: JudgeMethod::Sequential,
            status,
            unit: ctx.unit,
            canary,
            stable: (compare || self.stable.requests > 0).then_some(stable),
            threshold,
            min_requests: min,
            sequential: Some(SequentialEvidence {
                e_value: e_abort,
                e_threshold: finite(ev.threshold),
                alpha,
                pass_e_value: Some(e_pass),
                ratio_estimate: if compare {
                    ev.observed_ratio.or(ev.estimate).map(finite)
                } else {
                    ev.estimate.map(|p| finite(p / ev.bound))
                },
                tolerance: compare.then_some(ev.bound),
            }),
            summary,
        }
    }

    /// The e-process state (for inspection and tests).
    pub fn test(&self) -> &CriterionTest {
        &self.test
    }
}

/// An e-value clamped into what JSON can hold.
fn finite(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, f64::MAX)
    }
}

/// Three significant digits, for summaries.
fn trim3(x: f64) -> String {
    if !x.is_finite() || x.abs() >= 1e6 {
        return format!("{x:.2e}");
    }
    ValueUnit::Plain.format(x)
}

fn add(total: &mut ArmCounters, delta: &ArmCounters) {
    total.requests = total.requests.saturating_add(delta.requests);
    total.errors = total.errors.saturating_add(delta.errors);
    total.latency.merge(&delta.latency);
}

/// The metric's value on one arm, with the bad-event count of the test.
fn sample(metric: &Metric, arm: &ArmCounters, bad: u64) -> ArmSample {
    let n = arm.requests;
    let rate = (n > 0).then(|| arm.errors.min(n) as f64 / n as f64);
    let value = match metric {
        Metric::ErrorRate => rate,
        Metric::SuccessRate => rate.map(|e| 1.0 - e),
        Metric::Latency { quantile } => arm.latency.quantile(*quantile),
        _ => None,
    };
    ArmSample {
        value,
        requests: n,
        bad: Some(bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(requests: u64, errors: u64) -> ArmCounters {
        ArmCounters {
            requests,
            errors,
            ..Default::default()
        }
    }

    fn obs(c: ArmCounters, s: ArmCounters) -> Observation {
        Observation {
            canary: c,
            stable: s,
            ..Default::default()
        }
    }

    #[test]
    fn names_quantiles_like_the_criteria_language() {
        assert_eq!(quantile_label(0.5), "50");
        assert_eq!(quantile_label(0.95), "95");
        assert_eq!(quantile_label(0.999), "999");
        assert_eq!(
            SequentialCriterion::latency_quantile_below(0.95, 0.5).name,
            "latency_p95 < 500ms"
        );
    }

    #[test]
    fn splits_alpha_evenly() {
        let j = SequentialJudge::new(
            vec![
                SequentialCriterion::errors_compared(1.25),
                SequentialCriterion::error_rate_below(0.005),
            ],
            0.05,
        )
        .unwrap();
        assert!((j.criterion_alpha() - 0.025).abs() < 1e-15);
        assert!(SequentialJudge::new(vec![], 0.05).is_err());
        assert!(
            SequentialJudge::new(vec![SequentialCriterion::error_rate_below(0.005)], 0.0).is_err()
        );
        assert!(
            SequentialJudge::new(vec![SequentialCriterion::error_rate_below(1.5)], 0.05).is_err()
        );
    }

    #[test]
    fn broken_canary_aborts_on_the_first_tick() {
        let mut j =
            SequentialJudge::new(vec![SequentialCriterion::errors_compared(1.0)], 0.05).unwrap();
        assert_eq!(
            j.observe(&obs(arm(0, 0), arm(0, 0))),
            SequentialDecision::Continue
        );
        let d = j.observe(&obs(arm(200, 200), arm(800, 1)));
        assert_eq!(d, SequentialDecision::Abort { criterion: 0 });
        let e = &j.evidence()[0];
        assert_eq!(
            e.canary,
            ArmCounts {
                bad: 200,
                total: 200
            }
        );
        assert_eq!(e.stable, Some(ArmCounts { bad: 1, total: 800 }));
        assert!(e.e_abort >= e.threshold);
        assert!(e.estimate.unwrap() > 100.0);
        assert_eq!(e.status, CriterionStatus::Failing);
    }

    #[test]
    fn counter_reset_is_not_evidence_of_anything_odd() {
        let mut j =
            SequentialJudge::new(vec![SequentialCriterion::error_rate_below(0.005)], 0.05).unwrap();
        j.observe(&obs(arm(1000, 0), arm(0, 0)));
        j.observe(&obs(arm(1200, 0), arm(0, 0)));
        // The canary restarted: its counters start again from 0.
        j.observe(&obs(arm(150, 0), arm(0, 0)));
        assert_eq!(j.evidence()[0].canary.total, 350);
    }

    #[test]
    fn clean_canary_gets_threshold_pass_evidence() {
        let mut j =
            SequentialJudge::new(vec![SequentialCriterion::error_rate_below(0.005)], 0.05).unwrap();
        let mut d = SequentialDecision::Continue;
        for t in 0..=10 {
            d = j.observe(&obs(arm(200 * t, 0), arm(0, 0)));
        }
        assert_eq!(d, SequentialDecision::Pass);
    }

    #[test]
    fn stable_quantile_bound_is_frozen_and_snapped() {
        let mut j =
            SequentialJudge::new(vec![SequentialCriterion::latency_compared(0.95, 1.5)], 0.05)
                .unwrap();
        let mut stable = ArmCounters::default();
        let mut canary = ArmCounters::default();
        j.observe(&obs(canary.clone(), stable.clone()));
        for k in 0..2 {
            for i in 0..1000 {
                // Stable latencies spread 1..=1000 ms: p95 ≈ 950 ms.
                let ms = (i % 1000 + 1) as f64;
                stable.requests += 1;
                stable.latency.record(ms / 1000.0);
                if i % 4 == 0 {
                    canary.requests += 1;
                    canary.latency.record(2.0);
                }
            }
            let d = j.observe(&obs(canary.clone(), stable.clone()));
            if k == 0 {
                // The first tick only freezes the bound.
                assert_eq!(d, SequentialDecision::Continue);
            } else {
                assert_eq!(d, SequentialDecision::Abort { criterion: 0 });
            }
        }
        let e = &j.evidence()[0];
        let b = e.latency_bound_seconds.unwrap();
        assert!(LATENCY_BOUNDS_SECONDS.contains(&b));
        assert!((0.9..=1.0).contains(&b), "bound {b}");
        assert_eq!(
            e.canary,
            ArmCounts {
                bad: 250,
                total: 250
            }
        );
    }

    fn form(text: &str) -> Option<SequentialCriterion> {
        sequential_form(&Criterion::parse(text).unwrap(), &Tolerance::default())
    }

    #[test]
    fn maps_spec_criteria_onto_tests() {
        let e = form("error_rate < 0.5%").unwrap();
        assert_eq!(e.bad, BadEvent::Errors);
        assert_eq!(e.test, TestKind::Threshold { tau: 0.005 });
        let s = form("success_rate >= 99%").unwrap();
        assert!(matches!(s.test, TestKind::Threshold { tau } if (tau - 0.01).abs() < 1e-12));
        let l = form("latency_p95 < 500ms").unwrap();
        assert_eq!(l.bad, BadEvent::SlowerThan { seconds: 0.5 });
        assert!(matches!(l.test, TestKind::Threshold { tau } if (tau - 0.05).abs() < 1e-12));
        // R = max(factor, tolerance).
        let c = form("error_rate < stable * 1.1").unwrap();
        assert_eq!(c.test, TestKind::Compare { tolerance: 1.25 });
        let c = form("error_rate < stable * 2").unwrap();
        assert_eq!(c.test, TestKind::Compare { tolerance: 2.0 });
        let c = form("latency_p99 < stable * 1.2").unwrap();
        assert_eq!(c.bad, BadEvent::SlowerThanStableQuantile { quantile: 0.99 });
        assert_eq!(c.test, TestKind::Compare { tolerance: 1.5 });
        // Not about a fraction of bad requests: judged by threshold.
        assert_eq!(form("request_rate > 10rps"), None);
        assert_eq!(form("latency_mean < 200ms"), None);
        assert_eq!(form("error_rate <= stable + 0.1%"), None);
        assert_eq!(form("error_rate > 1%"), None);
    }

    #[test]
    fn spec_judge_reports_its_evidence() {
        use crate::judge::{CriterionJudge, JudgeSettings};
        let criterion = Criterion::parse("error_rate < stable * 1.25").unwrap();
        let settings = JudgeSettings {
            method: JudgeMethod::Sequential,
            criteria_count: 2,
            ..JudgeSettings::default()
        };
        let ctx = CriterionContext {
            criterion: &criterion,
            unit: ValueUnit::Ratio,
            settings: &settings,
        };
        let mut j = CriterionJudge::new(&ctx);
        assert_eq!(j.method(), JudgeMethod::Sequential);
        let delta = TickDelta {
            canary: arm(200, 0),
            stable: arm(800, 1),
            ..Default::default()
        };
        let e = j.update(&ctx, &delta);
        assert_eq!(e.status, EvidenceStatus::Undecided);
        let delta = TickDelta {
            canary: arm(200, 30),
            stable: arm(800, 1),
            ..Default::default()
        };
        let e = j.update(&ctx, &delta);
        assert_eq!(e.status, EvidenceStatus::Fail, "{}", e.summary);
        let seq = e.sequential.as_ref().unwrap();
        assert!((seq.alpha - 0.025).abs() < 1e-15);
        assert!((seq.e_threshold - 40.0).abs() < 1e-9);
        assert!(seq.e_value >= 40.0);
        assert_eq!(seq.tolerance, Some(1.25));
        assert_eq!(e.canary.requests, 400);
        assert_eq!(e.canary.bad, Some(30));
        assert_eq!(e.stable.as_ref().unwrap().bad, Some(2));
        assert!(e.summary.contains("abort evidence E = "), "{}", e.summary);
        assert!(
            e.summary.contains("stable with 97.5% confidence"),
            "{}",
            e.summary
        );
        // The state survives a JSON round trip (serde_json parses floats to within
        // one ulp, so compare what is decided, not the bits).
        let json = serde_json::to_string(&j).unwrap();
        let mut back: CriterionJudge = serde_json::from_str(&json).unwrap();
        let (a, b) = (back.update(&ctx, &delta), j.clone().update(&ctx, &delta));
        assert_eq!(a.status, b.status);
        let (sa, sb) = (a.sequential.unwrap(), b.sequential.unwrap());
        assert!((sa.e_value / sb.e_value - 1.0).abs() < 1e-9);
        // And carries into the next stage.
        assert_eq!(j.clone().into_next_stage(&ctx), j);
    }
}
