//! The Prometheus source against a real Prometheus scraping an exporter this test
//! controls.

use std::time::Duration;

use fledge_providers::metrics::{
    CustomKind, CustomQuery, MetricError, MetricSource, ObserveQuery, PrometheusSettings,
    PrometheusSource,
};
use fledge_providers::testing::exporter::Exporter;
use fledge_providers::testing::process::Prometheus;
use fledge_providers::testing::{observe_until, shop_query};

fn query(canary: &str) -> ObserveQuery {
    shop_query(
        canary,
        vec![
            CustomQuery {
                name: "error_ratio".into(),
                kind: CustomKind::Ratio {
                    bad: r#"sum(http_requests_total{app="{{app}}",version="{{version}}",code=~"5.."})"#.into(),
                    total: r#"sum(http_requests_total{app="{{app}}",version="{{version}}"})"#.into(),
                },
            },
            CustomQuery::gauge(
            "success_ratio",
            r#"sum(http_requests_total{app="{{app}}",version="{{version}}",code="200"}) / sum(http_requests_total{app="{{app}}",version="{{version}}"})"#,
        ),
        ],
    )
}

#[tokio::test]
#[ignore = "needs prometheus: run scripts/test"]
async fn reads_counters_from_a_real_prometheus() {
    let exporter = Exporter::start("shop").await.unwrap();
    exporter.record("v1", 200, 0.02, 900);
    exporter.record("v1", 503, 0.3, 10);
    exporter.record("v2", 200, 0.2, 95);
    exporter.record("v2", 500, 0.7, 5);
    let mut prom = Prometheus::start(&[exporter.server.addr], Duration::from_millis(200))
        .await
        .unwrap();
    let source = PrometheusSource::new(PrometheusSettings::new(prom.url.clone())).unwrap();
    let q = query("v2");

    let obs = observe_until(&source, &q, |o| {
        o.canary.requests == 100 && o.stable.requests == 910
    })
    .await;
    assert_eq!((obs.stable.requests, obs.stable.errors), (910, 10));
    assert_eq!((obs.canary.requests, obs.canary.errors), (100, 5));
    // Exporter buckets are Prometheus' defaults, all on the fledge ladder: exact.
    assert_eq!(obs.canary.latency.total(), 100);
    assert_eq!(obs.canary.latency.count_above(0.25), 5);
    assert_eq!(obs.canary.latency.count_above(0.5), 5);
    assert_eq!(obs.canary.latency.count_above(1.0), 0);
    assert_eq!(obs.stable.latency.count_above(0.025), 10);
    assert!((obs.canary.latency.sum_seconds - (95.0 * 0.2 + 5.0 * 0.7)).abs() < 1e-6);
    let ratio = obs.custom.get("success_ratio").expect("custom metric");
    assert!((ratio.canary - 0.95).abs() < 1e-9, "{ratio:?}");
    assert!(
        (ratio.stable.unwrap() - 900.0 / 910.0).abs() < 1e-9,
        "{ratio:?}"
    );

    // More traffic: the totals grow, and the engine's difference is the new traffic.
    exporter.record("v2", 200, 0.01, 50);
    let later = observe_until(&source, &q, |o| o.canary.requests == 150).await;
    let delta = later.canary.delta_since(&obs.canary);
    assert_eq!((delta.requests, delta.errors), (50, 0));

    // The canary restarts: its counter drops, and the engine counts a reset.
    exporter.reset("v2");
    exporter.record("v2", 200, 0.01, 7);
    let restarted = observe_until(&source, &q, |o| o.canary.requests == 7).await;
    assert_eq!(restarted.canary.delta_since(&later.canary).requests, 7);

    // A version nobody serves is "no data", never a pass.
    let err = source.observe(&query("v9")).await.unwrap_err();
    assert!(matches!(err, MetricError::NoData { .. }), "{err}");

    // Prometheus goes down: an error naming it, no observation.
    prom.stop();
    let err = source.observe(&q).await.unwrap_err();
    assert!(matches!(err, MetricError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&prom.url), "{err}");
}
