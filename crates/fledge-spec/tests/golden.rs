//! Golden tests: each file under `tests/bad/` is a spec that must be refused, and
//! `tests/bad/NAME.expected` holds the exact messages. Run with `UPDATE_GOLDEN=1` to
//! rewrite the expected files after a deliberate change (then review the diff).

use std::fs;
use std::path::Path;

use fledge_spec::{MAX_INPUT_BYTES, parse_spec, parse_spec_bytes};

#[test]
fn bad_specs_give_the_expected_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "only {} bad specs", names.len());
    let mut failures = Vec::new();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let bytes = fs::read(&path).unwrap();
        let got = match parse_spec_bytes(&bytes, &name) {
            Ok(spec) => format!("ACCEPTED: {spec:?}"),
            Err(e) => {
                assert!(!e.issues.is_empty(), "{name}: an error without issues");
                e.to_string()
            }
        };
        let expected_path = path.with_extension("expected");
        if update {
            fs::write(&expected_path, format!("{got}\n")).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}; got:\n{got}", expected_path.display()));
        if expected.trim_end() != got {
            failures.push(format!(
                "{name}\n  expected: {}\n  got:      {got}",
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    // Several MiB of otherwise valid YAML: the size alone is the problem.
    let mut text = String::from("app: lemonade-checkout\nversion: v2.3.1\nstages:\n");
    while text.len() <= 3 * MAX_INPUT_BYTES {
        text.push_str("  - traffic: 100\n");
    }
    let err = parse_spec(&text, "huge.yaml").unwrap_err();
    assert_eq!(err.issues.len(), 1);
    assert_eq!(
        err.to_string(),
        format!(
            "huge.yaml: expected a document of at most 1048576 bytes (1 MiB), found {} bytes",
            text.len()
        )
    );
    let err = parse_spec_bytes(text.as_bytes(), "huge.yaml").unwrap_err();
    assert!(err.to_string().contains("at most 1048576 bytes"));
}

#[test]
fn issues_carry_structured_positions() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad/traffic-over-100.yaml"),
    )
    .unwrap();
    let err = parse_spec(&text, "bad.yaml").unwrap_err();
    let issue = &err.issues[0];
    assert_eq!((issue.line, issue.column), (Some(6), Some(14)));
    assert_eq!(issue.path, "stages[1].traffic");
    assert_eq!(issue.message, "expected a number from 0 to 100, found 150");
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(json["issues"][0]["line"], 6);
    assert_eq!(json["issues"][0]["path"], "stages[1].traffic");
}
