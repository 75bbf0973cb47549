//! `fledge wait` rides out a server crash: the `fledge serve` process is killed
//! during the wait and started again on the same port and SQLite store, and the
//! wait still ends with the rollout's outcome (exit 0), not with the dropped poll;
//! so does a wait started while the server is down.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use support::rollout::create;
use support::serve::ServedShop;
use support::{spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// Waits until the file at `log` contains `needle`.
async fn shows(log: &Path, needle: &str) {
    let what = format!("{needle:?} in {}", log.display());
    wait_for(LIMIT, &what, || async {
        let seen = std::fs::read_to_string(log).unwrap_or_default();
        if seen.contains(needle) {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_survives_a_server_restart_and_ends_0() {
    let mut shop = ServedShop::start(None).await;
    let api = shop.api.clone();
    // The first stage waits for an operator, so nothing ends while the server is down.
    let stages = "  - traffic: 20\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&api, &spec("shop", "v2", stages)).await;

    let spawn_wait = |log: &Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_fledge"))
            .args(["wait", "shop", "--timeout", "60s"])
            .env("FLEDGE_SERVER", api.base())
            .env_remove("FLEDGE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let log = shop.dir.path().join("wait.stderr");
    let mut wait = spawn_wait(&log);
    let stderr = || std::fs::read_to_string(&log).unwrap_or_default();
    // The wait has polled the server at least once before the crash.
    shows(&log, "Progressing").await;

    shop.server.kill9();
    shows(&log, "retrying in").await;
    assert!(
        wait.try_wait().unwrap().is_none(),
        "the wait ended while the server was down: {}",
        stderr()
    );

    // A wait that starts while the server is down waits for it too.
    let late_log = shop.dir.path().join("late-wait.stderr");
    let late = spawn_wait(&late_log);
    shows(&late_log, "retrying in").await;

    shop.server.restart().await;
    let promoted = api
        .post(&format!("/rollouts/{id}/promote?full=true"), None)
        .await;
    assert!(promoted.status.is_success(), "{}", promoted.text);

    let out = tokio::time::timeout(Duration::from_secs(60), wait.wait_with_output())
        .await
        .expect("the wait ends within its own timeout")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {stdout} stderr {}",
        stderr()
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    let out = tokio::time::timeout(Duration::from_secs(60), late.wait_with_output())
        .await
        .expect("the late wait ends within its own timeout")
        .unwrap();
    let late_stderr = std::fs::read_to_string(&late_log).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{late_stderr}");
}
