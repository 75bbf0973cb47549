//! Faults around a running rollout, against an in-process server: a metric source
//! that is down or answers garbage must never let the canary advance, and must fail
//! the rollout after `analysis.maxConsecutiveErrors` reads; afterwards the canary
//! gets no more traffic. A canary that accepts connections and never answers costs
//! its clients no more than the app's response timeout, and fails the rollout
//! without touching a single stable request. A gate hook that hangs (a command that
//! never exits, a URL that never answers) fails the rollout at its timeout, leaves no
//! process behind, and holds up no other app's rollout meanwhile.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use fledge_server::{StartOptions, start};
use hyper::StatusCode;
use serde_json::Value;
use support::rollout::{create, kinds, until_phase};
use support::{Backend, Http, applied_weight_percent, backend, wait_for};
use tokio::io::AsyncReadExt;

const LIMIT: Duration = Duration::from_secs(30);

/// A fake Prometheus that answers every query with `body` and `status`.
async fn fake_prometheus(status: StatusCode, body: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move { (status, body) });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn server_config(
    dir: &std::path::Path,
    stable: &Backend,
    canary: &Backend,
    prometheus: SocketAddr,
) -> fledge_server::config::ServerConfig {
    let text = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n    metrics:\n      type: prometheus\n      url: http://{prometheus}\n",
        db = dir.join("fledge.db").display(),
        s = stable.endpoint(),
        c = canary.endpoint(),
    );
    fledge_server::config::ServerConfig::parse(&text, "faults.yaml").expect("config parses")
}

const SPEC: &str = "app: shop\nversion: v2\nanalysis:\n  interval: 200ms\n  maxConsecutiveErrors: 3\nstages:\n  - traffic: 10\n    duration: 1s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 50\n    duration: 1s\n  - traffic: 100\n    final: true\n    promote: true\n";

/// Waits for rollout `id` to fail, checking at every look that it never left its
/// first stage; returns the failed rollout.
async fn fails_in_first_stage(api: &Http, id: &str) -> Value {
    wait_for(LIMIT, "Failed", || async {
        let r = api.get(&format!("/rollouts/{id}")).await.body;
        assert!(
            r["stageIndex"].as_i64().unwrap_or(0) == 0,
            "advanced past the first stage: {r}"
        );
        if r["phase"] == "Failed" {
            Ok(r)
        } else {
            Err(r["phase"].to_string())
        }
    })
    .await
}

