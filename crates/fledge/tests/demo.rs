//! `fledge demo` end to end through the real binary, with a fast spec (3-second
//! stages): a healthy canary is promoted, a failing one is rolled back, and the
//! verdict carries its figures; a blue/green rollout is previewed and switched.

use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fledge");

/// The demo's last line when the canary was promoted.
const PROMOTED: &str = "Verdict: PROMOTED: demo-shop v2 is the new stable version.";

/// The demo's criteria with short stages, after `head` (the strategy, if not a
/// canary): each of `stages` lasts 3 s and is judged on the same criteria; the final
/// stage holds 3 s before promoting, so a failing canary cannot slip through on timing.
fn fast_spec(head: &str, stages: &[&str]) -> String {
    let mut yaml = format!(
        "app: demo-shop\nversion: v2\n{head}analysis:\n  interval: 1s\n  minRequests: 40\nstages:\n"
    );
    for stage in stages {
        yaml.push_str(stage);
        yaml.push_str(
            "    duration: 3s\n    successCriteria:\n      - error_rate < 1%\n      - latency_p95 < 300ms\n",
        );
    }
    yaml
}

/// The canary: 20%, 50%, then 100% and promoted.
fn fast_canary() -> String {
    fast_spec(
        "",
        &[
            "  - traffic: 20\n",
            "  - traffic: 50\n",
            "  - traffic: 100\n    final: true\n    promote: true\n",
        ],
    )
}

/// The same criteria rolled out blue/green: a 3-second preview on copies of every
/// request, then the switch, kept warm for 3 s.
fn fast_blue_green() -> String {
    fast_spec(
        "strategy: blueGreen\n",
        &[
            "  - traffic: 0\n    mirror: 100\n",
            "  - traffic: 100\n    promote: true\n",
        ],
    )
}

/// Runs `fledge demo -f SPEC --scenario NAME --rps 100` with `spec_text` as the spec,
/// killed after two minutes; checks that it succeeded and that its output has
/// `verdict`, and returns that output.
async fn scenario(spec_text: &str, name: &str, verdict: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("fast.yaml");
    std::fs::write(&spec, spec_text).unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("demo")
        .arg("-f")
        .arg(&spec)
        .args(["--scenario", name, "--rps", "100"])
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the demo did not stop by itself within 2 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(verdict), "no {verdict:?} in:\n{stdout}");
    stdout
}

/// The number after `label` on the line that contains it.
fn figure(stdout: &str, label: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no line with {label:?} in:\n{stdout}"));
    let rest = &line[line.find(label).unwrap() + label.len()..];
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no figure after {label:?} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted() {
    let stdout = scenario(&fast_canary(), "healthy", PROMOTED).await;
    let took = figure(&stdout, "time to promote:");
    assert!(took > 0.0, "{stdout}");
    // A healthy canary fails about 0.1% of requests: a handful at most.
    let failed = figure(&stdout, "failed canary requests users saw:");
    assert!(failed < 20.0, "{stdout}");
    assert!(stdout.contains("web UI:  http://127.0.0.1:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_with_its_figures() {
    let stdout = scenario(
        &fast_canary(),
        "errors",
        "Verdict: ROLLED BACK: demo-shop v2 was rolled back",
    )
    .await;
    assert!(stdout.contains("reason: error_rate"), "{stdout}");
    let detect = figure(&stdout, "time to detect:");
    assert!(detect > 0.0, "{stdout}");
    let failed = figure(&stdout, "failed canary requests users saw:");
    assert!(failed >= 1.0, "{stdout}");
    // The load generator and the proxy agree on what the canary failed.
    let line = stdout
        .lines()
        .find(|l| l.contains("failed canary requests users saw:"))
        .unwrap();
    assert!(
        line.contains(&format!("proxy counted {failed} of")),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_rollout_is_previewed_switched_and_promoted() {
    let stdout = scenario(&fast_blue_green(), "blue-green", PROMOTED).await;
    assert!(stdout.contains("scenario blue-green"), "{stdout}");
    for stage in [
        "Preview 1/2  weight 0% +mirror 100%",
        "Switch 2/2  weight 100%",
    ] {
        assert!(stdout.contains(stage), "no {stage:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn a_bad_spec_fails_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.yaml");
    std::fs::write(&spec, "app: demo-shop\nversion: v2\nstages: nope\n").unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN)
            .arg("demo")
            .arg("-f")
            .arg(&spec)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml"), "{stderr}");
}
