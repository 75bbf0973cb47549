//! A seeded simulator that runs a canary judge (or the whole engine) in virtual time
//! against simulated traffic (JUDGE.md §5).
//!
//! The world ([`world`]) draws, per step of virtual time, Poisson arrivals (optionally
//! diurnal), per-request Binomial routing to the canary (optionally with a realized
//! share that differs from the weight), Binomial failures per arm (with a regression,
//! shared error bursts and per-pod heterogeneity) and lognormal latencies as
//! multinomial counts on the fledge bucket ladder. A telemetry model then decides what
//! the judge sees: a scrape every `scrape` seconds, `lag` seconds late, sometimes
//! dropped, with canary counter resets; and when the judge changes the canary weight
//! (an abort sets it to 0) the change takes effect `actuation` seconds later.
//!
//! Whatever decides implements [`Controller`]: the fledge sequential judge
//! ([`JudgeController`]), the baselines in [`crate::baseline`], or the rollout state
//! machine itself. Every run yields a [`RunResult`]; [`stats`] aggregates them.

pub mod engine;
pub mod stats;
pub mod world;

use std::collections::VecDeque;

use fledge_stats::Observation;
use serde::{Deserialize, Serialize};

use crate::judge::sequential::{SequentialDecision, SequentialJudge};
use world::World;

pub use engine::EngineController;
pub use stats::{Summary, summarize};

/// Traffic that swings around its mean: `λ(t) = λ0·(1 + A·sin(2πt/P))`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diurnal {
    /// Relative amplitude `A` in [0, 1).
    pub amplitude: f64,
    /// Period `P` in seconds.
    pub period_seconds: f64,
}

/// A shared incident: both arms fail at `error_rate` for `duration_seconds` every
/// `every_seconds` (a dependency outage that is nobody's canary's fault).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Burst {
    /// Error rate of both arms during the burst.
    pub error_rate: f64,
    /// How long each burst lasts.
    pub duration_seconds: f64,
    /// Time between burst starts.
    pub every_seconds: f64,
}

/// Lognormal latencies of both arms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencyModel {
    /// Stable's p95 in seconds.
    pub stable_p95_seconds: f64,
    /// Shape σ of the lognormal (0.5 is typical of web services).
    pub sigma: f64,
    /// Canary's latency scale relative to stable (p95 × factor).
    pub canary_factor: f64,
}

impl LatencyModel {
    /// A typical web service (stable's p95 at 250 ms, σ = 0.5) with a canary
    /// `canary_factor` times as slow.
    pub fn typical(canary_factor: f64) -> Self {
        Self {
            stable_p95_seconds: 0.25,
            sigma: 0.5,
            canary_factor,
        }
    }
}

/// What the judge sees of the world, and how fast its decisions act.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Telemetry {
    /// Seconds between scrapes (the judge is called once per scrape).
    pub scrape_seconds: f64,
    /// Seconds between the moment counters are read and the judge sees them.
    pub lag_seconds: f64,
    /// Seconds between a weight decision and the router applying it.
    pub actuation_seconds: f64,
    /// Probability that a scrape is lost.
    pub drop_probability: f64,
    /// The canary pod restarts (its counters reset) every this many seconds.
    pub canary_restart_seconds: Option<f64>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            scrape_seconds: 1.0,
            lag_seconds: 0.0,
            actuation_seconds: 0.0,
            drop_probability: 0.0,
            canary_restart_seconds: None,
        }
    }
}

/// One simulated situation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scenario {
    /// Mean total requests per second over both arms.
    pub rps: f64,
    /// Optional traffic swings.
    pub diurnal: Option<Diurnal>,
    /// The realized canary share is `weight × share_bias` (1 = unbiased random
    /// routing; 1.1 turns a 20% weight into 22%).
    pub share_bias: f64,
    /// Stable's error rate.
    pub stable_error_rate: f64,
    /// Canary's error rate (a regression is anything above stable's).
    pub canary_error_rate: f64,
    /// Per-pod heterogeneity: the canary's error rate is multiplied by a per-run
    /// LogNormal(0, σ) factor normalised to mean 1; 0 disables it.
    pub canary_pod_sigma: f64,
    /// Optional shared incidents.
    pub burst: Option<Burst>,
    /// Optional latency model (without one, histograms stay empty: faster).
    pub latency: Option<LatencyModel>,
    /// The telemetry model.
    pub telemetry: Telemetry,
    /// Seconds of stable-only traffic before the canary gets any (a pre-canary
    /// window from which comparative latency bounds are taken).
    pub warmup_seconds: f64,
    /// Seconds simulated after the warm-up (the horizon).
    pub duration_seconds: f64,
    /// Seconds per simulation step.
    pub step_seconds: f64,
}

