//! The operator as users run it, against a real kube-apiserver (the one
//! `scripts/k8s-test-cluster` starts): `fledge operator run` as a child process,
//! authenticated with a token of the ServiceAccount of deploy/kubernetes/overlays/operator/rbac.yaml
//! (never as the admin), scoped to a namespace of the test's own. The test plays the
//! kubelet (it marks Deployments ready and Pods crash-looping through their status
//! subresource, since the control plane has no nodes) and Prometheus (a small
//! endpoint serving the `/api/v1/query` answers whose counters it chooses).
//!
//! The `fledge` binary is `$FLEDGE_BIN`, else `fledge` in the cargo target dir
//! (`cargo build -p fledge` first); it is copied away before use, so a rebuild of
//! the shared target dir meanwhile does not change it under a running test.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use serde_json::{Value, json};
use support::cluster::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// === the operator process ===

/// The `fledge` binary, copied to a path of this test process's own.
fn fledge_bin() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let built = std::env::var_os("FLEDGE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| repo_file("target"));
                target.join("debug/fledge")
            });
        assert!(
            built.exists(),
            "no fledge binary at {}: run `cargo build -p fledge` or set FLEDGE_BIN",
            built.display()
        );
        // One copy per build (named after its size and time), shared by the test
        // processes and runs that use that build; written aside, then renamed.
        let meta = std::fs::metadata(&built).unwrap();
        let stamp = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let copy = std::env::temp_dir().join(format!("fledge-op-e2e-bin-{}-{stamp}", meta.len()));
        if !copy.exists() {
            let part = copy.with_extension(std::process::id().to_string());
            std::fs::copy(&built, &part)
                .unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
            std::fs::rename(&part, &copy).unwrap();
        }
        copy
    })
    .clone()
}

/// A kubeconfig in `dir` for the operator's ServiceAccount: the test cluster's
/// server and CA, and a token from the TokenRequest API (what `kubectl create
/// token` asks for).
async fn operator_kubeconfig(admin: &kube::Client, admin_kubeconfig: &str, dir: &Path) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "fledge-system");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = sas
        .create_token_request("fledge-operator", &PostParams::default(), &request)
        .await
        .expect("a token for the operator's ServiceAccount")
        .status
        .expect("a TokenRequest status")
        .token;
    let admin_config = Kubeconfig::read_from(admin_kubeconfig).unwrap();
    let cluster = admin_config.clusters[0].cluster.clone().unwrap();
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": cluster.server,
            "certificate-authority-data": cluster.certificate_authority_data,
        }}],
        "users": [{"name": "fledge-operator", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "fledge-operator"}}],
        "current-context": "test",
    });
    let file = dir.join("operator.kubeconfig");
    std::fs::write(&file, serde_json::to_vec(&config).unwrap()).unwrap();
    file
}

/// A running `fledge operator run`, killed when dropped.
struct Operator {
    child: Child,
    identity: String,
    log: PathBuf,
}

impl Operator {
    /// Starts a replica named `identity`, electing on Lease `fledge-system/<lease>`
    /// with `lease_duration` and reconciling namespace `ns`.
    fn start(
        kubeconfig: &Path,
        ns: &str,
        lease: &str,
        identity: &str,
        lease_duration: &str,
        extra: &[&str],
    ) -> Self {
        let log = kubeconfig.with_file_name(format!("{identity}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(fledge_bin())
            .args(["operator", "run", "--lease-namespace", "fledge-system"])
            .args(["--lease-name", lease, "--identity", identity])
            .args(["--lease-duration", lease_duration, "--namespace", ns])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env_remove("POD_NAME")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start fledge operator run");
        Operator {
            child,
            identity: identity.to_owned(),
            log,
        }
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {}", self.child.id());
    }

    /// Waits (with a deadline) for the process to exit after a signal.
    async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; log:\n{}",
                self.identity,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// === a test's world ===

/// One test's namespace, with the operator's CRD, RBAC and credentials installed,
/// and the test acting as the kubelet for it.
struct World {
    admin: kube::Client,
    ns: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubelet: tokio::task::JoinHandle<()>,
}

impl World {
    /// A world on the shared test cluster.
    async fn new(test: &str) -> World {
        World::on(&kubeconfig_path(), test).await
    }

    /// A world on the cluster whose admin kubeconfig is `admin_kubeconfig`.
    async fn on(admin_kubeconfig: &str, test: &str) -> World {
        let admin = client_from(admin_kubeconfig).await;
        let ns = namespace(&admin, test).await;
        install_upstream_crds(&admin).await;
        let dir = std::env::temp_dir().join(format!("fledge-op-e2e-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        // Installs the RBAC, then waits (as the admin impersonating the operator)
        // until the authorizer applies it.
        let mut as_operator = config_from(admin_kubeconfig).await;
        as_operator.auth_info.impersonate = Some(OPERATOR.to_owned());
        let as_operator = kube::Client::try_from(as_operator).unwrap();
        install_operator_rbac_as(&admin, as_operator, &ns).await;
        let kubeconfig = operator_kubeconfig(&admin, admin_kubeconfig, &dir).await;
        let kubelet = tokio::spawn(play_kubelet(admin.clone(), ns.clone()));
        World {
            admin,
            ns,
            dir,
            kubeconfig,
            kubelet,
        }
    }

    /// Ends the test: stops `operator` first, so that it does not act on the
    /// namespace while it goes, then deletes the namespace.
    async fn end(&self, operator: Operator) {
        drop(operator);
        drop_namespace(&self.admin, &self.ns).await;
    }

    fn operator(&self, identity: &str) -> Operator {
        Operator::start(&self.kubeconfig, &self.ns, &self.ns, identity, "15s", &[])
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    /// The stable Deployment `shop` (v1) and its Service.
    async fn create_app(&self) {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "shop"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "shop", "fledge.dev/role": "stable"}},
                "template": {
                    "metadata": {"labels": {"app": "shop", "fledge.dev/role": "stable", "fledge.dev/version": "v1"}},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/shop:v1"}]},
                },
            },
        }))
        .unwrap();
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
        let s: Service = serde_json::from_value(json!({
            "metadata": {"name": "shop"},
            "spec": {"selector": {"app": "shop"}, "ports": [{"port": 80}]},
        }))
        .unwrap();
        Api::<Service>::namespaced(self.admin.clone(), &self.ns)
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
    }

