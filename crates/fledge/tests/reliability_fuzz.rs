//! Seeded random inputs through every parser that reads untrusted text, run in the
//! plain test suite (the long runs are the cargo-fuzz targets under `fuzz/`, which
//! start from the same seeds): the spec parser, the criteria language, the server
//! config, and `POST /rollouts` of an in-process server through the axum router.
//!
//! Each input is a mutation of a real seed (the examples and the spec crate's bad
//! specs), so most of them get deep into the parsers instead of failing at byte 0.
//! Checked: no panic, no hang (every call is bounded by a timeout), no 5xx, and every
//! refusal has a message that says where.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use hyper::{Request, StatusCode};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;
use support::Shop;
use tower::ServiceExt;

/// Inputs per target: enough to cover every mutation kind many times, while the
/// whole file stays around a second or two.
const CASES: usize = 256;

fn seeds() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for dir in [
        "examples",
        "crates/fledge-spec/tests/bad",
        "fuzz/corpus/config",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_none_or(|e| e == "yaml")
                && let Ok(bytes) = std::fs::read(&p)
            {
                out.push(bytes);
            }
        }
    }
    assert!(out.len() > 10, "seed files found: {}", out.len());
    out
}

/// Fragments that parsers treat specially: YAML anchors and aliases, tags, flow
/// collections, JSON, huge numbers, odd unicode, criteria operators.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!tag ",
    "{",
    "}",
    "[",
    "]",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\t",
    "\"",
    "'",
    "#",
    "%YAML 1.2\n",
    "---\n",
    "...\n",
    "|\n",
    ">-\n",
    "? ",
    "~",
    "null",
    "1e309",
    "-0",
    "99999999999999999999",
    "NaN",
    ".inf",
    "0x1F",
    "\u{0}",
    "\u{FEFF}",
    "\u{202E}",
    "é",
    "µs",
    "%",
    "<",
    "<=",
    ">=",
    "==",
    "!=",
    "*",
    "baseline",
    "ms",
    "/s",
    "error_rate",
    "latency_p99",
    "traffic: ",
    "duration: ",
    "stages:",
    "app: ",
    "version: ",
    "final: true",
    "promote: true",
    "successCriteria:",
    "listen: ",
    "store: ",
    "apps:",
];

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = if v.is_empty() {
            0
        } else {
            rng.random_range(0..=v.len())
        };
        match rng.random_range(0..7) {
            0 if !v.is_empty() => {
                let end = (at + rng.random_range(1..40)).min(v.len());
                v.drain(at.min(end)..end);
            }
            1 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                v.splice(at..at, t.bytes());
            }
            2 if at < v.len() => v[at] = rng.random(),
            3 if !v.is_empty() => {
                // Duplicate a slice: repeats keys, nests deeper.
                let start = rng.random_range(0..v.len());
                let end = (start + rng.random_range(1..80)).min(v.len());
                let piece = v[start..end].to_vec();
                v.splice(at..at, piece);
            }
            4 => v.truncate(at),
            5 => {
                let n = rng.random_range(1..20);
                v.splice(at..at, std::iter::repeat_n(b' ', n));
            }
            _ => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                v.extend_from_slice(t.as_bytes());
            }
        }
    }
    v
}

/// One of the seeds, chosen at random, mutated.
fn mutated_seed(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let k = rng.random_range(0..seeds.len());
    mutate(rng, &seeds[k])
}

/// Input number `i` of a parser's run: every 64th an alias bomb, the others
/// mutated seeds.
fn case(rng: &mut StdRng, seeds: &[Vec<u8>], i: usize) -> Vec<u8> {
    if i % 64 == 63 {
        alias_bomb(9).into_bytes()
    } else {
        mutated_seed(rng, seeds)
    }
}

/// An alias bomb: each level refers to the previous one ten times.
fn alias_bomb(levels: usize) -> String {
    let mut s = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n".to_owned();
    for i in 1..levels {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    s
}

/// Runs `f`, failing the test if one input takes longer than a generous bound: a
/// parser that is quadratic or worse on some input shows up here.
fn bounded<T>(what: &str, input: &[u8], f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "{what} took {took:?} on {:?}",
        String::from_utf8_lossy(input)
    );
    out
}

#[test]
fn spec_parser_survives_mutated_specs() {
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut accepted = 0;
    for i in 0..CASES {
        let input = case(&mut rng, &seeds, i);
        let result = bounded("parse_spec", &input, || {
            fledge_spec::parse_spec_bytes(&input, "fuzz.yaml")
        });
        match result {
            Ok(spec) => {
                accepted += 1;
                let json = serde_json::to_string(&spec).unwrap();
                fledge_spec::parse_spec(&json, "fuzz.json")
                    .unwrap_or_else(|e| panic!("an accepted spec does not re-parse: {e}\n{json}"));
            }
            Err(e) => {
                assert!(!e.issues.is_empty());
                let text = e.to_string();
                assert!(text.contains("fuzz.yaml"), "no origin in {text:?}");
            }
        }
    }
    // Mutations are small: some inputs must still be valid, or the generator is
    // only testing the first line of the parser.
    assert!(accepted > 0, "no mutated spec was accepted");
}

