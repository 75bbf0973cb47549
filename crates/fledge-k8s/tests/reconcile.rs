//! The controller against a mocked API server: each reconcile makes exactly the
//! scripted requests (method, path, key body fields), in order.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fledge_engine::{ArmCounters, Observation, Timestamp};
use fledge_k8s::controller::{self, Clock, Context, MetricsFactory};
use fledge_k8s::crd::MetricsSpec;
use fledge_k8s::{CanaryRollout, Error};
use fledge_providers::metrics::{MetricError, MetricSource, ObserveQuery};
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use support::mock::{self, Script};

const T0: i64 = 1_800_000_000_000;
const TARGET: &str = "/apis/apps/v1/namespaces/default/deployments/shop";
const CANARY: &str = "/apis/apps/v1/namespaces/default/deployments/shop-canary";
const STATUS: &str = "/apis/fledge.dev/v1alpha1/namespaces/default/canaryrollouts/shop/status";
const SPLIT: &str = "/apis/split.smi-spec.io/v1alpha2/namespaces/default/trafficsplits/shop";
const PODS: &str = "/api/v1/namespaces/default/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

#[derive(Debug)]
struct FixedClock(Timestamp);
impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// A metric source that answers what the test put in it.
#[derive(Debug, Default)]
struct FakeMetrics(Mutex<Option<Observation>>);

#[async_trait]
impl MetricSource for FakeMetrics {
    fn kind(&self) -> &'static str {
        "fake"
    }
    async fn observe(&self, _: &ObserveQuery) -> Result<Observation, MetricError> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .clone()
            .expect("the test set an observation"))
    }
}

#[derive(Debug, Default)]
struct FakeFactory(Arc<FakeMetrics>);
#[async_trait::async_trait]
impl MetricsFactory for FakeFactory {
    async fn source(
        &self,
        _: &kube::Client,
        _: &str,
        _: &MetricsSpec,
    ) -> Result<Arc<dyn MetricSource>, Error> {
        Ok(self.0.clone())
    }
}

fn ctx(client: kube::Client, at_ms: i64, metrics: Arc<FakeMetrics>) -> Arc<Context> {
    Arc::new(Context {
        client,
        clock: Arc::new(FixedClock(Timestamp::from_millis(at_ms))),
        metrics: Arc::new(FakeFactory(metrics)),
        identity: "fledge-operator-0".into(),
        effects: Arc::new(fledge_k8s::controller::Effects::start(false)),
        telemetry: Arc::default(),
    })
}

fn smi() -> Value {
    support::routers()[1].1.clone()
}

fn two_stages() -> Value {
    json!([{"traffic": 20, "duration": "1m"}, {"traffic": 100, "final": true, "promote": true}])
}

fn obj(v: Value) -> Arc<CanaryRollout> {
    Arc::new(serde_json::from_value(v).unwrap())
}

/// The object as the API server would return it after a status write.
fn with_status(mut cr: Value, status: &Value) -> Value {
    cr["status"] = status.clone();
    cr
}

/// Annotates the object with an operator's `command`, as `kubectl annotate` does.
fn command(cr: &mut Value, command: &str, id: &str) {
    cr["metadata"]["annotations"] =
        json!({"fledge.dev/command": command, "fledge.dev/command-id": id});
}

/// The stable Deployment, ready, running `version`.
fn stable(version: &str) -> Value {
    support::target_deployment(&format!("shop:{version}"), version, true)
}

