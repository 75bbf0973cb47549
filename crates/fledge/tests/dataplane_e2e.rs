//! The data plane in a process of its own (`proxy.dataPlane`), through the real
//! binary: under keep-alive loopback load, the control process (`fledge serve`) is
//! killed with SIGKILL (and stopped with SIGTERM) again and again across a rollout,
//! the data-plane process itself is killed, the binary is upgraded under load (the
//! data plane hands its listening sockets to the new build's), and an app's
//! timeouts change under load (a new listener takes the app's socket over, in the
//! data plane or, without one, in the server's own process). No
//! user request may fail; the rollout must end right with its history whole; and an
//! abort answered just before a kill is what the data plane serves while no control
//! process runs.

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::StatusCode;
use serde_json::Value;
use support::load::Load;
use support::rollout::{self, history_is_whole};
use support::serve::{Serve, free_addr};
use support::{Backend, Http, backend, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

/// Kills whatever data-plane process serves the socket when the test ends.
struct DataPlaneGuard {
    socket: PathBuf,
    seen: Vec<u32>,
}

impl DataPlaneGuard {
    /// The pid the data plane wrote next to its socket.
    fn pid(&mut self) -> Option<u32> {
        let mut path = self.socket.as_os_str().to_owned();
        path.push(".pid");
        let pid = std::fs::read_to_string(PathBuf::from(path))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        if !self.seen.contains(&pid) {
            self.seen.push(pid);
        }
        Some(pid)
    }
}

impl Drop for DataPlaneGuard {
    fn drop(&mut self) {
        let _ = self.pid();
        for pid in &self.seen {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// What `fledge dataplane --status` prints about the data plane on `socket`.
fn status(socket: &Path) -> Value {
    try_status(socket).unwrap_or_else(|e| panic!("{e}"))
}

/// [`status`], or why there is none (no data plane answers).
fn try_status(socket: &Path) -> Result<Value, String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(["dataplane", "--status", "--socket"])
        .arg(socket)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice::<Value>(&out.stdout).unwrap())
}

struct Setup {
    /// Holds the config, the store and the socket until the test ends.
    _dir: tempfile::TempDir,
    server: Serve,
    guard: DataPlaneGuard,
    proxy: std::net::SocketAddr,
    stable: Backend,
    canary: Backend,
}

/// `fledge serve` (the binary at `program`, or the built one) with app `shop` on a
/// data plane of its own; waits until the proxy answers.
async fn setup(program: Option<&Path>) -> Setup {
    setup_with(program, true).await
}

/// [`setup`], with the proxies in the server's own process unless `data_plane`.
async fn setup_with(program: Option<&Path>, data_plane: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let proxy = free_addr();
    let socket = dir.path().join("dp.sock");
    let text = format!(
        "listen: {api}\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\nproxy:\n  workers: 1\n{data_plane}apps:\n  - name: shop\n    listen: {proxy}\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n",
        api = free_addr(),
        db = dir.path().join("fledge.db").display(),
        data_plane = if data_plane {
            format!("  dataPlane:\n    socket: {}\n", socket.display())
        } else {
            String::new()
        },
        s = stable.endpoint(),
        c = canary.endpoint(),
    );
    let api = text.lines().next().unwrap()["listen: ".len()..]
        .parse()
        .unwrap();
    let program = program.map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_fledge")),
        Path::to_owned,
    );
    let server = Serve::run_program(&program, dir.path(), "serve", api, &text).await;
    let mut guard = DataPlaneGuard {
        socket,
        seen: Vec::new(),
    };
    assert_eq!(
        guard.pid().is_some(),
        data_plane,
        "a data plane wrote its pid"
    );
    Setup {
        _dir: dir,
        server,
        guard,
        proxy,
        stable,
        canary,
    }
}

/// Sends `n` requests to the proxy; how many each backend received meanwhile
/// (with the load's own requests, when a load runs).
async fn split(s: &Setup, n: u64) -> (u64, u64) {
    let (s0, c0) = (s.stable.hits(), s.canary.hits());
    let proxy = Http::new(s.proxy);
    for _ in 0..n {
        assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    }
    (s.stable.hits() - s0, s.canary.hits() - c0)
}

/// Waits until the proxy sends every request to the canary.
async fn all_to_canary(s: &Setup) {
    wait_for(
        Duration::from_secs(10),
        "one version taking all traffic",
        || async {
            let (s0, c0) = (s.stable.hits(), s.canary.hits());
            let proxy = Http::new(s.proxy);
            for _ in 0..20 {
                match proxy.try_get("/").await {
                    Some(StatusCode::OK) => {}
                    Some(status) => return Err(format!("the proxy answered {status}")),
                    None => {
                        let log = s.server.log();
                        let tail: Vec<&str> = log.lines().rev().take(12).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        return Err(format!(
                            "the proxy did not answer; the server's log ends:\n{}",
                            tail.join("\n")
                        ));
                    }
                }
            }
            let (stable_hits, canary_hits) = (s.stable.hits() - s0, s.canary.hits() - c0);
            if stable_hits == 0 && canary_hits >= 20 {
                Ok(())
            } else {
                Err(format!("{stable_hits}/{canary_hits}"))
            }
        },
    )
    .await;
}

/// Stops the load and checks that no user request failed.
async fn no_request_failed(load: Load, at_least: u64) {
    let (succeeded, failed) = (load.succeeded.clone(), load.failed.clone());
    load.stop().await;
    let (succeeded, failed) = (
        succeeded.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
    );
    eprintln!("user requests: {succeeded} succeeded, {failed} failed");
    assert_eq!(
        failed,
        0,
        "{failed} of {} user requests failed",
        succeeded + failed
    );
    assert!(
        succeeded >= at_least,
        "only {succeeded} requests went through"
    );
}

/// [`setup`], `concurrency` clients of load, and a rollout of v2 with `stages`.
async fn rolling(
    program: Option<&Path>,
    concurrency: usize,
    stages: &str,
) -> (Setup, Http, Load, String) {
    let s = setup(program).await;
    let api = s.server.api.clone();
    let load = Load::start(s.proxy, concurrency);
    let id = rollout::create(&api, &spec("shop", "v2", stages)).await;
    (s, api, load, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn stopping_and_killing_the_control_process_under_load_fails_no_user_request() {
    let stages = "  - traffic: 20\n    duration: 3s\n  - traffic: 50\n    duration: 3s\n  - traffic: 100\n    final: true\n    promote: true\n";
    let (mut s, api, load, id) = rolling(None, 8, stages).await;
    let dp = s.guard.pid().unwrap();
    for kill in 0..8 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        if kill % 4 == 3 {
            // A graceful stop (what `systemctl restart` sends) leaves it too.
            let status = s.server.terminate(Duration::from_secs(15)).await;
            assert!(status.success(), "{status}");
        } else {
            s.server.kill9_alone();
        }
        // No control process: the data plane serves on.
        tokio::time::sleep(Duration::from_millis(150 + 50 * kill)).await;
        s.server.restart().await;
    }
    let done = rollout::until_phase(&api, &id, LIMIT, "Succeeded").await;
    history_is_whole(&done, "Succeeded");
    assert_eq!(s.guard.pid(), Some(dp), "one data plane all along");
    assert!(alive(dp));
    no_request_failed(load, 500).await;
    all_to_canary(&s).await;
    assert_eq!(s.server.starts, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn an_abort_answered_before_a_kill_is_the_route_served_without_a_control_process() {
    let stages = "  - traffic: 50\n  - traffic: 100\n    final: true\n";
    let (mut s, api, load, id) = rolling(None, 4, stages).await;
    wait_for(LIMIT, "the canary serving", || async {
        let (stable, canary) = split(&s, 20).await;
        if stable > 0 && canary > 0 {
            Ok(())
        } else {
            Err(format!("{stable}/{canary}"))
        }
    })
    .await;
    let r = api
        .post(
            &format!("/rollouts/{id}/abort"),
            Some(r#"{"reason":"bad build"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    s.server.kill9_alone();
    // Not one more request to the canary, with no control process running.
    let (stable, canary) = split(&s, 50).await;
    assert_eq!(canary, 0, "aborted, yet the canary got requests");
    assert!(stable >= 50);
    s.server.restart().await;
    assert_eq!(rollout::get(&api, &id).await["phase"], "Aborted");
    let (stable, canary) = split(&s, 50).await;
    assert_eq!(canary, 0, "the canary got requests after the restart");
    assert!(stable >= 50);
    no_request_failed(load, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn a_data_plane_that_dies_is_started_again_on_its_routes() {
    let stages = "  - traffic: 100\n  - traffic: 100\n    final: true\n";
    let (mut s, api, load, id) = rolling(None, 2, stages).await;
    all_to_canary(&s).await;
    let dead = s.guard.pid().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &dead.to_string()])
        .status()
        .unwrap();
    // The control process notices at its next exchange (the judge reads the
    // counters every 50 ms) and starts a data plane on the stored route.
    let socket = s.guard.socket.clone();
    wait_for(LIMIT, "a new data plane", || {
        let mut guard = DataPlaneGuard {
            socket: socket.clone(),
            seen: Vec::new(),
        };
        let pid = guard.pid();
        // Not this guard's to kill: `s.guard` ends it.
        guard.seen.clear();
        async move {
            match pid {
                Some(pid) if pid != dead && alive(pid) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(s.guard.pid().is_some_and(|p| p != dead));
    all_to_canary(&s).await;
    assert_eq!(rollout::get(&api, &id).await["phase"], "Progressing");
    assert!(
        s.server.log().contains("data-plane process started"),
        "{}",
        s.server.log()
    );
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn upgrading_the_binary_under_load_hands_the_ports_over_without_a_failed_request() {
    // The installed binary, replaced by a new build the way a package manager does.
    let bin = tempfile::tempdir().unwrap();
    let installed = bin.path().join("fledge");
    std::fs::copy(env!("CARGO_BIN_EXE_fledge"), &installed).unwrap();
    let stages = "  - traffic: 50\n  - traffic: 100\n    final: true\n    promote: true\n";
    let (mut s, api, load, id) = rolling(Some(&installed), 8, stages).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let old = s.guard.pid().unwrap();
    let before = status(&s.guard.socket);

    let staged = bin.path().join("fledge.new");
    std::fs::copy(env!("CARGO_BIN_EXE_fledge"), &staged).unwrap();
    std::fs::rename(&staged, &installed).unwrap();
    s.server.kill9_alone();
    s.server.restart().await;

    let after = status(&s.guard.socket);
    assert_ne!(after["build"], before["build"], "the new build serves");
    assert_ne!(after["pid"], before["pid"]);
    assert_eq!(
        after["apps"][0]["addr"],
        s.proxy.to_string(),
        "the same port"
    );
    wait_for(
        Duration::from_secs(30),
        "the old data plane to exit",
        || async {
            if alive(old) {
                Err("running".to_owned())
            } else {
                Ok(())
            }
        },
    )
    .await;
    // The route moved over with the ports: still half and half.
    let (stable, canary) = split(&s, 100).await;
    assert!(stable > 20 && canary > 20, "{stable}/{canary}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    no_request_failed(load, 300).await;
    let r = api.post(&format!("/rollouts/{id}/promote"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    rollout::until_phase(&api, &id, LIMIT, "Succeeded").await;
    all_to_canary(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn new_timeouts_under_load_restart_the_listener_without_a_failed_request() {
    timeouts_change_under_load(setup(None).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn new_timeouts_under_load_restart_an_in_process_listener_without_a_failed_request() {
    timeouts_change_under_load(setup_with(None, false).await).await;
}

/// Changes app `shop`'s response timeout six times under load (each change starts a
/// new listener on the app's socket): no user request fails, and every one is
/// counted, the counts going on across the changes.
async fn timeouts_change_under_load(s: Setup) {
    let api = s.server.api.clone();
    let load = Load::start(s.proxy, 8);
    let mut app = api.get("/apps/shop").await.body;
    for n in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // New timeouts need a new listener, which takes the port over.
        app["timeouts"]["response"] = Value::from(format!("{}s", 20 + n));
        let reply = api.put("/apps/shop", &app.to_string()).await;
        assert!(reply.status.is_success(), "{}", reply.body);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        api.get("/apps/shop").await.body["timeouts"]["response"],
        "25s"
    );
    let succeeded = load.succeeded.clone();
    no_request_failed(load, 300).await;
    let metrics = api.get("/metrics").await.text;
    let counted: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "fledge_proxy_requests_total{app=\"shop\",version=\"v1\",role=\"stable\"} ",
            )
        })
        .unwrap_or_else(|| panic!("no count of v1's requests in\n{metrics}"))
        .parse()
        .unwrap();
    let answered = succeeded.load(Ordering::SeqCst);
    assert!(
        counted >= answered,
        "{counted} requests counted of the {answered} answered"
    );
}

/// `fledge dataplane --stop` on `socket`: its stderr, once it has exited 0.
async fn stop(socket: &Path) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fledge"))
        .args(["dataplane", "--stop", "--socket"])
        .arg(socket)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_data_plane_returns_once_it_has_exited() {
    let mut s = setup(None).await;
    let (stable, _) = split(&s, 5).await;
    assert!(stable >= 5);
    let first = s.guard.pid().unwrap();
    let socket = s.guard.socket.clone();
    assert_eq!(
        status(&socket)["controlled"],
        true,
        "the server is connected"
    );

    // With the server running, stopping only replaces the data plane: said so.
    let stderr = stop(&socket).await;
    assert!(
        stderr.contains(&format!(
            "warning: a `fledge serve` is connected to data plane {first}"
        )),
        "{stderr}"
    );
    assert!(!alive(first), "`--stop` returned while the data plane runs");
    wait_for(LIMIT, "the server's new data plane", || async {
        let now = try_status(&socket)?;
        match now["pid"].as_u64() {
            Some(pid)
                if pid != u64::from(first) && now["apps"][0]["addr"] == s.proxy.to_string() =>
            {
                Ok(())
            }
            _ => Err(now.to_string()),
        }
    })
    .await;
    let pid = s.guard.pid().unwrap();

    s.server.kill9_alone();
    wait_for(LIMIT, "the server's connection to close", || async {
        match status(&socket)["controlled"].as_bool() {
            Some(false) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let stderr = stop(&socket).await;
    assert!(!stderr.contains("warning"), "{stderr}");
    assert!(!alive(pid), "`--stop` returned while the data plane runs");
    assert!(
        stderr.contains(&format!("data plane {pid} stopped")),
        "{stderr}"
    );
    assert!(!socket.exists(), "the socket file is removed");
    let refused = tokio::net::TcpStream::connect(s.proxy).await;
    assert!(refused.is_err(), "the proxy's port is closed");
}
