//! The split, stickiness and match rules, end to end between loopback backends.

mod support;

use fledge_stats::exposition::{Format, Page};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fledge_proxy::{Arm, MatchRule, Route, Stickiness};
use http::StatusCode;
use support::{Backend, Proxy, client, get, split};

/// |observed - expected| < 4.5 sigma of the binomial: fails by chance about once in
/// 150 000 runs.
fn assert_binomial(canary: u64, n: u64, weight: u8) {
    let p = f64::from(weight) / 100.0;
    let n_f = n as f64;
    let sigma = (n_f * p * (1.0 - p)).sqrt();
    let diff = (canary as f64 - n_f * p).abs();
    assert!(
        diff < 4.5 * sigma,
        "{canary} of {n} requests on the canary at {weight}% (expected {:.0} ± {:.0})",
        n_f * p,
        4.5 * sigma
    );
}

/// A proxy sending `weight`% of requests to a canary `v2` beside a stable `v1`, its
/// route first adjusted by `adjust`.
async fn start_split(weight: u8, adjust: impl FnOnce(&mut Route)) -> (Backend, Backend, Proxy) {
    let stable = Backend::start("v1").await;
    let canary = Backend::start("v2").await;
    let mut route = split(&stable, &canary, weight);
    adjust(&mut route);
    (stable, canary, Proxy::start(route).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_converges_to_the_weight_and_stats_match_the_backends() {
    let (stable, canary, proxy) = start_split(20, |_| {}).await;
    let n = 3000u64;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = proxy.url("/");
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut canary = 0u64;
            for _ in 0..n / 8 {
                let got = get(&c, &url, &[]).await;
                assert_eq!(got.status, StatusCode::OK);
                canary += u64::from(got.body == "v2");
            }
            canary
        }));
    }
    let mut on_canary = 0;
    for t in tasks {
        on_canary += t.await.unwrap();
    }
    let total = n / 8 * 8;
    assert_binomial(on_canary, total, 20);
    assert_eq!(canary.hits(), on_canary);
    assert_eq!(stable.hits() + canary.hits(), total);

    let (s, c) = proxy.handle.stats_by_role();
    assert_eq!(s.requests, stable.hits());
    assert_eq!(c.requests, canary.hits());
    assert_eq!((s.errors, c.errors), (0, 0));
    assert_eq!(c.latency.total(), c.requests);
    assert_eq!(proxy.handle.stats("v2"), c);

    let mut page = Page::new(Format::OpenMetrics);
    proxy.handle.write_metrics(&mut page);
    let metrics = page.finish();
    let line = format!(
        "fledge_proxy_requests_total{{app=\"shop\",version=\"v2\",role=\"canary\"}} {}\n",
        canary.hits()
    );
    assert!(metrics.contains(&line), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_changes_under_load_lose_no_request() {
    let (stable, canary, proxy) = start_split(0, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (url, stop, sent) = (proxy.url("/"), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            // Bounded even if the stop flag were never set.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let got = get(&c, &url, &[]).await;
                assert_eq!(got.status, StatusCode::OK, "{}", got.body);
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for weight in [10, 50, 100, 0, 30, 100] {
        let before = sent.load(Ordering::SeqCst);
        support::eventually("traffic at the previous weight", || {
            sent.load(Ordering::SeqCst) >= before + 200
        })
        .await;
        proxy.handle.set_canary_weight(weight).unwrap();
    }
    // At 100% every request from now on reaches the canary.
    let canary_before = canary.hits();
    let stable_before = stable.hits();
    support::eventually("requests at 100%", || canary.hits() >= canary_before + 200).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    // Requests in flight during the swap may still land on stable; no more than one
    // per client task.
    assert!(stable.hits() <= stable_before + 8);
    assert_eq!(stable.hits() + canary.hits(), sent.load(Ordering::SeqCst));
    let (s, c) = proxy.handle.stats_by_role();
    assert_eq!(s.requests + c.requests, sent.load(Ordering::SeqCst));
    assert_eq!(s.errors + c.errors, 0);
}

#[tokio::test]
async fn sticky_users_stay_on_the_canary_as_the_weight_rises() {
    let (_stable, _canary, proxy) = start_split(20, |route| {
        route.stickiness = Some(Stickiness::Header {
            name: "x-user-id".into(),
        });
    })
    .await;
    let c = client();
    let url = proxy.url("/");
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut at_20 = Vec::new();
    for u in &users {
        let first = get(&c, &url, &[("x-user-id", u)]).await.body;
        // The same user gets the same answer every time at a fixed weight.
        for _ in 0..2 {
            assert_eq!(get(&c, &url, &[("x-user-id", u)]).await.body, first);
        }
        at_20.push(first == "v2");
    }
    let n_canary = at_20.iter().filter(|&&b| b).count() as u64;
    assert_binomial(n_canary, users.len() as u64, 20);

    proxy.handle.set_canary_weight(50).unwrap();
    let mut at_50 = 0;
    for (u, was_canary) in users.iter().zip(&at_20) {
        let now_canary = get(&c, &url, &[("x-user-id", u)]).await.body == "v2";
        assert!(!was_canary || now_canary, "{u} moved back to stable at 50%");
        at_50 += u64::from(now_canary);
    }
    assert_binomial(at_50, users.len() as u64, 50);

    // An abort sends everyone back.
    proxy.handle.set_canary_weight(0).unwrap();
    for u in &users {
        assert_eq!(get(&c, &url, &[("x-user-id", u)]).await.body, "v1");
    }
}

#[tokio::test]
async fn cookie_stickiness_assigns_a_cookie_that_keeps_the_user() {
    let (_stable, _canary, proxy) = start_split(50, |route| {
        route.stickiness = Some(Stickiness::Cookie {
            name: "fledge_id".into(),
        });
    })
    .await;
    let c = client();
    let url = proxy.url("/");
    let mut seen_versions = std::collections::HashSet::new();
    for _ in 0..40 {
        let first = get(&c, &url, &[]).await;
        let set_cookie = first.headers["set-cookie"].to_str().unwrap().to_owned();
        assert!(set_cookie.starts_with("fledge_id="), "{set_cookie}");
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set_cookie.contains(attr), "{set_cookie} lacks {attr}");
        }
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        for _ in 0..5 {
            let again = get(&c, &url, &[("cookie", &cookie)]).await;
            assert_eq!(again.body, first.body, "cookie {cookie} changed version");
            assert!(!again.headers.contains_key("set-cookie"));
        }
        seen_versions.insert(first.body);
    }
    // At 50% forty fresh users do not all land on one side (p = 2^-39).
    assert_eq!(seen_versions.len(), 2);
}

#[tokio::test]
async fn match_rules_pin_testers_in_both_directions() {
    let (_stable, _canary, proxy) = start_split(0, |route| {
        route.match_rules = vec![
            MatchRule::header("x-canary", "always", Arm::Canary),
            MatchRule::cookie("pin", "stable", Arm::Stable),
        ];
    })
    .await;
    let c = client();
    let url = proxy.url("/");
    for _ in 0..20 {
        assert_eq!(get(&c, &url, &[("x-canary", "always")]).await.body, "v2");
        assert_eq!(get(&c, &url, &[]).await.body, "v1");
    }
    proxy.handle.set_canary_weight(100).unwrap();
    for _ in 0..20 {
        assert_eq!(
            get(&c, &url, &[("cookie", "a=b; pin=stable")]).await.body,
            "v1"
        );
        assert_eq!(get(&c, &url, &[]).await.body, "v2");
    }
    // Without a canary group there is no rollout to pin to.
    let mut route = (*proxy.handle.route()).clone();
    route.canary = None;
    proxy.handle.set_route(route).unwrap();
    assert_eq!(get(&c, &url, &[("x-canary", "always")]).await.body, "v1");
}

#[tokio::test]
async fn several_endpoints_share_a_group() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let mut route =
        fledge_proxy::Route::stable_only("v1", vec![a.addr.to_string(), b.addr.to_string()]);
    route.canary_weight = 0;
    let proxy = Proxy::start(route).await;
    let c = client();
    for _ in 0..10 {
        get(&c, &proxy.url("/"), &[]).await;
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
    assert_eq!(proxy.handle.stats("v1").requests, 10);
}

#[tokio::test]
async fn weight_0_and_100_are_absolute() {
    let (stable, canary, proxy) = start_split(0, |_| {}).await;
    let c = client();
    for _ in 0..300 {
        get(&c, &proxy.url("/"), &[]).await;
    }
    assert_eq!((stable.hits(), canary.hits()), (300, 0));
    proxy.handle.set_canary_weight(100).unwrap();
    for _ in 0..300 {
        get(&c, &proxy.url("/"), &[]).await;
    }
    assert_eq!((stable.hits(), canary.hits()), (300, 300));
}
