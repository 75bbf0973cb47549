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
use support::mock::{self, expect, expect_with};

const T0: i64 = 1_800_000_000_000;
const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments";
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
impl MetricsFactory for FakeFactory {
    fn source(&self, _: &MetricsSpec) -> Result<Arc<dyn MetricSource>, Error> {
        Ok(self.0.clone())
    }
}

fn ctx(client: kube::Client, at_ms: i64, metrics: Arc<FakeMetrics>) -> Arc<Context> {
    Arc::new(Context {
        client,
        clock: Arc::new(FixedClock(Timestamp::from_millis(at_ms))),
        metrics: Arc::new(FakeFactory(metrics)),
        identity: "fledge-operator-0".into(),
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

fn canary_answer(ready: bool) -> Value {
    let mut d = support::target_deployment("shop:v2", "v2", ready);
    d["metadata"]["name"] = json!("shop-canary");
    d["spec"]["replicas"] = json!(1);
    if ready {
        d["status"] = json!({"observedGeneration": 3, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
    }
    d
}

fn is_apply(query: &str) {
    assert!(
        query.contains("fieldManager=fledge") && query.contains("force=true"),
        "not a forced apply: {query}"
    );
}

fn event(reason: &'static str, kind: &'static str) -> mock::Exchange {
    expect_with(
        "POST",
        EVENTS,
        move |_, body| {
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
        },
        201,
        json!({}),
    )
}

fn events_for(reasons: &[&'static str]) -> Vec<mock::Exchange> {
    reasons
        .iter()
        .map(|r| {
            let kind = if matches!(*r, "Failed" | "Aborted") {
                "Warning"
            } else {
                "Normal"
            };
            event(r, kind)
        })
        .collect()
}

/// Runs one reconcile against `script`; returns its result and the status it wrote.
async fn run(
    cr: &Value,
    at_ms: i64,
    metrics: Arc<FakeMetrics>,
    script: Vec<mock::Exchange>,
) -> (Result<Action, Error>, Vec<String>) {
    let (client, task) = mock::server(script);
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        controller::reconcile(obj(cr.clone()), ctx(client, at_ms, metrics)),
    )
    .await
    .expect("reconcile hung");
    let seen = mock::verify(task).await;
    (result, seen)
}

/// The status as the CRD's schema declares it, so every status written validates.
fn status_schema() -> Value {
    let crd = serde_json::to_value(fledge_k8s::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"].clone()
}

fn capture() -> (
    Arc<Mutex<Value>>,
    impl FnOnce(&str, &Value) + Send + 'static,
) {
    let slot = Arc::new(Mutex::new(Value::Null));
    let s = slot.clone();
    (slot, move |query: &str, body: &Value| {
        assert!(
            !query.contains("fieldManager=fledge"),
            "status is a merge patch"
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

#[tokio::test]
async fn pending_waits_for_the_canary_deployment() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let (status, check) = capture();
    let (result, _) = run(
        &cr,
        T0,
        Arc::default(),
        vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v1", "v1", true),
            ),
            expect_with(
                "PATCH",
                &format!("{DEPLOY}/shop-canary"),
                |q, body| {
                    is_apply(q);
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
                },
                200,
                canary_answer(false),
            ),
            expect_with("PATCH", STATUS, check, 200, cr.clone()),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(2)));
    let status = status.lock().unwrap().clone();
    assert_eq!(status["phase"], "Pending");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("waiting for the canary")
    );
}

/// Reconciles a fresh rollout once its canary is ready: it starts at 20%.
async fn start(cr: &Value) -> Value {
    let (status, check) = capture();
    let mut script = vec![
        expect(
            "GET",
            &format!("{DEPLOY}/shop"),
            200,
            support::target_deployment("shop:v1", "v1", true),
        ),
        expect(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            200,
            canary_answer(true),
        ),
        expect_with("PATCH", STATUS, check, 200, cr.clone()),
        expect_with(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            |q, b| {
                is_apply(q);
                assert_eq!(b["spec"]["replicas"], 1);
            },
            200,
            canary_answer(true),
        ),
        expect_with(
            "PATCH",
            SPLIT,
            |q, b| {
                is_apply(q);
                assert_eq!(
                    b["spec"]["backends"],
                    json!([{"service": "shop-stable", "weight": 80}, {"service": "shop-canary", "weight": 20}])
                );
            },
            200,
            json!({}),
        ),
    ];
    script.extend(events_for(&["Started", "StageStarted"]));
    let (result, _) = run(cr, T0, Arc::default(), script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(1)));
    let status = status.lock().unwrap().clone();
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["canaryWeight"], 20);
    assert_eq!(status["stableWeight"], 80);
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["engineState"]["phase"], "Progressing");
    status
}

fn healthy_pods() -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "shop-canary-abc"},
        "status": {"containerStatuses": [{"name": "app", "image": "shop:v2", "imageID": "", "ready": true, "restartCount": 0}]},
    }]})
}

