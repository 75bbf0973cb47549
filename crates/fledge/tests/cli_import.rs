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

/// An Argo canary routed by SMI, as a CanaryRollout: the Deployment, its new
/// image, the TrafficSplit and its Services, and the template's Prometheus.
const ARGO_SMI: &str = r#"
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: shop, namespace: web}
spec:
  workloadRef: {apiVersion: apps/v1, kind: Deployment, name: shop}
  strategy:
    canary:
      stableService: shop-stable
      canaryService: shop-canary
      trafficRouting:
        smi: {rootService: shop, trafficSplitName: shop-split}
      steps:
        - setWeight: 25
        - pause: {duration: 5m}
"#;

#[test]
fn canary_rollouts_carry_the_target_router_and_metric_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("argo-smi.yaml");
    std::fs::write(&file, ARGO_SMI).unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(BIN)
            .args([
                "import",
                "--kind",
                "canaryrollout",
                "--new-version",
                "v2",
                "-o",
                "json",
            ])
            .arg(&file)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    // workloadRef: the Rollout does not say the new image.
    let (code, _, stderr) = run(&[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("--image CONTAINER=IMAGE"), "{stderr}");
    let (code, stdout, stderr) = run(&["--image", "app=registry.example/shop:v2"]);
    assert_eq!(code, Some(0), "{stderr}");
    let cr: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let cr = &cr[0];
    assert_eq!(cr["kind"], "CanaryRollout");
    assert_eq!(cr["metadata"]["namespace"], "web");
    assert_eq!(cr["spec"]["targetRef"]["name"], "shop");
    assert_eq!(
        cr["spec"]["targetRef"]["containers"][0]["image"],
        "registry.example/shop:v2"
    );
    assert_eq!(
        cr["spec"]["router"]["smi"]["trafficSplit"]["name"],
        "shop-split"
    );
    assert_eq!(cr["spec"]["router"]["smi"]["canaryService"], "shop-canary");
    assert_eq!(cr["spec"]["rollout"]["stages"][0]["traffic"], 25);
    // What the operator reads: the CRD's own type.
    let typed: fledge_k8s::crd::CanaryRollout = serde_json::from_value(cr.clone()).unwrap();
    assert_eq!(typed.spec.rollout.version, "v2");
}
