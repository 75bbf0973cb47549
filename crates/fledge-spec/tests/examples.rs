//! Every spec under `examples/` is valid, and each example uses what it claims to.

use std::fs;
use std::path::Path;
use std::time::Duration;

use fledge_spec::{
    AnalysisMethod, Bound, Hook, Metric, NoEvidencePolicy, Target, parse_group, parse_spec,
};

fn examples_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn example(name: &str) -> fledge_spec::RolloutSpec {
    let text = fs::read_to_string(examples_dir().join(name)).unwrap();
    parse_spec(&text, name).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_example_parses() {
    let (mut count, mut groups) = (0, 0);
    for entry in fs::read_dir(examples_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            let text = fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if fledge_spec::is_group_document(&text) {
                parse_group(&text, &name).unwrap_or_else(|e| panic!("{e}"));
                groups += 1;
                continue;
            }
            // fledge.yaml-style server configs may live here too; specs have `stages`.
            if !text.lines().any(|l| l.starts_with("stages:")) {
                continue;
            }
            if let Err(e) = parse_spec(&text, &name) {
                panic!("{e}");
            }
            count += 1;
        }
    }
    assert!(count >= 4, "found only {count} example specs");
    assert!(groups >= 2, "found only {groups} example groups");
}

#[test]
fn full_example_uses_every_extension() {
    let spec = example("full.yaml");
    assert_eq!(spec.canary.as_ref().unwrap().endpoints.len(), 2);
    assert_eq!(spec.analysis.interval, Duration::from_secs(5));
    assert_eq!(spec.analysis.min_requests, 200);
    assert_eq!(spec.analysis.max_consecutive_errors, 3);
    assert_eq!(spec.metrics.len(), 3);
    assert_eq!(spec.match_rules.len(), 3);
    assert_eq!(spec.match_rules[2].target, Target::Stable);
    assert_eq!(spec.match_rules[1].target, Target::Canary);
    let sticky = spec.stickiness.as_ref().unwrap();
    assert_eq!(sticky.ttl, Some(Duration::from_secs(86_400)));
    assert!(sticky.key().is_some());
    let kinds: Vec<_> = spec.hooks.iter().map(|(list, _, _)| list).collect();
    for list in [
        "beforeRollout",
        "eachStage",
        "beforePromotion",
        "afterPromotion",
        "afterRollback",
        "onEvent",
    ] {
        assert!(kinds.contains(&list), "no {list} hook");
    }
    match &spec.hooks.before_promotion[0] {
        Hook::Http(h) => assert_eq!(h.headers["X-Change-Ticket"], "CHG-1234"),
        Hook::Exec(_) => panic!("expected an http gate"),
    }
    match &spec.hooks.after_promotion[0] {
        Hook::Exec(e) => assert_eq!(e.timeout, Duration::from_secs(30)),
        Hook::Http(_) => panic!("expected an exec hook"),
    }
    assert_eq!(spec.notifications.len(), 2);
    assert_eq!(spec.error_budget, Some(500));
    let metrics: Vec<_> = spec
        .stages
        .iter()
        .flat_map(|s| &s.success_criteria)
        .map(|c| c.metric.clone())
        .collect();
    assert!(metrics.contains(&Metric::Custom("checkout_failure".into())));
    assert!(metrics.contains(&Metric::LatencyMean));
    assert!(metrics.contains(&Metric::RequestRate));
    assert!(metrics.contains(&Metric::SuccessRate));
}

#[test]
fn demo_example_is_short() {
    let spec = example("demo.yaml");
    let total: Duration = spec.stages.iter().filter_map(|s| s.duration).sum();
    assert!(total <= Duration::from_secs(60), "{total:?}");
    assert!(spec.final_stage().unwrap().promote);
}

#[test]
fn sequential_example_is_relative() {
    let spec = example("sequential.yaml");
    assert_eq!(spec.analysis.method, AnalysisMethod::Sequential);
    assert_eq!(spec.analysis.on_no_evidence, NoEvidencePolicy::RequirePass);
    assert!(
        spec.stages[0]
            .success_criteria
            .iter()
            .any(|c| c.bound == Bound::StableTimes(1.25))
    );
    assert!(
        spec.stages[1]
            .success_criteria
            .iter()
            .any(|c| c.bound == Bound::StablePlus(0.001))
    );
}

#[test]
fn dark_example_starts_dark_and_goes_live() {
    let spec = example("dark.yaml");
    assert_eq!((spec.stages[0].traffic, spec.stages[0].mirror), (0, 100));
    assert_eq!((spec.stages[1].traffic, spec.stages[1].mirror), (10, 0));
    assert_eq!(spec.first_mirror_stage(), Some(0));
    assert_eq!(spec.mirroring.methods, ["GET", "HEAD"]);
    assert_eq!(spec.mirroring.max_body_bytes, 16_384);
    // Without `mirroring`, the idempotent methods are copied.
    let seed = example("seed.yaml");
    assert_eq!(seed.first_mirror_stage(), None);
    assert_eq!(
        seed.mirroring.methods,
        fledge_spec::Mirroring::DEFAULT_METHODS
    );
}

#[test]
fn blue_green_example_previews_then_switches() {
    let spec = example("blue-green.yaml");
    assert_eq!(spec.strategy, fledge_spec::Strategy::BlueGreen);
    let traffic: Vec<(u8, u8)> = spec.stages.iter().map(|s| (s.traffic, s.mirror)).collect();
    assert_eq!(traffic, [(0, 100), (100, 0)]);
    assert!(spec.stages[1].promote);
    assert_eq!(
        spec.match_rules[0].header.as_deref(),
        Some("x-fledge-preview")
    );
}

/// The server stores specs as JSON: every example survives that round trip unchanged.
#[test]
fn examples_survive_a_json_round_trip() {
    for name in [
        "seed.yaml",
        "full.yaml",
        "demo.yaml",
        "sequential.yaml",
        "dark.yaml",
        "blue-green.yaml",
    ] {
        let spec = example(name);
        let json = serde_json::to_string(&spec).unwrap();
        let back = parse_spec(&json, name).unwrap_or_else(|e| panic!("{e}\n{json}"));
        assert_eq!(spec, back, "{name}");
    }
}
