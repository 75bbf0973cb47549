//! Blue/green on Kubernetes: the new version's Deployment is sized to take every
//! request after the switch.

use fledge_k8s::controller::canary_deployment;
use fledge_k8s::crd::CanaryRollout;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

/// A stable Deployment of `replicas` pods, selected by `fledge.dev/role: stable`.
fn stable(replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "shop", "fledge.dev/role": "stable"}},
            "template": {
                "metadata": {"labels": {"app": "shop", "fledge.dev/role": "stable"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/shop:v1"}]},
            },
        },
    }))
    .unwrap()
}

/// A CanaryRollout of `strategy`, with `canaryReplicas` when given.
fn rollout(strategy: &str, canary_replicas: Option<i32>) -> CanaryRollout {
    let mut target = json!({
        "name": "shop",
        "containers": [{"name": "app", "image": "registry.example/shop:v2"}],
    });
    if let Some(n) = canary_replicas {
        target["canaryReplicas"] = json!(n);
    }
    let stages = match strategy {
        "blueGreen" => {
            json!([{"traffic": 0, "duration": "5m"}, {"traffic": 100, "duration": "1m", "promote": true}])
        }
        _ => json!([{"traffic": 20, "duration": "5m"}, {"traffic": 100, "promote": true}]),
    };
    serde_json::from_value(json!({
        "apiVersion": "fledge.dev/v1alpha1", "kind": "CanaryRollout",
        "metadata": {"name": "shop", "namespace": "shop"},
        "spec": {
            "targetRef": target,
            "router": {"gatewayApi": {
                "httpRoute": {"name": "shop"}, "parentRefs": [{"name": "gw"}],
                "stableService": "shop-stable", "canaryService": "shop-canary", "port": 80,
            }},
            "rollout": {
                "app": "shop", "version": "v2", "strategy": strategy,
                "match": [{"header": "x-preview", "value": "1"}],
                "stages": stages,
            },
        },
    }))
    .unwrap()
}

/// The replicas of the new version's Deployment beside a stable one of 4 pods.
fn replicas(obj: &CanaryRollout, running: bool) -> Value {
    let deployment = canary_deployment(obj, &stable(4), &obj.spec.rollout, running).unwrap();
    deployment["spec"]["replicas"].clone()
}

#[test]
fn a_blue_green_deployment_runs_as_many_pods_as_stable() {
    assert_eq!(replicas(&rollout("blueGreen", None), true), 4);
    // Asked for explicitly, the count wins; once the rollout ends, none run.
    assert_eq!(replicas(&rollout("blueGreen", Some(2)), true), 2);
    assert_eq!(replicas(&rollout("blueGreen", None), false), 0);
    // A canary takes a share: one pod unless asked.
    assert_eq!(replicas(&rollout("canary", None), true), 1);
}
