//! Property tests: the parsers never panic, and a parsed criterion's `Display`
//! parses back to the same criterion.

use fledge_spec::{Criterion, parse_spec};
use proptest::prelude::*;

const SEED: &str = include_str!("../../../examples/seed.yaml");

fn same(a: &Criterion, b: &Criterion) -> bool {
    let bound_eq = match (a.bound, b.bound) {
        (fledge_spec::Bound::Absolute(x), fledge_spec::Bound::Absolute(y))
        | (fledge_spec::Bound::StableTimes(x), fledge_spec::Bound::StableTimes(y))
        | (fledge_spec::Bound::StablePlus(x), fledge_spec::Bound::StablePlus(y)) => {
            x == y || (x == 0.0 && y == 0.0)
        }
        _ => false,
    };
    a.metric == b.metric && a.op == b.op && bound_eq
}

fn metric() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "error_rate",
        "success_rate",
        "latency_p50",
        "latency_p75",
        "latency_p90",
        "latency_p95",
        "latency_p99",
        "latency_p999",
        "latency_mean",
        "request_rate",
        "checkout_kpi",
    ])
}

fn number() -> impl Strategy<Value = String> {
    (0u32..100_000, 0u32..4, prop::bool::ANY).prop_map(|(n, decimals, lead)| {
        if decimals == 0 {
            n.to_string()
        } else {
            let d = 10u32.pow(decimals);
            let s = format!("{}.{:0width$}", n / d, n % d, width = decimals as usize);
            if lead {
                s
            } else {
                s.trim_start_matches('0').to_owned()
            }
        }
    })
}

