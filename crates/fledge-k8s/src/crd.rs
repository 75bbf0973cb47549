//! The `CanaryRollout` custom resource (`fledge.dev/v1alpha1`): the rollout spec of
//! DESIGN.md plus where it runs in the cluster (the target Deployment, the router and
//! its objects, the metric source), and a status that holds the whole engine state, so
//! the cluster is the store.

use std::collections::BTreeMap;

use fledge_spec::RolloutSpec;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema;

/// The label every object fledge makes for a rollout carries: the CanaryRollout's name.
pub const LABEL_ROLLOUT: &str = "fledge.dev/rollout";
/// The pod label that tells the stable pods (`stable`) from the canary's (`canary`).
/// The target Deployment's selector must include `fledge.dev/role: stable`, so the
/// canary's pods never count as the stable Deployment's.
pub const LABEL_ROLE: &str = "fledge.dev/role";
/// The pod label holding the version a pod runs.
pub const LABEL_VERSION: &str = "fledge.dev/version";
/// Annotation: the operator command to run (`promote`, `promote-full`, `abort`,
/// `pause`, `resume`, `retry`).
pub const ANNOTATION_COMMAND: &str = "fledge.dev/command";
/// Annotation: a unique id per command; a command runs once per id.
pub const ANNOTATION_COMMAND_ID: &str = "fledge.dev/command-id";
/// Annotation: who sent the command, recorded with the decision.
pub const ANNOTATION_ACTOR: &str = "fledge.dev/actor";
/// The field manager of every server-side apply fledge makes.
pub const FIELD_MANAGER: &str = "fledge";

/// A canary rollout of a Deployment: the rollout spec (stages and success criteria),
/// the Deployment and images to roll out, how traffic is split and where metrics come
/// from.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "CanaryRollout",
    namespaced,
    status = "CanaryRolloutStatus",
    shortname = "canary",
    category = "fledge",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Stage","type":"integer","jsonPath":".status.stage"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canaryWeight"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    crates(
        kube_core = "kube::core",
        k8s_openapi = "k8s_openapi",
        schemars = "schemars",
        serde = "serde",
        serde_json = "serde_json"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryRolloutSpec {
    /// The rollout spec, exactly as `fledge apply` takes it (app, version, stages,
    /// success criteria, analysis, match rules, hooks, notifications...). Exec hooks
    /// are refused unless the operator runs with `--allow-exec-hooks`.
    pub rollout: RolloutSpec,
    /// The Deployment to roll out and the new images.
    pub target_ref: TargetRef,
    /// How traffic is split between the stable and the canary pods. Exactly one
    /// router.
    pub router: RouterSpec,
    /// Where the canary's and stable's request metrics come from. Default: none, and
    /// only pod health (restarts, CrashLoopBackOff) and durations decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSpec>,
}

/// The Deployment to roll out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// The stable Deployment's name (same namespace). Its selector must include
    /// `fledge.dev/role: stable`.
    pub name: String,
    /// The new image of each container that changes. At least one.
    pub containers: Vec<ContainerImage>,
    /// Replicas of the canary Deployment. Default 1; with `strategy: blueGreen`, the
    /// stable Deployment's replicas, since the switch sends it every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub canary_replicas: Option<i32>,
}

/// One container's new image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerImage {
    /// The container's name in the pod template.
    pub name: String,
    /// The image the canary runs, e.g. `registry.example/shop:v2.3.1`.
    pub image: String,
}

/// The router: exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterSpec {
    /// Istio: a VirtualService with weighted `stable`/`canary` subsets of a
    /// DestinationRule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio: Option<IstioRouter>,
    /// SMI (Linkerd, OSM): a TrafficSplit between the stable and canary Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smi: Option<SmiRouter>,
    /// Gateway API: an HTTPRoute's weighted `backendRefs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_api: Option<GatewayApiRouter>,
    /// NGINX Ingress: a canary Ingress beside the stable one, with the
    /// `nginx.ingress.kubernetes.io/canary*` annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx_ingress: Option<NginxIngressRouter>,
}

/// Istio settings. fledge owns (server-side applies) the whole VirtualService and
/// DestinationRule it names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioRouter {
    /// The VirtualService fledge writes.
    pub virtual_service: ObjectName,
    /// The `hosts` of the VirtualService (e.g. `shop.example.com` or `shop`).
    pub hosts: Vec<String>,
    /// The `gateways` of the VirtualService. Default: none (mesh traffic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// The name of the weighted HTTP route. Default `primary`.
    #[serde(default = "default_route_name")]
    pub route_name: String,
    /// The destination host (the Service in front of both versions).
    pub destination_host: String,
    /// The DestinationRule fledge writes, with the `stable` and `canary` subsets
    /// selected by `fledge.dev/role`.
    pub destination_rule: ObjectName,
}