#[tokio::test]
async fn a_healthy_rollout_promotes_the_stable_deployment_then_retires_the_canary() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let status = start(&cr).await;
    let cr = with_status(cr, &status);

    // A minute later the stage is over; the final stage promotes.
    let (st, check) = capture();
    let mut script = vec![
        expect(
            "GET",
            &format!("{DEPLOY}/shop"),
            200,
            support::target_deployment("shop:v1", "v1", true),
        ),
        expect_with(
            "GET",
            PODS,
            |q, _| {
                assert!(
                    q.contains(
                        "labelSelector=fledge.dev%2Frollout%3Dshop%2Cfledge.dev%2Frole%3Dcanary"
                    ),
                    "{q}"
                )
            },
            200,
            healthy_pods(),
        ),
        expect_with("PATCH", STATUS, check, 200, cr.clone()),
        expect_with(
            "PATCH",
            &format!("{DEPLOY}/shop"),
            |q, b| {
                is_apply(q);
                assert_eq!(
                    b["spec"]["template"]["spec"]["containers"],
                    json!([{"name": "app", "image": "shop:v2"}])
                );
                assert_eq!(
                    b["spec"]["template"]["metadata"]["labels"]["fledge.dev/version"],
                    "v2"
                );
            },
            200,
            json!({}),
        ),
        // The canary keeps all traffic while the stable Deployment rolls out.
        expect_with(
            "PATCH",
            SPLIT,
            |_, b| assert_eq!(b["spec"]["backends"][1]["weight"], 100),
            200,
            json!({}),
        ),
    ];
    script.extend(events_for(&["StageAdvanced", "StageStarted", "Succeeded"]));
    let (result, _) = run(&cr, T0 + 61_000, Arc::default(), script).await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
    let status = st.lock().unwrap().clone();
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["conditions"][1]["reason"], "PromotingStable");
    let cr = with_status(cr, &status);

    // The stable Deployment runs v2 everywhere: traffic back to stable, canary to zero.
    let (st, check) = capture();
    let (result, _) = run(
        &cr,
        T0 + 90_000,
        Arc::default(),
        vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v2", "v2", true),
            ),
            expect_with("PATCH", STATUS, check, 200, cr.clone()),
            expect_with(
                "PATCH",
                &format!("{DEPLOY}/shop-canary"),
                |_, b| assert_eq!(b["spec"]["replicas"], 0),
                200,
                canary_answer(false),
            ),
            expect("PATCH", &format!("{DEPLOY}/shop"), 200, json!({})),
            expect_with(
                "PATCH",
                SPLIT,
                |_, b| assert_eq!(b["spec"]["backends"][0]["weight"], 100),
                200,
                json!({}),
            ),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));
    let status = st.lock().unwrap().clone();
    assert_eq!(status["canaryWeight"], 0);
    assert_eq!(status["conditions"][1]["status"], "True");
}

