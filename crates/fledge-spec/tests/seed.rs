//! The seed spec from DESIGN.md parses exactly as written, from YAML and from JSON.

use std::time::Duration;

use fledge_spec::{Bound, CmpOp, Metric, parse_spec};

const SEED_YAML: &str = include_str!("../../../examples/seed.yaml");

const SEED_JSON: &str = r#"{
  "app": "lemonade-checkout",
  "version": "v2.3.1",
  "strategy": "canary",
  "stages": [
    {"traffic": 20, "duration": "5m", "successCriteria": ["error_rate < 0.5%", "latency_p95 < 500ms"]},
    {"traffic": 50, "duration": "10m", "successCriteria": ["error_rate < 0.5%"]},
    {"traffic": 100, "final": true, "promote": true}
  ]
}"#;

#[test]
fn seed_yaml_parses_as_written() {
    let spec = parse_spec(SEED_YAML, "seed.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.app, "lemonade-checkout");
    assert_eq!(spec.version, "v2.3.1");
    assert_eq!(spec.stages.len(), 3);
    let s0 = &spec.stages[0];
    assert_eq!(s0.traffic, 20);
    assert_eq!(s0.duration, Some(Duration::from_secs(300)));
    assert_eq!(s0.success_criteria.len(), 2);
    assert_eq!(s0.success_criteria[0].metric, Metric::ErrorRate);
    assert_eq!(s0.success_criteria[0].op, CmpOp::Lt);
    assert_eq!(s0.success_criteria[0].bound, Bound::Absolute(0.005));
    assert_eq!(
        s0.success_criteria[1].metric,
        Metric::Latency { quantile: 0.95 }
    );
    assert_eq!(s0.success_criteria[1].bound, Bound::Absolute(0.5));
    assert_eq!(spec.stages[1].duration, Some(Duration::from_secs(600)));
    let last = &spec.stages[2];
    assert_eq!(
        (last.traffic, last.is_final, last.promote, last.duration),
        (100, true, true, None)
    );
    assert!(!spec.stages[0].is_final && !spec.stages[0].promote);
    // Defaults of the extensions.
    assert_eq!(spec.analysis.interval, Duration::from_secs(1));
    assert_eq!(spec.analysis.min_requests, 100);
    assert_eq!(spec.analysis.alpha, 0.05);
    assert!(spec.canary.is_none() && spec.metrics.is_empty() && spec.hooks.is_empty());
    assert_eq!(spec.error_budget, None);
}

#[test]
fn seed_json_equals_seed_yaml() {
    let yaml = parse_spec(SEED_YAML, "seed.yaml").unwrap_or_else(|e| panic!("{e}"));
    let json = parse_spec(SEED_JSON, "seed.json").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(yaml, json);
}

#[test]
fn spec_survives_a_json_round_trip() {
    let spec = parse_spec(SEED_YAML, "seed.yaml").unwrap_or_else(|e| panic!("{e}"));
    let text = serde_json::to_string_pretty(&spec).unwrap();
    let back = parse_spec(&text, "roundtrip.json").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(spec, back);
}

/// Outside parse_spec, deserialization stays strict: a bad value is an error, never a
/// stand-in value (the server and the engine read stored specs with plain serde).
#[test]
fn plain_serde_is_strict() {
    let bad_traffic = SEED_JSON.replace("\"traffic\": 50", "\"traffic\": 150");
    let err = serde_json::from_str::<fledge_spec::RolloutSpec>(&bad_traffic).unwrap_err();
    assert!(
        err.to_string()
            .contains("expected a number from 0 to 100, found 150"),
        "{err}"
    );
    let bad_duration = SEED_JSON.replace("\"10m\"", "\"10 minutes\"");
    let err = serde_json::from_str::<fledge_spec::RolloutSpec>(&bad_duration).unwrap_err();
    assert!(err.to_string().contains("found `10 minutes`"), "{err}");
    let bad_criterion = SEED_JSON.replace("latency_p95 < 500ms", "latency_p95 < 5%");
    assert!(serde_json::from_str::<fledge_spec::RolloutSpec>(&bad_criterion).is_err());
    let err =
        fledge_spec::from_yaml_str::<fledge_spec::RolloutSpec>(&bad_traffic, "x.json").unwrap_err();
    assert_eq!(
        err.issues[0].message,
        "expected a number from 0 to 100, found 150"
    );
}
