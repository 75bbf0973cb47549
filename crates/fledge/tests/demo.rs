//! `fledge demo` end to end through the real binary, with a fast spec (3-second
//! stages): a healthy canary is promoted, a failing one is rolled back, and the
//! verdict carries its figures; a blue/green rollout is previewed and switched.

use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fledge");

/// The demo's criteria with short stages; the final stage holds 3 s before
/// promoting, so a failing canary cannot slip through on timing.
const FAST_SPEC: &str = "\
app: demo-shop
version: v2
analysis:
  interval: 1s
  minRequests: 40
stages:
  - traffic: 20
    duration: 3s
    successCriteria:
      - error_rate < 1%
      - latency_p95 < 300ms
  - traffic: 50
    duration: 3s
    successCriteria:
      - error_rate < 1%
      - latency_p95 < 300ms
  - traffic: 100
    duration: 3s
    final: true
    promote: true
    successCriteria:
      - error_rate < 1%
      - latency_p95 < 300ms
";

/// The same criteria rolled out blue/green: a 3-second preview on copies of every
/// request, then the switch, kept warm for 3 s.
const FAST_BLUE_GREEN: &str = "\
app: demo-shop
version: v2
strategy: blueGreen
analysis:
  interval: 1s
  minRequests: 40
stages:
  - traffic: 0
    mirror: 100
    duration: 3s
    successCriteria:
      - error_rate < 1%
      - latency_p95 < 300ms
  - traffic: 100
    duration: 3s
    promote: true
    successCriteria:
      - error_rate < 1%
      - latency_p95 < 300ms
";

/// Runs `fledge demo` with the fast spec and `args`, killed after two minutes;
/// checks that it succeeded and returns its standard output.
async fn demo(args: &[&str]) -> String {
    demo_with(FAST_SPEC, args).await
}

/// [`demo`] with `spec_text` as the spec.
async fn demo_with(spec_text: &str, args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("fast.yaml");
    std::fs::write(&spec, spec_text).unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("demo")
        .arg("-f")
        .arg(&spec)
        .args(args)
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
    let stdout = demo(&["--scenario", "healthy", "--rps", "100"]).await;
    assert!(
        stdout.contains("Verdict: PROMOTED: demo-shop v2 is the new stable version."),
        "{stdout}"
    );
    let took = figure(&stdout, "time to promote:");
    assert!(took > 0.0, "{stdout}");
    // A healthy canary fails about 0.1% of requests: a handful at most.
    let failed = figure(&stdout, "failed canary requests users saw:");
    assert!(failed < 20.0, "{stdout}");
    assert!(stdout.contains("web UI:  http://127.0.0.1:"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_rolled_back_with_its_figures() {
    let stdout = demo(&["--scenario", "errors", "--rps", "100"]).await;
    assert!(
        stdout.contains("Verdict: ROLLED BACK: demo-shop v2 was rolled back"),
        "{stdout}"
    );
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
    let stdout = demo_with(
        FAST_BLUE_GREEN,
        &["--scenario", "blue-green", "--rps", "100"],
    )
    .await;
    assert!(stdout.contains("scenario blue-green"), "{stdout}");
    assert!(
        stdout.contains("Verdict: PROMOTED: demo-shop v2 is the new stable version."),
        "{stdout}"
    );
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