#[tokio::test]
async fn a_crash_looping_canary_fails_routes_to_stable_and_scales_down() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let status = start(&cr).await;
    let cr = with_status(cr, &status);
    let crashing = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{
        "metadata": {"name": "shop-canary-abc"},
        "status": {"containerStatuses": [{"name": "app", "image": "shop:v2", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }]});
    let (st, check) = capture();
    let mut script = vec![
        expect(
            "GET",
            &format!("{DEPLOY}/shop"),
            200,
            support::target_deployment("shop:v1", "v1", true),
        ),
        expect("GET", PODS, 200, crashing),
        expect_with("PATCH", STATUS, check, 200, cr.clone()),
        expect_with(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            |_, b| assert_eq!(b["spec"]["replicas"], 0),
            200,
            canary_answer(false),
        ),
        expect_with(
            "PATCH",
            SPLIT,
            |_, b| {
                assert_eq!(
                    b["spec"]["backends"],
                    json!([{"service": "shop-stable", "weight": 100}, {"service": "shop-canary", "weight": 0}])
                )
            },
            200,
            json!({}),
        ),
    ];
    script.push(expect_with(
        "POST",
        EVENTS,
        |_, b| {
            assert_eq!(b["type"], "Warning");
            assert_eq!(b["reason"], "Failed");
            assert!(
                b["note"]
                    .as_str()
                    .unwrap()
                    .contains("shop-canary-abc/app CrashLoopBackOff (3 restarts)"),
                "{b}"
            );
        },
        201,
        json!({}),
    ));
    let (result, _) = run(&cr, T0 + 5_000, Arc::default(), script).await;
    result.unwrap();
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
    let status = start(&cr).await;
    let mut cr = with_status(cr, &status);
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
        let (client, task) = mock::server_lenient(vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v1", "v1", true),
            ),
            expect("GET", PODS, 200, healthy_pods()),
            expect_with("PATCH", STATUS, check, 200, cr.clone()),
        ]);
        controller::reconcile(
            obj(cr.clone()),
            ctx(client, T0 + 1000 * (i as i64 + 1), metrics.clone()),
        )
        .await
        .unwrap();
        mock::verify(task).await;
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
    let status = start(&cr).await;
    let cr = with_status(cr, &status);
    let (result, seen) = run(
        &cr,
        T0 + 5_000,
        Arc::default(),
        vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v1", "v1", true),
            ),
            expect("GET", PODS, 200, healthy_pods()),
            expect("PATCH", STATUS, 409, mock::status(409, "Conflict")),
        ],
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err}");
    assert_eq!(seen.len(), 3);
    let action = controller::error_policy(
        obj(cr),
        &err,
        ctx(mock::server(vec![]).0, T0, Arc::default()),
    );
    assert_eq!(action, Action::requeue(Duration::from_millis(200)));
}

#[tokio::test]
async fn an_annotation_command_runs_once_per_id() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let status = start(&cr).await;
    let mut cr = with_status(cr, &status);
    cr["metadata"]["annotations"] = json!({
        "fledge.dev/command": "abort", "fledge.dev/command-id": "c-1", "fledge.dev/actor": "alice",
    });
    let (st, check) = capture();
    let (result, _) = run(
        &cr,
        T0 + 5_000,
        Arc::default(),
        vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v1", "v1", true),
            ),
            expect_with("PATCH", STATUS, check, 200, cr.clone()),
            expect_with(
                "PATCH",
                &format!("{DEPLOY}/shop-canary"),
                |_, b| assert_eq!(b["spec"]["replicas"], 0),
                200,
                canary_answer(false),
            ),
            expect_with(
                "PATCH",
                SPLIT,
                |_, b| assert_eq!(b["spec"]["backends"][1]["weight"], 0),
                200,
                json!({}),
            ),
            event("Aborted", "Warning"),
        ],
    )
    .await;
    result.unwrap();
    let status = st.lock().unwrap().clone();
    assert_eq!(status["phase"], "Aborted");
    assert_eq!(status["lastCommandId"], "c-1");
    assert_eq!(
        status["lastDecision"]["actor"],
        json!({"kind": "operator", "name": "alice"})
    );

    // The same id again: nothing to run, nothing recorded.
    let cr = with_status(cr, &status);
    let (st, check) = capture();
    let (result, _) = run(
        &cr,
        T0 + 6_000,
        Arc::default(),
        vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v1", "v1", true),
            ),
            expect_with("PATCH", STATUS, check, 200, cr.clone()),
            expect(
                "PATCH",
                &format!("{DEPLOY}/shop-canary"),
                200,
                canary_answer(false),
            ),
            expect("PATCH", SPLIT, 200, json!({})),
        ],
    )
    .await;
    result.unwrap();
    assert_eq!(st.lock().unwrap()["phase"], "Aborted");
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
    let (st, check) = capture();
    let (result, _) = run(
        &cr,
        T0,
        Arc::default(),
        vec![expect_with("PATCH", STATUS, check, 200, cr.clone())],
    )
    .await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec(_)), "{err}");
    let status = st.lock().unwrap().clone();
    assert_eq!(status["conditions"][0]["type"], "SpecValid");
    assert_eq!(status["conditions"][0]["status"], "False");
}

