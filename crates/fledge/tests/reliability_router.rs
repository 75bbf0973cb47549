//! A traffic router that goes down mid-rollout: a real HAProxy (runtime API on a
//! unix socket), killed while the rollout runs and restarted later on the same
//! socket and ports from a stale config file.
//!
//! What an operator must see: the server stays up and says the router is out of
//! sync (the app, the rollout and `/metrics`) within seconds, with no weight change
//! pending; the rollout holds its stage instead of moving on to a weight the router
//! cannot apply, and its time away does not count; a HAProxy restarted from a stale
//! config is put back on the stored weight; an abort while it is down is recorded at
//! once and applied within a few ticks of its return; the history is complete and
//! in order.

mod support;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use fledge_providers::router::{HaproxyRouter, TrafficRouter};
use support::haproxy::world;
use support::rollout::create;
use support::{Http, Load, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// Waits until HAProxy serves the canary `weight` percent of requests, read
/// through its runtime API.
async fn haproxy_serves(router: &HaproxyRouter, weight: u8) {
    wait_for(LIMIT, &format!("HAProxy at {weight}%"), || async {
        match router.current().await {
            Ok(a) if a.canary == weight => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The value of the exposition line starting with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs haproxy and prometheus: run scripts/test"]
async fn haproxy_down_holds_the_rollout_and_an_abort_converges_when_it_is_back() {
    let mut w = world(None, "      timeout: 1s\n").await;
    let load = Load::start(w.haproxy.frontend, 2);

    let spec = "app: shop\nversion: v2\nanalysis:\n  interval: 500ms\n  maxConsecutiveErrors: 100\nstages:\n  - traffic: 10\n    duration: 4s\n  - traffic: 50\n    duration: 2s\n  - traffic: 100\n    final: true\n    promote: true\n";
    let id = create(&w.api, spec).await;
    let get = || {
        let api = w.api.clone();
        let id = id.clone();
        async move { api.get(&format!("/rollouts/{id}")).await.body }
    };

    // Stage 0 is in place in HAProxy, and the API says so.
    haproxy_serves(&w.router, 10).await;
    let r = get().await;
    assert_eq!(r["routerSync"]["inSync"], true, "{r}");
    assert_eq!(r["routerSync"]["appliedWeight"], 10, "{r}");

    // HAProxy dies (SIGKILL: its socket file stays behind).
    w.haproxy.program.kill();
    let killed = Instant::now();

    // Noticed without any weight change pending: out of sync, visibly.
    let held = wait_for(LIMIT, "the router reported out of sync", || async {
        let r = get().await;
        if r["routerSync"]["inSync"] == false {
            Ok(r)
        } else {
            Err(r.to_string())
        }
    })
    .await;
    let detected = killed.elapsed();
    assert!(
        detected < Duration::from_secs(4),
        "noticed after {detected:?}"
    );
    assert_eq!(held["routerSync"]["router"], "haproxy", "{held}");
    assert_eq!(held["routerSync"]["appliedWeight"], 10, "{held}");
    assert!(
        held["routerSync"]["lastError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{held}"
    );
    let app = w.api.get("/apps/shop").await.body;
    assert_eq!(app["routerSync"]["inSync"], false, "{app}");
    let metrics = w.api.get("/metrics").await.text;
    assert_eq!(
        sample(&metrics, "fledge_router_in_sync{app=\"shop\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "fledge_router_apply_failures_total{app=\"shop\"}").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    // For longer than the stage lasts, the rollout holds at 10%: it does not move
    // on to a weight the router cannot apply, nor fail, and the server answers.
    let hold_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < hold_until {
        let r = get().await;
        assert_eq!(r["phase"], "Progressing", "{r}");
        assert_eq!(r["stageIndex"], 0, "{r}");
        assert_eq!(
            w.api.get("/healthz").await.status,
            StatusCode::OK,
            "the server is down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = get().await;
    let kinds: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"RouteUnapplied"), "{kinds:?}");

    // HAProxy restarts from a stale config file that says 50%: put back to 10%
    // within a few ticks, and the stage goes on where it stopped, its time away
    // not counted (it had at least 2 s left).
    w.haproxy.restart(50).await.unwrap();
    let back = Instant::now();
    haproxy_serves(&w.router, 10).await;
    let resynced = back.elapsed();
    let r = wait_for(LIMIT, "RouteApplied", || async {
        let r = get().await;
        if r["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "RouteApplied"))
        {
            Ok(r)
        } else {
            Err(r["routerSync"].to_string())
        }
    })
    .await;
    assert_eq!(r["stageIndex"], 0, "credited with the outage: {r}");
    assert_eq!(r["routerSync"]["inSync"], true, "{r}");

    // Down again; this time an abort comes while HAProxy is down.
    w.haproxy.program.kill();
    wait_for(LIMIT, "out of sync again", || async {
        let r = get().await;
        if r["routerSync"]["inSync"] == false {
            Ok(())
        } else {
            Err(r["routerSync"].to_string())
        }
    })
    .await;

    // The abort is recorded at once.
    let r = w
        .api
        .post(
            &format!("/rollouts/{id}/abort"),
            Some(r#"{"reason":"router down"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["phase"], "Aborted", "{}", r.text);
    let r = get().await;
    assert_eq!(r["phase"], "Aborted", "{r}");
    assert_eq!(r["canaryWeight"], 0, "{r}");
    // Not applied yet, and the API does not pretend it is.
    let sync = wait_for(LIMIT, "the rollback to be tried", || async {
        let r = get().await;
        if r["routerSync"]["desiredWeight"] == 0 {
            Ok(r["routerSync"].clone())
        } else {
            Err(r["routerSync"].to_string())
        }
    })
    .await;
    assert_eq!(sync["inSync"], false, "{sync}");

    // HAProxy comes back, again from the stale 50% config: within a few ticks
    // the canary is at 0.
    w.haproxy.restart(50).await.unwrap();
    let back = Instant::now();
    haproxy_serves(&w.router, 0).await;
    let converged = back.elapsed();
    assert!(converged < Duration::from_secs(5), "{converged:?}");
    let r = wait_for(LIMIT, "the API to report in sync", || async {
        let r = get().await;
        if r["routerSync"]["inSync"] == true {
            Ok(r)
        } else {
            Err(r["routerSync"].to_string())
        }
    })
    .await;
    assert_eq!(r["routerSync"]["appliedWeight"], 0, "{r}");
    let metrics = w.api.get("/metrics").await.text;
    assert_eq!(
        sample(&metrics, "fledge_router_in_sync{app=\"shop\"}"),
        Some(1.0),
        "{metrics}"
    );
    // Only stable answers through HAProxy now.
    let client = Http::new(w.haproxy.frontend);
    for _ in 0..30 {
        assert_eq!(client.get("/").await.text, "v1");
    }
    load.stop().await;

    // The whole history, in order, nothing after the abort but what it caused.
    let events = r["events"].as_array().unwrap().clone();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let ats: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(ats.windows(2).all(|w| w[0] <= w[1]), "{ats:?}");
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    let pos = |k: &str| kinds.iter().position(|x| *x == k);
    assert!(pos("Started").is_some(), "{kinds:?}");
    assert!(pos("StageStarted") < pos("RouteUnapplied"), "{kinds:?}");
    assert!(pos("RouteUnapplied") < pos("RouteApplied"), "{kinds:?}");
    assert!(pos("RouteApplied") < pos("Aborted"), "{kinds:?}");
    assert!(
        !kinds.contains(&"Succeeded") && !kinds.contains(&"Promoted"),
        "{kinds:?}"
    );
    let aborted = &events[pos("Aborted").unwrap()];
    assert!(
        aborted["message"].as_str().unwrap().contains("router down"),
        "{aborted}"
    );
    let app = w.api.get("/apps/shop").await.body;
    assert_eq!(app["stable"]["version"], "v1", "{app}");
    eprintln!(
        "router down: noticed after {detected:?}, held at stage 0 for 5 s, back at 10% \
         {resynced:?} after a restart; the abort converged {converged:?} after the next"
    );
    w.server.shutdown().await;
}
