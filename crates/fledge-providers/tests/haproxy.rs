//! The HAProxy router against a real HAProxy in front of two loopback backends.

use std::time::Duration;

use fledge_providers::router::{
    AppliedWeights, Backoff, Endpoints, EndpointsApplied, HaproxyRouter, HaproxySettings,
    RetryingRouter, RouterError, TrafficRouter,
};
use fledge_providers::testing::assert_canary_share;
use fledge_providers::testing::backend::{split, version_server};
use fledge_providers::testing::process::Haproxy;

const N: usize = 400;

#[tokio::test]
#[ignore = "needs haproxy: run scripts/test"]
async fn weights_follow_the_router_and_abort_sends_all_to_stable() {
    let stable = version_server("v1").await.unwrap();
    let canary = version_server("v2").await.unwrap();
    let mut haproxy = Haproxy::start("be_app", stable.addr, canary.addr, 0)
        .await
        .unwrap();
    let url = format!("http://{}/", haproxy.frontend);
    let settings = haproxy.settings(false);
    let router = HaproxyRouter::new(settings.clone()).unwrap();
    assert_eq!(router.current().await.unwrap(), AppliedWeights::canary(0));

    for weight in [20u8, 50] {
        assert_eq!(
            router.set_weights(weight).await.unwrap(),
            AppliedWeights::canary(weight)
        );
        let counts = split(&url, N).await.unwrap();
        eprintln!("{weight}% canary: {counts:?}");
        assert_canary_share(&counts, N, weight);
    }

    // The same API over TCP sees what the unix socket set.
    let tcp = HaproxyRouter::new(HaproxySettings {
        socket: None,
        address: Some(haproxy.admin_address.to_string()),
        ..settings.clone()
    })
    .unwrap();
    assert_eq!(tcp.current().await.unwrap(), AppliedWeights::canary(50));

    // Abort: weight 0, every request to stable.
    tcp.set_weights(0).await.unwrap();
    let counts = split(&url, 200).await.unwrap();
    assert_eq!(counts.get("v1"), Some(&200), "{counts:?}");

    // 100% canary and back to 0 (the path where lowering first would serve 503s).
    router.set_weights(100).await.unwrap();
    assert_eq!(split(&url, 50).await.unwrap().get("v2"), Some(&50));
    router.set_weights(0).await.unwrap();
    assert_eq!(split(&url, 50).await.unwrap().get("v1"), Some(&50));

    // An unknown server is HAProxy's complaint, not a silent success.
    let wrong = HaproxyRouter::new(HaproxySettings {
        canary_server: "nope".into(),
        ..settings.clone()
    })
    .unwrap();
    let err = wrong.set_weights(10).await.unwrap_err();
    assert!(matches!(err, RouterError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("No such server"), "{err}");

    // HAProxy goes away: the retrying router gives up out of sync and keeps
    // reporting the last weight that was really applied.
    let retrying = RetryingRouter::new(
        HaproxyRouter::new(settings).unwrap(),
        Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
            attempts: 3,
        },
    );
    retrying.set_weights(10).await.unwrap();
    haproxy.program.stop();
    let err = retrying.set_weights(30).await.unwrap_err();
    assert!(matches!(err, RouterError::Unreachable { .. }), "{err}");
    let status = retrying.status();
    assert!(!status.in_sync);
    assert_eq!(status.desired, Some(30));
    assert_eq!(status.applied, Some(AppliedWeights::canary(10)));
    assert_eq!(status.consecutive_failures, 3);
}

#[tokio::test]
#[ignore = "needs haproxy: run scripts/test"]
async fn managed_addresses_follow_the_endpoints_through_a_promotion() {
    let stable = version_server("v1").await.unwrap();
    let canary = version_server("v2").await.unwrap();
    // haproxy.cfg points the canary server at a port where nothing runs.
    let nowhere: std::net::SocketAddr = (
        [127, 0, 0, 1],
        fledge_providers::testing::free_port().unwrap(),
    )
        .into();
    let haproxy = Haproxy::start("be_app", stable.addr, nowhere, 0)
        .await
        .unwrap();
    let url = format!("http://{}/", haproxy.frontend);
    let router = HaproxyRouter::new(haproxy.settings(true)).unwrap();

    // The rollout brings its canary endpoint.
    let rollout = Endpoints {
        stable: vec![stable.addr.to_string()],
        canary: vec![canary.addr.to_string()],
    };
    assert_eq!(
        router.set_endpoints(&rollout).await.unwrap(),
        EndpointsApplied::Applied
    );
    router.set_weights(50).await.unwrap();
    // The canary address answers its share.
    assert_canary_share(&split(&url, 100).await.unwrap(), 100, 50);

    // Promotion: at 100% the stable server moves to the new version, then the weight
    // returns to stable. No request may reach the old version after the first step.
    router.set_weights(100).await.unwrap();
    let promoted = Endpoints {
        stable: vec![canary.addr.to_string()],
        canary: vec![canary.addr.to_string()],
    };
    router.set_endpoints(&promoted).await.unwrap();
    router.set_weights(0).await.unwrap();
    let counts = split(&url, 100).await.unwrap();
    assert_eq!(counts.get("v2"), Some(&100), "{counts:?}");
    let servers = router.server_addresses().await.unwrap();
    assert!(
        servers
            .iter()
            .any(|(n, a, p)| n == "stable" && format!("{a}:{p}") == canary.addr.to_string()),
        "{servers:?}"
    );

    // Host names cannot be set through the runtime API: a settings error, nothing moves.
    let err = router
        .set_endpoints(&Endpoints {
            stable: vec!["localhost:9001".into()],
            canary: vec![],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RouterError::Config { .. }), "{err}");
    assert_eq!(split(&url, 20).await.unwrap().get("v2"), Some(&20));

    // Without manageAddresses, a route that puts a version elsewhere is refused, not
    // silently "applied" to the old address.
    let unmanaged = HaproxyRouter::new(haproxy.settings(false)).unwrap();
    let here = Endpoints {
        stable: vec![canary.addr.to_string()],
        canary: vec![],
    };
    assert_eq!(
        unmanaged.set_endpoints(&here).await.unwrap(),
        EndpointsApplied::Unmanaged
    );
    let elsewhere = Endpoints {
        stable: vec![stable.addr.to_string()],
        canary: vec![],
    };
    let err = unmanaged.apply(&elsewhere, 0).await.unwrap_err();
    assert!(err.to_string().contains("manageAddresses"), "{err}");
    assert_eq!(split(&url, 20).await.unwrap().get("v2"), Some(&20));
}