#[tokio::test]
async fn an_unknown_command_is_refused_and_recorded() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let status = start(&cr).await;
    let mut cr = with_status(cr, &status);
    cr["metadata"]["annotations"] =
        json!({"fledge.dev/command": "explode", "fledge.dev/command-id": "c-9"});
    let (st, check) = capture();
    let (result, _) = run(
        &cr,
        T0 + 5_000,
        Arc::default(),
        vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v1", "v1", true),
            ),
            expect_with("PATCH", STATUS, check, 200, cr.clone()),
            expect_with(
                "PATCH",
                &format!("{DEPLOY}/shop-canary"),
                |_, b| assert_eq!(b["spec"]["replicas"], 1),
                200,
                canary_answer(true),
            ),
            expect_with(
                "PATCH",
                SPLIT,
                |_, b| assert_eq!(b["spec"]["backends"][1]["weight"], 20),
                200,
                json!({}),
            ),
        ],
    )
    .await;
    result.unwrap();
    let status = st.lock().unwrap().clone();
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["lastCommandId"], "c-9");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("refused: unknown command"),
        "{status}"
    );
}

/// Starts a rollout with `router` and checks the router's requests with `script`.
async fn start_with(router: Value, router_script: Vec<mock::Exchange>) {
    let cr = support::rollout(
        router,
        two_stages(),
        json!({"match": [{"header": "X-Canary", "value": "always"}]}),
    );
    let (_, check) = capture();
    let mut script = vec![
        expect(
            "GET",
            &format!("{DEPLOY}/shop"),
            200,
            support::target_deployment("shop:v1", "v1", true),
        ),
        expect(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            200,
            canary_answer(true),
        ),
        expect_with("PATCH", STATUS, check, 200, cr.clone()),
        expect(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            200,
            canary_answer(true),
        ),
    ];
    script.extend(router_script);
    script.extend(events_for(&["Started", "StageStarted"]));
    let (result, _) = run(&cr, T0, Arc::default(), script).await;
    result.unwrap();
}

fn upstream_valid(
    file: &'static str,
    version: &'static str,
) -> impl FnOnce(&str, &Value) + Send + 'static {
    move |q, b| {
        is_apply(q);
        let problems = fledge_k8s::schema::validate(&support::upstream_schema(file, version), b);
        assert!(problems.is_empty(), "{problems:?}");
    }
}