/// SMI settings. Header matches cannot be expressed in a TrafficSplit: match rules
/// are refused with this router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmiRouter {
    /// The TrafficSplit fledge writes.
    pub traffic_split: ObjectName,
    /// The root Service that clients call.
    pub root_service: String,
    /// The Service selecting the stable pods.
    pub stable_service: String,
    /// The Service selecting the canary pods (`fledge.dev/role: canary`).
    pub canary_service: String,
}

/// Gateway API settings. fledge owns the HTTPRoute it names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayApiRouter {
    /// The HTTPRoute fledge writes.
    pub http_route: ObjectName,
    /// The Gateways the route attaches to.
    pub parent_refs: Vec<ParentRef>,
    /// The route's hostnames. Default: none (all of the Gateway's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    /// The Service selecting the stable pods.
    pub stable_service: String,
    /// The Service selecting the canary pods.
    pub canary_service: String,
    /// The port of both Services.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// A Gateway an HTTPRoute attaches to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentRef {
    /// The Gateway's name.
    pub name: String,
    /// The Gateway's namespace. Default: the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The listener's section name. Default: all listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

/// NGINX Ingress settings. NGINX supports one header rule per canary Ingress: the
/// first canary-bound header rule is used, further rules are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NginxIngressRouter {
    /// The stable Ingress; fledge writes `<name>-canary` beside it, a copy whose
    /// backends point at the canary Service.
    pub ingress: String,
    /// The Service selecting the stable pods, as the stable Ingress names it.
    pub stable_service: String,
    /// The Service selecting the canary pods.
    pub canary_service: String,
}

/// A namespaced object's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectName {
    /// The name.
    pub name: String,
    /// The namespace. Default: the CanaryRollout's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Where metrics come from: exactly one source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsSpec {
    /// Prometheus (or a compatible API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusSpec>,
    /// Datadog's metric query API, with keys read from Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<DatadogSpec>,
    /// Any HTTP endpoint answering one JSON document per version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebSpec>,
    /// New Relic's NRQL queries through NerdGraph, with the user key read from a
    /// Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_relic: Option<NewRelicSpec>,
    /// Loki's LogQL queries: error log lines out of all log lines per version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loki: Option<LokiSpec>,
}

/// A key of a Secret in the CanaryRollout's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key in its `data`.
    pub key: String,
}

/// The Datadog metric source. Queries take `{{app}}`, `{{version}}` and
/// `{{window}}`; defaults read APM's `trace.http.request.hits` and `.errors` by
/// `service` and `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogSpec {
    /// The Datadog site (`datadoghq.com`, `datadoghq.eu`, `us3.datadoghq.com`, …).
    /// Default `datadoghq.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// A base URL replacing `https://api.<site>` (a proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The Secret key holding the API key (`DD-API-KEY`).
    pub api_key_secret_ref: SecretKeyRef,
    /// The Secret key holding the application key (`DD-APPLICATION-KEY`).
    pub app_key_secret_ref: SecretKeyRef,
    /// How long one query may take. Default `10s`.
    #[serde(
        default,
        with = "fledge_spec::duration::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<fledge_spec::duration::DurationSchema>")]
    pub timeout: Option<std::time::Duration>,
    /// Query for an arm's request count per interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// Query for an arm's error count per interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
}

/// The New Relic metric source: NRQL through NerdGraph. Queries take `{{app}}`,
/// `{{version}}`, `{{arm}}` and `{{window}}` (in NRQL's words, `300 seconds`);
/// defaults count APM `Transaction`s by `appName` and `tags.version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRelicSpec {
    /// The New Relic account whose data the queries read.
    pub account_id: u64,
    /// `us` (default) or `eu`: the account's data center, which picks the NerdGraph
    /// endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^(us|eu)$"))]
    pub region: Option<String>,
    /// A base URL replacing the region's `https://api.newrelic.com` (a proxy);
    /// queries go to `<baseUrl>/graphql`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The Secret key holding the user key (`API-Key`).
    pub api_key_secret_ref: SecretKeyRef,
    /// How long one query may take. Default `10s`.
    #[serde(
        default,
        with = "fledge_spec::duration::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<fledge_spec::duration::DurationSchema>")]
    pub timeout: Option<std::time::Duration>,
    /// NRQL counting an arm's requests since the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// NRQL counting an arm's failed requests since the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
}

