//! `fledge import` through the real binary: Argo Rollouts and Flagger objects,
//! written from the two projects' documented formats (`tests/import/*.yaml`), become
//! the specs in `tests/import/*.expected` (stdout, then the notes on stderr). Run
//! with `UPDATE_GOLDEN=1` to rewrite them after a deliberate change.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fledge");

fn dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import")
}

/// `fledge import` of `fixture` with `args`: exit code, stdout, stderr.
fn import(fixture: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("import")
        .arg(dir().join(fixture))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Each fixture converts to its expected specs and notes, with the expected exit.
#[test]
fn each_fixture_converts_to_its_expected_spec_and_notes() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = [
        ("argo-canary.yaml", 0),
        ("argo-bluegreen.yaml", 1),
        ("flagger-canary.yaml", 0),
        ("flagger-ab.yaml", 0),
    ];
    let mut failures = Vec::new();
    for (fixture, code) in cases {
        let (got_code, stdout, stderr) = import(fixture, &["--new-version", "v2.0.0"]);
        let got = format!("exit {got_code}\n--- stdout\n{stdout}--- stderr\n{stderr}");
        let expected_path = dir().join(fixture).with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        assert_eq!(got_code, code, "{fixture}: {stderr}");
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != got {
            failures.push(format!(
                "{fixture}\n--- expected\n{expected}\n--- got\n{got}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What `import` prints is a spec `validate` and the server take, and it survives
/// the server's JSON round trip unchanged.
#[test]
fn converted_specs_validate_and_round_trip() {
    for fixture in ["argo-canary.yaml", "flagger-canary.yaml", "flagger-ab.yaml"] {
        let (code, stdout, stderr) = import(fixture, &["--new-version", "v2.0.0"]);
        assert_eq!(code, 0, "{fixture}: {stderr}");
        let text = stdout.trim_start_matches("---\n");
        let spec = fledge_spec::parse_spec(text, fixture).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.version, "v2.0.0");
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(
            fledge_spec::parse_spec(&json, fixture).unwrap(),
            spec,
            "{fixture}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        let validate = Command::new(BIN)
            .arg("validate")
            .arg(file.path())
            .output()
            .unwrap();
        assert!(validate.status.success(), "{fixture}: {:?}", validate);
    }
}

#[test]
fn the_version_comes_from_the_image_tag_or_must_be_given() {
    let (code, stdout, _) = import("argo-canary.yaml", &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("version: v2.1.0"), "{stdout}");
    let (code, _, stderr) = import("flagger-canary.yaml", &[]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Canary/podinfo: no version") && stderr.contains("--new-version"),
        "{stderr}"
    );
}

#[test]
fn json_output_is_one_list_of_specs() {
    let (code, stdout, _) = import("flagger-ab.yaml", &["--new-version", "v2", "-o", "json"]);
    assert_eq!(code, 0);
    let specs: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(specs[0]["strategy"], "blueGreen");
    assert_eq!(specs[0]["match"][0]["header"], "x-canary");
}

#[test]
fn input_without_a_rollout_or_canary_is_an_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("import")
        .arg(file.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Deployment/web (apps/v1)") && stderr.contains("ignored"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no Argo Rollouts `Rollout` or Flagger `Canary`"),
        "{stderr}"
    );
}
