//! fledge's Kubernetes objects against a real kube-apiserver, the one that
//! `scripts/k8s-test-cluster` starts (and `scripts/test` runs them with): the CRD in
//! deploy/kubernetes installs; the sample CanaryRollout is accepted, comes back with
//! the schema's defaults filled in and still parses as the operator's type; a wrong
//! one is refused with the fields named; and every object each router writes, at
//! every weight a rollout passes through, is accepted by the upstream CRDs that real
//! clusters install, and stored exactly as applied. Then, as the operator's own
//! ServiceAccount under deploy/kubernetes/overlays/operator/rbac.yaml, the operator's own code writes
//! every router object and wins, keeps and loses a leader Lease. `routers.rs` checks
//! the same objects against the same schemas offline; only the server itself shows
//! what it really accepts and allows.
//!
//! Each test works in a namespace of its own, so tests may run at once and a
//! re-run never meets what an earlier one left.

mod support;

use support::cluster::*;

use std::time::Duration;

use fledge_k8s::CanaryRollout;
use fledge_k8s::crd::{FIELD_MANAGER, RouterSpec};
use fledge_k8s::leader::LeaderElector;
use fledge_k8s::router::{Desired, RouteState, Router, desired_objects, request_matches};
use fledge_spec::{MatchRule, Target};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The server's answer to a request it refused.
fn refusal(result: Result<DynamicObject, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("expected the server to refuse the object, got: {other}"),
        Ok(o) => panic!("the server accepted an invalid object: {o:?}"),
    }
}

/// An admin client of the test cluster, once `install` has installed what the test
/// needs, and a namespace of the test's own.
async fn cluster(test: &str, install: impl AsyncFnOnce(&kube::Client)) -> (kube::Client, String) {
    let client = client().await;
    install(&client).await;
    let ns = namespace(&client, test).await;
    (client, ns)
}

// === CanaryRollout ===

#[tokio::test]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn the_sample_rollout_is_accepted_and_comes_back_defaulted() {
    let (client, ns) = cluster("sample", install_fledge_crd).await;

    let mut sample = yaml_documents(&repo_file("deploy/kubernetes/sample-canaryrollout.yaml"));
    assert_eq!(sample.len(), 1, "the sample is one CanaryRollout");
    let mut sample = sample.remove(0);
    sample["metadata"]["namespace"] = json!(ns);
    let created = canary_rollouts(&client, &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(sample).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("the server refused the sample CanaryRollout: {e}"));
    let created = serde_json::to_value(created).unwrap();

    // What the sample says is kept; what it leaves out the schema's defaults fill in,
    // on the server, as the operator then reads it.
    let analysis = &created["spec"]["rollout"]["analysis"];
    assert_eq!(analysis["interval"], "15s", "{analysis}");
    assert_eq!(analysis["method"], "sequential", "{analysis}");
    assert_eq!(analysis["alpha"], 0.05, "{analysis}");
    assert_eq!(analysis["minRequests"], 100, "{analysis}");
    assert_eq!(created["spec"]["rollout"]["stages"][1]["traffic"], 50);
    // The stored object, defaults and all, is one the operator can read.
    let typed: CanaryRollout = serde_json::from_value(created.clone())
        .unwrap_or_else(|e| panic!("the operator cannot read the stored sample: {e}\n{created}"));
    assert_eq!(typed.spec.target_ref.name, "lemonade-checkout");

    drop_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn an_invalid_rollout_is_refused_naming_each_wrong_field() {
    let (client, ns) = cluster("invalid", install_fledge_crd).await;
    let api = canary_rollouts(&client, &ns);
    let post = |object: Value| {
        let api = api.clone();
        async move {
            api.create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
        }
    };
    let (_, router) = support::routers().remove(0);
    let rollout = |name: &str, stages: Value, extra: Value| {
        let mut r = support::rollout(router.clone(), stages, extra);
        r["metadata"] = json!({"name": name, "namespace": ns});
        r
    };

    // A stage's traffic above 100 and an unknown analysis method.
    let status = refusal(
        post(rollout(
            "too-much",
            json!([{"traffic": 150, "duration": "1m"}, {"traffic": 100, "final": true, "promote": true}]),
            json!({"analysis": {"method": "bayesian"}}),
        ))
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    for needle in [
        "spec.rollout.stages[0].traffic",
        "less than or equal to 100",
        "spec.rollout.analysis.method",
        "\"bayesian\"",
    ] {
        assert!(
            status.message.contains(needle),
            "{needle:?} not in: {}",
            status.message
        );
    }

    // No targetRef at all.
    let mut no_target = rollout(
        "no-target",
        json!([{"traffic": 100, "final": true, "promote": true}]),
        json!({}),
    );
    no_target["spec"]
        .as_object_mut()
        .unwrap()
        .remove("targetRef");
    let status = refusal(post(no_target).await);
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("spec.targetRef: Required value"),
        "{}",
        status.message
    );

    drop_namespace(&client, &ns).await;
}

