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
        variable: None,
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

mod rules_support;

#[tokio::test]
#[ignore = "needs nginx: run scripts/test"]
async fn testers_and_sticky_users_follow_the_documented_config() {
    use fledge_providers::router::{Desired, RouterSettings};
    use rules_support::{
        ask, cookie_rules, cookie_stickiness, doc_block,
        header_rules_as_the_weight_rises_and_on_abort, rollout, tested_rules,
    };

    let stable = version_server("v1").await.unwrap();
    let canary = version_server("v2").await.unwrap();
    let (s, c) = (stable.addr.to_string(), canary.addr.to_string());
    let endpoints = Endpoints {
        stable: vec![s.clone()],
        canary: vec![c.clone()],
    };

    // The documented settings and nginx.conf location, with this test's files.
    let dir = tempfile::tempdir().unwrap();
    let upstream_file = dir.path().join("shop-upstream.conf");
    #[derive(serde::Deserialize)]
    struct RouterOnly {
        router: RouterSettings,
    }
    let yaml = doc_block("yaml", "variable: fledge_shop").replace(
        "/etc/nginx/fledge/shop-upstream.conf",
        &upstream_file.display().to_string(),
    );
    let parsed: RouterOnly = fledge_spec::from_yaml_str(&yaml, "docs").unwrap();
    let RouterSettings::Nginx(documented) = parsed.router else {
        panic!("not nginx")
    };
    let conf = doc_block("nginx", "# nginx.conf: match rules and stickiness");
    let location: String = conf
        .lines()
        .skip_while(|l| !l.contains("location / {"))
        .skip(1)
        .take_while(|l| l.trim() != "}")
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert!(
        location.contains("proxy_pass http://$fledge_shop;"),
        "{location}"
    );
    // nginx must start on a file that defines the upstream and the variables.
    let first = NginxRouter::new(documented.clone(), endpoints.clone()).unwrap();
    let initial = first.render(AppliedWeights::canary(0)).unwrap();
    let mut nginx = Nginx::start_with("be_shop", &initial, &location)
        .await
        .unwrap();
    let url = format!("http://{}/", nginx.listen);
    let router = NginxRouter::new(
        NginxSettings {
            upstream_file: nginx.upstream_file.clone(),
            reload: nginx.reload_command(),
            test: Some(nginx.test_command()),
            ..documented
        },
        endpoints,
    )
    .unwrap();
    // Serves `desired` and waits until nginx's new workers serve it.
    let serve = |desired: Desired| {
        let (router, nginx) = (&router, &nginx);
        async move {
            let before = nginx.workers();
            router.serve(&desired).await.unwrap();
            nginx.wait_reloaded(&before).await.unwrap();
        }
    };

    // Characters nginx's syntax and PCRE would read otherwise.
    let rules = tested_rules("a b;c\\\"$.*{}");
    router.supports(&rules).unwrap();
    let route = |w: u8| rollout(&s, &c, w, rules.clone());

    // At 0%, a tester still reaches the canary; everyone else is on stable.
    serve(route(0)).await;
    for _ in 0..20 {
        assert_eq!(ask(&url, &[("x-canary", "always")]).await.0, "v2");
        assert_eq!(ask(&url, &[("x-canary", "a b;c\\\"$.*{}")]).await.0, "v2");
        assert_eq!(ask(&url, &[("x-canary", "Always")]).await.0, "v1");
        assert_eq!(ask(&url, &[("x-canary", "a b;c\\\"$x*{}")]).await.0, "v1");
        assert_eq!(ask(&url, &[("x-user-id", "u")]).await.0, "v1");
    }

    let abort = Desired::stable_only("v1", vec![s.clone()]);
    header_rules_as_the_weight_rises_and_on_abort(&url, serve, route, abort).await;

    let rules = cookie_rules();
    router.supports(&rules).unwrap();
    cookie_stickiness(&url, serve, |w| rollout(&s, &c, w, rules.clone())).await;
    nginx.program.stop();
}
