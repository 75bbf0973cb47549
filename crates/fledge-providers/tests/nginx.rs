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
    use fledge_providers::router::{Desired, RouterSettings, RoutingRules};
    use fledge_spec::Target;
    use rules_support::{ask, doc_block, rollout, rule, sticky, walk_weights};

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

    let rules = RoutingRules {
        matches: vec![
            rule(false, "X-Canary", "always", Target::Canary),
            // Characters nginx's syntax and PCRE would read otherwise.
            rule(false, "x-canary", "a b;c\\\"$.*{}", Target::Canary),
            rule(true, "beta", "old", Target::Stable),
        ],
        stickiness: Some(sticky(false, "x-user-id", None)),
        close_upgraded_on_abort: false,
    };
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

    // Sticky users keep their version as the weight rises, and only move to the
    // canary; requests without the key follow the weights.
    let users: Vec<Vec<(String, String)>> = (0..200)
        .map(|i| vec![("x-user-id".to_owned(), format!("user-{i}"))])
        .collect();
    let counts = walk_weights(|w| serve(route(w)), &url, &users, &[10, 50, 100]).await;
    assert_eq!(counts[2], users.len());
    serve(route(50)).await;
    assert_canary_share(&split(&url, N).await.unwrap(), N, 50);
    // A rule to stable beats the weight, even at 100%, and the first rule wins.
    serve(route(100)).await;
    for _ in 0..20 {
        assert_eq!(ask(&url, &[("cookie", "beta=old")]).await.0, "v1");
        assert_eq!(
            ask(&url, &[("cookie", "beta=old"), ("x-user-id", "user-1")])
                .await
                .0,
            "v1"
        );
        assert_eq!(
            ask(&url, &[("x-canary", "always"), ("cookie", "beta=old")])
                .await
                .0,
            "v2"
        );
    }

    // Abort: no canary, everyone on stable, testers and sticky users included.
    serve(Desired::stable_only("v1", vec![s.clone()])).await;
    for user in users.iter().take(50) {
        assert_eq!(ask(&url, &[(&user[0].0, &user[0].1)]).await.0, "v1");
    }
    for _ in 0..20 {
        assert_eq!(ask(&url, &[("x-canary", "always")]).await.0, "v1");
    }

    // Cookie stickiness: a new user gets an id in a cookie and keeps its version.
    let rules = RoutingRules {
        stickiness: Some(sticky(true, "fledge", Some(Duration::from_secs(3600)))),
        ..Default::default()
    };
    router.supports(&rules).unwrap();
    let route = |w: u8| rollout(&s, &c, w, rules.clone());
    serve(route(50)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (version, cookie) = ask(&url, &[]).await;
        let cookie = cookie.expect("a new user gets the sticky cookie");
        assert!(
            cookie.ends_with("; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"),
            "{cookie}"
        );
        let id = cookie.split(';').next().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "the same id twice: {id}");
        for _ in 0..5 {
            let (again, set) = ask(&url, &[("cookie", &id)]).await;
            assert_eq!(again, version, "{id}");
            assert_eq!(set, None, "a user with the cookie gets no new one");
        }
    }
    let users: Vec<Vec<(String, String)>> = (0..200)
        .map(|i| vec![("cookie".to_owned(), format!("fledge=c{i:04}"))])
        .collect();
    walk_weights(|w| serve(route(w)), &url, &users, &[10, 50, 100]).await;
    nginx.program.stop();
}