/// The Loki metric source: an arm's log lines are its requests, its error lines its
/// errors, so `error_rate` criteria judge the share of error lines. Queries take
/// `{{app}}`, `{{version}}`, `{{arm}}` and `{{window}}`; defaults select streams by
/// `app` and `version` labels and error lines with `|= "error"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LokiSpec {
    /// Base URL, e.g. `http://loki.monitoring:3100`.
    pub address: String,
    /// The tenant, sent as `X-Scope-OrgID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// HTTP basic auth, with the password read from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthSpec>,
    /// The Secret key holding a bearer token (instead of basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// How long one query may take. Default `5s`.
    #[serde(
        default,
        with = "fledge_spec::duration::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<fledge_spec::duration::DurationSchema>")]
    pub timeout: Option<std::time::Duration>,
    /// LogQL counting an arm's log lines since the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// LogQL counting an arm's error log lines since the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
}

/// HTTP basic auth with the password in a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthSpec {
    /// The user.
    pub username: String,
    /// The Secret key holding the password.
    pub password_secret_ref: SecretKeyRef,
}

/// The web metric source: one JSON document per version, read with JSON paths.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebSpec {
    /// The document's URL; `{{app}}`, `{{version}}` and `{{window}}` are replaced
    /// (URL-encoded).
    pub url: String,
    /// Extra request headers, as written (nothing secret: use `headerSecretRefs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Request headers whose values are read from Secrets (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header_secret_refs: BTreeMap<String, SecretKeyRef>,
    /// How long one request may take. Default `5s`.
    #[serde(
        default,
        with = "fledge_spec::duration::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<fledge_spec::duration::DurationSchema>")]
    pub timeout: Option<std::time::Duration>,
    /// JSON path to the arm's total requests, e.g. `$.requests`.
    pub requests: String,
    /// JSON path to the arm's total failed requests.
    pub errors: String,
    /// JSON path to the arm's cumulative latency buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets: Option<String>,
    /// JSON path to the sum of the arm's latencies in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_sum: Option<String>,
}

/// The Prometheus metric source. Queries take `{{app}}`, `{{version}}`, `{{arm}}`
/// and `{{window}}` placeholders; defaults read `http_requests_total` and
/// `http_request_duration_seconds` labelled by `app` and `version`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusSpec {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// PromQL for an arm's total requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<String>,
    /// PromQL for an arm's total failed requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<String>,
    /// PromQL for an arm's cumulative latency buckets by `le`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_buckets: Option<String>,
    /// PromQL for the sum of an arm's latencies in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_sum: Option<String>,
}

/// What the controller last did and saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryRolloutStatus {
    /// The `metadata.generation` this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Progressing`, `Paused`, `Succeeded`, `Failed` or `Aborted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The current stage, 0-based.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<i64>,
    /// The canary's share of requests, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i64>,
    /// The stable version's share of requests, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_weight: Option<i64>,
    /// The version this status is about (the spec's `rollout.version`); a new
    /// version starts a new rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Conditions: `Ready`, `Promoted`, `SpecValid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The latest analysis of the current stage's criteria, with evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub analysis: Option<serde_json::Value>,
    /// The latest decision: what was decided, by whom, with the evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub last_decision: Option<serde_json::Value>,
    /// The engine's whole state, to resume exactly after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::preserve_unknown_object")]
    pub engine_state: Option<serde_json::Value>,
    /// The last `fledge.dev/command-id` processed, so a command runs once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command_id: Option<String>,
    /// A human-readable summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A status condition, as Kubernetes conventions describe it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed, RFC 3339.
    pub last_transition_time: String,
}

fn default_route_name() -> String {
    "primary".to_owned()
}

/// The CustomResourceDefinition of `CanaryRollout`, with its complete structural
/// OpenAPI schema generated from the Rust types.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = CanaryRollout::crd();
    for version in &mut crd.spec.versions {
        if let Some(validation) = version.schema.as_mut()
            && let Some(root) = validation.open_api_v3_schema.as_mut()
        {
            let mut value = serde_json::to_value(&*root).expect("a schema is JSON");
            schema::make_structural(&mut value);
            *root =
                serde_json::from_value(value).expect("a structural schema is a JSONSchemaProps");
        }
    }
    crd
}

/// The CRD as YAML, as `fledge crd` prints it and `deploy/kubernetes/overlays/operator/crd.yaml` holds.
pub fn crd_yaml() -> String {
    crate::manifests::to_yaml(&crd())
}

/// The pod template labels of the canary (`role: canary`) and their map type.
pub type Labels = BTreeMap<String, String>;