fn canary_answer(ready: bool) -> Value {
    let mut d = support::target_deployment("shop:v2", "v2", ready);
    d["metadata"]["name"] = json!("shop-canary");
    d["spec"]["replicas"] = json!(1);
    if ready {
        d["status"] = json!({"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    }
    d
}

/// Whether JSON string `v` contains `part` (a non-string contains nothing).
fn says(v: &Value, part: &str) -> bool {
    v.as_str().is_some_and(|text| text.contains(part))
}

fn is_apply(query: &str) {
    assert!(
        query.contains("fieldManager=fledge") && query.contains("force=true"),
        "not a forced apply: {query}"
    );
}

/// An apply that leaves another manager's fields to them (the canary Deployment).
fn is_unforced_apply(query: &str) {
    assert!(
        query.contains("fieldManager=fledge") && !query.contains("force="),
        "not an unforced apply: {query}"
    );
}

/// The Events of `reasons`, in order: valid `events.k8s.io/v1` Events about the
/// CanaryRollout, `Warning` for a failure or an abort.
fn events(reasons: &'static [&'static str]) -> impl FnOnce(Script) -> Script {
    move |script| {
        reasons.iter().fold(script, |script, &reason| {
            let kind = if matches!(reason, "Failed" | "Aborted") {
                "Warning"
            } else {
                "Normal"
            };
            script
                .expect("POST", EVENTS)
                .body(move |body| {
                    let typed: k8s_openapi::api::events::v1::Event =
                        serde_json::from_value(body.clone()).unwrap();
                    assert_eq!(
                        serde_json::to_value(&typed).unwrap(),
                        *body,
                        "unknown Event fields"
                    );
                    assert_eq!(body["reason"], reason, "{body}");
                    assert_eq!(body["type"], kind);
                    assert_eq!(body["regarding"]["kind"], "CanaryRollout");
                    assert_eq!(body["reportingController"], "fledge.dev/operator");
                })
                .respond(201, json!({}))
        })
    }
}

/// Runs one reconcile of `cr` at `at_ms` against `script`.
async fn run(
    cr: &Value,
    at_ms: i64,
    metrics: Arc<FakeMetrics>,
    script: Script,
) -> Result<Action, Error> {
    let obj = obj(cr.clone());
    script
        .run(|client| controller::reconcile(obj, ctx(client, at_ms, metrics)))
        .await
}

/// The status as the CRD's schema declares it, so every status written validates.
fn status_schema() -> Value {
    let crd = serde_json::to_value(fledge_k8s::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"].clone()
}

/// A check of the status write (a whole replace with the resourceVersion read, that
/// fits the CRD) and the slot where it keeps the status written.
fn capture() -> (
    Arc<Mutex<Value>>,
    impl FnOnce(&str, &Value) + Send + 'static,
) {
    let slot = Arc::new(Mutex::new(Value::Null));
    let s = slot.clone();
    (slot, move |query: &str, body: &Value| {
        assert!(
            !query.contains("fieldManager=fledge"),
            "status is replaced whole"
        );
        let problems = fledge_k8s::schema::validate(&status_schema(), &body["status"]);
        assert!(
            problems.is_empty(),
            "the status does not fit the CRD: {problems:?}"
        );
        assert_eq!(
            body["metadata"]["resourceVersion"], "100",
            "status write without the resourceVersion read"
        );
        *s.lock().unwrap() = body["status"].clone();
    })
}

/// The status write, checked by `check`, answered with `cr`.
fn writes_status(
    cr: &Value,
    check: impl FnOnce(&str, &Value) + Send + 'static,
) -> impl FnOnce(Script) -> Script {
    let written = cr.clone();
    move |script| {
        script
            .expect("PUT", STATUS)
            .check(check)
            .respond(200, written)
    }
}

#[tokio::test]
async fn pending_waits_for_the_canary_deployment() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let (status, check) = capture();
    let script = Script::new()
        .then(reads_target)
        .expect("PATCH", CANARY)
        .check(|q, body| {
            is_unforced_apply(q);
            assert_eq!(body["spec"]["replicas"], 1);
            assert_eq!(
                body["spec"]["selector"]["matchLabels"]["fledge.dev/role"],
                "canary"
            );
            let labels = &body["spec"]["template"]["metadata"]["labels"];
            assert_eq!(labels["fledge.dev/version"], "v2");
            assert_eq!(labels["fledge.dev/role"], "canary");
            let containers = &body["spec"]["template"]["spec"]["containers"];
            assert_eq!(containers[0]["image"], "shop:v2");
            assert_eq!(
                containers[1]["image"], "proxy:1",
                "other containers keep their image"
            );
            assert_eq!(
                body["metadata"]["ownerReferences"][0]["kind"],
                "CanaryRollout"
            );
            // The canary Deployment is a valid apps/v1 Deployment.
            let typed: k8s_openapi::api::apps::v1::Deployment =
                serde_json::from_value(body.clone()).unwrap();
            assert_eq!(serde_json::to_value(&typed).unwrap(), *body);
        })
        .respond(200, canary_answer(false))
        .then(writes_status(&cr, check));
    let result = run(&cr, T0, Arc::default(), script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(2)));
    let status = status.lock().unwrap().clone();
    assert_eq!(status["phase"], "Pending");
    assert!(says(&status["message"], "waiting for the canary"));
}

/// The target Deployment read, answered with the stable one still running v1.
fn reads_target(script: Script) -> Script {
    script.expect("GET", TARGET).respond(200, stable("v1"))
}

/// The first requests of a reconcile that finds the canary ready and starts the
/// rollout: the target read, the canary applied (and ready), the status written
/// (checked by `status_check`), then the canary applied again with one replica.
fn starting(
    cr: &Value,
    status_check: impl FnOnce(&str, &Value) + Send + 'static,
) -> impl FnOnce(Script) -> Script {
    let write_status = writes_status(cr, status_check);
    move |script| {
        script
            .then(reads_target)
            .expect("PATCH", CANARY)
            .respond(200, canary_answer(true))
            .then(write_status)
            .expect("PATCH", CANARY)
            .check(|q, b| {
                is_unforced_apply(q);
                assert_eq!(b["spec"]["replicas"], 1);
            })
            .respond(200, canary_answer(true))
    }
}

/// Reconciles a fresh rollout once its canary is ready: it starts at 20%.
async fn start(cr: &Value) -> Value {
    let (status, check) = capture();
    let script = Script::new()
        .then(starting(cr, check))
        .expect("PATCH", SPLIT)
        .check(|q, b| {
            is_apply(q);
            assert_eq!(
                b["spec"]["backends"],
                json!([{"service": "shop-stable", "weight": 80}, {"service": "shop-canary", "weight": 20}])
            );
        })
        .respond(200, json!({}))
        .then(events(&["Started", "StageStarted"]));
    let result = run(cr, T0, Arc::default(), script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(1)));
    let status = status.lock().unwrap().clone();
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["canaryWeight"], 20);
    assert_eq!(status["stableWeight"], 80);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["engineState"]["phase"], "Progressing");
    status
}