impl Scenario {
    /// JUDGE.md's reference scenario S: 1 000 rps, stable at 0.1% errors, 1-s steps
    /// and scrapes, no lag or actuation delay, a 10-minute horizon. The canary has the
    /// stable error rate (healthy) until changed.
    pub fn reference() -> Self {
        Self {
            rps: 1000.0,
            diurnal: None,
            share_bias: 1.0,
            stable_error_rate: 0.001,
            canary_error_rate: 0.001,
            canary_pod_sigma: 0.0,
            burst: None,
            latency: None,
            telemetry: Telemetry::default(),
            warmup_seconds: 0.0,
            duration_seconds: 600.0,
            step_seconds: 1.0,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The canary was rolled back by the judge.
    Failed,
    /// The canary was promoted.
    Succeeded,
    /// The judge gave up without evidence either way.
    Inconclusive,
    /// The horizon was reached with no decision.
    Progressing,
}

impl Outcome {
    /// The name used in reports (the engine's phase names).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Failed => "Failed",
            Outcome::Succeeded => "Succeeded",
            Outcome::Inconclusive => "Inconclusive",
            Outcome::Progressing => "Progressing",
        }
    }
}

/// What a controller wants after looking at an observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Control {
    /// The canary weight to route (0–1).
    pub weight: f64,
    /// A final decision, if any.
    pub outcome: Option<Outcome>,
}

/// Anything that watches the counters and steers the canary: a judge, a baseline,
/// or the whole rollout engine.
pub trait Controller {
    /// The canary weight (0–1) once the canary is deployed, before any observation.
    fn initial_weight(&self) -> f64;

    /// The share (0–1) of stable's requests copied to the canary now (a dark
    /// canary): answered by it and counted as its requests, never seen by users.
    /// None by default.
    fn mirror(&self) -> f64 {
        0.0
    }

    /// Looks at a cumulative observation taken at virtual time `now_seconds` (from
    /// the start of the run) and says what to do.
    fn observe(&mut self, now_seconds: f64, obs: &Observation) -> Control;
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// The seed of the run.
    pub seed: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Seconds from the first canary traffic to the decision, for decided runs.
    pub decision_seconds: Option<f64>,
    /// Canary requests served to users until the canary stopped receiving traffic
    /// (or the horizon); copies of stable's requests (a dark stage) are not among
    /// them.
    pub canary_requests: u64,
    /// Of those, failed.
    pub canary_failed: u64,
}