/// Runs a rollout judged from `prometheus` and expects it to fail without ever
/// leaving its first stage; returns the final rollout.
async fn rollout_fails_on(prometheus: SocketAddr) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let server = start(
        server_config(dir.path(), &stable, &canary, prometheus),
        StartOptions::default(),
    )
    .await
    .unwrap();
    let api = Http::new(server.api_addr());
    let proxy = server.proxy_addr("shop").await.unwrap();
    let load = support::Load::start(proxy, 2);
    let id = create(&api, SPEC).await;
    // Never past the first stage on missing data.
    let failed = fails_in_first_stage(&api, &id).await;
    let kinds = kinds(&failed);
    assert!(kinds.contains(&"AnalysisError"), "{kinds:?}");
    assert!(!kinds.contains(&"StageAdvanced"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"Failed"), "{kinds:?}");
    // The canary is out of the route: no request reaches it any more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dark = canary.hits();
    let sent = load.sent.load(std::sync::atomic::Ordering::SeqCst);
    wait_for(LIMIT, "more load", || async {
        let n = load.sent.load(std::sync::atomic::Ordering::SeqCst);
        if n > sent + 100 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    assert_eq!(canary.hits(), dark, "the canary got traffic after failing");
    load.stop().await;
    let app = api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v1");
    server.shutdown().await;
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_source_down_fails_the_rollout() {
    let failed = rollout_fails_on(closed_port()).await;
    let message = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "AnalysisError")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(!message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_source_answering_garbage_fails_the_rollout() {
    rollout_fails_on(fake_prometheus(StatusCode::OK, "<html>not prometheus</html>").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_source_answering_nan_or_errors_fails_the_rollout() {
    rollout_fails_on(
        fake_prometheus(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"error","errorType":"unavailable","error":"overloaded"}"#,
        )
        .await,
    )
    .await;
}

/// A canary that accepts TCP connections, reads what it is sent and never answers.
/// Returns its address and how many connections it accepted.
async fn silent_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Bounded: the test is over long before.
                let _ = tokio::time::timeout(Duration::from_secs(120), async {
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    });
    (addr, accepted)
}

/// What a load loop saw, by outcome.
#[derive(Debug, Default)]
struct Seen {
    stable_ok: AtomicU64,
    gateway_timeouts: AtomicU64,
    other: AtomicU64,
    /// The slowest 504, in milliseconds.
    slowest_504_ms: AtomicU64,
    /// Anything but a stable 200, for the failure message.
    odd: std::sync::Mutex<Vec<String>>,
}

/// Sends requests to `proxy` from `concurrency` loops until `stop`, recording each
/// answer in `seen`; every request is bounded by 20 s.
fn sorted_load(
    proxy: SocketAddr,
    concurrency: usize,
    seen: &Arc<Seen>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..concurrency)
        .map(|_| {
            let (seen, stop) = (seen.clone(), stop.clone());
            let http = Http::new(proxy);
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
                    let started = std::time::Instant::now();
                    let r = http.get("/").await;
                    let ms = started.elapsed().as_millis() as u64;
                    if r.status == StatusCode::OK && r.text == "stable" {
                        seen.stable_ok.fetch_add(1, Ordering::SeqCst);
                    } else if r.status == StatusCode::GATEWAY_TIMEOUT {
                        seen.gateway_timeouts.fetch_add(1, Ordering::SeqCst);
                        seen.slowest_504_ms.fetch_max(ms, Ordering::SeqCst);
                    } else {
                        seen.other.fetch_add(1, Ordering::SeqCst);
                        seen.odd
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.text));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect()
}

/// The value of the first exposition line that starts with `series`, or 0.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_never_answers_times_out_and_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let (canary, accepted) = silent_upstream().await;
    let text = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\napps:\n  - name: shop\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{canary}\"]\n    timeouts:\n      connect: 1s\n      response: 1s\n",
        db = dir.path().join("fledge.db").display(),
        s = stable.endpoint(),
    );
    let config =
        fledge_server::config::ServerConfig::parse(&text, "faults.yaml").expect("config parses");
    let server = start(config, StartOptions::default()).await.unwrap();
    let api = Http::new(server.api_addr());
    let proxy = server.proxy_addr("shop").await.unwrap();

    // The app reports its timeouts as configured.
    let app = api.get("/apps/shop").await.body;
    assert_eq!(app["timeouts"]["response"], "1s", "{app}");

    let seen = Arc::new(Seen::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = sorted_load(proxy, 4, &seen, &stop);
    let spec = "app: shop\nversion: v2\nanalysis:\n  interval: 200ms\n  minRequests: 5\nstages:\n  - traffic: 20\n    duration: 30s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 100\n    final: true\n    promote: true\n";
    let started = std::time::Instant::now();
    let id = create(&api, spec).await;
    let failed = fails_in_first_stage(&api, &id).await;
    let rolled_back_after = started.elapsed();
    assert_eq!(failed["canaryWeight"], 0, "{failed}");

    // Once failed, the canary gets no new connection; stable keeps serving.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dark = accepted.load(Ordering::SeqCst);
    let ok_before = seen.stable_ok.load(Ordering::SeqCst);
    wait_for(LIMIT, "more stable answers", || async {
        let n = seen.stable_ok.load(Ordering::SeqCst);
        if n > ok_before + 100 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    })
    .await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        dark,
        "the canary got connections after the rollback"
    );
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }

    let timeouts = seen.gateway_timeouts.load(Ordering::SeqCst);
    let slowest = seen.slowest_504_ms.load(Ordering::SeqCst);
    assert!(timeouts > 0, "no canary request timed out: {seen:?}");
    // Each canary request ended at the response timeout (1 s), with slack for a
    // loaded machine.
    assert!(slowest < 2500, "a 504 took {slowest} ms with a 1 s timeout");
    // Not a single stable request failed, before, during or after.
    assert_eq!(
        seen.other.load(Ordering::SeqCst),
        0,
        "{:?}",
        seen.odd.lock().unwrap()
    );
    assert!(
        rolled_back_after < Duration::from_secs(20),
        "{rolled_back_after:?}"
    );

    // The proxy counted the timeouts against the canary, none against stable.
    let metrics = api.get("/metrics").await.text;
    let canary_timeouts = sample(
        &metrics,
        "fledge_proxy_errors_total{app=\"shop\",version=\"v2\",role=\"canary\",kind=\"timeout\"}",
    );
    assert_eq!(canary_timeouts as u64, timeouts, "{metrics}");
    let stable_errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("fledge_proxy_errors_total{app=\"shop\",version=\"v1\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(stable_errors, 0.0, "stable errors counted: {metrics}");
    let kinds = kinds(&failed);
    assert_eq!(kinds.last(), Some(&"Failed"), "{kinds:?}");
    eprintln!(
        "silent canary: {timeouts} requests got a 504 (slowest {slowest} ms), \
         {} stable answers, rolled back after {rolled_back_after:?}",
        seen.stable_ok.load(Ordering::SeqCst)
    );
    server.shutdown().await;
}

/// Two apps on the built-in proxy, `shop` and `cart`, in a temporary SQLite store.
fn two_apps(
    dir: &std::path::Path,
    stable: &Backend,
    canary: &Backend,
) -> fledge_server::config::ServerConfig {
    let app = |name: &str| {
        format!(
            "  - name: {name}\n    listen: 127.0.0.1:0\n    stable:\n      version: v1\n      endpoints: [\"{s}\"]\n    canary:\n      endpoints: [\"{c}\"]\n",
            s = stable.endpoint(),
            c = canary.endpoint(),
        )
    };
    let text = format!(
        "listen: 127.0.0.1:0\nstore: sqlite://{db}\ncontroller:\n  tick: 200ms\napps:\n{}{}",
        app("shop"),
        app("cart"),
        db = dir.join("fledge.db").display(),
    );
    fledge_server::config::ServerConfig::parse(&text, "faults.yaml").expect("config parses")
}

/// Processes whose command line contains `needle` (arguments joined by spaces).
fn processes_with(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let pid = e.ok()?.file_name().into_string().ok()?;
            pid.parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// Rolls `shop` out with `hooks` (YAML under `hooks:`) gating its promotion, and
/// while that gate hangs rolls `cart` out to success; expects `shop` to fail with
/// `timed out after {timeout}` in its history and to stay on v1. When `process`
/// is given, a process with that in its command line must run while the gate hangs.
/// Returns the failed `shop` rollout.
async fn hanging_gate(hooks: &str, timeout: &str, process: Option<&str>) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let stable = backend("stable", None).await;
    let canary = backend("canary", None).await;
    let server = start(
        two_apps(dir.path(), &stable, &canary),
        StartOptions::default(),
    )
    .await
    .unwrap();
    let api = Http::new(server.api_addr());
    let stages = "stages:\n  - traffic: 20\n    duration: 300ms\n  - traffic: 100\n    final: true\n    promote: true\n";
    let shop = create(
        &api,
        &format!("app: shop\nversion: v2\nanalysis:\n  interval: 200ms\n{stages}hooks:\n  beforePromotion:\n{hooks}"),
    )
    .await;
    // The gate is running: shop waits on it.
    wait_for(LIMIT, "shop at its promotion gate", || async {
        let r = api.get(&format!("/rollouts/{shop}")).await.body;
        if kinds(&r).contains(&"GateWaiting") || r["stageIndex"] == 1 {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .await;
    // Meanwhile the controller keeps judging other rollouts: cart goes all the way.
    let cart = create(
        &api,
        &format!("app: cart\nversion: v2\nanalysis:\n  interval: 200ms\n{stages}"),
    )
    .await;
    let cart_done = until_phase(&api, &cart, LIMIT, "Succeeded").await;
    let shop_then = api.get(&format!("/rollouts/{shop}")).await.body;
    assert_eq!(
        shop_then["phase"], "Progressing",
        "the gate should still hang while cart finished: {shop_then}"
    );
    assert_eq!(kinds(&cart_done).last(), Some(&"Succeeded"));
    if let Some(process) = process {
        assert!(
            !processes_with(process).is_empty(),
            "the hook is not running"
        );
    }

    let failed = until_phase(&api, &shop, LIMIT, "Failed").await;
    let history = serde_json::to_string(&failed["events"]).unwrap();
    assert!(
        history.contains(&format!("timed out after {timeout}")),
        "no timeout in the history: {history}"
    );
    assert!(!kinds(&failed).contains(&"Promoted"), "{history}");
    assert_eq!(kinds(&failed).last(), Some(&"Failed"), "{history}");
    assert_eq!(failed["canaryWeight"], 0);
    // Not promoted: shop's stable is still v1, and its proxy sends nothing to v2.
    let app = api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v1", "{app}");
    let metrics = api.get("/metrics").await.text;
    assert_eq!(
        applied_weight_percent(&metrics, "shop"),
        Some(0.0),
        "{metrics}"
    );
    let proxy = server.proxy_addr("shop").await.unwrap();
    let before = canary.hits();
    for _ in 0..20 {
        assert_eq!(Http::new(proxy).get("/").await.text, "stable");
    }
    assert_eq!(canary.hits(), before);
    server.shutdown().await;
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_hook_that_never_exits_is_killed_and_fails_the_gate() {
    // A marker no other process on the machine carries.
    let marker = format!("sleep 6{:05}", std::process::id() % 100_000);
    let failed = hanging_gate(
        &format!(
            "    - exec:\n        command: [\"sh\", \"-c\", \"{marker} & {marker}\"]\n        timeout: 5s\n"
        ),
        "5s",
        Some(&marker),
    )
    .await;
    // The hook and the child it started in the background are both gone.
    wait_for(
        Duration::from_secs(5),
        "the hook's processes to exit",
        || async {
            let left = processes_with(&marker);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await;
    let message = failed["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.contains("timed out"))
        .unwrap_or_default()
        .to_owned();
    eprintln!("exec hook: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_hook_that_never_answers_fails_the_gate() {
    let (silent, accepted) = silent_upstream().await;
    hanging_gate(
        &format!("    - http:\n        url: http://{silent}/gate\n        timeout: 5s\n"),
        "5s",
        None,
    )
    .await;
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the hook never called"
    );
}