mod rules_support;

/// The router settings and the backend of docs/integrations.md ("Match rules and
/// stickiness on HAProxy"), with this test's socket, map file and servers.
async fn documented_haproxy(
    stable: std::net::SocketAddr,
    canary: std::net::SocketAddr,
) -> (Haproxy, HaproxyRouter, tempfile::TempDir) {
    use fledge_providers::router::RouterSettings;
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("fledge-shop.map");
    std::fs::write(&map, "").unwrap();
    let map = map.display().to_string();
    let section = rules_support::doc_block("haproxy", "fledge's match and stickiness lines")
        .replace("/etc/haproxy/fledge-shop.map", &map)
        .replace("10.0.0.11:9001", &stable.to_string())
        .replace("10.0.0.12:9001", &canary.to_string());
    let haproxy = Haproxy::start_with("be_shop", &section).await.unwrap();
    #[derive(serde::Deserialize)]
    struct RouterOnly {
        router: RouterSettings,
    }
    let yaml = rules_support::doc_block("yaml", "matchOn:")
        .replace(
            "/run/haproxy/admin.sock",
            &haproxy.socket.display().to_string(),
        )
        .replace("/etc/haproxy/fledge-shop.map", &map);
    let settings: RouterOnly = fledge_spec::from_yaml_str(&yaml, "docs").unwrap();
    let RouterSettings::Haproxy(settings) = settings.router else {
        panic!("not haproxy")
    };
    (haproxy, HaproxyRouter::new(settings).unwrap(), dir)
}

#[tokio::test]
#[ignore = "needs haproxy: run scripts/test"]
async fn testers_and_sticky_users_follow_the_documented_config() {
    use fledge_providers::router::Desired;
    use rules_support::{
        ask, cookie_rules, cookie_stickiness, header_rules_as_the_weight_rises_and_on_abort,
        rollout, tested_rules,
    };

    let stable = version_server("v1").await.unwrap();
    let canary = version_server("v2").await.unwrap();
    let (s, c) = (stable.addr.to_string(), canary.addr.to_string());
    let (mut haproxy, router, _dir) = documented_haproxy(stable.addr, canary.addr).await;
    let url = format!("http://{}/", haproxy.frontend);
    // Spaces, `;` and `\` travel through the runtime API escaped.
    let rules = tested_rules("a b;c\\");
    router.supports(&rules).unwrap();
    let route = |w: u8| rollout(&s, &c, w, rules.clone());

    // At 0%, a tester still reaches the canary; everyone else is on stable.
    router.serve(&route(0)).await.unwrap();
    for _ in 0..20 {
        assert_eq!(ask(&url, &[("x-canary", "always")]).await.0, "v2");
        assert_eq!(ask(&url, &[("x-canary", "a b;c\\")]).await.0, "v2");
        assert_eq!(ask(&url, &[("x-canary", "Always")]).await.0, "v1");
        assert_eq!(ask(&url, &[("x-user-id", "u")]).await.0, "v1");
    }
    let mut map = router.map_contents().await.unwrap();
    map.sort();
    assert_eq!(
        map,
        [
            "cookie:beta=old stable",
            "header:x-canary=a b;c\\ canary",
            "header:x-canary=always canary",
            "sticky:header:x-user-id 0",
        ]
    );

    let serve = |desired: Desired| {
        let router = &router;
        async move {
            router.serve(&desired).await.unwrap();
        }
    };
    let abort = Desired::stable_only("v1", vec![s.clone()]);
    header_rules_as_the_weight_rises_and_on_abort(&url, serve, route, abort).await;
    // The abort took the testers' and sticky users' entries out of the map.
    assert!(router.map_contents().await.unwrap().is_empty());

    let rules = cookie_rules();
    router.supports(&rules).unwrap();
    let route = |w: u8| rollout(&s, &c, w, rules.clone());
    cookie_stickiness(&url, serve, route).await;

    // A restarted HAProxy has lost the map: the router's read-back says so, and
    // serving the route again puts it back.
    router.serve(&route(30)).await.unwrap();
    haproxy.restart(0).await.unwrap();
    let err = router.current().await.unwrap_err();
    assert!(err.to_string().contains("map"), "{err}");
    router.serve(&route(30)).await.unwrap();
    assert_eq!(router.current().await.unwrap(), AppliedWeights::canary(30));
}