// === routers ===

/// As many of a header rule to the canary, a cookie rule to the canary and a header
/// rule to stable as the router `spec` names can express, as the router itself
/// decides (`Router::from_spec` refuses rules it cannot write).
fn expressible_rules(spec: &RouterSpec) -> Vec<MatchRule> {
    let rule = |header: Option<&str>, cookie: Option<&str>, value: &str, target| MatchRule {
        header: header.map(Into::into),
        cookie: cookie.map(Into::into),
        value: value.into(),
        target,
    };
    let mut rules = Vec::new();
    for candidate in [
        rule(Some("X-Canary"), None, "always", Target::Canary),
        rule(None, Some("beta"), "yes", Target::Canary),
        rule(Some("x-pin"), None, "old", Target::Stable),
    ] {
        rules.push(candidate);
        if Router::from_spec(spec, &rules).is_err() {
            rules.pop();
        }
    }
    rules
}

/// Every object of every router at every weight a rollout passes through, with and
/// without match rules, in `namespace`.
fn every_router_object(namespace: &str) -> Vec<(String, Desired)> {
    let mut stable: Value = support::stable_ingress();
    stable["metadata"]["namespace"] = json!(namespace);
    let stable: Ingress = serde_json::from_value(stable).unwrap();
    let mut all = Vec::new();
    for (kind, settings) in support::routers() {
        let spec: RouterSpec = serde_json::from_value(settings).unwrap();
        let rules = expressible_rules(&spec);
        if kind == "istio" {
            // Else the candidates would not be what the routers are tested with.
            assert_eq!(rules.len(), 3, "Istio expresses every kind of match rule");
        }
        let router = Router::from_spec(&spec, &rules).unwrap_or_else(|e| panic!("{kind}: {e}"));
        for weight in [0u8, 1, 20, 50, 99, 100] {
            for with_rules in [false, true] {
                let route = RouteState {
                    canary_weight: weight,
                    matches: if with_rules {
                        request_matches(&rules)
                    } else {
                        Vec::new()
                    },
                    mirror: support::mirror_for(kind, with_rules && weight < 100),
                };
                let objects = desired_objects(&router, namespace, "shop", &route, Some(&stable))
                    .unwrap_or_else(|e| panic!("{kind} at {weight}%: {e}"));
                for d in objects {
                    let what = format!(
                        "{kind} at {weight}% {} match rules (and copies): {} {}",
                        if with_rules { "with" } else { "without" },
                        d.resource.kind,
                        d.name
                    );
                    all.push((what, d));
                }
            }
        }
    }
    all
}

#[tokio::test]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn every_router_object_is_accepted_by_a_server_side_dry_run_apply() {
    let (client, ns) = cluster("routers-dry-run", install_upstream_crds).await;

    // The operator's own apply (fledge's field manager, forced), as a dry run so that
    // every variant meets the server's validation as a fresh object.
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    let mut refused = Vec::new();
    let objects = every_router_object(&ns);
    for (what, d) in &objects {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &d.namespace, &d.resource);
        if let Err(e) = api.patch(&d.name, &params, &Patch::Apply(&d.object)).await {
            refused.push(format!("{what}: {e}"));
        }
    }
    assert!(
        refused.is_empty(),
        "the server refused {} of {} router objects:\n{}",
        refused.len(),
        objects.len(),
        refused.join("\n")
    );
    assert_eq!(objects.len(), 2 * 12 + 12 + 12 + 12);

    drop_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn applying_each_weight_in_turn_leaves_exactly_the_desired_object() {
    let (client, ns) = cluster("routers-apply", install_upstream_crds).await;

    // A rollout's life: weights go up, match rules end with it. After each apply
    // through the operator's own `apply`, the stored spec (and annotations) are the
    // desired ones, so no route, match or backend of an earlier stage lingers in a
    // merged list.
    for (what, d) in every_router_object(&ns) {
        fledge_k8s::router::apply(&client, &d)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &d.namespace, &d.resource);
        let stored = serde_json::to_value(api.get(&d.name).await.unwrap()).unwrap();
        assert_eq!(
            without_server_defaults(&stored["spec"], &d.object["spec"]),
            d.object["spec"],
            "{what}: the stored spec is not the applied one"
        );
        // NGINX's weight and match rule are annotations.
        assert_eq!(
            stored["metadata"]["annotations"], d.object["metadata"]["annotations"],
            "{what}: the stored annotations are not the applied ones"
        );
    }

    drop_namespace(&client, &ns).await;
}

