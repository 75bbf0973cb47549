//! `fledge get|status|wait|promote|abort|pause|resume|retry --kube`, run as the real
//! `fledge` binary against a real kube-apiserver (the one `scripts/k8s-test-cluster`
//! starts, `FLEDGE_TEST_KUBECONFIG`), each test in a namespace of its own, named
//! as the context namespace of the kubeconfig the CLI is given.
//!
//! Some tests write a CanaryRollout's status themselves (an engine state made by
//! the engine's own `step`), to show what the CLI reads; one runs a real
//! `fledge operator run` and drives a rollout from start to success with the CLI's
//! actions alone. There is no kubelet: the test marks the canary's pods ready.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fledge_engine::{Input, RolloutState, Timestamp, step};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fledge");

/// Three stages: the first two wait for a promote, the last promotes.
const STAGES: &str = r#"[
    {"traffic": 20},
    {"traffic": 50},
    {"traffic": 100, "final": true, "promote": true}
]"#;

// === the cluster ===

fn admin_kubeconfig() -> String {
    std::env::var("FLEDGE_TEST_KUBECONFIG")
        .expect("FLEDGE_TEST_KUBECONFIG is not set: run under scripts/k8s-test-cluster run -- …")
}

async fn config_of(path: &str) -> kube::Config {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kubeconfig = Kubeconfig::read_from(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn canary_rollouts() -> ApiResource {
    resource("fledge.dev", "v1alpha1", "CanaryRollout", "canaryrollouts")
}

fn deployments() -> ApiResource {
    resource("apps", "v1", "Deployment", "deployments")
}

/// One test's namespace on the test cluster, with the CRD installed, and a
/// kubeconfig whose context namespace it is.
struct World {
    admin: kube::Client,
    ns: String,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl World {
    async fn new(test: &str) -> World {
        let admin = kube::Client::try_from(config_of(&admin_kubeconfig()).await).unwrap();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let ns = format!("{test}-{}-{nanos}", std::process::id());
        let world = World {
            admin,
            kubeconfig: PathBuf::new(),
            dir: tempfile::tempdir().unwrap(),
            ns,
        };
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": world.ns}});
        world
            .apply(
                &resource("", "v1", "Namespace", "namespaces"),
                None,
                &namespace,
            )
            .await;
        world.install_crd().await;
        let kubeconfig = world.kubeconfig_as(None);
        World {
            kubeconfig,
            ..world
        }
    }

    fn api(&self, r: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) => Api::namespaced_with(self.admin.clone(), ns, r),
            None => Api::all_with(self.admin.clone(), r),
        }
    }

    async fn apply(&self, r: &ApiResource, ns: Option<&str>, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap();
        self.api(r, ns)
            .patch(
                name,
                &PatchParams::apply("fledge-tests").force(),
                &Patch::Apply(obj),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", r.kind));
    }

    /// fledge's CRD, applied and served.
    async fn install_crd(&self) {
        let crd = serde_json::to_value(fledge_k8s::crd()).unwrap();
        let r = resource(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        );
        self.apply(&r, None, &crd).await;
        // Waiting on a real server: poll, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.rollouts().list(&ListParams::default()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the CRD is not served after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn rollouts(&self) -> Api<DynamicObject> {
        self.api(&canary_rollouts(), Some(&self.ns))
    }

    /// A kubeconfig for the CLI: the admin's cluster and credentials, this test's
    /// namespace as the context's, acting as `user` when given (impersonation).
    fn kubeconfig_as(&self, user: Option<&str>) -> PathBuf {
        let mut config = Kubeconfig::read_from(admin_kubeconfig()).unwrap();
        for context in &mut config.contexts {
            if let Some(c) = context.context.as_mut() {
                c.namespace = Some(self.ns.clone());
            }
        }
        if let Some(user) = user {
            for auth in &mut config.auth_infos {
                if let Some(a) = auth.auth_info.as_mut() {
                    a.impersonate = Some(user.to_owned());
                }
            }
        }
        let file = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", user.unwrap_or("admin")));
        std::fs::write(&file, serde_json::to_vec(&config).unwrap()).unwrap();
        file
    }

    /// The stable Deployment `app` (v1), and the Ingress the NGINX router copies.
    async fn create_app(&self, app: &str) {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": self.ns},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": app, "fledge.dev/role": "stable"}},
                "template": {
                    "metadata": {"labels": {"app": app, "fledge.dev/role": "stable", "fledge.dev/version": "v1"}},
                    "spec": {"containers": [{"name": "app", "image": format!("registry.example/{app}:v1")}]},
                },
            },
        });
        self.apply(&deployments(), Some(&self.ns), &deployment)
            .await;
        let ingress = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": app, "namespace": self.ns},
            "spec": {
                "ingressClassName": "nginx",
                "rules": [{"host": format!("{app}.example.com"), "http": {"paths": [{
                    "path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": format!("{app}-stable"), "port": {"number": 80}}},
                }]}}],
            },
        });
        let r = resource("networking.k8s.io", "v1", "Ingress", "ingresses");
        self.apply(&r, Some(&self.ns), &ingress).await;
    }

    /// The CanaryRollout `app` of app `app` to v2 on the Deployment `app`, with
    /// [`STAGES`].
    async fn create_rollout(&self, app: &str) {
        let cr = json!({
            "apiVersion": "fledge.dev/v1alpha1", "kind": "CanaryRollout",
            "metadata": {"name": app, "namespace": self.ns},
            "spec": {
                "rollout": {"app": app, "version": "v2", "stages": serde_json::from_str::<Value>(STAGES).unwrap()},
                "targetRef": {"name": app, "canaryReplicas": 1,
                              "containers": [{"name": "app", "image": format!("registry.example/{app}:v2")}]},
                "router": {"nginxIngress": {"ingress": app, "stableService": format!("{app}-stable"),
                                            "canaryService": format!("{app}-canary")}},
            },
        });
        self.apply(&canary_rollouts(), Some(&self.ns), &cr).await;
    }

    /// Writes the status an operator would write for engine state `state`.
    async fn set_state(&self, name: &str, state: &RolloutState, message: &str) {
        let status = json!({"status": {
            "version": "v2",
            "phase": state.phase.to_string(),
            "stage": state.stage_index,
            "canaryWeight": state.canary_weight,
            "stableWeight": 100 - state.canary_weight,
            "engineState": state,
            "analysis": state.analysis,
            "message": message,
        }});
        self.rollouts()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("write the status of {name}: {e}"));
    }

    /// Polls CanaryRollout `name` until its status is in `phase` (a minute at most:
    /// the canary's pods must be made and marked ready first).
    async fn wait_phase(&self, name: &str, phase: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.rollout(name).await;
            if r["status"]["phase"] == phase {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} is not {phase} after a minute: {}",
                r["status"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn rollout(&self, name: &str) -> Value {
        serde_json::to_value(self.rollouts().get(name).await.unwrap()).unwrap()
    }

    /// `fledge ARGS` with this world's kubeconfig, which must exit with `code`.
    #[track_caller]
    fn expect(&self, args: &[&str], code: i32) -> Output {
        let out = self.command(&self.kubeconfig, args).output().unwrap();
        assert_exit(&out, code, &args.join(" "));
        out
    }

    fn command(&self, kubeconfig: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("USER", "ci-bot")
            .env_remove("FLEDGE_SERVER")
            .env_remove("FLEDGE_TOKEN")
            .stdin(Stdio::null());
        cmd
    }

    /// A `fledge wait …` running in the background.
    fn spawn(&self, args: &[&str]) -> Child {
        self.command(&self.kubeconfig, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn drop_namespace(&self) {
        let _ = self
            .api(&resource("", "v1", "Namespace", "namespaces"), None)
            .delete(&self.ns, &DeleteParams::background())
            .await;
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
}

#[track_caller]
fn assert_has(text: &str, wanted: &str) {
    assert!(text.contains(wanted), "no `{wanted}` in:\n{text}");
}

fn spec() -> fledge_spec::RolloutSpec {
    let yaml = format!("app: shop\nversion: v2\nstages: {STAGES}\n");
    fledge_spec::parse_spec(&yaml, "test").unwrap()
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// The engine state after a start and `promotes` promotes.
fn progressing(promotes: usize) -> RolloutState {
    let spec = spec();
    let mut state = step(&spec, &RolloutState::pending(), Input::Start, now())
        .unwrap()
        .state;
    for _ in 0..promotes {
        let promote = Input::Command {
            command: fledge_engine::Command::Promote { full: false },
            actor: fledge_engine::Actor::operator("alice"),
        };
        state = step(&spec, &state, promote, now()).unwrap().state;
    }
    state
}

// === reading ===

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver"]
async fn kube_get_and_status_show_a_rollouts_phase_stage_and_weight() {
    let w = World::new("cli-kube-get").await;
    w.create_app("shop").await;
    w.create_rollout("shop").await;
    w.create_rollout("cart").await;
    w.set_state(
        "shop",
        &progressing(1),
        "alice ran promote: now Progressing",
    )
    .await;

    // A list of the namespace's CanaryRollouts (the kubeconfig's namespace).
    let out = w.expect(&["get", "--kube"], 0);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("WEIGHT"),
        "{text}"
    );
    let cart = lines.iter().find(|l| l.starts_with("cart")).unwrap();
    assert!(
        cart.contains("Pending") && cart.contains("1/3") && cart.contains("0%"),
        "{text}"
    );
    let shop = lines.iter().find(|l| l.starts_with("shop")).unwrap();
    assert!(
        shop.contains("Progressing") && shop.contains("2/3") && shop.contains("50%"),
        "{text}"
    );

    // One, in detail, and as JSON.
    let out = w.expect(&["get", "shop", "--kube"], 0);
    let text = stdout(&out);
    assert!(
        text.contains("Progressing") && text.contains("2/3") && text.contains("50%"),
        "{text}"
    );
    assert!(
        text.contains("Message: alice ran promote: now Progressing"),
        "{text}"
    );

    let out = w.expect(&["get", "shop", "--kube", "-o", "json"], 0);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["id"], "shop");
    assert_eq!(json["namespace"], w.ns.as_str());
    assert_eq!(json["app"], "shop");
    assert_eq!(json["phase"], "Progressing");
    assert_eq!(json["stageIndex"], 1);
    assert_eq!(json["canaryWeight"], 50);
    assert_eq!(json["allowedActions"], json!(["promote", "abort", "pause"]));
    assert!(json.get("revision").is_none(), "{json}");

    let out = w.expect(
        &["get", "--kube", "-o", "yaml", "--phase", "progressing"],
        0,
    );
    let yaml = stdout(&out);
    assert!(
        yaml.contains("id: shop") && !yaml.contains("id: cart"),
        "{yaml}"
    );

    // Status: the app, its stable version (from the Deployment), the rollout.
    let out = w.expect(&["status", "--kube"], 0);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("v2 (shop)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.starts_with("shop") && line.contains(" v1 "), "{text}");
    assert!(
        line.contains("Progressing") && line.contains("2/3") && line.contains("50%"),
        "{text}"
    );

    let out = w.expect(&["status", "--kube", "-o", "json"], 0);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let apps = json["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2, "{json}");
    let shop = apps.iter().find(|a| a["rollout"]["id"] == "shop").unwrap();
    assert_eq!(shop["stable"]["version"], "v1");
    assert_eq!(shop["rollout"]["phase"], "Progressing");
    assert_eq!(shop["rollout"]["canaryWeight"], 50);

    // -n overrides the kubeconfig's namespace.
    let out = w.expect(&["get", "--kube", "-n", "default"], 0);
    assert!(!stdout(&out).contains("Progressing"), "{}", stdout(&out));

    w.drop_namespace().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver"]
async fn kube_wait_exits_as_against_the_server() {
    let w = World::new("cli-kube-wait").await;
    w.create_rollout("shop").await;
    w.set_state("shop", &progressing(0), "started").await;

    // Still in stage 1 after the timeout: 3.
    let started = Instant::now();
    let out = w.expect(&["wait", "shop", "--kube", "--timeout", "2s"], 3);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_has(&stderr(&out), "timed out after 2s");

    // Already at stage 1: 0 at once.
    w.expect(&["wait", "shop", "--kube", "--for", "stage", "1"], 0);

    // A wait in progress sees the status change (a watch): 1 for an abort, with
    // the decision on stdout.
    let waiting = w.spawn(&["wait", "shop", "--kube", "--timeout", "60s"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spec = spec();
    let aborted = step(
        &spec,
        &progressing(0),
        Input::Command {
            command: fledge_engine::Command::Abort { reason: None },
            actor: fledge_engine::Actor::operator("alice"),
        },
        now(),
    )
    .unwrap();
    w.set_state("shop", &aborted.state, "alice ran abort: now Aborted")
        .await;
    let decision = serde_json::to_value(aborted.events.last().unwrap()).unwrap();
    w.rollouts()
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"lastDecision": decision}})),
        )
        .await
        .unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert_exit(&out, 1, "wait for a rollout that is aborted meanwhile");
    assert_has(
        &stdout(&out),
        "rollout shop was aborted: shop rolled back to stable",
    );

    // -o json: the final state on stdout.
    let out = w.expect(&["wait", "shop", "--kube", "-o", "json"], 1);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["phase"], "Aborted");
    assert_eq!(json["canaryWeight"], 0);

    w.drop_namespace().await;
}

// === errors ===

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver"]
async fn kube_errors_name_the_object_and_the_verb() {
    let w = World::new("cli-kube-errors").await;
    w.create_rollout("shop").await;

    let out = w.expect(&["get", "nothing", "--kube"], 2);
    let wanted = format!("CanaryRollout {}/nothing not found", w.ns);
    assert_has(&stderr(&out), &wanted);
    let out = w.expect(&["wait", "nothing", "--kube", "-n", "default"], 2);
    assert_has(&stderr(&out), "CanaryRollout default/nothing not found");

    // A user the cluster's RBAC grants nothing.
    let nobody = w.kubeconfig_as(Some("nobody"));
    let out = w.command(&nobody, &["get", "--kube"]).output().unwrap();
    assert_exit(&out, 2, "list without RBAC");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("list CanaryRollouts in namespace {}", w.ns)),
        "{err}"
    );
    assert!(
        err.contains("forbidden") && err.contains("\"list\"") || err.contains("cannot list"),
        "{err}"
    );
    assert!(err.contains("canaryrollouts"), "{err}");

    // A user who may read but not annotate.
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "viewer", "namespace": w.ns},
        "rules": [{"apiGroups": ["fledge.dev"], "resources": ["canaryrollouts"], "verbs": ["get", "list", "watch"]}],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "viewer", "namespace": w.ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "viewer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "viewer"}],
    });
    w.apply(
        &resource("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        Some(&w.ns),
        &role,
    )
    .await;
    w.apply(
        &resource(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
        ),
        Some(&w.ns),
        &binding,
    )
    .await;
    let viewer = w.kubeconfig_as(Some("viewer"));
    // The binding reaches the authorizer through a watch: poll, with a deadline.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = w
            .command(&viewer, &["get", "shop", "--kube"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the viewer still may not read: {}",
            stderr(&out)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = w
        .command(&viewer, &["abort", "shop", "--kube"])
        .output()
        .unwrap();
    assert_exit(&out, 2, "abort without the right to annotate");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("annotate CanaryRollout {}/shop", w.ns)),
        "{err}"
    );
    assert!(
        err.contains("forbidden by the cluster's RBAC") && err.contains("patch"),
        "{err}"
    );

    // No kubeconfig at all.
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["status", "--kube"])
        .env("KUBECONFIG", home.path().join("missing"))
        .env("HOME", home.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_exit(&out, 2, "status --kube without a kubeconfig");
    assert_has(&stderr(&out), "cannot find a Kubernetes cluster");

    // --kube and --server are two worlds: not both.
    let out = w.expect(&["get", "--kube", "--server", "http://127.0.0.1:1"], 2);
    assert_has(&stderr(&out), "cannot be used with");
    w.expect(&["abort", "shop", "--kube", "--reason", "why"], 2);

    // An action the phase does not allow is refused before anything is sent.
    let out = w.expect(&["resume", "shop", "--kube"], 2);
    assert_has(&stderr(&out), "resume is not allowed now (allowed: abort)");
    let annotations = &w.rollout("shop").await["metadata"]["annotations"];
    assert!(
        annotations.get("fledge.dev/command").is_none(),
        "{annotations}"
    );

    w.drop_namespace().await;
}

