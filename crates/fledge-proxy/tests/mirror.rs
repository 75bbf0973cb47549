//! Copies of stable's requests to the canary (a dark canary), end to end between
//! loopback backends: users get stable's answers whatever the canary does, and the
//! canary's answers to the copies are counted as its own.

mod support;

use fledge_proxy::{Arm, DropReason, ErrorKind, MirrorPolicy, ProxyConfig, Route};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::{Backend, Proxy, black_hole, client, eventually, get, split, text};

/// Both versions at weight 0, with `percent` of stable's requests copied.
fn dark(stable: &Backend, canary_group: fledge_proxy::UpstreamGroup, percent: u8) -> Route {
    Route {
        canary: Some(canary_group),
        mirror: Some(MirrorPolicy {
            percent,
            methods: vec!["GET".into(), "PUT".into()],
            max_body_bytes: 16,
        }),
        ..split(stable, stable, 0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_get_stable_while_a_failing_canary_is_judged_on_copies() {
    let stable = Backend::start("v1").await;
    let canary = Backend::with_status("v2", StatusCode::INTERNAL_SERVER_ERROR).await;
    let proxy = Proxy::start(dark(&stable, canary.group(), 100)).await;
    let c = client();
    for _ in 0..50 {
        let got = get(&c, &proxy.url("/item?id=1"), &[("x-user", "u1")]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "v1"));
    }
    // A method that is not copied, and one with a body (under the limit).
    let post = Request::post(proxy.url("/order")).body(text("{}")).unwrap();
    assert_eq!(c.request(post).await.unwrap().status(), StatusCode::OK);
    let put = Request::put(proxy.url("/item"))
        .body(text("small"))
        .unwrap();
    let rsp = c.request(put).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    rsp.into_body().collect().await.unwrap();

    eventually("51 copies answered", || canary.hits() == 51).await;
    let seen = canary.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.headers["fledge-mirror"] == "1"));
    let puts = seen.iter().filter(|s| s.uri == "/item").count();
    assert_eq!(puts, 1, "the PUT's copy, once its body had streamed");
    let get_copy = seen.iter().find(|s| s.uri == "/item?id=1").unwrap();
    assert_eq!(get_copy.headers["x-user"], "u1");
    assert!(get_copy.headers.contains_key("x-forwarded-for"));

    let stats = proxy.handle.version_stats("v2", Arm::Canary).unwrap();
    eventually("51 copies counted", || stats.snapshot().requests == 51).await;
    let (s, c) = proxy.handle.stats_by_role();
    assert_eq!(
        (s.requests, s.errors),
        (52, 0),
        "users: all stable, all fine"
    );
    assert_eq!(
        (c.requests, c.errors),
        (51, 51),
        "copies: the canary's failures"
    );
    assert_eq!(stats.errors_of(ErrorKind::Upstream5xx), 51);
    assert_eq!(stats.mirrored(), 51);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_canary_neither_slows_nor_fails_users_and_its_copies_are_dropped() {
    let stable = Backend::start("v1").await;
    let (hole, _task) = black_hole().await;
    let mut config = ProxyConfig::new("shop");
    config.limits.max_mirror_in_flight = 4;
    let group = fledge_proxy::UpstreamGroup::new("v2", vec![hole.to_string()]);
    let proxy = Proxy::start_with(config, dark(&stable, group, 100)).await;
    let c = client();
    // Every answer comes from stable although no copy is ever answered (`get`
    // itself fails a request that takes more than 10 s).
    for _ in 0..20 {
        let got = get(&c, &proxy.url("/"), &[]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "v1"));
    }
    let stats = proxy.handle.version_stats("v2", Arm::Canary).unwrap();
    assert_eq!(stats.mirrored(), 4, "four slots");
    assert_eq!(stats.mirror_dropped(DropReason::QueueFull), 16);
    assert_eq!(stats.snapshot().requests, 0, "no copy answered yet");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_and_unknown_shares_are_not_copied() {
    let stable = Backend::start("v1").await;
    let canary = Backend::start("v2").await;
    let proxy = Proxy::start(dark(&stable, canary.group(), 100)).await;
    let c = client();
    let big = Request::put(proxy.url("/"))
        .body(text("x".repeat(17)))
        .unwrap();
    assert_eq!(c.request(big).await.unwrap().status(), StatusCode::OK);
    let stats = proxy.handle.version_stats("v2", Arm::Canary).unwrap();
    assert_eq!(stats.mirror_dropped(DropReason::BodyTooLarge), 1);
    assert_eq!(stats.mirrored(), 0);

    // A share of none copies nothing; a share over 100 is refused, naming it.
    proxy
        .handle
        .set_route(dark(&stable, canary.group(), 0))
        .unwrap();
    get(&c, &proxy.url("/"), &[]).await;
    assert_eq!(stats.mirrored(), 0);
    let err = proxy
        .handle
        .set_route(dark(&stable, canary.group(), 101))
        .unwrap_err();
    assert!(err.to_string().contains("mirror.percent"), "{err}");
    assert_eq!(canary.hits(), 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_exposition_names_copies_and_drops() {
    let stable = Backend::start("v1").await;
    let canary = Backend::start("v2").await;
    let proxy = Proxy::start(dark(&stable, canary.group(), 100)).await;
    get(&client(), &proxy.url("/"), &[]).await;
    eventually("the copy", || canary.hits() == 1).await;
    let mut page =
        fledge_stats::exposition::Page::new(fledge_stats::exposition::Format::PrometheusText);
    proxy.handle.write_metrics(&mut page);
    let out = page.finish();
    let l = "app=\"shop\",version=\"v2\",role=\"canary\"";
    assert!(
        out.contains(&format!("fledge_proxy_mirrored_total{{{l}}} 1\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "fledge_proxy_mirror_dropped_total{{{l},reason=\"queue_full\"}} 0\n"
        )),
        "{out}"
    );
    proxy.shutdown().await;
}