/// `cr` started, with the status its start wrote.
async fn started(cr: Value) -> Value {
    let status = start(&cr).await;
    with_status(cr, &status)
}

fn healthy_pods() -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "shop-canary-abc"},
        "status": {"containerStatuses": [{"name": "app", "image": "shop:v2", "imageID": "", "ready": true, "restartCount": 0}]},
    }]})
}

/// The reads of a reconcile of a progressing rollout: the target, then the canary's
/// pods (selected by their labels), answered with `pods`.
fn reads(pods: Value) -> impl FnOnce(Script) -> Script {
    move |script| {
        script
            .then(reads_target)
            .expect("GET", PODS)
            .check(|q, _| {
                assert!(
                    q.contains(
                        "labelSelector=fledge.dev%2Frollout%3Dshop%2Cfledge.dev%2Frole%3Dcanary"
                    ),
                    "{q}"
                )
            })
            .respond(200, pods)
    }
}

/// A reconcile that reads no metrics (a command, or a finished rollout): the target
/// read, the status written (checked by `status_check`), then the canary applied with
/// `replicas` and the split giving it `canary_weight`.
fn settled(
    cr: &Value,
    status_check: impl FnOnce(&str, &Value) + Send + 'static,
    replicas: u64,
    canary_weight: u64,
) -> impl FnOnce(Script) -> Script {
    let write_status = writes_status(cr, status_check);
    move |script| {
        script
            .then(reads_target)
            .then(write_status)
            .then(scales_canary(replicas))
            .then(splits(canary_weight))
    }
}

/// The canary Deployment applied with `replicas`, answered ready if it has any.
fn scales_canary(replicas: u64) -> impl FnOnce(Script) -> Script {
    move |script| {
        script
            .expect("PATCH", CANARY)
            .body(move |b| assert_eq!(b["spec"]["replicas"], replicas))
            .respond(200, canary_answer(replicas > 0))
    }
}

/// The SMI split applied giving the canary `canary_weight`.
fn splits(canary_weight: u64) -> impl FnOnce(Script) -> Script {
    move |script| {
        script
            .expect("PATCH", SPLIT)
            .body(move |b| assert_eq!(b["spec"]["backends"][1]["weight"], canary_weight))
            .respond(200, json!({}))
    }
}

/// Reconciles a started `cr` once at `at_ms`: it is [`settled`] with `replicas`
/// canary replicas at `canary_weight`, then records the Events of `reasons`. Returns
/// the status written.
async fn settle(
    cr: &Value,
    at_ms: i64,
    (replicas, canary_weight): (u64, u64),
    reasons: &'static [&'static str],
) -> Value {
    let (st, check) = capture();
    let script = Script::new()
        .then(settled(cr, check, replicas, canary_weight))
        .then(events(reasons));
    run(cr, at_ms, Arc::default(), script).await.unwrap();
    st.lock().unwrap().clone()
}

