//! Every object every router writes, at every weight a rollout passes through and with
//! and without match rules (and, for Istio, copies to the canary), validates against the upstream CRD's `openAPIV3Schema`
//! (Istio, SMI, Gateway API) or round-trips through the `k8s-openapi` type (Ingress).

mod support;

use fledge_k8s::crd::RouterSpec;
use fledge_k8s::router::{Desired, RequestMatch, RouteState, Router, desired_objects};
use fledge_spec::{MatchRule, Target};
use k8s_openapi::api::networking::v1::Ingress;
use serde_json::Value;

fn rules_for(kind: &str) -> Vec<MatchRule> {
    let header = |name: &str, value: &str, target| MatchRule {
        header: Some(name.into()),
        cookie: None,
        value: value.into(),
        target,
    };
    let cookie = MatchRule {
        header: None,
        cookie: Some("beta".into()),
        value: "yes".into(),
        target: Target::Canary,
    };
    match kind {
        "istio" => vec![
            header("X-Canary", "always", Target::Canary),
            cookie,
            header("x-pin", "old", Target::Stable),
        ],
        "gatewayApi" => vec![
            header("X-Canary", "always", Target::Canary),
            header("x-pin", "old", Target::Stable),
        ],
        "nginxIngress" => vec![header("X-Canary", "always", Target::Canary)],
        _ => Vec::new(),
    }
}

