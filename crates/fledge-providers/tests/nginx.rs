//! The nginx router against a real nginx in front of two loopback backends.

use std::time::Duration;

use fledge_providers::router::{
    AppliedWeights, Endpoints, NginxRouter, NginxSettings, RouterError, TrafficRouter,
};
use fledge_providers::testing::backend::{split, version_server};
use fledge_providers::testing::process::Nginx;
use fledge_providers::testing::{assert_canary_share, wait_for};

const N: usize = 400;

/// Waits until `n` requests in a row all reach `version` (a reload takes effect when
/// the new worker is up).
async fn wait_all(url: &str, version: &str, n: usize) {
    let ok = wait_for(Duration::from_secs(10), || async {
        let counts = split(url, n).await.ok()?;
        (counts.get(version) == Some(&(n as u64))).then_some(())
    })
    .await;
    assert!(ok.is_some(), "never got {n} requests in a row to {version}");
}

#[tokio::test]
#[ignore = "needs nginx: run scripts/test"]
async fn weights_follow_the_router_and_abort_sends_all_to_stable() {
    let stable = version_server("v1").await.unwrap();
    let canary = version_server("v2").await.unwrap();
    let initial = format!("upstream be_app {{ server {}; }}\n", stable.addr);
    let mut nginx = Nginx::start("be_app", &initial).await.unwrap();
    let url = format!("http://{}/", nginx.listen);
    let settings = NginxSettings {
        upstream_file: nginx.upstream_file.clone(),
        upstream: "be_app".into(),
        reload: nginx.reload_command(),
        test: Some(nginx.test_command()),
        server_params: None,
        directives: vec![],
        timeout: Duration::from_secs(10),
    };
    let endpoints = Endpoints {
        stable: vec![stable.addr.to_string()],
        canary: vec![canary.addr.to_string()],
    };
    let router = NginxRouter::new(settings.clone(), endpoints.clone()).unwrap();

    router.set_weights(100).await.unwrap();
    wait_all(&url, "v2", 20).await;

    for weight in [20u8, 50] {
        let before = nginx.workers();
        assert_eq!(
            router.set_weights(weight).await.unwrap(),
            AppliedWeights::canary(weight)
        );
        assert_eq!(
            router.current().await.unwrap(),
            AppliedWeights::canary(weight)
        );
        // Once the old worker is gone, every request goes through the new config.
        nginx.wait_reloaded(&before).await.unwrap();
        let counts = split(&url, N).await.unwrap();
        eprintln!("{weight}% canary: {counts:?}");
        assert_canary_share(&counts, N, weight);
    }

    // Abort: weight 0 is written as `down`, and every request goes to stable.
    let before = nginx.workers();
    router.set_weights(0).await.unwrap();
    nginx.wait_reloaded(&before).await.unwrap();
    let text = std::fs::read_to_string(&nginx.upstream_file).unwrap();
    assert!(
        text.contains(&format!("server {} down;", canary.addr)),
        "{text}"
    );
    let counts = split(&url, 200).await.unwrap();
    assert_eq!(counts.get("v1"), Some(&200), "{counts:?}");

    // A config nginx rejects: the test command fails, the old file is put back.
    let broken = NginxRouter::new(
        NginxSettings {
            server_params: Some("no_such_param=1".into()),
            ..settings.clone()
        },
        endpoints.clone(),
    )
    .unwrap();
    let err = broken.set_weights(30).await.unwrap_err();
    assert!(matches!(err, RouterError::Rejected { .. }), "{err}");
    assert_eq!(router.current().await.unwrap(), AppliedWeights::canary(0));
    assert_eq!(split(&url, 20).await.unwrap().get("v1"), Some(&20));

    // Promotion: at 100% the stable servers become the new version's, then the
    // weight returns to stable.
    router.set_weights(100).await.unwrap();
    wait_all(&url, "v2", 20).await;
    let promoted = Endpoints {
        stable: vec![canary.addr.to_string()],
        canary: vec![canary.addr.to_string()],
    };
    router.set_endpoints(&promoted).await.unwrap();
    router.set_weights(0).await.unwrap();
    let text = std::fs::read_to_string(&nginx.upstream_file).unwrap();
    assert!(!text.contains(&stable.addr.to_string()), "{text}");
    wait_all(&url, "v2", 50).await;
    // The same promotion as one reconcile of the promoted route: one file, one reload.
    router.apply(&endpoints, 100).await.unwrap();
    wait_all(&url, "v2", 20).await;
    let before = nginx.workers();
    let route = Endpoints {
        stable: vec![canary.addr.to_string()],
        canary: vec![],
    };
    router.apply(&route, 0).await.unwrap();
    nginx.wait_reloaded(&before).await.unwrap();
    assert_eq!(split(&url, 50).await.unwrap().get("v2"), Some(&50));
    router.apply(&endpoints, 0).await.unwrap();
    wait_all(&url, "v1", 20).await;

    // nginx is gone: the reload fails, the router says so, the file is unchanged.
    nginx.program.stop();
    let no_test = NginxRouter::new(
        NginxSettings {
            test: None,
            ..settings
        },
        endpoints,
    )
    .unwrap();
    let err = no_test.set_weights(40).await.unwrap_err();
    assert!(matches!(err, RouterError::Rejected { .. }), "{err}");
    assert!(err.to_string().contains("reload"), "{err}");
    assert_eq!(no_test.current().await.unwrap(), AppliedWeights::canary(0));
}