#[tokio::test]
async fn a_healthy_rollout_promotes_the_stable_deployment_then_retires_the_canary() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let cr = started(cr).await;

    // A minute later the stage is over; the final stage promotes.
    let (st, check) = capture();
    let script = Script::new()
        .then(reads(healthy_pods()))
        .then(writes_status(&cr, check))
        .expect("PATCH", TARGET)
        .check(|q, b| {
            is_apply(q);
            assert_eq!(
                b["spec"]["template"]["spec"]["containers"],
                json!([{"name": "app", "image": "shop:v2"}])
            );
            assert_eq!(
                b["spec"]["template"]["metadata"]["labels"]["fledge.dev/version"],
                "v2"
            );
        })
        .respond(200, json!({}))
        // The canary keeps all traffic while the stable Deployment rolls out.
        .then(splits(100))
        .then(events(&["StageAdvanced", "StageStarted", "Succeeded"]));
    let result = run(&cr, T0 + 61_000, Arc::default(), script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
    let status = st.lock().unwrap().clone();
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["conditions"][1]["reason"], "PromotingStable");
    let cr = with_status(cr, &status);

    // The stable Deployment runs v2 everywhere: traffic back to stable, canary to zero.
    let (st, check) = capture();
    let script = Script::new()
        .expect("GET", TARGET)
        .respond(200, stable("v2"))
        .then(writes_status(&cr, check))
        .then(scales_canary(0))
        .expect("PATCH", TARGET)
        .respond(200, json!({}))
        .expect("PATCH", SPLIT)
        .body(|b| assert_eq!(b["spec"]["backends"][0]["weight"], 100))
        .respond(200, json!({}));
    let result = run(&cr, T0 + 90_000, Arc::default(), script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
    let status = st.lock().unwrap().clone();
    assert_eq!(status["canaryWeight"], 0);
    assert_eq!(status["conditions"][1]["status"], "True");
}

#[tokio::test]
async fn a_crash_looping_canary_fails_routes_to_stable_and_scales_down() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let cr = started(cr).await;
    let crashing = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "shop-canary-abc"},
        "status": {"containerStatuses": [{"name": "app", "image": "shop:v2", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }]});
    let (st, check) = capture();
    let script = Script::new()
        .then(reads(crashing))
        .then(writes_status(&cr, check))
        .then(scales_canary(0))
        .expect("PATCH", SPLIT)
        .body(|b| {
            assert_eq!(
                b["spec"]["backends"],
                json!([{"service": "shop-stable", "weight": 100}, {"service": "shop-canary", "weight": 0}])
            )
        })
        .respond(200, json!({}))
        .expect("POST", EVENTS)
        .body(|b| {
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["reason"], "Failed");
            assert!(
                says(&b["note"], "shop-canary-abc/app CrashLoopBackOff (3 restarts)"),
                "{b}"
            );
        })
        .respond(201, json!({}));
    run(&cr, T0 + 5_000, Arc::default(), script).await.unwrap();
    let status = st.lock().unwrap().clone();
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["canaryWeight"], 0);
    assert_eq!(status["lastDecision"]["podEvidence"][0]["restarts"], 3);
    assert_eq!(status["lastDecision"]["actor"]["kind"], "engine");
}

#[tokio::test]
async fn bad_metrics_fail_the_rollout_with_evidence() {
    let mut cr = support::rollout(
        smi(),
        json!([
            {"traffic": 20, "duration": "10m", "successCriteria": ["error_rate < 1%"]},
            {"traffic": 100, "final": true, "promote": true},
        ]),
        json!({}),
    );
    cr["spec"]["metrics"] = json!({"prometheus": {"address": "http://prometheus:9090"}});
    let mut cr = started(cr).await;
    let metrics = Arc::new(FakeMetrics::default());
    let obs = |canary_errors: u64, canary_requests: u64| Observation {
        stable: ArmCounters {
            requests: canary_requests * 4,
            errors: 0,
            ..Default::default()
        },
        canary: ArmCounters {
            requests: canary_requests,
            errors: canary_errors,
            ..Default::default()
        },
        ..Default::default()
    };
    // The first observation is the baseline; then half the canary's requests fail.
    let mut failed = None;
    for (i, (errors, requests)) in [(0, 0), (200, 400), (600, 1200)].into_iter().enumerate() {
        *metrics.0.lock().unwrap() = Some(obs(errors, requests));
        let (st, check) = capture();
        // Only the reads and the status write matter here; what follows is answered.
        let script = Script::new()
            .then(reads(healthy_pods()))
            .then(writes_status(&cr, check))
            .then_anything();
        run(&cr, T0 + 1000 * (i as i64 + 1), metrics.clone(), script)
            .await
            .unwrap();
        let status = st.lock().unwrap().clone();
        cr = with_status(cr, &status);
        if status["phase"] == "Failed" {
            failed = Some(status);
            break;
        }
    }
    let status = failed.expect("half the canary's requests failing fails the rollout");
    assert_eq!(status["canaryWeight"], 0);
    let evidence = &status["lastDecision"]["evidence"][0];
    assert_eq!(evidence["criterion"], "error_rate < 1%");
    assert!(
        evidence["canary"]["requests"].as_u64().unwrap() >= 400,
        "{evidence}"
    );
}