fn router(kind: &str, settings: &Value, rules: &[MatchRule]) -> Router {
    let spec: RouterSpec = serde_json::from_value(settings.clone()).unwrap();
    Router::from_spec(&spec, rules).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn check(d: &Desired) {
    // The upstream CRD of each kind; an Ingress is checked against k8s-openapi's type.
    let upstream = match d.resource.kind.as_str() {
        "VirtualService" => Some(("istio-virtualservices.crd.yaml", "v1")),
        "DestinationRule" => Some(("istio-destinationrules.crd.yaml", "v1")),
        "TrafficSplit" => Some(("smi-trafficsplits.crd.yaml", "v1alpha2")),
        "HTTPRoute" => Some(("gateway-api-httproutes.crd.yaml", "v1")),
        "Ingress" => None,
        other => panic!("unexpected kind {other}"),
    };
    let problems = match upstream {
        Some((file, version)) => {
            fledge_k8s::schema::validate(&support::upstream_schema(file, version), &d.object)
        }
        None => {
            let typed: Ingress = serde_json::from_value(d.object.clone()).unwrap();
            let back = serde_json::to_value(&typed).unwrap();
            assert_eq!(
                back, d.object,
                "the Ingress has fields k8s-openapi does not know"
            );
            Vec::new()
        }
    };
    assert_eq!(
        problems,
        Vec::<String>::new(),
        "{} {}: {}",
        d.resource.kind,
        d.name,
        d.object
    );
    assert_eq!(d.object["apiVersion"], d.resource.api_version);
}

#[test]
fn every_router_object_validates_against_the_upstream_schema() {
    let ingress: Ingress = serde_json::from_value(support::stable_ingress()).unwrap();
    let mut checked = 0;
    for (kind, settings) in support::routers() {
        let rules = rules_for(kind);
        let r = router(kind, &settings, &rules);
        for weight in [0u8, 1, 20, 50, 99, 100] {
            for with_rules in [false, true] {
                let route = RouteState {
                    canary_weight: weight,
                    matches: if with_rules {
                        fledge_k8s::router::request_matches(&rules)
                    } else {
                        Vec::new()
                    },
                    mirror: support::mirror_for(kind, with_rules && weight < 100),
                };
                for d in desired_objects(&r, "default", "shop", &route, Some(&ingress)).unwrap() {
                    check(&d);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 12 + 12 + 12 + 12);
}

/// The `nth` object that router `i` of [`support::routers`], given no match rules of
/// its own, writes at 20% with `matches`.
fn written_at_20(i: usize, matches: Vec<RequestMatch>, nth: usize) -> Value {
    let (kind, settings) = &support::routers()[i];
    let r = router(kind, settings, &[]);
    let route = RouteState {
        canary_weight: 20,
        matches,
        mirror: None,
    };
    desired_objects(&r, "default", "shop", &route, None)
        .unwrap()
        .remove(nth)
        .object
}

#[test]
fn the_validator_catches_a_wrong_field_in_an_upstream_schema() {
    let schema = support::upstream_schema("istio-virtualservices.crd.yaml", "v1");
    let mut vs = written_at_20(0, Vec::new(), 1);
    vs["spec"]["http"][0]["route"][0]["weight"] = serde_json::json!("80");
    vs["spec"]["http"][0]["route"][1]["destination"]["subsets"] = serde_json::json!("canary");
    assert_eq!(fledge_k8s::schema::validate(&schema, &vs).len(), 2);
}

#[test]
fn weights_and_match_rules_land_where_each_api_reads_them() {
    let ingress: Ingress = serde_json::from_value(support::stable_ingress()).unwrap();
    let routers = support::routers();
    let objects = |i: usize, weight: u8, matches: Vec<RequestMatch>| {
        let (kind, settings) = &routers[i];
        let r = router(kind, settings, &rules_for(kind));
        desired_objects(
            &r,
            "default",
            "shop",
            &RouteState {
                canary_weight: weight,
                matches,
                mirror: None,
            },
            Some(&ingress),
        )
        .unwrap()
    };
    let canary_header = || {
        vec![RequestMatch::Header {
            name: "x-canary".into(),
            value: "always".into(),
            target: Target::Canary,
        }]
    };

    let istio = objects(0, 20, canary_header());
    let vs = &istio[1].object["spec"]["http"];
    assert_eq!(vs[0]["match"][0]["headers"]["x-canary"]["exact"], "always");
    assert_eq!(vs[0]["route"][0]["destination"]["subset"], "canary");
    assert_eq!(vs[1]["route"][0]["weight"], 80);
    assert_eq!(vs[1]["route"][1]["weight"], 20);
    assert_eq!(
        istio[0].object["spec"]["subsets"][1]["labels"]["fledge.dev/role"],
        "canary"
    );

    let smi = objects(1, 50, Vec::new());
    assert_eq!(
        smi[0].object["spec"]["backends"][1],
        serde_json::json!({"service": "shop-canary", "weight": 50})
    );

    let gw = objects(2, 20, canary_header());
    let rules = &gw[0].object["spec"]["rules"];
    assert_eq!(rules[0]["matches"][0]["headers"][0]["name"], "x-canary");
    assert_eq!(rules[0]["backendRefs"][0]["name"], "shop-canary");
    assert_eq!(rules[1]["backendRefs"][0]["weight"], 80);
    assert_eq!(
        gw[0].object["spec"]["parentRefs"][0]["sectionName"],
        "https"
    );

    let nginx = objects(3, 20, canary_header());
    let o = &nginx[0].object;
    assert_eq!(o["metadata"]["name"], "shop-canary");
    let a = &o["metadata"]["annotations"];
    assert_eq!(a["nginx.ingress.kubernetes.io/canary"], "true");
    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "20");
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header"],
        "x-canary"
    );
    assert_eq!(
        a["nginx.ingress.kubernetes.io/canary-by-header-value"],
        "always"
    );
    assert_eq!(
        o["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
        "shop-canary"
    );
    // Rolled back: weight 0 and no header rule any more.
    let done = objects(3, 0, Vec::new());
    assert_eq!(
        done[0].object["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"],
        "0"
    );
    assert!(
        done[0].object["metadata"]["annotations"]
            .get("nginx.ingress.kubernetes.io/canary-by-header")
            .is_none()
    );
}

#[test]
fn routers_refuse_rules_their_api_cannot_express() {
    let routers = support::routers();
    let rule = MatchRule {
        header: Some("x".into()),
        cookie: None,
        value: "1".into(),
        target: Target::Canary,
    };
    let spec: RouterSpec = serde_json::from_value(routers[1].1.clone()).unwrap();
    let err = Router::from_spec(&spec, std::slice::from_ref(&rule))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("smi router cannot express match rules"),
        "{err}"
    );
    let spec: RouterSpec = serde_json::from_value(routers[3].1.clone()).unwrap();
    let two = [rule.clone(), rule];
    assert!(Router::from_spec(&spec, &two).is_err());
    let none = RouterSpec::default();
    assert!(
        Router::from_spec(&none, &[])
            .unwrap_err()
            .to_string()
            .contains("exactly one")
    );
}

#[test]
fn upstream_patterns_are_enforced() {
    let schema = support::upstream_schema("gateway-api-httproutes.crd.yaml", "v1");
    let bad_header = RequestMatch::Header {
        name: "bad header".into(),
        value: "1".into(),
        target: Target::Canary,
    };
    let route_obj = written_at_20(2, vec![bad_header], 0);
    let problems = fledge_k8s::schema::validate(&schema, &route_obj);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("does not match the pattern")),
        "{problems:?}"
    );
}

