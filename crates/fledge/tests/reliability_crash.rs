//! Crash survival of the real `fledge serve` binary: under a steady loopback load, the
//! server is killed with SIGKILL at seeded random points across a rollout's whole life
//! and restarted each time on the same SQLite file. At the end:
//!
//! - the rollout reached the right verdict (healthy canary → `Succeeded`, failing
//!   canary → `Failed`);
//! - its history has seqs 1..n with no gap or duplicate, times in order, kinds in a
//!   legal order (one `Created`, one `Started`, stage starts at rising stages, one
//!   terminal event, last);
//! - after every restart the weight the proxy applies (`fledge_canary_weight_ratio`)
//!   is the weight of the persisted state;
//! - after a failure the canary gets no more requests, across restarts too.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::StatusCode;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;
use support::load::Load;
use support::rollout::{history_is_whole, stages_started};
use support::serve::ServedShop;
use support::{Http, applied_weight_percent, spec, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

async fn rollout(api: &Http, id: &str) -> Value {
    let r = api.get(&format!("/rollouts/{id}")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.body
}

/// Waits up to `limit` until the rollout is in `phase`; returns it then.
async fn reach(api: &Http, id: &str, limit: Duration, phase: &str) -> Value {
    wait_for(limit, phase, || async {
        let r = rollout(api, id).await;
        if r["phase"] == phase {
            Ok(r)
        } else {
            Err(format!("{} stage {}", r["phase"], r["stageIndex"]))
        }
    })
    .await
}

/// The weight the proxy applies now, from the server's own metrics.
async fn applied_weight(api: &Http) -> Option<i64> {
    let text = api.get("/metrics").await.text;
    applied_weight_percent(&text, "shop").map(|w| w as i64)
}

/// The canary weight the proxy must apply for a stored rollout: its own weight while
/// it runs, 0 once it has ended (after a promotion the former canary is the stable
/// version and takes all traffic as such).
fn expected_weight(r: &Value) -> i64 {
    match r["phase"].as_str() {
        Some("Succeeded" | "Failed" | "Aborted") => 0,
        _ => r["canaryWeight"].as_i64().unwrap(),
    }
}

/// After a restart: the applied weight is the persisted state's weight. The
/// controller may move on between the reads, so the rollout is read on both sides
/// and the weight must match one of them.
async fn check_weight(api: &Http, id: &str, allowed: &[i64]) -> (String, i64) {
    let before = rollout(api, id).await;
    let applied = applied_weight(api).await;
    let after = rollout(api, id).await;
    let (w0, w1) = (expected_weight(&before), expected_weight(&after));
    let applied = applied.unwrap_or_else(|| panic!("no fledge_canary_weight_ratio for shop"));
    assert!(
        applied == w0 || applied == w1,
        "the proxy applies {applied}% but the store says {w0}% ({}) then {w1}% ({})",
        before["phase"],
        after["phase"]
    );
    assert!(
        allowed.contains(&applied),
        "{applied}% is not a decided weight {allowed:?}"
    );
    if after["phase"] == "Succeeded" {
        let app = api.get("/apps/shop").await.body;
        assert_eq!(
            app["stable"]["version"], after["version"],
            "after the promotion the proxy's stable version is the former canary: {app}"
        );
    }
    (after["phase"].as_str().unwrap().to_owned(), w1)
}

/// Creates the rollout of v2 with `stages`; returns its id.
async fn create(api: &Http, stages: &str) -> String {
    support::rollout::create(api, &spec("shop", "v2", stages)).await
}

/// Kills and restarts the server `kills` times at random points, checking the
/// applied weight after each restart (also once the rollout has ended).
async fn kill_loop(
    s: &mut ServedShop,
    id: &str,
    rng: &mut StdRng,
    kills: usize,
    allowed: &[i64],
) -> usize {
    let mut done = 0;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..1200))).await;
        s.server.kill9();
        done += 1;
        // Sometimes come back at once, sometimes after the load has piled up.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        s.server.restart().await;
        check_weight(&s.api, id, allowed).await;
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn kill9_thirty_times_a_healthy_rollout_still_succeeds() {
    let mut s = ServedShop::start(None).await;
    let load = Load::start(s.proxy, 3);
    let stages = "  - traffic: 10\n    duration: 6s\n  - traffic: 25\n    duration: 6s\n  - traffic: 50\n    duration: 6s\n  - traffic: 75\n    duration: 6s\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&s.api, stages).await;

    let mut rng = StdRng::seed_from_u64(0xC4A5_0001);
    let kills = kill_loop(&mut s, &id, &mut rng, 32, &[0, 10, 25, 50, 75, 100]).await;

    let done = reach(&s.api, &id, Duration::from_secs(90), "Succeeded").await;
    history_is_whole(&done, "Succeeded");
    let stage_starts = stages_started(&done).len();
    assert_eq!(stage_starts, 5, "each stage started exactly once: {done}");
    // Promoted: the app's stable version is now v2, and the proxy sends everything
    // to the former canary.
    let app = s.api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v2", "{app}");
    let served = load.ok.load(Ordering::SeqCst);
    load.stop().await;
    eprintln!(
        "kills: {kills}, starts: {}, proxied requests: {served}, events: {}",
        s.server.starts,
        done["events"].as_array().unwrap().len()
    );
    assert!(kills >= 30);
    let (c0, s0) = (s.canary.hits(), s.stable.hits());
    let proxy = Http::new(s.proxy);
    for _ in 0..50 {
        assert_eq!(proxy.get("/").await.status, StatusCode::OK);
    }
    assert_eq!(
        s.canary.hits() - c0,
        50,
        "all traffic on the promoted version"
    );
    assert_eq!(s.stable.hits(), s0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run scripts/test"]
async fn kill9_a_failing_rollout_fails_and_the_canary_stays_dark() {
    let mut s = ServedShop::start(Some(2)).await;
    let load = Load::start(s.proxy, 3);
    let stages = "  - traffic: 20\n    duration: 20s\n    successCriteria:\n      - error_rate < 5%\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&s.api, stages).await;

    let mut rng = StdRng::seed_from_u64(0xC4A5_0002);
    let mut kills = kill_loop(&mut s, &id, &mut rng, 6, &[0, 20]).await;
    let failed = reach(&s.api, &id, Duration::from_secs(60), "Failed").await;
    history_is_whole(&failed, "Failed");
    // Requests already in flight when the verdict was applied may still land; after
    // a moment nothing does, including across more crashes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dark_from = s.canary.hits();
    let before = load.ok.load(Ordering::SeqCst);
    kills += kill_loop(&mut s, &id, &mut rng, 4, &[0]).await;
    wait_for(LIMIT, "load through the restarted proxy", || async {
        let n = load.ok.load(Ordering::SeqCst);
        if n > before + 200 {
            Ok(())
        } else {
            Err(format!("{} requests", n - before))
        }
    })
    .await;
    assert_eq!(
        s.canary.hits(),
        dark_from,
        "the canary received requests after the rollout failed"
    );
    let app = s.api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v1", "{app}");
    load.stop().await;
    eprintln!("kills: {kills}, starts: {}", s.server.starts);
}