    /// Creates the sample CanaryRollout of deploy/kubernetes, pointed at this
    /// test's Deployment and metrics, with `stages` and `analysis`.
    async fn create_rollout(&self, prometheus: Option<&str>, stages: Value, analysis: Value) {
        self.create(self.rollout_object(prometheus, stages, analysis))
            .await;
    }

    /// The CanaryRollout [`create_rollout`](Self::create_rollout) creates.
    fn rollout_object(&self, prometheus: Option<&str>, stages: Value, analysis: Value) -> Value {
        let mut cr =
            yaml_documents(&repo_file("deploy/kubernetes/sample-canaryrollout.yaml")).remove(0);
        cr["metadata"] = json!({"name": "shop", "namespace": self.ns});
        cr["spec"]["rollout"]["app"] = json!("shop");
        cr["spec"]["rollout"]["version"] = json!("v2");
        cr["spec"]["rollout"]["stages"] = stages;
        cr["spec"]["rollout"]["analysis"] = analysis;
        cr["spec"]["targetRef"] = json!({
            "name": "shop", "canaryReplicas": 1,
            "containers": [{"name": "app", "image": "registry.example/shop:v2"}],
        });
        cr["spec"]["router"]["istio"]["hosts"] = json!(["shop"]);
        cr["spec"]["router"]["istio"]["destinationHost"] = json!("shop");
        cr["spec"]["router"]["istio"]["virtualService"] = json!({"name": "shop"});
        cr["spec"]["router"]["istio"]["destinationRule"] = json!({"name": "shop"});
        match prometheus {
            Some(address) => cr["spec"]["metrics"]["prometheus"]["address"] = json!(address),
            None => {
                cr["spec"].as_object_mut().unwrap().remove("metrics");
            }
        }
        cr
    }

    async fn create(&self, cr: Value) {
        let obj: kube::api::DynamicObject = serde_json::from_value(cr).unwrap();
        canary_rollouts(&self.admin, &self.ns)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create the CanaryRollout: {e}"));
    }

    async fn rollout(&self) -> Value {
        let obj = canary_rollouts(&self.admin, &self.ns)
            .get("shop")
            .await
            .unwrap();
        serde_json::to_value(obj).unwrap()
    }

    /// Polls the rollout until `done` holds of it, for at most `within`.
    async fn wait_rollout(
        &self,
        what: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        poll(
            within,
            || self.rollout(),
            done,
            |r| {
                let status = serde_json::to_string_pretty(&r["status"]).unwrap();
                format!("{what}: not after {within:?}; the rollout is:\n{status}")
            },
        )
        .await
    }

    /// The app and a rollout of `stages` judged every second on healthy metrics,
    /// and an operator: the metrics and the operator.
    async fn healthy(&self, stages: Value) -> (FakePrometheus, Operator) {
        let prometheus = FakePrometheus::start(0.0).await;
        self.create_app().await;
        let op = self.operator("op-a");
        let interval = json!({"interval": "1s"});
        self.create_rollout(Some(&prometheus.address), stages, interval)
            .await;
        (prometheus, op)
    }

    /// A healthy rollout of one long stage, judged every second, that has started:
    /// its metrics and its operator.
    async fn progressing(&self) -> (FakePrometheus, Operator) {
        let (prometheus, op) = self.healthy(long_stage()).await;
        self.wait_rollout("the rollout progresses", Duration::from_secs(60), |r| {
            phase(r) == "Progressing"
        })
        .await;
        (prometheus, op)
    }

    /// Polls Deployment `name` until `done` holds of it, for at most `within`.
    async fn wait_deployment(
        &self,
        name: &str,
        within: Duration,
        done: impl Fn(&Deployment) -> bool,
    ) -> Deployment {
        let read = || async { self.deployments().get_opt(name).await.unwrap() };
        let found = poll(
            within,
            read,
            |d| d.as_ref().is_some_and(&done),
            |d| {
                let spec = d.as_ref().map(|d| &d.spec);
                format!("Deployment {name}: not as wanted after {within:?}: {spec:?}")
            },
        );
        found.await.expect("a Deployment that was found")
    }