#[test]
fn criteria_parser_survives_mutated_criteria() {
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let seeds: Vec<&[u8]> = [
        "error_rate < 1%",
        "latency_p99 < 300ms",
        "latency_p99 <= 1.2 * baseline",
        "success_rate >= 99.5%",
        "request_rate > 10/s",
        "my_metric < 3",
    ]
    .iter()
    .map(|s| s.as_bytes())
    .collect();
    for _ in 0..CASES * 4 {
        let bytes = {
            let k = rng.random_range(0..seeds.len());
            mutate(&mut rng, seeds[k])
        };
        let text = String::from_utf8_lossy(&bytes);
        match bounded("criterion", &bytes, || fledge_spec::Criterion::parse(&text)) {
            Ok(c) => {
                let shown = c.to_string();
                let again = fledge_spec::Criterion::parse(&shown)
                    .unwrap_or_else(|e| panic!("`{shown}` (from {text:?}) does not re-parse: {e}"));
                assert_eq!(again.to_string(), shown);
            }
            Err(e) => {
                assert!(e.offset <= text.chars().count(), "{e:?} for {text:?}");
                assert!(!e.message.is_empty());
            }
        }
    }
}

#[test]
fn config_parser_survives_mutated_configs() {
    let seeds = seeds();
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    for i in 0..CASES {
        let bytes = case(&mut rng, &seeds, i);
        let text = String::from_utf8_lossy(&bytes);
        let result = bounded("config", &bytes, || {
            fledge_server::config::ServerConfig::parse(&text, "fuzz-config.yaml")
        });
        match result {
            Ok(c) => {
                let _ = c.validate();
            }
            Err(e) => {
                let message = format!("{e:#}");
                assert!(message.contains("fuzz-config.yaml"), "{message}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rollout_survives_random_bodies() {
    let shop = Shop::start(None).await;
    let router = shop.router();
    let mut seeds: Vec<Vec<u8>> = seeds()
        .into_iter()
        .map(|s| {
            String::from_utf8_lossy(&s)
                .replace("app: checkout", "app: shop")
                .into_bytes()
        })
        .collect();
    seeds.push(
        br#"{"app":"shop","version":"v2","stages":[{"traffic":10,"duration":"1m"},{"traffic":100,"final":true,"promote":true}]}"#
            .to_vec(),
    );
    let types = [
        "application/yaml",
        "application/json",
        "text/plain",
        "application/octet-stream",
        "",
    ];
    let mut rng = StdRng::seed_from_u64(0x5eed_0004);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..CASES {
        let body = match i % 32 {
            30 => alias_bomb(9).into_bytes(),
            // Bigger than the 1 MiB default limit: refused with 413, unread.
            31 => vec![b'a'; 1024 * 1024 + 1],
            _ => mutated_seed(&mut rng, &seeds),
        };
        let ct = types[rng.random_range(0..types.len())];
        let mut request = Request::builder().method("POST").uri("/rollouts");
        if !ct.is_empty() {
            request = request.header("content-type", ct);
        }
        let request = request.body(Body::from(body.clone())).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), router.clone().oneshot(request))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "POST /rollouts hung on {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(300)])
                )
            })
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        *statuses.entry(status.as_u16()).or_default() += 1;
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]);
        assert!(
            !status.is_server_error(),
            "{status} for {shown:?}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_success() {
            // Accepted: abort it so the next valid body is judged on its own.
            let id = serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let abort = Request::builder()
                .method("POST")
                .uri(format!("/rollouts/{id}/abort"))
                .body(Body::empty())
                .unwrap();
            let r = router.clone().oneshot(abort).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        } else {
            let json: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{status} without a JSON body: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            let message = json["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "{status}: {json}");
            assert!(json["error"]["code"].is_string(), "{status}: {json}");
            // Nothing internal leaks out: no Rust panic text, no source paths.
            for leak in ["panicked", "src/", "RUST_BACKTRACE", "sqlite://"] {
                assert!(
                    !message.contains(leak),
                    "{status} leaks `{leak}`: {message}"
                );
            }
        }
    }
    assert!(statuses.contains_key(&413), "{statuses:?}");
    assert!(statuses.contains_key(&400), "{statuses:?}");
    shop.server.shutdown().await;
}