#[test]
fn no_router_takes_stickiness_or_close_upgraded_on_abort() {
    let base = "app: shop\nversion: v2\nstages:\n  - traffic: 20\n    duration: 30s\n  - traffic: 100\n    final: true\n    promote: true\n";
    for (kind, settings) in support::routers() {
        let router = router(kind, &settings, &[]);
        let plain = fledge_spec::parse_spec(base, "spec").unwrap();
        router.check_spec(&plain).unwrap();
        for (field, extra) in [
            ("stickiness", "stickiness:\n  cookie: user\n"),
            ("closeUpgradedOnAbort", "closeUpgradedOnAbort: true\n"),
        ] {
            let with = fledge_spec::parse_spec(&format!("{base}{extra}"), "spec").unwrap();
            let err = router.check_spec(&with).unwrap_err().to_string();
            assert!(
                err.contains(&format!("spec.rollout.{field}"))
                    && err.contains(&format!("the {} router cannot express", router.kind())),
                "{kind}: {err}"
            );
        }
    }
}

#[test]
fn istio_copies_the_allowed_methods_to_the_canary_subset() {
    let (kind, settings) = &support::routers()[0];
    let r = router(kind, settings, &[]);
    let route = RouteState {
        canary_weight: 0,
        matches: Vec::new(),
        mirror: Some(fledge_k8s::router::MirrorRoute {
            percent: 100,
            methods: vec!["GET".into(), "HEAD".into()],
        }),
    };
    let objects = desired_objects(&r, "default", "shop", &route, None).unwrap();
    objects.iter().for_each(check);
    let http = &objects[1].object["spec"]["http"];
    let copied = &http[0];
    assert_eq!(copied["match"][0]["method"]["regex"], "^(GET|HEAD)$");
    assert_eq!(
        copied["mirror"],
        serde_json::json!({"host": "shop", "subset": "canary"})
    );
    assert_eq!(copied["mirrorPercentage"]["value"], 100.0);
    // Users stay on stable: the copies' route splits like the default one.
    assert_eq!(copied["route"][0]["weight"], 100);
    assert_eq!(copied["route"][1]["weight"], 0);
    assert!(http[1].get("mirror").is_none());
    assert_eq!(http[1]["route"][0]["weight"], 100);
    // Once no stage asks for copies, none are written.
    let live = RouteState {
        canary_weight: 10,
        mirror: None,
        ..route
    };
    let objects = desired_objects(&r, "default", "shop", &live, None).unwrap();
    let http = objects[1].object["spec"]["http"].as_array().unwrap();
    assert!(http.iter().all(|h| h.get("mirror").is_none()), "{http:?}");
}

#[test]
fn routers_that_cannot_copy_requests_refuse_a_mirror_stage() {
    let spec = fledge_spec::parse_spec(
        "app: shop\nversion: v2\nstages:\n  - traffic: 0\n    duration: 1m\n  \
         - traffic: 0\n    mirror: 100\n    duration: 1m\n  - traffic: 100\n    final: true\n",
        "spec",
    )
    .unwrap();
    for (kind, settings) in support::routers() {
        let r = router(kind, &settings, &[]);
        match (kind, r.check_spec(&spec)) {
            ("istio", result) => result.unwrap(),
            (_, Ok(())) => panic!("{kind} accepted copies"),
            (_, Err(e)) => {
                let e = e.to_string();
                assert!(
                    e.contains("spec.rollout.stages[1].mirror")
                        && e.contains(&format!("the {kind} router")),
                    "{e}"
                );
            }
        }
    }
}
