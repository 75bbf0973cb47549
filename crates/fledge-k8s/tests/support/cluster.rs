//! A real kube-apiserver for the tests: the one `scripts/k8s-test-cluster` starts
//! (`FLEDGE_TEST_KUBECONFIG`), namespaces of each test's own, fledge's CRD and the
//! operator's RBAC from deploy/kubernetes installed on it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fledge_k8s::CanaryRollout;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

/// The admin kubeconfig of the test cluster, `FLEDGE_TEST_KUBECONFIG`.
pub fn kubeconfig_path() -> String {
    std::env::var("FLEDGE_TEST_KUBECONFIG").expect(
        "FLEDGE_TEST_KUBECONFIG is not set: run scripts/test, or \
         eval \"$(scripts/k8s-test-cluster start)\" first",
    )
}

/// The configuration of the cluster in `FLEDGE_TEST_KUBECONFIG` (its admin).
pub async fn config() -> kube::Config {
    config_from(&kubeconfig_path()).await
}

/// The configuration in the kubeconfig file `path`.
pub async fn config_from(path: &str) -> kube::Config {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A client for the test cluster, as its admin.
pub async fn client() -> kube::Client {
    client_from(&kubeconfig_path()).await
}

/// A client for the cluster of the kubeconfig file `path`.
pub async fn client_from(path: &str) -> kube::Client {
    kube::Client::try_from(config_from(path).await).expect("a client for the test cluster")
}

/// A client for the test cluster that acts as `user` (the admin may impersonate).
pub async fn client_as(user: &str) -> kube::Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(user.to_owned());
    kube::Client::try_from(config).expect("a client for the test cluster")
}

/// A file of the repository.
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

/// The YAML documents of a file, empty ones left out.
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Installs every CRD in `path` (server-side apply, so that tests installing the
/// same CRDs at once agree) and waits until the server serves them.
pub async fn install_crds(client: &kube::Client, path: &Path) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("fledge-tests").force();
    let mut names = Vec::new();
    for crd in yaml_documents(path) {
        let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("{}: the server refused CRD {name}: {e}", path.display()));
        names.push(name);
    }
    // Waiting on a real server: poll, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in names {
        loop {
            let crd = api.get(&name).await.unwrap();
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} was not established after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A fresh namespace named after `test`.
pub async fn namespace(client: &kube::Client, test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("{test}-{}-{nanos}", std::process::id());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
    name
}

/// Deletes a test's namespace, and everything in it, without waiting.
pub async fn drop_namespace(client: &kube::Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await;
}

pub fn canary_rollouts(client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::erase::<CanaryRollout>(&()),
    )
}

/// The operator's ServiceAccount, as deploy/kubernetes/overlays/operator/rbac.yaml names it.
pub const OPERATOR: &str = "system:serviceaccount:fledge-system:fledge-operator";

/// Applies every object in a manifest, whatever its kind (server-side apply; the
/// kinds are looked up on the server).
pub async fn apply_manifest(client: &kube::Client, path: &Path) {
    let params = PatchParams::apply("fledge-tests").force();
    for doc in yaml_documents(path) {
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", doc["apiVersion"].as_str().unwrap()),
        };
        let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{}: {gvk:?}: {e}", path.display()));
        let name = doc["metadata"]["name"].as_str().unwrap();
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().unwrap_or("default"),
                &resource,
            ),
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(name, &params, &Patch::Apply(&doc))
            .await
            .unwrap_or_else(|e| panic!("{}: {} {name}: {e}", path.display(), gvk.kind));
    }
}

/// Installs the operator's namespace, CRD and RBAC, and waits until the RBAC
/// authorizer lets its ServiceAccount read CanaryRollouts in `namespace`.
pub async fn install_operator_rbac(client: &kube::Client, namespace: &str) -> kube::Client {
    install_operator_rbac_as(client, client_as(OPERATOR).await, namespace).await
}

/// [`install_operator_rbac`], with `operator` the client that acts as the
/// operator's ServiceAccount.
pub async fn install_operator_rbac_as(
    client: &kube::Client,
    operator: kube::Client,
    namespace: &str,
) -> kube::Client {
    install_fledge_crd(client).await;
    let system: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "fledge-system"}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            "fledge-system",
            &PatchParams::apply("fledge-tests").force(),
            &Patch::Apply(&system),
        )
        .await
        .unwrap();
    apply_manifest(
        client,
        &repo_file("deploy/kubernetes/overlays/operator/rbac.yaml"),
    )
    .await;
    // New role bindings reach the authorizer through a watch: poll, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Err(e) = canary_rollouts(&operator, namespace)
        .list(&Default::default())
        .await
    {
        assert!(
            Instant::now() < deadline,
            "the operator's ServiceAccount may still not list CanaryRollouts after 15 s: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    operator
}

/// fledge's own CRD, as deploy/kubernetes installs it.
pub async fn install_fledge_crd(client: &kube::Client) {
    install_crds(
        client,
        &repo_file("deploy/kubernetes/overlays/operator/crd.yaml"),
    )
    .await;
}

/// The upstream traffic CRDs, as real clusters install them.
pub async fn install_upstream_crds(client: &kube::Client) {
    for file in [
        "istio-virtualservices.crd.yaml",
        "istio-destinationrules.crd.yaml",
        "smi-trafficsplits.crd.yaml",
        "gateway-api-httproutes.crd.yaml",
    ] {
        install_crds(client, &super::schemas_dir().join(file)).await;
    }
}
