//! A canary through a real HAProxy, judged from a real Prometheus: the counters the
//! Prometheus source reads are the requests HAProxy actually routed to each version,
//! and after an abort the canary gets nothing more.

use std::time::Duration;

use fledge_providers::metrics::{PrometheusSettings, PrometheusSource};
use fledge_providers::router::{Backoff, HaproxyRouter, RetryingRouter, TrafficRouter};
use fledge_providers::testing::backend::{Behaviour, MeteredHaproxy, split};
use fledge_providers::testing::{observe_until, shop_query};

#[tokio::test]
#[ignore = "needs haproxy and prometheus: run scripts/test"]
async fn a_broken_canary_is_seen_in_prometheus_and_abort_starves_it() {
    let canary_behaviour = Behaviour::new(200);
    let shop = MeteredHaproxy::start(
        Behaviour::new(200),
        canary_behaviour.clone(),
        Duration::from_millis(200),
    )
    .await
    .unwrap();
    let source =
        PrometheusSource::new(PrometheusSettings::new(shop.prometheus.url.clone())).unwrap();
    let router = RetryingRouter::new(
        HaproxyRouter::new(shop.haproxy.settings(false)).unwrap(),
        Backoff::default(),
    );
    let url = format!("http://{}/", shop.haproxy.frontend);
    let q = shop_query("v2", vec![]);

    // Stage 1: 20% to a healthy canary.
    router.set_weights(20).await.unwrap();
    let counts = split(&url, 300).await.unwrap();
    let (to_stable, to_canary) = (counts["v1"], counts["v2"]);
    eprintln!("stage 1: {counts:?}");
    let first = observe_until(&source, &q, |o| {
        o.stable.requests == to_stable && o.canary.requests == to_canary
    })
    .await;
    assert_eq!((first.canary.errors, first.stable.errors), (0, 0));

    // The canary breaks: Prometheus shows every new canary request failing.
    canary_behaviour.set_status(500);
    let counts = split(&url, 300).await.unwrap();
    let failed = counts["500 v2"];
    eprintln!("canary broken: {counts:?}");
    assert!(failed > 0);
    // Both arms caught up: a backend counts a request just after answering it, so a
    // scrape may hold the canary's last one and not yet stable's.
    let to_stable = to_stable + counts.get("v1").copied().unwrap_or(0);
    let broken = observe_until(&source, &q, |o| {
        o.canary.requests == to_canary + failed && o.stable.requests == to_stable
    })
    .await;
    let delta = broken.canary.delta_since(&first.canary);
    assert_eq!((delta.requests, delta.errors), (failed, failed));
    assert_eq!(broken.stable.errors, 0);

    // Abort: weight 0; the canary's counters stop while stable takes everything.
    router.set_weights(0).await.unwrap();
    assert!(router.status().in_sync);
    let counts = split(&url, 200).await.unwrap();
    assert_eq!(counts.get("v1"), Some(&200), "{counts:?}");
    let after = observe_until(&source, &q, |o| {
        o.stable.requests == broken.stable.requests + 200
    })
    .await;
    assert_eq!(
        after.canary.requests, broken.canary.requests,
        "the canary got traffic after the abort"
    );
}
