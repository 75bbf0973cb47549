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
