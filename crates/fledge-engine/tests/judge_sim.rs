//! The sequential judge in the seeded simulator: pinned-seed regression values and
//! statistical assertions with slack at small run counts (JUDGE.md §5.9). The full
//! matrix at 1 000 runs is `cargo bench -p fledge-engine --bench judge`.

use fledge_engine::baseline::{Argo, Flagger};
use fledge_engine::judge::sequential::{SequentialCriterion, SequentialJudge};
use fledge_engine::sim::{
    EngineController, JudgeController, LatencyModel, Outcome, RunResult, Scenario, Telemetry, run,
    run_many, summarize,
};

const ALPHA: f64 = 0.05;

fn t3(r: f64) -> JudgeController {
    JudgeController::new(
        SequentialJudge::new(vec![SequentialCriterion::errors_compared(r)], ALPHA).unwrap(),
        0.2,
    )
}

fn errors(rate: f64, seconds: f64) -> Scenario {
    let mut s = Scenario::reference();
    s.canary_error_rate = rate;
    s.duration_seconds = seconds;
    s
}

fn pinned(r: &RunResult) -> (Outcome, Option<f64>, u64, u64) {
    (
        r.outcome,
        r.decision_seconds,
        r.canary_requests,
        r.canary_failed,
    )
}

#[test]
fn same_seed_gives_the_same_run() {
    let sc = errors(0.002, 600.0);
    let a = run(&sc, &mut t3(1.0), 42);
    let b = run(&sc, &mut t3(1.0), 42);
    assert_eq!(a, b);
    // Results do not depend on the number of threads.
    let one = run_many(&sc, || t3(1.0), 7, 6, 1);
    let two = run_many(&sc, || t3(1.0), 7, 6, 2);
    assert_eq!(one, two);
}

#[test]
fn pinned_seed_regression_values() {
    // Exact values for fixed seeds: any change to the simulator's streams or to the
    // judge's arithmetic shows up here. Update only on purpose.
    let got = [
        pinned(&run(&errors(1.0, 60.0), &mut t3(1.0), 1)),
        pinned(&run(&errors(0.01, 120.0), &mut t3(1.0), 2)),
        pinned(&run(&errors(0.002, 600.0), &mut t3(1.0), 3)),
        pinned(&run(&errors(0.001, 300.0), &mut t3(1.0), 4)),
        pinned(&run(&errors(0.05, 600.0), &mut Flagger::default_at(0.2), 5)),
        pinned(&run(&errors(1.0, 1200.0), &mut Argo::documented_at(0.2), 6)),
    ];
    assert_eq!(got, PINNED);
}

const PINNED: [(Outcome, Option<f64>, u64, u64); 6] = [
    // T3, 100% errors: abort after the first 1-s tick.
    (Outcome::Failed, Some(1.0), 203, 203),
    // T3, 1% errors.
    (Outcome::Failed, Some(3.0), 548, 6),
    // T3, 0.2% errors (2×).
    (Outcome::Failed, Some(35.0), 6906, 16),
    // T3, healthy over 5 minutes.
    (Outcome::Progressing, None, 60144, 51),
    // Flagger default, 5% errors: rollback at the 6th check.
    (Outcome::Failed, Some(360.0), 72188, 3601),
    // Argo template, 100% errors: the 4th failed measurement.
    (Outcome::Failed, Some(901.0), 180561, 180561),
];

#[test]
fn healthy_canary_false_aborts_stay_within_alpha() {
    // 200 runs over 10 minutes: false aborts ≤ α + 3·SE.
    let runs = 200;
    let s = summarize(&run_many(&errors(0.001, 600.0), || t3(1.0), 1000, runs, 2));
    let se = (ALPHA * (1.0 - ALPHA) / runs as f64).sqrt();
    assert!(
        s.failed.value <= ALPHA + 3.0 * se,
        "false aborts {} over {runs} runs",
        s.failed.value
    );
}

#[test]
fn regressions_are_caught_within_the_goals() {
    // G1–G3 of JUDGE.md §4.8 at 200 runs: every run aborts, t95 and failed p95
    // under the goal.
    for (rate, seconds, failed) in [(1.0, 2.0, 450.0), (0.05, 2.0, 30.0), (0.01, 10.0, 15.0)] {
        let s = summarize(&run_many(&errors(rate, 120.0), || t3(1.0), 2000, 200, 2));
        let d = s.detection_seconds.unwrap();
        assert_eq!(s.failed.events, 200, "rate {rate}: not every run aborted");
        assert!(d.p95 <= seconds, "rate {rate}: t95 {} > {seconds}", d.p95);
        assert!(
            s.failed_requests.p95 <= failed,
            "rate {rate}: failed p95 {} > {failed}",
            s.failed_requests.p95
        );
    }
}

#[test]
fn a_faster_canary_is_never_aborted_and_a_slow_one_is() {
    let latency = |factor| {
        let mut s = Scenario::reference();
        s.latency = Some(LatencyModel::typical(factor));
        s.warmup_seconds = 30.0;
        s.duration_seconds = 120.0;
        s
    };
    let judge = || {
        JudgeController::new(
            SequentialJudge::new(
                vec![SequentialCriterion::latency_compared(0.95, 1.5)],
                ALPHA,
            )
            .unwrap(),
            0.2,
        )
    };
    let slow = summarize(&run_many(&latency(2.0), judge, 3000, 50, 2));
    assert_eq!(slow.failed.events, 50);
    assert!(slow.detection_seconds.unwrap().p95 <= 2.0);
    let fast = summarize(&run_many(&latency(0.8), judge, 3000, 50, 2));
    assert_eq!(fast.failed.events, 0);
}