/// `stored` with only the fields that `applied` has (a server fills in defaults,
/// e.g. Gateway API's `matches: [{path: {type: PathPrefix, value: /}}]`), lists
/// kept whole so that an extra or a missing item still shows.
fn without_server_defaults(stored: &Value, applied: &Value) -> Value {
    match (stored, applied) {
        (Value::Object(s), Value::Object(a)) => Value::Object(
            s.iter()
                .filter_map(|(k, v)| {
                    a.get(k)
                        .map(|av| (k.clone(), without_server_defaults(v, av)))
                })
                .collect(),
        ),
        (Value::Array(s), Value::Array(a)) if s.len() == a.len() => Value::Array(
            s.iter()
                .zip(a)
                .map(|(sv, av)| without_server_defaults(sv, av))
                .collect(),
        ),
        _ => stored.clone(),
    }
}

// === the operator's RBAC ===
#[tokio::test]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn the_operator_may_write_every_router_object_under_its_rbac() {
    let (client, ns) = cluster("rbac-routers", install_upstream_crds).await;
    let operator = install_operator_rbac(&client, &ns).await;

    // Each object created, then changed, by the operator's own apply, as the
    // operator's ServiceAccount: a verb missing from rbac.yaml is a 403 here.
    let mut refused = Vec::new();
    for (what, d) in every_router_object(&ns) {
        if let Err(e) = fledge_k8s::router::apply(&operator, &d).await {
            refused.push(format!("{what}: {e}"));
        }
    }
    assert!(
        refused.is_empty(),
        "rbac.yaml does not let the operator write:\n{}",
        refused.join("\n")
    );

    drop_namespace(&client, &ns).await;
}

#[tokio::test]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn leader_election_works_on_a_real_lease_under_the_operators_rbac() {
    let (client, ns) = cluster("rbac-leader", async |_| {}).await;
    let operator = install_operator_rbac(&client, &ns).await;

    // A Lease of this test's own, in the namespace rbac.yaml grants leases in.
    let lease = ns.clone();
    let term = Duration::from_secs(15);
    let a = LeaderElector::new(operator.clone(), "fledge-system", &lease, "pod-a", term);
    let b = LeaderElector::new(operator.clone(), "fledge-system", &lease, "pod-b", term);
    let now = Timestamp::now();
    let later = |s: i64| now + SignedDuration::from_secs(s);

    assert!(
        a.try_acquire_or_renew(now).await.unwrap(),
        "a takes the free Lease"
    );
    assert!(
        !b.try_acquire_or_renew(later(1)).await.unwrap(),
        "b may not take a held Lease"
    );
    assert!(a.try_acquire_or_renew(later(5)).await.unwrap(), "a renews");
    assert!(
        !b.try_acquire_or_renew(later(19)).await.unwrap(),
        "a renewed at +5 s: the Lease holds until +20 s"
    );
    assert!(
        b.try_acquire_or_renew(later(21)).await.unwrap(),
        "b takes the expired Lease"
    );
    assert!(
        !a.try_acquire_or_renew(later(22)).await.unwrap(),
        "a has lost it"
    );

    let stored = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        "fledge-system",
    )
    .get(&lease)
    .await
    .unwrap();
    let spec = stored.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(1));

    let _ = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        "fledge-system",
    )
    .delete(&lease, &DeleteParams::default())
    .await;
    drop_namespace(&client, &ns).await;
}