// === acting, through the operator ===

/// What a kubelet would report: every Pod of the namespace marked running and
/// ready, so the cluster's controllers count the canary Deployment rolled out.
async fn play_kubelet(admin: kube::Client, ns: String) {
    let pods: Api<DynamicObject> =
        Api::namespaced_with(admin, &ns, &resource("", "v1", "Pod", "pods"));
    loop {
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for pod in list.items {
                let pod = serde_json::to_value(pod).unwrap();
                let ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                });
                if ready {
                    continue;
                }
                let since = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                let condition =
                    |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": since});
                let status = json!({"status": {
                    "phase": "Running",
                    "conditions": [condition("PodScheduled"), condition("Initialized"),
                                   condition("ContainersReady"), condition("Ready")],
                }});
                let name = pod["metadata"]["name"].as_str().unwrap();
                let _ = pods
                    .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running `fledge operator run`, killed when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs kube-apiserver"]
async fn kube_actions_drive_a_rollout_through_the_operator() {
    let w = World::new("cli-kube-act").await;
    w.create_app("shop").await;
    w.create_app("cart").await;
    let kubelet = tokio::spawn(play_kubelet(w.admin.clone(), w.ns.clone()));
    let log = w.dir.path().join("operator.log");
    let out = std::fs::File::create(&log).unwrap();
    let lease = ["--lease-namespace", &w.ns, "--lease-name", "op"];
    let _operator = Operator(
        w.command(&w.kubeconfig, &["operator", "run"])
            .args(lease)
            .args(["--identity", "op-a", "--namespace", &w.ns])
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info,kube=warn")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    w.create_rollout("shop").await;
    w.create_rollout("cart").await;
    w.wait_phase("shop", "Progressing").await;
    w.wait_phase("cart", "Progressing").await;
    let out = w.expect(&["wait", "shop", "--kube", "--for", "stage", "1"], 0);
    assert_has(&stdout(&out), "rollout shop is Progressing in stage 1/3");

    // shop: a wait in progress, then two promotes: stage 2, then the final stage,
    // which promotes by itself. Each action is the annotation the operator
    // consumes, and prints the state it left.
    let waiting = w.spawn(&["wait", "shop", "--kube", "--timeout", "60s"]);
    let out = w.expect(&["promote", "shop", "--kube"], 0);
    assert_eq!(
        stdout(&out).trim(),
        "rollout shop promoted: Progressing stage 2/3 weight 50%"
    );
    let r = w.rollout("shop").await;
    let annotations = &r["metadata"]["annotations"];
    assert_eq!(annotations["fledge.dev/command"], "promote");
    assert_eq!(annotations["fledge.dev/actor"], "ci-bot");
    assert_eq!(
        r["status"]["lastCommandId"],
        annotations["fledge.dev/command-id"]
    );
    assert_eq!(r["status"]["canaryWeight"], 50);
    w.expect(&["promote", "shop", "--kube"], 0);
    let out = waiting.wait_with_output().unwrap();
    assert_exit(&out, 0, "the wait sees the rollout succeed");
    assert_has(
        &stdout(&out),
        "rollout shop succeeded: v2 is now the stable version of shop",
    );
    assert_eq!(w.rollout("shop").await["status"]["phase"], "Succeeded");
    let out = w.expect(&["promote", "shop", "--kube"], 2);
    assert_has(&stderr(&out), "is Succeeded: promote is not allowed now");

    // cart: pause, resume, abort, retry.
    let out = w.expect(&["pause", "cart", "--kube"], 0);
    assert_eq!(
        stdout(&out).trim(),
        "rollout cart paused: Paused stage 1/3 weight 20%"
    );
    let annotations = &w.rollout("cart").await["metadata"]["annotations"];
    assert_eq!(annotations["fledge.dev/command"], "pause");
    w.expect(&["wait", "cart", "--kube", "--timeout", "1s"], 3);
    w.expect(&["wait", "cart", "--kube", "--for", "paused"], 0);

    let out = w.expect(&["resume", "cart", "--kube", "-o", "json"], 0);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["phase"], "Progressing");

    let out = w.expect(&["abort", "cart", "--kube"], 0);
    assert_has(
        &stdout(&out),
        "rollout cart aborted: Aborted stage 1/3 weight 0%",
    );
    let out = w.expect(&["wait", "cart", "--kube", "--timeout", "10s"], 1);
    assert_has(
        &stdout(&out),
        "rollout cart was aborted: cart rolled back to stable",
    );

    let out = w.expect(&["retry", "cart", "--kube"], 0);
    assert_has(&stdout(&out), "rollout cart restarted");
    w.wait_phase("cart", "Progressing").await;
    assert!(
        !log_text().contains("panicked"),
        "operator log:\n{}",
        log_text()
    );

    kubelet.abort();
    w.drop_namespace().await;
}