#[tokio::test]
async fn a_conflicting_status_write_is_retried_and_nothing_else_is_done() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let cr = started(cr).await;
    // Nothing after the refused status write: the script fails on any other request.
    let script = Script::new()
        .then(reads(healthy_pods()))
        .expect("PUT", STATUS)
        .respond(409, mock::status(409, "Conflict"));
    let err = run(&cr, T0 + 5_000, Arc::default(), script)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    let action = controller::error_policy(
        obj(cr),
        &err,
        ctx(Script::new().serve().0, T0, Arc::default()),
    );
    assert_eq!(action, Action::requeue(Duration::from_millis(200)));
}

#[tokio::test]
async fn an_annotation_command_runs_once_per_id() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let mut cr = started(cr).await;
    cr["metadata"]["annotations"] = json!({
        "fledge.dev/command": "abort", "fledge.dev/command-id": "c-1", "fledge.dev/actor": "alice",
    });
    let status = settle(&cr, T0 + 5_000, (0, 0), &["Aborted"]).await;
    assert_eq!(status["phase"], "Aborted");
    assert_eq!(status["lastCommandId"], "c-1");
    assert_eq!(
        status["lastDecision"]["actor"],
        json!({"kind": "operator", "name": "alice"})
    );

    // The same id again: nothing to run, nothing recorded.
    let cr = with_status(cr, &status);
    let status = settle(&cr, T0 + 6_000, (0, 0), &[]).await;
    assert_eq!(status["phase"], "Aborted");
}

/// Reconciles `cr`, whose spec is invalid: the status written says so, and nothing
/// else is done. Returns the reconcile's error and that status.
async fn refused(cr: &Value) -> (Error, Value) {
    let (st, check) = capture();
    let script = Script::new().then(writes_status(cr, check));
    let err = run(cr, T0, Arc::default(), script).await.unwrap_err();
    let status = st.lock().unwrap().clone();
    assert_eq!(status["conditions"][0]["type"], "SpecValid");
    assert_eq!(status["conditions"][0]["status"], "False");
    (err, status)
}

#[tokio::test]
async fn an_invalid_spec_is_reported_in_the_status_and_not_retried() {
    let mut cr = support::rollout(
        smi(),
        two_stages(),
        json!({"match": [{"header": "x-canary", "value": "1"}]}),
    );
    cr["spec"]["rollout"]["stages"][0]["traffic"] = json!(60);
    cr["spec"]["rollout"]["stages"][1]["traffic"] = json!(50);
    let (err, _) = refused(&cr).await;
    assert!(matches!(err, Error::InvalidSpec(_)), "{err}");
}

#[tokio::test]
async fn stickiness_no_kubernetes_router_can_serve_is_an_invalid_spec() {
    let cr = support::rollout(
        smi(),
        two_stages(),
        json!({"stickiness": {"cookie": "user"}}),
    );
    let (err, status) = refused(&cr).await;
    assert!(
        err.to_string()
            .contains("spec.rollout.stickiness: the smi router cannot express stickiness"),
        "{err}"
    );
    assert!(
        says(&status["conditions"][0]["message"], "stickiness"),
        "{status}"
    );
}

#[tokio::test]
async fn an_unknown_command_is_refused_and_recorded() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let mut cr = started(cr).await;
    command(&mut cr, "explode", "c-9");
    let status = settle(&cr, T0 + 5_000, (1, 20), &[]).await;
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["lastCommandId"], "c-9");
    assert!(
        says(&status["message"], "refused: unknown command"),
        "{status}"
    );
}