#[tokio::test]
async fn istio_writes_the_destination_rule_then_the_virtual_service() {
    let ns = "/apis/networking.istio.io/v1/namespaces/default";
    start_with(
        support::routers()[0].1.clone(),
        vec![
            expect_with(
                "PATCH",
                &format!("{ns}/destinationrules/shop"),
                upstream_valid("istio-destinationrules.crd.yaml", "v1"),
                200,
                json!({}),
            ),
            expect_with(
                "PATCH",
                &format!("{ns}/virtualservices/shop"),
                |q, b| {
                    upstream_valid("istio-virtualservices.crd.yaml", "v1")(q, b);
                    assert_eq!(
                        b["spec"]["http"][0]["match"][0]["headers"]["x-canary"]["exact"],
                        "always"
                    );
                    assert_eq!(b["spec"]["http"][1]["route"][1]["weight"], 20);
                },
                200,
                json!({}),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn gateway_api_writes_the_http_route() {
    start_with(
        support::routers()[2].1.clone(),
        vec![expect_with(
            "PATCH",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/shop",
            |q, b| {
                upstream_valid("gateway-api-httproutes.crd.yaml", "v1")(q, b);
                assert_eq!(b["spec"]["rules"][1]["backendRefs"][1]["weight"], 20);
            },
            200,
            json!({}),
        )],
    )
    .await;
}

#[tokio::test]
async fn nginx_reads_the_stable_ingress_and_writes_the_canary_ingress() {
    let ns = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    start_with(
        support::routers()[3].1.clone(),
        vec![
            expect("GET", &format!("{ns}/shop"), 200, support::stable_ingress()),
            expect_with(
                "PATCH",
                &format!("{ns}/shop-canary"),
                |q, b| {
                    is_apply(q);
                    let a = &b["metadata"]["annotations"];
                    assert_eq!(a["nginx.ingress.kubernetes.io/canary-weight"], "20");
                    assert_eq!(
                        a["nginx.ingress.kubernetes.io/canary-by-header"],
                        "x-canary"
                    );
                },
                200,
                json!({}),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_retry_waits_for_the_canary_then_restarts_at_stage_zero() {
    let cr = support::rollout(smi(), two_stages(), json!({}));
    let status = start(&cr).await;
    let mut cr = with_status(cr, &status);
    cr["metadata"]["annotations"] =
        json!({"fledge.dev/command": "abort", "fledge.dev/command-id": "c-1"});
    let (st, check) = capture();
    let mut script = vec![
        expect(
            "GET",
            &format!("{DEPLOY}/shop"),
            200,
            support::target_deployment("shop:v1", "v1", true),
        ),
        expect_with("PATCH", STATUS, check, 200, cr.clone()),
        expect(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            200,
            canary_answer(false),
        ),
        expect("PATCH", SPLIT, 200, json!({})),
    ];
    script.extend(events_for(&["Aborted"]));
    run(&cr, T0 + 5_000, Arc::default(), script)
        .await
        .0
        .unwrap();
    let status = st.lock().unwrap().clone();
    let mut cr = with_status(cr, &status);
    cr["metadata"]["annotations"] =
        json!({"fledge.dev/command": "retry", "fledge.dev/command-id": "c-2"});

    // The canary is scaled back up first; the retry waits for it.
    let (st, check) = capture();
    let (result, _) = run(
        &cr,
        T0 + 6_000,
        Arc::default(),
        vec![
            expect(
                "GET",
                &format!("{DEPLOY}/shop"),
                200,
                support::target_deployment("shop:v1", "v1", true),
            ),
            expect_with(
                "PATCH",
                &format!("{DEPLOY}/shop-canary"),
                |_, b| assert_eq!(b["spec"]["replicas"], 1),
                200,
                canary_answer(false),
            ),
            expect_with("PATCH", STATUS, check, 200, cr.clone()),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(2)));
    let waiting = st.lock().unwrap().clone();
    assert_eq!(waiting["phase"], "Aborted");
    assert_eq!(
        waiting["lastCommandId"], "c-1",
        "the retry is not consumed yet"
    );

    let (st, check) = capture();
    let mut script = vec![
        expect(
            "GET",
            &format!("{DEPLOY}/shop"),
            200,
            support::target_deployment("shop:v1", "v1", true),
        ),
        expect(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            200,
            canary_answer(true),
        ),
        expect_with("PATCH", STATUS, check, 200, cr.clone()),
        expect(
            "PATCH",
            &format!("{DEPLOY}/shop-canary"),
            200,
            canary_answer(true),
        ),
        expect_with(
            "PATCH",
            SPLIT,
            |_, b| assert_eq!(b["spec"]["backends"][1]["weight"], 20),
            200,
            json!({}),
        ),
    ];
    script.extend(events_for(&["Retried", "StageStarted"]));
    run(&cr, T0 + 9_000, Arc::default(), script)
        .await
        .0
        .unwrap();
    let status = st.lock().unwrap().clone();
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["lastCommandId"], "c-2");
    assert_eq!(status["stage"], 0);
}