fn criterion_text() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec!["<", "<=", ">", ">=", "==", "!="]);
    let unit = prop::sample::select(vec!["", "%", "ms", "s", "us", "rps"]);
    let rhs = prop_oneof![
        (number(), unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        number().prop_map(|n| format!("stable * {n}")),
        (prop::sample::select(vec!["+", "-"]), number(), unit)
            .prop_map(|(s, n, u)| format!("stable {s} {n}{u}")),
        Just("stable".to_owned()),
    ];
    (metric(), " {0,2}", op, " {0,2}", rhs)
        .prop_map(|(m, w1, op, w2, rhs)| format!("{m}{w1}{op}{w2}{rhs}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn criteria_parser_never_panics(text in ".{0,60}") {
        let _ = Criterion::parse(&text);
    }

    #[test]
    fn criteria_parser_never_panics_near_the_grammar(text in "[a-z_ 0-9.<>=!*+%µ-]{0,40}") {
        let _ = Criterion::parse(&text);
    }

    #[test]
    fn display_round_trips(text in criterion_text()) {
        if let Ok(c) = Criterion::parse(&text) {
            let shown = c.to_string();
            let back = Criterion::parse(&shown);
            prop_assert!(back.is_ok(), "{text} -> {shown}: {:?}", back);
            let back = back.unwrap();
            prop_assert!(same(&c, &back), "{text} -> {shown}: {c:?} vs {back:?}");
        }
    }

    #[test]
    fn error_offsets_stay_inside_the_text(text in criterion_text()) {
        if let Err(e) = Criterion::parse(&text) {
            prop_assert!(e.offset <= text.chars().count());
        }
    }

    #[test]
    fn durations_round_trip(ms in 0u64..10_000_000_000) {
        let d = std::time::Duration::from_millis(ms);
        prop_assert_eq!(fledge_spec::duration::parse(&fledge_spec::duration::format(d)), Ok(d));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn spec_parser_never_panics(text in "[a-zA-Z0-9 :\\-\\n\\[\\]{},\"'%<>.&*!|#]{0,300}") {
        let _ = parse_spec(&text, "fuzz.yaml");
    }

    #[test]
    fn spec_parser_never_panics_on_damaged_seeds(cut in 0usize..SEED.len(), len in 0usize..20, insert in "[ :\\-\\n\\[\\]{}\"'%0-9a-z]{0,5}") {
        let mut text = SEED.as_bytes().to_vec();
        let end = (cut + len).min(text.len());
        text.splice(cut..end, insert.bytes());
        if let Ok(text) = String::from_utf8(text) {
            match parse_spec(&text, "damaged.yaml") {
                Err(e) => {
                    prop_assert!(!e.issues.is_empty());
                    for issue in &e.issues {
                        if let Some(line) = issue.line {
                            prop_assert!(line as usize <= text.lines().count() + 1, "{e}");
                        }
                    }
                }
                // Whatever was accepted is real: no stand-in for a bad value escapes.
                Ok(spec) => {
                    for stage in &spec.stages {
                        prop_assert!(stage.traffic <= 100);
                        prop_assert!(stage.duration != Some(std::time::Duration::MAX));
                        for c in &stage.success_criteria {
                            prop_assert!(Criterion::parse(&c.source).is_ok());
                        }
                    }
                    prop_assert!(spec.analysis.interval != std::time::Duration::MAX);
                }
            }
        }
    }
}

/// A valid spec built from parts: growing traffic, durations, criteria, analysis.
fn spec_yaml() -> impl Strategy<Value = String> {
    let criterion = prop::sample::select(vec![
        "error_rate < 0.5%",
        "error_rate <= stable * 1.25",
        "error_rate <= stable + 0.1%",
        "latency_p95 < 500ms",
        "latency_p99 < stable * 1.5",
        "latency_p75 < 0.25s",
        "latency_mean < 120ms",
        "success_rate >= 99.9%",
        "request_rate > 5rps",
        "queue_depth < 100",
    ]);
    let stage = (
        0u8..=100,
        prop::option::of(1u64..7200),
        prop::collection::vec(criterion, 0..4),
    );
    (
        prop::collection::vec(stage, 1..6),
        prop::bool::ANY,
        1u64..60,
        1u64..1000,
        prop::sample::select(vec!["threshold", "sequential"]),
        prop::option::of(0u64..10_000),
    )
        .prop_map(|(mut stages, promote, interval, min_requests, method, budget)| {
            stages.sort_by_key(|s| s.0);
            let mut y = String::from(
                "app: shop\nversion: v1.0.0\nmetrics:\n  queue_depth:\n    query: q\nstages:\n",
            );
            let n = stages.len();
            for (i, (traffic, duration, criteria)) in stages.into_iter().enumerate() {
                y.push_str(&format!("  - traffic: {traffic}\n"));
                if let Some(d) = duration {
                    y.push_str(&format!("    duration: {d}s\n"));
                }
                if !criteria.is_empty() {
                    y.push_str("    successCriteria:\n");
                    for c in criteria {
                        y.push_str(&format!("      - {c}\n"));
                    }
                }
                if i + 1 == n {
                    y.push_str(&format!("    final: true\n    promote: {promote}\n"));
                }
            }
            y.push_str(&format!(
                "analysis:\n  interval: {interval}s\n  minRequests: {min_requests}\n  method: {method}\n"
            ));
            if let Some(b) = budget {
                y.push_str(&format!("errorBudget: {b}\n"));
            }
            y
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// A valid spec written back as JSON or YAML reads back to the same value: the
    /// server stores specs as JSON and the CLI prints them as YAML.
    #[test]
    fn valid_specs_round_trip(yaml in spec_yaml()) {
        let spec = parse_spec(&yaml, "gen.yaml");
        prop_assert!(spec.is_ok(), "{}\n{yaml}", spec.unwrap_err());
        let spec = spec.unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        let from_json = parse_spec(&json, "gen.json");
        prop_assert!(from_json.is_ok(), "{}\n{json}", from_json.unwrap_err());
        prop_assert_eq!(&from_json.unwrap(), &spec);
        let yaml_out = serde_saphyr::to_string(&spec).unwrap();
        let from_yaml = parse_spec(&yaml_out, "gen-out.yaml");
        prop_assert!(from_yaml.is_ok(), "{}\n{yaml_out}", from_yaml.unwrap_err());
        prop_assert_eq!(&from_yaml.unwrap(), &spec);
    }
}