/// Starts a rollout with `router` and a header match rule; `router_requests`
/// expects the router's requests.
async fn start_with(router: Value, router_requests: impl FnOnce(Script) -> Script) {
    let cr = support::rollout(
        router,
        two_stages(),
        json!({"match": [{"header": "X-Canary", "value": "always"}]}),
    );
    let (_, check) = capture();
    let script = Script::new()
        .then(starting(&cr, check))
        .then(router_requests)
        .then(events(&["Started", "StageStarted"]));
    run(&cr, T0, Arc::default(), script).await.unwrap();
}

/// Expects a forced apply of `path` whose body is valid against the `v1` schema of
/// the upstream CRD in `file` and passes `body`; answers `200 {}`.
fn valid_apply(
    script: Script,
    path: &str,
    file: &'static str,
    body: impl FnOnce(&Value) + Send + 'static,
) -> Script {
    script
        .expect("PATCH", path)
        .check(move |q, b| {
            is_apply(q);
            let problems = fledge_k8s::schema::validate(&support::upstream_schema(file, "v1"), b);
            assert!(problems.is_empty(), "{problems:?}");
        })
        .body(body)
        .respond(200, json!({}))
}

#[tokio::test]
async fn istio_writes_the_destination_rule_then_the_virtual_service() {
    let ns = "/apis/networking.istio.io/v1/namespaces/default";
    start_with(support::routers()[0].1.clone(), |script| {
        let rule = format!("{ns}/destinationrules/shop");
        let script = valid_apply(script, &rule, "istio-destinationrules.crd.yaml", |_| {});
        let service = format!("{ns}/virtualservices/shop");
        valid_apply(script, &service, "istio-virtualservices.crd.yaml", |b| {
            assert_eq!(
                b["spec"]["http"][0]["match"][0]["headers"]["x-canary"]["exact"],
                "always"
            );
            assert_eq!(b["spec"]["http"][1]["route"][1]["weight"], 20);
        })
    })
    .await;
}

#[tokio::test]
async fn gateway_api_writes_the_http_route() {
    let route = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/shop";
    start_with(support::routers()[2].1.clone(), |script| {
        valid_apply(script, route, "gateway-api-httproutes.crd.yaml", |b| {
            assert_eq!(b["spec"]["rules"][1]["backendRefs"][1]["weight"], 20)
        })
    })
    .await;
}

#[tokio::test]
async fn nginx_reads_the_stable_ingress_and_writes_the_canary_ingress() {
    let ns = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    start_with(support::routers()[3].1.clone(), |script| {
        script
            .expect("GET", &format!("{ns}/shop"))
            .respond(200, support::stable_ingress())
            .expect("PATCH", &format!("{ns}/shop-canary"))
            .check(|q, b| {
                is_apply(q);
                let a = &b["metadata"]["annotations"];
                assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "20");
                assert_eq!(
                    a["nginx.ingress.kubernetes.io/canary-by-header"],
                    "x-canary"
                );
            })
            .respond(200, json!({}))
    })
    .await;
}

#[tokio::test]
async fn a_retry_waits_for_the_canary_then_restarts_at_stage_zero() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let mut cr = started(cr).await;
    command(&mut cr, "abort", "c-1");
    let status = settle(&cr, T0 + 5_000, (0, 0), &["Aborted"]).await;
    let mut cr = with_status(cr, &status);
    command(&mut cr, "retry", "c-2");

    // The canary is scaled back up first; the retry waits for it.
    let (st, check) = capture();
    let script = Script::new()
        .then(reads_target)
        .expect("PATCH", CANARY)
        .body(|b| assert_eq!(b["spec"]["replicas"], 1))
        .respond(200, canary_answer(false))
        .then(writes_status(&cr, check));
    let result = run(&cr, T0 + 6_000, Arc::default(), script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(2)));
    let waiting = st.lock().unwrap().clone();
    assert_eq!(waiting["phase"], "Aborted");
    assert_eq!(
        waiting["lastCommandId"], "c-1",
        "the retry is not consumed yet"
    );

    let (st, check) = capture();
    let script = Script::new()
        .then(starting(&cr, check))
        .then(splits(20))
        .then(events(&["Retried", "StageStarted"]));
    run(&cr, T0 + 9_000, Arc::default(), script).await.unwrap();
    let status = st.lock().unwrap().clone();
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["lastCommandId"], "c-2");
    assert_eq!(status["stage"], 0);
}
