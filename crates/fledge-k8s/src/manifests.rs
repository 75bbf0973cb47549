//! The install manifests under `deploy/kubernetes/`, generated from code so they
//! cannot drift from the CRD and the controller's needs. A test regenerates them and
//! compares with the committed files (`FLEDGE_BLESS=1` rewrites them).

use serde::Serialize;
use serde_json::{Value, json};

/// The namespace the install manifests use.
pub const NAMESPACE: &str = "fledge-system";
/// The operator's name (ServiceAccount, ClusterRole, Deployment, Lease).
pub const NAME: &str = "fledge-operator";

/// One object as YAML (a document without the leading `---`).
pub fn to_yaml<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_value(value).expect("Kubernetes objects are JSON");
    serde_saphyr::to_string(&json).expect("JSON is representable as YAML")
}

/// Several objects as one YAML stream.
pub fn to_yaml_stream(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| format!("---\n{}", to_yaml(o)))
        .collect()
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// The ServiceAccount, the least-privilege ClusterRole (exactly the verbs and
/// resources the controller uses) and its binding, and the Role for the leader Lease.
pub fn rbac() -> Vec<Value> {
    let sa = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
    });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": NAME},
        "rules": [
            // Watch the resources and write their status. Commands are annotations
            // that users write (`fledge operator command`); the operator only reads them.
            rule(&["fledge.dev"], &["canaryrollouts"], &["list", "watch"]),
            // The status is replaced whole, with the resourceVersion read.
            rule(&["fledge.dev"], &["canaryrollouts/status"], &["update"]),
            // The canary Deployment and the stable one (promotion). A server-side
            // apply that creates the object is authorized as `create` too.
            rule(&["apps"], &["deployments"], &["get", "list", "watch", "create", "patch"]),
            // Restarts and CrashLoopBackOff of the canary's pods.
            rule(&[""], &["pods"], &["list"]),
            rule(&["events.k8s.io"], &["events"], &["create"]),
            // Metric-source credentials named by `spec.metrics.*SecretRef*` (Datadog
            // and New Relic keys, Loki passwords and tokens, web-source headers),
            // read in the CanaryRollout's own namespace.
            rule(&[""], &["secrets"], &["get"]),
            // Routers: server-side apply creates (authorized as `create`) or patches.
            rule(&["networking.istio.io"], &["virtualservices", "destinationrules"], &["create", "patch"]),
            rule(&["split.smi-spec.io"], &["trafficsplits"], &["create", "patch"]),
            rule(&["gateway.networking.k8s.io"], &["httproutes"], &["create", "patch"]),
            rule(&["networking.k8s.io"], &["ingresses"], &["get", "create", "patch"]),
        ],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": NAME},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    });
    let lease_role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": format!("{NAME}-leader"), "namespace": NAMESPACE},
        "rules": [rule(&["coordination.k8s.io"], &["leases"], &["get", "create", "update"])],
    });
    let lease_binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{NAME}-leader"), "namespace": NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{NAME}-leader")},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
    });
    vec![sa, role, binding, lease_role, lease_binding]
}

/// The namespace of the operator and the server.
pub fn namespace() -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
}

/// The operator Deployment: two replicas, one leads; logs as JSON lines; `/metrics`,
/// `/healthz` and `/readyz` on port 8080 (liveness: the process answers; readiness:
/// the API server answered its last Lease call, leader or not).
pub fn deployment(image: &str) -> Value {
    let labels = json!({"app.kubernetes.io/name": NAME});
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "8080",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "operator",
                        "image": image,
                        "args": ["operator", "run", "--lease-namespace", NAMESPACE, "--log-format", "json"],
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "RUST_LOG", "value": "info"},
                        ],
                        "ports": [{"name": "metrics", "containerPort": 8080}],
                        "livenessProbe": {
                            "httpGet": {"path": "/healthz", "port": "metrics"},
                            "periodSeconds": 10,
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/readyz", "port": "metrics"},
                            "periodSeconds": 5,
                        },
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "256Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }],
                },
            },
        },
    });
    deploy
}

/// A sample CanaryRollout: the seed rollout spec on a Deployment behind Istio, judged
/// from Prometheus.
pub fn sample() -> Value {
    json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": "lemonade-checkout", "namespace": "shop"},
        "spec": {
            "rollout": {
                "app": "lemonade-checkout",
                "version": "v2.3.1",
                "strategy": "canary",
                "analysis": {"interval": "15s"},
                "stages": [
                    {"traffic": 20, "duration": "5m", "successCriteria": ["error_rate < 0.5%", "latency_p95 < 500ms"]},
                    {"traffic": 50, "duration": "10m", "successCriteria": ["error_rate < 0.5%"]},
                    {"traffic": 100, "final": true, "promote": true},
                ],
                "match": [{"header": "x-canary", "value": "always"}],
            },
            "targetRef": {
                "name": "lemonade-checkout",
                "containers": [{"name": "app", "image": "registry.example/lemonade-checkout:v2.3.1"}],
                "canaryReplicas": 2,
            },
            "router": {"istio": {
                "virtualService": {"name": "lemonade-checkout"},
                "hosts": ["lemonade-checkout"],
                "destinationHost": "lemonade-checkout",
                "destinationRule": {"name": "lemonade-checkout"},
            }},
            "metrics": {"prometheus": {"address": "http://prometheus.monitoring:9090"}},
        },
    })
}

/// The default operator image in `deployment.yaml`.
pub const IMAGE: &str = "ghcr.io/fledge-dev/fledge:0.1.0";

/// Every generated file of `deploy/kubernetes/`, by path below it, with its
/// content, in the order they are applied. The kustomizations that put them
/// together (`base/`, `overlays/operator/`) are written by hand.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        ("base/namespace.yaml", to_yaml_stream(&[namespace()])),
        (
            "overlays/operator/crd.yaml",
            format!("---\n{}", crate::crd::crd_yaml()),
        ),
        ("overlays/operator/rbac.yaml", to_yaml_stream(&rbac())),
        (
            "overlays/operator/deployment.yaml",
            to_yaml_stream(&[deployment(IMAGE)]),
        ),
        ("sample-canaryrollout.yaml", to_yaml_stream(&[sample()])),
    ]
}