    /// The Events about the CanaryRollout.
    async fn events(&self) -> Vec<Event> {
        Api::<Event>::namespaced(self.admin.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("CanaryRollout")
            })
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kubelet.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn phase(r: &Value) -> &str {
    r["status"]["phase"].as_str().unwrap_or_default()
}

fn condition<'a>(r: &'a Value, type_: &str) -> Option<&'a Value> {
    r["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// What a kubelet would report: every Pod of `ns` the ReplicaSet controller made is
/// marked running and ready (through the status subresource), so that the cluster's
/// own ReplicaSet and Deployment controllers count it and report the Deployments
/// rolled out, as they would on a cluster with nodes. (Writing the Deployments'
/// status instead races those controllers, which keep writing what they count.)
async fn play_kubelet(admin: kube::Client, ns: String) {
    let pods: Api<Pod> = Api::namespaced(admin, &ns);
    loop {
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for pod in list.items.iter().filter(|p| !pod_ready(p)) {
                let since = k8s_openapi::jiff::Timestamp::now().to_string();
                let condition = |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": since});
                let status = json!({"status": {
                    "phase": "Running",
                    "conditions": [condition("PodScheduled"), condition("Initialized"),
                                   condition("ContainersReady"), condition("Ready")],
                }});
                let name = pod.metadata.name.clone().unwrap();
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

// === a Prometheus the test feeds ===

/// A Prometheus HTTP API (`GET /api/v1/query`) whose counters grow by 100 requests
/// a second per arm, of which the canary fails `canary_error_ratio` and the stable
/// none; latencies all fall under 50 ms.
struct FakePrometheus {
    address: String,
    queries: Arc<AtomicU64>,
    _server: JsonServer,
}

impl FakePrometheus {
    async fn start(canary_error_ratio: f64) -> FakePrometheus {
        let queries = Arc::new(AtomicU64::new(0));
        let counted = queries.clone();
        let started = Instant::now();
        let server = JsonServer::start(move |request| {
            let query = request
                .path
                .split_once('?')
                .map(|(_, q)| q)
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("query="))
                .map(form_decode)
                .unwrap_or_default();
            counted.fetch_add(1, Ordering::Relaxed);
            let body = prometheus_answer(&query, started.elapsed(), canary_error_ratio);
            ("200 OK", body)
        })
        .await;
        FakePrometheus {
            address: server.address.clone(),
            queries,
            _server: server,
        }
    }
}

/// A loopback HTTP/1.1 server that answers each request (one a connection) with the
/// status line and JSON body `handle` gives for it; it stops when dropped.
struct JsonServer {
    address: String,
    task: tokio::task::JoinHandle<()>,
}

impl JsonServer {
    async fn start(
        handle: impl Fn(Received) -> (&'static str, String) + Send + Sync + 'static,
    ) -> JsonServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let handle = Arc::new(handle);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut conn).await else {
                        return;
                    };
                    let (status, body) = handle(request);
                    answer(&mut conn, status, &body).await;
                });
            }
        });
        JsonServer { address, task }
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request (head, and a body of `content-length` bytes, as JSON
/// when it is JSON); `None` when the peer closes first.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let path = first.next().unwrap_or_default().to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}

/// Answers `status` with a JSON `body` and closes the connection.
async fn answer(conn: &mut tokio::net::TcpStream, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// `application/x-www-form-urlencoded` value decoding.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to one of the default queries (see fledge-providers' Prometheus
/// source): requests, 5xx errors, latency buckets by `le`, or the latency sum.
fn prometheus_answer(query: &str, elapsed: Duration, canary_error_ratio: f64) -> String {
    let canary = query.contains(r#"version="v2""#);
    let requests = (1000.0 + 100.0 * elapsed.as_secs_f64()).floor();
    let sample = |labels: Value, v: f64| json!({"metric": labels, "value": [0, format!("{v}")]});
    let result = if query.contains("code=~") {
        let ratio = if canary { canary_error_ratio } else { 0.0 };
        vec![sample(json!({}), (requests * ratio).floor())]
    } else if query.contains("_bucket") {
        vec![
            sample(json!({"le": "0.05"}), requests),
            sample(json!({"le": "0.25"}), requests),
            sample(json!({"le": "+Inf"}), requests),
        ]
    } else if query.contains("_sum") {
        vec![sample(json!({}), requests * 0.02)]
    } else {
        vec![sample(json!({}), requests)]
    };
    json!({"status": "success", "data": {"resultType": "vector", "result": result}}).to_string()
}

/// Two short stages judged on the sample's criteria, then promotion.
fn short_stages() -> Value {
    json!([
        {"traffic": 20, "duration": "2s", "successCriteria": ["error_rate < 0.5%", "latency_p95 < 500ms"]},
        {"traffic": 50, "duration": "2s", "successCriteria": ["error_rate < 0.5%"]},
        {"traffic": 100, "final": true, "promote": true},
    ])
}

fn annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata.annotations.clone().unwrap_or_default()
}

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

// === 1. a healthy rollout promotes ===

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn a_healthy_rollout_promotes_under_the_operators_serviceaccount() {
    let w = World::new("op-promote").await;
    let (prometheus, op) = w.healthy(short_stages()).await;

    let r = w
        .wait_rollout(
            "the rollout succeeds and the stable Deployment is promoted",
            Duration::from_secs(60),
            |r| {
                phase(r) == "Succeeded"
                    && condition(r, "Ready").is_some_and(|c| c["status"] == "True")
            },
        )
        .await;
    assert_eq!(r["status"]["canaryWeight"], 0, "all traffic back on stable");
    assert!(
        prometheus.queries.load(Ordering::Relaxed) > 0,
        "metrics were read"
    );

    // The canary Deployment is fledge's, by server-side apply, and retired (just
    // after the status says so: the status is persisted first, then acted on).
    let canary = w
        .wait_deployment("shop-canary", Duration::from_secs(10), |d| replicas(d) == 0)
        .await;
    let managers: Vec<(String, String)> = canary
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                m.manager.clone().unwrap_or_default(),
                m.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("fledge".to_owned(), "Apply".to_owned())),
        "the canary Deployment's managers: {managers:?}"
    );
    assert_eq!(
        replicas(&canary),
        0,
        "the canary is scaled to zero once promoted"
    );
    assert_eq!(image(&canary), "registry.example/shop:v2");

    // The stable Deployment runs the new version; fledge applied only the image and
    // the version label.
    let stable = w.deployments().get("shop").await.unwrap();
    assert_eq!(image(&stable), "registry.example/shop:v2");
    assert_eq!(
        stable
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap()["fledge.dev/version"],
        "v2"
    );
    assert_eq!(replicas(&stable), 2, "the user's replicas are kept");

    // Events, by the operator, for its decisions.
    let events = w.events().await;
    let reasons: Vec<String> = events.iter().filter_map(|e| e.reason.clone()).collect();
    println!("events: {reasons:?}");
    assert!(
        events.iter().all(|e| e.reporting_controller.as_deref()
            == Some(fledge_k8s::controller::REPORTING_CONTROLLER)
            && e.reporting_instance.as_deref() == Some("op-a")),
        "events: {events:?}"
    );
    for wanted in ["Started", "StageAdvanced", "Succeeded"] {
        assert!(
            reasons.iter().any(|r| r == wanted),
            "no {wanted} Event in {reasons:?}; operator log:\n{}",
            op.log_text()
        );
    }
    w.end(op).await;
}