/// Runs one seeded simulation of `sc` under `controller`.
pub fn run<C: Controller + ?Sized>(sc: &Scenario, controller: &mut C, seed: u64) -> RunResult {
    let dt = sc.step_seconds.max(1e-3);
    let to_steps = |s: f64| (s / dt).round().max(0.0) as u64;
    let warmup = to_steps(sc.warmup_seconds);
    let total = warmup + to_steps(sc.duration_seconds).max(1);
    let scrape = to_steps(sc.telemetry.scrape_seconds).max(1);
    let lag = to_steps(sc.telemetry.lag_seconds) as usize;
    let actuation = to_steps(sc.telemetry.actuation_seconds);
    let restart = sc
        .telemetry
        .canary_restart_seconds
        .map(|s| to_steps(s).max(1));

    let mut world = World::new(sc, seed);
    let (mut weight, mut mirror) = (0.0, 0.0);
    let mut requested = (controller.initial_weight(), controller.mirror());
    // Route changes in flight: (step from which it applies, (weight, mirror)).
    let mut pending: VecDeque<(u64, (f64, f64))> = VecDeque::new();
    pending.push_back((warmup, requested));
    // Snapshots as reported, the newest last, enough for the lag.
    let mut history: VecDeque<Observation> = VecDeque::with_capacity(lag + 1);
    let mut first_canary: Option<u64> = None;
    let mut decided: Option<(Outcome, u64)> = None;
    let (mut served, mut failed) = (0u64, 0u64);

    for k in 0..total {
        while pending.front().is_some_and(|&(at, _)| at <= k) {
            if let Some((_, route)) = pending.pop_front() {
                (weight, mirror) = route;
            }
        }
        if decided.is_some_and(|(o, _)| o != Outcome::Failed) {
            break;
        }
        if decided.is_some() && weight <= 0.0 && mirror <= 0.0 && pending.is_empty() {
            break;
        }
        if let Some(r) = restart
            && k > warmup
            && (k - warmup).is_multiple_of(r)
        {
            world.restart_canary();
        }
        let (w, m) = if k >= warmup {
            (weight, mirror)
        } else {
            (0.0, 0.0)
        };
        let c = world.step(k as f64 * dt, dt, w, m);
        if c.canary_requests + c.canary_copies > 0 && first_canary.is_none() {
            first_canary = Some(k);
        }
        served += c.canary_requests;
        failed += c.canary_errors;

        if history.len() > lag {
            history.pop_front();
        }
        history.push_back(Observation {
            stable: world.stable.clone(),
            canary: world.canary.clone(),
            custom: Default::default(),
        });
        if decided.is_some() || !(k + 1).is_multiple_of(scrape) || history.len() <= lag {
            continue;
        }
        if world.drop_scrape(sc.telemetry.drop_probability) {
            continue;
        }
        let now = (k + 1) as f64 * dt;
        let ctl = controller.observe(now, &history[0]);
        let mut next = (ctl.weight, controller.mirror());
        if let Some(o) = ctl.outcome {
            decided = Some((o, k + 1));
            if o == Outcome::Failed {
                next = (0.0, 0.0);
            }
        }
        if next != requested {
            requested = next;
            pending.push_back((k + 1 + actuation, next));
        }
    }

    let (outcome, decision_seconds) = match decided {
        Some((o, at)) => {
            let start = first_canary.unwrap_or(warmup);
            (o, Some(at.saturating_sub(start) as f64 * dt))
        }
        None => (Outcome::Progressing, None),
    };
    RunResult {
        seed,
        outcome,
        decision_seconds,
        canary_requests: served,
        canary_failed: failed,
    }
}

/// Runs `runs` seeded simulations (seeds `base_seed + i`), each with a fresh
/// controller from `make`, on up to `threads` threads. Results are in seed order and
/// do not depend on the number of threads.
pub fn run_many<C, F>(
    sc: &Scenario,
    make: F,
    base_seed: u64,
    runs: usize,
    threads: usize,
) -> Vec<RunResult>
where
    C: Controller,
    F: Fn() -> C + Sync,
{
    let threads = threads.clamp(1, runs.max(1));
    let chunk = runs.div_ceil(threads).max(1);
    let mut out: Vec<RunResult> = Vec::with_capacity(runs);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let make = &make;
                s.spawn(move || {
                    let lo = t * chunk;
                    let hi = ((t + 1) * chunk).min(runs);
                    (lo..hi)
                        .map(|i| {
                            let mut c = make();
                            run(sc, &mut c, base_seed.wrapping_add(i as u64))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    });
    out
}

/// The fledge sequential judge as a controller: the canary weight is held, the
/// rollout fails as soon as a criterion has abort evidence, and (when
/// `promote_on_pass`) succeeds once every criterion has pass evidence.
#[derive(Debug, Clone)]
pub struct JudgeController {
    /// The judge.
    pub judge: SequentialJudge,
    /// The canary weight to hold (0–1).
    pub weight: f64,
    /// Succeed on pass evidence instead of holding until the horizon.
    pub promote_on_pass: bool,
    started: bool,
}

impl JudgeController {
    /// Holds `weight` and fails on the first abort evidence of `judge`.
    pub fn new(judge: SequentialJudge, weight: f64) -> Self {
        Self {
            judge,
            weight,
            promote_on_pass: false,
            started: false,
        }
    }
}

impl Controller for JudgeController {
    fn initial_weight(&self) -> f64 {
        self.weight
    }

    fn observe(&mut self, _now: f64, obs: &Observation) -> Control {
        if !self.started {
            // The simulated counters start at zero with the run: that is the origin
            // of the first increment.
            self.started = true;
            self.judge.observe(&Observation::default());
        }
        let outcome = match self.judge.observe(obs) {
            SequentialDecision::Abort { .. } => Some(Outcome::Failed),
            SequentialDecision::Pass if self.promote_on_pass => Some(Outcome::Succeeded),
            _ => None,
        };
        Control {
            weight: self.weight,
            outcome,
        }
    }
}