#[test]
fn flagger_emulation_needs_six_minutes_and_misses_a_doubling() {
    let s = summarize(&run_many(
        &errors(1.0, 900.0),
        || Flagger::default_at(0.2),
        4000,
        20,
        2,
    ));
    assert_eq!(s.detection_seconds.unwrap().p50, 360.0);
    let s = summarize(&run_many(
        &errors(0.002, 900.0),
        || Flagger::default_at(0.2),
        4000,
        20,
        2,
    ));
    assert_eq!(s.failed.events, 0);
}

const SPEC: &str = r#"
app: checkout
version: v2
strategy: canary
analysis:
  alpha: 0.05
stages:
  - traffic: 20
    duration: 2m
    successCriteria:
      - error_rate < stable * 1.25
  - traffic: 50
    duration: 2m
    successCriteria:
      - error_rate < stable * 1.25
  - traffic: 100
    final: true
    promote: true
"#;

#[test]
fn the_engine_rolls_back_a_broken_canary_in_seconds() {
    let spec = fledge_spec::parse_spec(SPEC, "spec.yaml").unwrap();
    let mut ctl = EngineController::start(&spec).unwrap();
    let r = run(&errors(0.05, 600.0), &mut ctl, 11);
    assert_eq!(r.outcome, Outcome::Failed);
    assert!(r.decision_seconds.unwrap() <= 2.0, "{r:?}");
    assert!(ctl.error.is_none());
}

#[test]
fn the_engine_rolls_back_a_broken_dark_canary_before_any_user_meets_it() {
    let dark = SPEC.replace("  - traffic: 20\n", "  - traffic: 0\n    mirror: 100\n");
    let spec = fledge_spec::parse_spec(&dark, "spec.yaml").unwrap();
    for seed in 0..20 {
        let mut ctl = EngineController::start(&spec).unwrap();
        let r = run(&errors(0.05, 600.0), &mut ctl, seed);
        assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
        assert_eq!((r.canary_requests, r.canary_failed), (0, 0), "{r:?}");
        assert!(ctl.error.is_none());
    }
    // A healthy one goes live after its dark stage, then is promoted.
    let mut ctl = EngineController::start(&spec).unwrap();
    let r = run(&errors(0.001, 900.0), &mut ctl, 12);
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:?}");
    assert!(r.canary_requests > 0, "users met it once live: {r:?}");
}

#[test]
fn the_engine_promotes_a_healthy_canary_through_its_stages() {
    let spec = fledge_spec::parse_spec(SPEC, "spec.yaml").unwrap();
    let mut sc = errors(0.001, 900.0);
    sc.telemetry = Telemetry {
        actuation_seconds: 2.0,
        ..Telemetry::default()
    };
    let mut ctl = EngineController::start(&spec).unwrap();
    let r = run(&sc, &mut ctl, 12);
    assert_eq!(r.outcome, Outcome::Succeeded, "{r:?}");
    // Two stages of two minutes each.
    let t = r.decision_seconds.unwrap();
    assert!((240.0..=260.0).contains(&t), "promoted after {t} s");
}

#[test]
fn the_engine_catches_a_slow_canary_without_a_warm_up() {
    let spec = fledge_spec::parse_spec(
        r#"
app: checkout
version: v2
strategy: canary
stages:
  - traffic: 20
    duration: 5m
    successCriteria:
      - latency_p95 < stable * 1.5
  - traffic: 100
    final: true
    promote: true
"#,
        "spec.yaml",
    )
    .unwrap();
    let mut sc = Scenario::reference();
    sc.latency = Some(LatencyModel::typical(2.0));
    sc.duration_seconds = 60.0;
    let mut ctl = EngineController::start(&spec).unwrap();
    let r = run(&sc, &mut ctl, 13);
    assert_eq!(r.outcome, Outcome::Failed);
    // The first tick freezes the bound from stable's p95, the second is judged.
    assert_eq!(r.decision_seconds, Some(2.0), "{r:?}");
}

#[test]
#[ignore = "slow: run scripts/test"]
fn healthy_canary_false_aborts_over_an_hour_meet_g6() {
    // G6 of JUDGE.md §4.8 at full scale: 1 000 runs of one hour, upper
    // Clopper–Pearson bound of the false-abort rate ≤ 6% at α = 0.05, also with the
    // realized canary share 22% against a 20% weight.
    for bias in [1.0, 1.1] {
        let mut sc = errors(0.001, 3600.0);
        sc.share_bias = bias;
        let s = summarize(&run_many(&sc, || t3(1.0), 50_000, 1000, 2));
        assert!(s.failed.value <= 0.05, "bias {bias}: {:?}", s.failed);
        assert!(s.failed.upper95 <= 0.06, "bias {bias}: {:?}", s.failed);
    }
}
