//! Test helpers: the upstream CRD schemas, sample objects and a mocked API server.

#![allow(dead_code)]

pub mod cluster;
pub mod mock;

use std::path::PathBuf;

use serde_json::{Value, json};

/// `shared/schemas`, beside the repository (CI keeps a copy at the same place).
pub fn schemas_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/schemas");
    assert!(
        dir.join("README.md").exists(),
        "the upstream CRD schemas are missing: expected them in {} (shared/schemas beside the repository)",
        dir.display()
    );
    dir
}

/// The `openAPIV3Schema` of `version` in the CRD file `file`.
pub fn upstream_schema(file: &str, version: &str) -> Value {
    static CACHE: std::sync::Mutex<Vec<((String, String), Value)>> =
        std::sync::Mutex::new(Vec::new());
    let key = (file.to_owned(), version.to_owned());
    let mut cache = CACHE.lock().unwrap();
    if let Some((_, v)) = cache.iter().find(|(k, _)| *k == key) {
        return v.clone();
    }
    let v = read_schema(file, version);
    cache.push((key, v.clone()));
    v
}

fn read_schema(file: &str, version: &str) -> Value {
    let path = schemas_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: Value =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{file} has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone()
}

/// The stable Deployment of the tests: selector includes `fledge.dev/role: stable`.
pub fn target_deployment(image: &str, version: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "default", "generation": 3, "resourceVersion": "7"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "shop", "fledge.dev/role": "stable"}},
            "template": {
                "metadata": {"labels": {"app": "shop", "fledge.dev/role": "stable", "fledge.dev/version": version}},
                "spec": {"containers": [{"name": "app", "image": image}, {"name": "sidecar", "image": "proxy:1"}]},
            },
        },
        "status": if ready {
            json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3, "readyReplicas": 3})
        } else {
            json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2})
        },
    })
}

/// A stable Ingress for the NGINX router.
pub fn stable_ingress() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "shop.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "shop-stable", "port": {"number": 80}}},
            }]}}],
        },
    })
}

/// A CanaryRollout with `router` and the given stages.
#[allow(clippy::needless_pass_by_value)] // literals at every call site
pub fn rollout(router: Value, stages: Value, extra: Value) -> Value {
    let mut rollout = json!({"app": "shop", "version": "v2", "stages": stages});
    if let Some(map) = extra.as_object() {
        for (k, v) in map {
            rollout[k] = v.clone();
        }
    }
    json!({
        "apiVersion": "fledge.dev/v1alpha1", "kind": "CanaryRollout",
        "metadata": {"name": "shop", "namespace": "default", "uid": "u-1", "generation": 1, "resourceVersion": "100"},
        "spec": {
            "rollout": rollout,
            "targetRef": {"name": "shop", "containers": [{"name": "app", "image": "shop:v2"}]},
            "router": router,
        },
    })
}

/// Each router's settings.
/// The copies a route of router `kind` carries in the schema checks: half of the
/// default methods' requests with Istio (`on`), none with the routers that refuse
/// copies.
pub fn mirror_for(kind: &str, on: bool) -> Option<fledge_k8s::router::MirrorRoute> {
    (on && kind == "istio").then(|| fledge_k8s::router::MirrorRoute {
        percent: 50,
        methods: fledge_spec::Mirroring::default().methods,
    })
}

pub fn routers() -> Vec<(&'static str, Value)> {
    vec![
        (
            "istio",
            json!({"istio": {
                "virtualService": {"name": "shop"}, "hosts": ["shop.example.com"], "gateways": ["web"],
                "destinationHost": "shop", "destinationRule": {"name": "shop"},
            }}),
        ),
        (
            "smi",
            json!({"smi": {
                "trafficSplit": {"name": "shop"}, "rootService": "shop",
                "stableService": "shop-stable", "canaryService": "shop-canary",
            }}),
        ),
        (
            "gatewayApi",
            json!({"gatewayApi": {
                "httpRoute": {"name": "shop"}, "parentRefs": [{"name": "web", "namespace": "infra", "sectionName": "https"}],
                "hostnames": ["shop.example.com"], "stableService": "shop-stable", "canaryService": "shop-canary", "port": 80,
            }}),
        ),
        (
            "nginxIngress",
            json!({"nginxIngress": {
                "ingress": "shop", "stableService": "shop-stable", "canaryService": "shop-canary",
            }}),
        ),
    ]
}