// === 2. a failing canary is rolled back ===

/// One long stage: only a failure ends it within the test.
fn long_stage() -> Value {
    json!([
        {"traffic": 20, "duration": "10m", "successCriteria": ["error_rate < 0.5%"]},
        {"traffic": 100, "final": true, "promote": true},
    ])
}

/// Waits for the rollout to have failed, the canary scaled to zero and the stable
/// Deployment left on v1; returns the rollout.
async fn assert_rolled_back(w: &World, op: &Operator) -> Value {
    let r = w
        .wait_rollout("the rollout fails", Duration::from_secs(60), |r| {
            phase(r) == "Failed"
        })
        .await;
    assert_eq!(r["status"]["canaryWeight"], 0, "all traffic back on stable");
    w.wait_deployment("shop-canary", Duration::from_secs(10), |d| replicas(d) == 0)
        .await;
    let stable = w.deployments().get("shop").await.unwrap();
    assert_eq!(
        image(&stable),
        "registry.example/shop:v1",
        "stable untouched"
    );
    // The Events are recorded last, after the world followed the status.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = w.events().await;
        let failed = events.iter().any(|e| {
            e.reason.as_deref() == Some("Failed") && e.type_.as_deref() == Some("Warning")
        });
        if failed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Warning Event Failed in {:?}; operator log:\n{}",
            events.iter().map(|e| &e.reason).collect::<Vec<_>>(),
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn a_canary_failing_its_criteria_is_rolled_back() {
    let w = World::new("op-rollback").await;
    // A third of the canary's requests fail; none of stable's.
    let prometheus = FakePrometheus::start(0.3).await;
    w.create_app().await;
    let op = w.operator("op-a");
    w.create_rollout(
        Some(&prometheus.address),
        long_stage(),
        json!({"interval": "1s"}),
    )
    .await;
    let r = assert_rolled_back(&w, &op).await;
    let decision = r["status"]["lastDecision"].to_string();
    assert!(
        decision.contains("error_rate"),
        "the decision names its criterion: {decision}"
    );
    w.end(op).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn a_crash_looping_canary_is_rolled_back() {
    let w = World::new("op-crashloop").await;
    let (_prometheus, op) = w.progressing().await;

    // The ReplicaSet controller made the canary's pod; the test plays its kubelet:
    // the container has restarted 5 times and is in CrashLoopBackOff.
    let pods: Api<Pod> = Api::namespaced(w.admin.clone(), &w.ns);
    let selector = "fledge.dev/rollout=shop,fledge.dev/role=canary";
    let deadline = Instant::now() + Duration::from_secs(30);
    let pod = loop {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        if let Some(p) = list.items.into_iter().next() {
            break p;
        }
        assert!(Instant::now() < deadline, "no canary pod after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let name = pod.metadata.name.clone().unwrap();
    let status = json!({"status": {"containerStatuses": [{
        "name": "app", "image": "registry.example/shop:v2", "imageID": "", "ready": false,
        "restartCount": 5, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
    }]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();

    let r = assert_rolled_back(&w, &op).await;
    let message = r["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&name) && message.contains("CrashLoopBackOff"),
        "the status names the pod and why: {message}"
    );
    assert_eq!(r["status"]["lastDecision"]["podEvidence"][0]["restarts"], 5);
    w.end(op).await;
}

// === 3. changes are seen through a watch ===

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn a_change_to_the_rollout_is_acted_on_within_two_seconds() {
    let w = World::new("op-watch").await;
    w.create_app().await;
    let op = w.operator("op-a");
    // Judged every 5 minutes: within 2 s, only a watch can see a change.
    w.create_rollout(None, long_stage(), json!({"interval": "5m"}))
        .await;
    w.wait_rollout("the rollout progresses", Duration::from_secs(60), |r| {
        phase(r) == "Progressing"
    })
    .await;
    // Let the reconciles of the start settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A spec change: the canary's replicas.
    let rollouts = canary_rollouts(&w.admin, &w.ns);
    let patch = json!({"spec": {"targetRef": {"canaryReplicas": 2}}});
    let sent = Instant::now();
    rollouts
        .patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    w.wait_deployment("shop-canary", Duration::from_secs(2), |d| replicas(d) == 2)
        .await;
    let spec_latency = sent.elapsed();

    // An annotation: `fledge operator command shop pause`, as kubectl annotate.
    let patch = json!({"metadata": {"annotations": {
        "fledge.dev/command": "pause", "fledge.dev/command-id": "c-1", "fledge.dev/actor": "alice",
    }}});
    let sent = Instant::now();
    rollouts
        .patch("shop", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    w.wait_rollout("the pause command is run", Duration::from_secs(2), |r| {
        phase(r) == "Paused"
    })
    .await;
    let command_latency = sent.elapsed();
    println!(
        "watch latency: spec change to canary Deployment {spec_latency:?}; \
         command annotation to status {command_latency:?}"
    );
    w.end(op).await;
}

// === 6. leader election between two replicas ===

/// The holder of Lease `fledge-system/<name>`, `None` when it has none.
async fn holder(admin: &kube::Client, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(admin.clone(), "fledge-system")
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Polls until the Lease's holder is `want`, for at most `within`; returns when.
async fn wait_holder(
    admin: &kube::Client,
    name: &str,
    want: Option<&str>,
    within: Duration,
) -> Instant {
    let read = || holder(admin, name);
    poll(
        within,
        read,
        |now| now.as_deref() == want,
        |now| format!("Lease {name}: holder {now:?}, not {want:?}, after {within:?}"),
    )
    .await;
    Instant::now()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn a_second_replica_takes_over_when_the_leader_dies_or_stops() {
    let w = World::new("op-leader").await;
    let lease = w.ns.clone();
    let start = |id: &str| Operator::start(&w.kubeconfig, &w.ns, &lease, id, "3s", &[]);
    let a = start("op-a");
    wait_holder(&w.admin, &lease, Some("op-a"), Duration::from_secs(10)).await;
    let mut b = start("op-b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        holder(&w.admin, &lease).await.as_deref(),
        Some("op-a"),
        "one leader"
    );

    // SIGKILL: the Lease expires (3 s) and op-b, trying every second, takes it.
    let prometheus = FakePrometheus::start(0.0).await;
    w.create_app().await;
    w.create_rollout(
        Some(&prometheus.address),
        short_stages(),
        json!({"interval": "1s"}),
    )
    .await;
    a.signal("-KILL");
    let killed = Instant::now();
    let took = wait_holder(&w.admin, &lease, Some("op-b"), Duration::from_secs(10)).await;
    let failover = took - killed;
    assert!(
        failover <= Duration::from_millis(5500),
        "failover took {failover:?}"
    );
    drop(a);

    // The new leader carries the rollout through.
    w.wait_rollout(
        "the rollout succeeds under op-b",
        Duration::from_secs(60),
        |r| phase(r) == "Succeeded" && condition(r, "Ready").is_some_and(|c| c["status"] == "True"),
    )
    .await;

    // SIGTERM: op-b releases the Lease as it exits, and op-c takes it at once.
    let c = start("op-c");
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.signal("-TERM");
    let stopped = Instant::now();
    let status = b.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.success(),
        "op-b exits cleanly on SIGTERM: {status:?}\n{}",
        b.log_text()
    );
    let exited = stopped.elapsed();
    let took = wait_holder(&w.admin, &lease, Some("op-c"), Duration::from_secs(3)).await;
    let handover = took - stopped;
    assert!(
        b.log_text().contains("released the leader Lease"),
        "{}",
        b.log_text()
    );
    println!(
        "leader failover: after SIGKILL {failover:?} (lease 3 s); after SIGTERM op-b exited in \
         {exited:?} and op-c led {handover:?} after the signal"
    );
    w.end(c).await;
}

// === 4. field ownership ===

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn users_fields_survive_and_a_conflict_is_reported_not_fought() {
    let w = World::new("op-owners").await;
    let (_prometheus, op) = w.progressing().await;

    // A field fledge does not set, by another manager: it stays through reconciles.
    let as_user = |manager: &str| PatchParams {
        field_manager: Some(manager.to_owned()),
        ..Default::default()
    };
    let patch = json!({"metadata": {"annotations": {"team.example/owner": "payments"}},
                       "spec": {"minReadySeconds": 7}});
    w.deployments()
        .patch(
            "shop-canary",
            &as_user("kubectl-edit"),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    // A field fledge sets, changed by another manager (`kubectl scale`).
    let patch = json!({"spec": {"replicas": 3}});
    w.deployments()
        .patch(
            "shop-canary",
            &as_user("kubectl-scale"),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();

    // The conflict is reported, naming the other manager...
    let deadline = Instant::now() + Duration::from_secs(10);
    let note = loop {
        let events = w.events().await;
        if let Some(e) = events
            .iter()
            .find(|e| e.reason.as_deref() == Some("FieldConflict"))
        {
            break e.note.clone().unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "no FieldConflict Event; operator log:\n{}",
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        note.contains("kubectl-scale") && note.contains("replicas"),
        "{note}"
    );

    // ...and, through several reconciles (one a second), nobody's value is undone
    // while the rollout goes on.
    let before = w.rollout().await["status"]["analysis"]["at"].clone();
    w.wait_rollout(
        "the rollout is judged again",
        Duration::from_secs(10),
        |r| r["status"]["analysis"]["at"] != before,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let canary = w.deployments().get("shop-canary").await.unwrap();
    assert_eq!(
        replicas(&canary),
        3,
        "the user's replicas are not fought over"
    );
    assert_eq!(
        annotations(&canary)
            .get("team.example/owner")
            .map(String::as_str),
        Some("payments")
    );
    assert_eq!(canary.spec.as_ref().unwrap().min_ready_seconds, Some(7));
    assert_eq!(phase(&w.rollout().await), "Progressing");
    w.end(op).await;
}

// === 5. the API server restarts mid-rollout ===

/// A control plane of the test's own (`scripts/k8s-test-cluster start`), for a
/// test that restarts its API server; stopped when dropped.
struct OwnCluster {
    dir: String,
    kubeconfig: String,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let out = Command::new(repo_file("scripts/k8s-test-cluster"))
            .args(["start", "--watch-pid", &std::process::id().to_string()])
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/k8s-test-cluster start");
        assert!(
            out.status.success(),
            "scripts/k8s-test-cluster start failed"
        );
        let exports = String::from_utf8(out.stdout).unwrap();
        let var = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("no {name} in {exports}"))
                .to_owned()
        };
        OwnCluster {
            dir: var("FLEDGE_K8S_DIR"),
            kubeconfig: var("FLEDGE_TEST_KUBECONFIG"),
        }
    }

    async fn restart_apiserver(&self) -> Duration {
        let dir = self.dir.clone();
        let started = Instant::now();
        let ok = tokio::task::spawn_blocking(move || {
            Command::new(repo_file("scripts/k8s-test-cluster"))
                .args(["restart-apiserver", &dir])
                .status()
                .unwrap()
                .success()
        })
        .await
        .unwrap();
        assert!(ok, "scripts/k8s-test-cluster restart-apiserver failed");
        started.elapsed()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(repo_file("scripts/k8s-test-cluster"))
            .args(["stop", &self.dir])
            .status();
    }
}

/// The reasons of the Events about the rollout, in the order they happened.
async fn history(w: &World) -> Vec<String> {
    let mut events = w.events().await;
    events.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    events.into_iter().filter_map(|e| e.reason).collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn the_operator_recovers_when_the_api_server_restarts_mid_rollout() {
    let cluster = OwnCluster::start();
    let w = World::on(&cluster.kubeconfig, "op-restart").await;
    let prometheus = FakePrometheus::start(0.0).await;
    w.create_app().await;
    let mut op = w.operator("op-a");
    let stages = json!([
        {"traffic": 20, "duration": "4s", "successCriteria": ["error_rate < 0.5%"]},
        {"traffic": 50, "duration": "4s", "successCriteria": ["error_rate < 0.5%"]},
        {"traffic": 100, "final": true, "promote": true},
    ]);
    w.create_rollout(Some(&prometheus.address), stages, json!({"interval": "1s"}))
        .await;
    w.wait_rollout("the rollout progresses", Duration::from_secs(60), |r| {
        phase(r) == "Progressing"
    })
    .await;

    let down = cluster.restart_apiserver().await;
    assert!(op.child.try_wait().unwrap().is_none(), "{}", op.log_text());
    w.wait_rollout(
        "the rollout succeeds after the restart",
        Duration::from_secs(90),
        |r| phase(r) == "Succeeded" && condition(r, "Ready").is_some_and(|c| c["status"] == "True"),
    )
    .await;
    w.wait_deployment("shop-canary", Duration::from_secs(10), |d| replicas(d) == 0)
        .await;
    let stable = w.deployments().get("shop").await.unwrap();
    assert_eq!(image(&stable), "registry.example/shop:v2");
    // The decisions after the restart are all there, once and in order. (Those
    // of the reconcile the restart cut short, after its status was written and
    // before its Events were, are lost: see deploy/kubernetes/README.md.)
    let history = history(&w).await;
    let full = [
        "Started",
        "StageStarted",
        "StageAdvanced",
        "StageStarted",
        "StageAdvanced",
        "StageStarted",
        "Succeeded",
    ];
    assert!(
        history.len() >= 3 && full[full.len().saturating_sub(history.len())..] == history[..],
        "history {history:?} is not the end of {full:?}; operator log:\n{}",
        op.log_text()
    );
    if history.len() < full.len() {
        println!(
            "Events lost to the restart: {:?}",
            &full[..full.len() - history.len()]
        );
    }
    println!("kube-apiserver restart took {down:?}; the rollout finished");
    drop(op);
}

// === 7. RBAC: what the operator does is what it is granted ===

/// `(verb, apiGroup, resource)` of every rule of the ClusterRole and Role in
/// deploy/kubernetes/overlays/operator/rbac.yaml.
fn granted() -> std::collections::BTreeSet<(String, String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for doc in yaml_documents(&repo_file("deploy/kubernetes/overlays/operator/rbac.yaml")) {
        for rule in doc["rules"].as_array().into_iter().flatten() {
            for group in rule["apiGroups"].as_array().unwrap() {
                for resource in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        out.insert((
                            verb.as_str().unwrap().to_owned(),
                            group.as_str().unwrap().to_owned(),
                            resource.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn the_operator_uses_exactly_what_its_rbac_grants() {
    let w = World::new("op-rbac").await;
    let (_prometheus, op) = w.healthy(short_stages()).await;
    w.wait_rollout("the rollout succeeds", Duration::from_secs(60), |r| {
        phase(r) == "Succeeded" && condition(r, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    w.wait_deployment("shop-canary", Duration::from_secs(10), |d| replicas(d) == 0)
        .await;
    drop(op);

    // What the operator's ServiceAccount asked for, in the API server's audit log
    // (scripts/k8s-test-cluster writes it beside the kubeconfig).
    let audit = Path::new(&kubeconfig_path()).with_file_name("audit.log");
    let text = std::fs::read_to_string(&audit).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (a cluster started by an older scripts/k8s-test-cluster?)",
            audit.display()
        )
    });
    let mut used = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        let r = &e["objectRef"];
        let ours = r["namespace"] == w.ns.as_str()
            || (r["resource"] == "leases" && r["name"] == w.ns.as_str());
        if e["user"]["username"] != OPERATOR || !ours {
            continue;
        }
        let resource = match r["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", r["resource"].as_str().unwrap()),
            None => r["resource"].as_str().unwrap().to_owned(),
        };
        let call = (
            e["verb"].as_str().unwrap().to_owned(),
            r["apiGroup"].as_str().unwrap_or_default().to_owned(),
            resource,
        );
        if e["responseStatus"]["code"] == 403 {
            refused.push(call.clone());
        }
        // A server-side apply that creates the object (201) is authorized as
        // `create` as well as `patch`.
        if call.0 == "patch" && e["responseStatus"]["code"] == 201 {
            used.insert(("create".to_owned(), call.1.clone(), call.2.clone()));
        }
        used.insert(call);
    }
    let granted = granted();
    println!("the operator used: {used:?}");
    assert!(refused.is_empty(), "refused by RBAC: {refused:?}");
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "used but not granted: {missing:?}");
    // The other routers' objects are not written by this rollout (Istio's are).
    let other_routers = [
        "split.smi-spec.io",
        "gateway.networking.k8s.io",
        "networking.k8s.io",
    ];
    // Secrets are read only for metric sources that name one (Prometheus here);
    // hooks_notifications_and_a_web_source_run_as_in_server_mode reads one under
    // this RBAC.
    let unused: Vec<_> = granted
        .difference(&used)
        .filter(|(_, group, _)| !other_routers.contains(&group.as_str()))
        .filter(|(verb, _, resource)| !(verb == "get" && resource == "secrets"))
        .collect();
    assert!(unused.is_empty(), "granted but never used: {unused:?}");
    drop_namespace(&w.admin, &w.ns).await;
}

// === parity with server mode: hooks, notifications, a web source, /metrics ===

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// A loopback HTTP endpoint standing for what a rollout talks to besides the
/// cluster: hook targets (`POST /hooks/<list>`, `/hooks/fail` answers 500), a
/// notification webhook (`POST /notify`) and a web metric source
/// (`GET /stats/<version>`, only with `authorization: Bearer s3cret`; counters grow
/// by 100 requests a second, no errors). It records every request.
struct Receiver {
    address: String,
    seen: Arc<std::sync::Mutex<Vec<Received>>>,
    _server: JsonServer,
}

impl Receiver {
    async fn start() -> Receiver {
        let seen: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
        let log = seen.clone();
        let started = Instant::now();
        let server = JsonServer::start(move |request| {
            let (status, body) = if request.path.starts_with("/stats/") {
                let auth = request.headers.get("authorization").map(String::as_str);
                if auth == Some("Bearer s3cret") {
                    let requests = (1000.0 + 100.0 * started.elapsed().as_secs_f64()).floor();
                    (
                        "200 OK",
                        json!({"requests": requests, "errors": 0}).to_string(),
                    )
                } else {
                    ("401 Unauthorized", "{}".to_owned())
                }
            } else if request.path == "/hooks/fail" {
                (
                    "500 Internal Server Error",
                    "{\"error\":\"change freeze\"}".to_owned(),
                )
            } else {
                ("200 OK", "{}".to_owned())
            };
            log.lock().unwrap().push(request);
            (status, body)
        })
        .await;
        Receiver {
            address: server.address.clone(),
            seen,
            _server: server,
        }
    }

    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|r| r.path).collect()
    }

    fn hook(&self, list: &str) -> Value {
        json!([{"http": {"url": format!("{}/hooks/{list}", self.address), "timeout": "5s"}}])
    }
}

/// The address `fledge operator run --listen 127.0.0.1:0` serves on, from its log.
async fn probe_address(op: &Operator) -> String {
    fn serving(log: &str) -> Option<&str> {
        log.lines().find(|l| l.contains("serving /metrics"))
    }
    let read = || async { op.log_text() };
    let log = poll(
        Duration::from_secs(10),
        read,
        |text| serving(text).is_some(),
        |text| format!("no probe address in:\n{text}"),
    )
    .await;
    let line = serving(&log).unwrap();
    let at = line.find("addr=").expect("the address in the log line") + 5;
    line[at..].split_whitespace().next().unwrap().to_owned()
}

/// Reads with `read` every 20 ms until `done` holds of what it read, and returns
/// that; fails with what `failure` says of the last reading once `within` has passed.
async fn poll<T, Fut>(
    within: Duration,
    read: impl Fn() -> Fut,
    done: impl Fn(&T) -> bool,
    failure: impl Fn(&T) -> String,
) -> T
where
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let got = read().await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{}", failure(&got));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET http://<addr><path>` over a plain TCP connection: the status code and body.
async fn get(addr: &str, path: &str) -> (u16, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn hooks_notifications_and_a_web_source_run_as_in_server_mode() {
    let w = World::new("op-parity").await;
    let rx = Receiver::start().await;
    w.create_app().await;
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "metrics-auth"},
        "stringData": {"token": "Bearer s3cret"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(w.admin.clone(), &w.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let op = w.operator("op-a");
    // The web source here reports counts only: no latency criterion.
    let stages = json!([
        {"traffic": 20, "duration": "2s", "successCriteria": ["error_rate < 0.5%"]},
        {"traffic": 50, "duration": "2s", "successCriteria": ["error_rate < 0.5%"]},
        {"traffic": 100, "final": true, "promote": true},
    ]);
    let mut cr = w.rollout_object(None, stages, json!({"interval": "1s"}));
    cr["spec"]["metrics"] = json!({"web": {
        "url": format!("{}/stats/{{{{version}}}}", rx.address),
        "headerSecretRefs": {"Authorization": {"name": "metrics-auth", "key": "token"}},
        "requests": "$.requests",
        "errors": "$.errors",
    }});
    cr["spec"]["rollout"]["hooks"] = json!({
        "beforeRollout": rx.hook("beforeRollout"),
        "eachStage": rx.hook("eachStage"),
        "beforePromotion": rx.hook("beforePromotion"),
        "afterPromotion": rx.hook("afterPromotion"),
        "onEvent": rx.hook("onEvent"),
    });
    cr["spec"]["rollout"]["notifications"] =
        json!([{"kind": "webhook", "url": format!("{}/notify", rx.address)}]);
    w.create(cr).await;

    w.wait_rollout("the rollout succeeds", Duration::from_secs(60), |r| {
        phase(r) == "Succeeded" && condition(r, "Ready").is_some_and(|c| c["status"] == "True")
    })
    .await;
    // afterPromotion's result and the last notices are written just after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(rx.paths().iter().any(|p| p == "/hooks/afterPromotion")
        && w.events()
            .await
            .iter()
            .filter(|e| e.reason.as_deref() == Some("HookRan"))
            .count()
            >= 4)
    {
        assert!(Instant::now() < deadline, "seen: {:?}", rx.paths());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = rx.seen();
    let count = |path: &str| seen.iter().filter(|r| r.path == path).count();
    println!(
        "requests: {:?}",
        seen.iter()
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );

    // Every hook list ran, with the rollout described in its body.
    for list in ["beforeRollout", "beforePromotion", "afterPromotion"] {
        assert_eq!(count(&format!("/hooks/{list}")), 1, "{list} hooks ran once");
    }
    assert!(count("/hooks/eachStage") >= 2, "eachStage ran per stage");
    let before = seen
        .iter()
        .find(|r| r.path == "/hooks/beforeRollout")
        .unwrap();
    assert_eq!(before.method, "POST");
    assert_eq!(before.body["hook"], "beforeRollout");
    assert_eq!(before.body["rollout"]["id"], format!("{}/shop", w.ns));
    assert_eq!(before.body["rollout"]["version"], "v2");
    assert_eq!(before.body["rollout"]["stableVersion"], "v1");
    // onEvent saw the decisions; the webhook was told of the start and the success.
    let on_event: Vec<&str> = seen
        .iter()
        .filter(|r| r.path == "/hooks/onEvent")
        .filter_map(|r| r.body["event"]["kind"].as_str())
        .collect();
    for kind in ["Started", "StageAdvanced", "Succeeded"] {
        assert!(on_event.contains(&kind), "onEvent kinds: {on_event:?}");
    }
    let notified: Vec<String> = seen
        .iter()
        .filter(|r| r.path == "/notify")
        .map(|r| r.body["event"].to_string())
        .collect();
    assert!(
        notified.iter().any(|e| e.contains("started"))
            && notified.iter().any(|e| e.contains("succeeded")),
        "notifications: {notified:?}"
    );
    // The web source read both versions with the header from the Secret.
    let stats: Vec<&Received> = seen
        .iter()
        .filter(|r| r.path.starts_with("/stats/"))
        .collect();
    assert!(
        stats.iter().any(|r| r.path == "/stats/v2") && stats.iter().any(|r| r.path == "/stats/v1")
    );
    assert!(
        stats
            .iter()
            .all(|r| r.headers.get("authorization").map(String::as_str) == Some("Bearer s3cret"))
    );

    // Each hook list's result is an Event.
    let hook_events: Vec<String> = w
        .events()
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("HookRan"))
        .map(|e| {
            format!(
                "{} {}",
                e.type_.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect();
    assert!(
        hook_events.iter().all(|e| e.starts_with("Normal")),
        "{hook_events:?}"
    );
    assert!(
        hook_events
            .iter()
            .any(|e| e.contains("beforePromotion hooks succeeded"))
    );

    // The operator's own endpoints.
    let addr = probe_address(&op).await;
    assert_eq!(get(&addr, "/healthz").await.0, 200);
    assert_eq!(get(&addr, "/readyz").await.0, 200);
    let (code, metrics) = get(&addr, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        format!(
            "fledge_operator_rollout_phase{{namespace=\"{}\",name=\"shop\",phase=\"Succeeded\"}} 1",
            w.ns
        ),
        "fledge_operator_hook_runs_total{hook=\"beforeRollout\",result=\"succeeded\"} 1".to_owned(),
        "fledge_operator_leader 1".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    assert!(metrics.trim_end().ends_with("# EOF"));
    w.end(op).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver: run scripts/test"]
async fn exec_hooks_are_refused_and_a_failing_gate_rolls_back() {
    let w = World::new("op-hookfail").await;
    let rx = Receiver::start().await;
    w.create_app().await;
    let op = w.operator("op-a");
    // No metrics: the stages' durations alone lead to the promotion gate.
    let stages = json!([
        {"traffic": 20, "duration": "1s"},
        {"traffic": 100, "final": true, "promote": true},
    ]);
    let mut cr = w.rollout_object(None, stages, json!({"interval": "1s"}));
    cr["spec"]["rollout"]["hooks"] =
        json!({"beforeRollout": [{"exec": {"command": ["sh", "-c", "id"]}}]});
    w.create(cr).await;
    let r = w
        .wait_rollout("the exec hook is refused", Duration::from_secs(30), |r| {
            condition(r, "SpecValid").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let message = condition(&r, "SpecValid").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("spec.rollout.hooks.beforeRollout[0]")
            && message.contains("--allow-exec-hooks"),
        "{message}"
    );

    // Fixed to an http gate that fails: the rollout fails before promotion and
    // the afterRollback hooks run.
    let hooks = json!({
        "beforeRollout": null,
        "beforePromotion": [{"http": {"url": format!("{}/hooks/fail", rx.address)}}],
        "afterRollback": rx.hook("afterRollback"),
    });
    canary_rollouts(&w.admin, &w.ns)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"rollout": {"hooks": hooks}}})),
        )
        .await
        .unwrap();
    let r = w
        .wait_rollout(
            "the failing gate fails the rollout",
            Duration::from_secs(60),
            |r| phase(r) == "Failed",
        )
        .await;
    assert_eq!(r["status"]["canaryWeight"], 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rx.paths().iter().any(|p| p == "/hooks/afterRollback") {
        assert!(
            Instant::now() < deadline,
            "seen: {:?}; log:\n{}",
            rx.paths(),
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let found = w.events().await.into_iter().find(|e| {
            e.reason.as_deref() == Some("HookRan") && e.type_.as_deref() == Some("Warning")
        });
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "no HookRan Warning");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let note = warning.note.unwrap_or_default();
    assert!(
        note.contains("beforePromotion hooks failed") && note.contains("500"),
        "{note}"
    );
    w.end(op).await;
}
