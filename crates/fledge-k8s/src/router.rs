//! Traffic routers that write Kubernetes objects: Istio (VirtualService and
//! DestinationRule), SMI (TrafficSplit), Gateway API (HTTPRoute) and NGINX Ingress (a
//! canary Ingress with the `nginx.ingress.kubernetes.io/canary*` annotations).
//!
//! Building an object is pure ([`desired_objects`]); writing it is one server-side
//! apply per object with the `fledge` field manager, forced, so fledge's desired
//! weights win over any other manager and re-applying the same object is a no-op.
//!
//! Match rules (requests that always go to one version): Istio expresses header and
//! cookie rules to either version; Gateway API header rules to either version; NGINX
//! one header rule to the canary (`canary-by-header` + `canary-by-header-value`); SMI
//! cannot express any (a TrafficSplit only has weights), so a spec with match rules is
//! refused with SMI rather than silently ignored. None expresses `stickiness` or
//! `closeUpgradedOnAbort` ([`Router::check_spec`]): a spec with either is refused too.
//!
//! Copies of requests to the canary (a stage's `mirror`): Istio writes them as a
//! `mirror` with its `mirrorPercentage` on a route that matches the spec's
//! `mirroring.methods` (Envoy sends the copy without waiting for it and drops its
//! answer; the canary's sidecar reports it like any request). The other routers
//! refuse a spec that asks for copies.

use std::collections::BTreeMap;

use fledge_spec::{MatchRule, Target};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde::Serialize;
use serde_json::{Value, json};

use crate::crd::{
    FIELD_MANAGER, GatewayApiRouter, IstioRouter, LABEL_ROLE, LABEL_ROLLOUT, NginxIngressRouter,
    ObjectName, RouterSpec, SmiRouter,
};
use crate::error::Error;

/// The router a CanaryRollout chose.
#[derive(Clone, Debug, PartialEq)]
pub enum Router {
    /// Istio VirtualService + DestinationRule.
    Istio(IstioRouter),
    /// SMI TrafficSplit.
    Smi(SmiRouter),
    /// Gateway API HTTPRoute.
    GatewayApi(GatewayApiRouter),
    /// NGINX Ingress canary.
    NginxIngress(NginxIngressRouter),
}

/// A request header or cookie rule, as routers write it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestMatch {
    /// Header `name` equals `value`.
    Header {
        /// The header name.
        name: String,
        /// The exact value.
        value: String,
        /// Where matching requests go.
        target: Target,
    },
    /// Cookie `name` equals `value`.
    Cookie {
        /// The cookie name.
        name: String,
        /// The exact value.
        value: String,
        /// Where matching requests go.
        target: Target,
    },
}

/// What the router must make true: the canary's weight, and the match rules that are
/// in force (none once the rollout has ended, so no request reaches a rolled-back or
/// retired canary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteState {
    /// The canary's share, 0–100.
    pub canary_weight: u8,
    /// The match rules in force, in order.
    pub matches: Vec<RequestMatch>,
    /// Copies of stable's requests to the canary, while a stage asks for them.
    pub mirror: Option<MirrorRoute>,
}

/// Copies of the requests stable serves, sent to the canary as well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorRoute {
    /// The share of those requests copied, 1–100.
    pub percent: u8,
    /// The methods whose requests are copied (`mirroring.methods`).
    pub methods: Vec<String>,
}

/// The API group, version and kind of each object a router writes.
pub mod kinds {
    use super::*;

    fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
    }

    /// `networking.istio.io/v1` VirtualService.
    pub fn virtual_service() -> ApiResource {
        resource(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
        )
    }
    /// `networking.istio.io/v1` DestinationRule.
    pub fn destination_rule() -> ApiResource {
        resource(
            "networking.istio.io",
            "v1",
            "DestinationRule",
            "destinationrules",
        )
    }
    /// `split.smi-spec.io/v1alpha2` TrafficSplit (Linkerd's SMI extension and OSM
    /// serve it).
    pub fn traffic_split() -> ApiResource {
        resource(
            "split.smi-spec.io",
            "v1alpha2",
            "TrafficSplit",
            "trafficsplits",
        )
    }
    /// `gateway.networking.k8s.io/v1` HTTPRoute.
    pub fn http_route() -> ApiResource {
        resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
    }
    /// `networking.k8s.io/v1` Ingress.
    pub fn ingress() -> ApiResource {
        resource("networking.k8s.io", "v1", "Ingress", "ingresses")
    }
}

// === impl Router ===

impl Router {
    /// The one router `spec` names, checked against the match rules it must express.
    pub fn from_spec(spec: &RouterSpec, rules: &[MatchRule]) -> Result<Router, Error> {
        let mut chosen = Vec::new();
        if let Some(r) = &spec.istio {
            chosen.push(Router::Istio(r.clone()));
        }
        if let Some(r) = &spec.smi {
            chosen.push(Router::Smi(r.clone()));
        }
        if let Some(r) = &spec.gateway_api {
            chosen.push(Router::GatewayApi(r.clone()));
        }
        if let Some(r) = &spec.nginx_ingress {
            chosen.push(Router::NginxIngress(r.clone()));
        }
        if chosen.len() != 1 {
            return Err(Error::InvalidSpec(format!(
                "spec.router: expected exactly one of istio, smi, gatewayApi, nginxIngress, found {}",
                chosen.len()
            )));
        }
        let router = chosen.remove(0);
        router.check_rules(&request_matches(rules))?;
        Ok(router)
    }

    /// The router's name, for events and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Router::Istio(_) => "istio",
            Router::Smi(_) => "smi",
            Router::GatewayApi(_) => "gatewayApi",
            Router::NginxIngress(_) => "nginxIngress",
        }
    }

    /// The fields beyond `match` that no Kubernetes router can express: `stickiness`
    /// (a mesh or gateway draws each request by weight, or hashes a key to one
    /// backend without regard to the weight, so a user would not keep its version as
    /// the weight rises) and `closeUpgradedOnAbort` (it keeps upgraded connections
    /// open on a rollback). Refused, never dropped.
    pub fn check_spec(&self, spec: &fledge_spec::RolloutSpec) -> Result<(), Error> {
        if spec.stickiness.is_some() {
            return Err(Error::InvalidSpec(format!(
                "spec.rollout.stickiness: the {} router cannot express stickiness: it draws \
                 each request by weight, and no hash it offers keeps a user on its version \
                 as the weight rises; remove the field, or route with fledge's proxy, HAProxy \
                 or nginx",
                self.kind()
            )));
        }
        if !spec.alerts.is_empty() {
            return Err(Error::InvalidSpec(
                "spec.rollout.alerts: the operator reads no Alertmanager, so the alerts could \
                 never fail the rollout; remove `alerts`, or write the alert's condition as a \
                 criterion on spec.metrics"
                    .to_owned(),
            ));
        }
        if spec.close_upgraded_on_abort {
            return Err(Error::InvalidSpec(format!(
                "spec.rollout.closeUpgradedOnAbort: the {} router cannot express \
                 closeUpgradedOnAbort: the mesh or gateway keeps upgraded connections open \
                 on a rollback; only the built-in proxy can close them",
                self.kind()
            )));
        }
        let why = match self {
            Router::Istio(_) => None,
            Router::Smi(_) => Some("a TrafficSplit only has weights"),
            Router::GatewayApi(_) => Some(
                "HTTPRoute's RequestMirror filter is an extended feature whose percentage \
                 not every gateway honours, so fledge does not write it",
            ),
            Router::NginxIngress(_) => Some(
                "its mirror annotations use nginx's `mirror`, which holds each client request \
                 until its copy is answered, so a slow canary would slow users",
            ),
        };
        if let (Some(why), Some(i)) = (why, spec.first_mirror_stage()) {
            return Err(Error::InvalidSpec(format!(
                "spec.rollout.stages[{i}].mirror: the {} router cannot copy requests to the \
                 canary: {why}; remove `mirror`, or route with Istio",
                self.kind()
            )));
        }
        Ok(())
    }

    fn check_rules(&self, rules: &[RequestMatch]) -> Result<(), Error> {
        let refuse = |what: &str| {
            Err(Error::InvalidSpec(format!(
                "spec.rollout.match: the {} router cannot express {what}",
                self.kind()
            )))
        };
        match self {
            Router::Istio(_) => Ok(()),
            Router::Smi(_) if !rules.is_empty() => {
                refuse("match rules (a TrafficSplit only has weights)")
            }
            Router::Smi(_) => Ok(()),
            Router::GatewayApi(_) => match rules
                .iter()
                .any(|r| matches!(r, RequestMatch::Cookie { .. }))
            {
                true => refuse("cookie rules"),
                false => Ok(()),
            },
            Router::NginxIngress(_) => match rules {
                []
                | [
                    RequestMatch::Header {
                        target: Target::Canary,
                        ..
                    },
                ] => Ok(()),
                _ => refuse(
                    "more than one rule, cookie rules or rules to stable (one canary-by-header)",
                ),
            },
        }
    }
}

/// The match rules of a spec as routers see them.
pub fn request_matches(rules: &[MatchRule]) -> Vec<RequestMatch> {
    rules
        .iter()
        .filter_map(|r| match (&r.header, &r.cookie) {
            (Some(name), _) => Some(RequestMatch::Header {
                name: name.to_ascii_lowercase(),
                value: r.value.clone(),
                target: r.target,
            }),
            (None, Some(name)) => Some(RequestMatch::Cookie {
                name: name.clone(),
                value: r.value.clone(),
                target: r.target,
            }),
            (None, None) => None,
        })
        .collect()
}

/// An object a router writes, with the API it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// Where it goes.
    pub resource: ApiResource,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The whole object, as applied.
    pub object: Value,
}

fn object(
    resource: &ApiResource,
    namespace: &str,
    name: &str,
    rollout: &str,
    spec: Value,
) -> Desired {
    let mut object = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_ROLLOUT: rollout},
        },
    });
    object["spec"] = spec;
    Desired {
        resource: resource.clone(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        object,
    }
}

/// [`object`] for an object the CanaryRollout names, in `namespace` unless the name
/// says otherwise.
fn named_object(
    resource: &ApiResource,
    name: &ObjectName,
    namespace: &str,
    rollout: &str,
    spec: Value,
) -> Desired {
    let namespace = name.namespace.as_deref().unwrap_or(namespace);
    object(resource, namespace, &name.name, rollout, spec)
}

/// The objects `router` must hold for `route`. `namespace` is the CanaryRollout's,
/// `rollout` its name; `stable_ingress` is the stable Ingress (NGINX only).
pub fn desired_objects(
    router: &Router,
    namespace: &str,
    rollout: &str,
    route: &RouteState,
    stable_ingress: Option<&Ingress>,
) -> Result<Vec<Desired>, Error> {
    let w = i64::from(route.canary_weight.min(100));
    match router {
        Router::Istio(r) => {
            let dest = |subset: &str, weight: Option<i64>| {
                let mut d = json!({"destination": {"host": r.destination_host, "subset": subset}});
                if let Some(weight) = weight {
                    d["weight"] = json!(weight);
                }
                d
            };
            let subset = |t: Target| match t {
                Target::Canary => "canary",
                Target::Stable => "stable",
            };
            let mut http = Vec::new();
            for (i, m) in route.matches.iter().enumerate() {
                let (header, matcher, target) = match m {
                    RequestMatch::Header {
                        name,
                        value,
                        target,
                    } => (name.clone(), json!({"exact": value}), *target),
                    RequestMatch::Cookie {
                        name,
                        value,
                        target,
                    } => (
                        "cookie".to_owned(),
                        json!({"regex": format!(
                            "^(.*?;\\s*)?{}={}(;.*)?$",
                            regex::escape(name),
                            regex::escape(value)
                        )}),
                        *target,
                    ),
                };
                http.push(json!({
                    "name": format!("{}-match-{i}", r.route_name),
                    "match": [{"headers": {header: matcher}}],
                    "route": [dest(subset(target), None)],
                }));
            }
            let split = json!([dest("stable", Some(100 - w)), dest("canary", Some(w))]);
            if let Some(m) = &route.mirror {
                let methods: Vec<String> = m.methods.iter().map(|m| regex::escape(m)).collect();
                http.push(json!({
                    "name": format!("{}-mirror", r.route_name),
                    "match": [{"method": {"regex": format!("^({})$", methods.join("|"))}}],
                    "route": split,
                    "mirror": {"host": r.destination_host, "subset": "canary"},
                    // A whole number, as the API server stores a whole double:
                    // the object read back must equal the one applied.
                    "mirrorPercentage": {"value": m.percent.min(100)},
                }));
            }
            http.push(json!({
                "name": r.route_name,
                "route": split,
            }));
            let mut vs_spec = json!({"hosts": r.hosts, "http": http});
            if !r.gateways.is_empty() {
                vs_spec["gateways"] = json!(r.gateways);
            }
            let subsets = json!([
                {"name": "stable", "labels": {LABEL_ROLE: "stable"}},
                {"name": "canary", "labels": {LABEL_ROLE: "canary"}},
            ]);
            Ok(vec![
                named_object(
                    &kinds::destination_rule(),
                    &r.destination_rule,
                    namespace,
                    rollout,
                    json!({"host": r.destination_host, "subsets": subsets}),
                ),
                named_object(
                    &kinds::virtual_service(),
                    &r.virtual_service,
                    namespace,
                    rollout,
                    vs_spec,
                ),
            ])
        }
        Router::Smi(r) => Ok(vec![named_object(
            &kinds::traffic_split(),
            &r.traffic_split,
            namespace,
            rollout,
            json!({
                "service": r.root_service,
                "backends": [
                    {"service": r.stable_service, "weight": 100 - w},
                    {"service": r.canary_service, "weight": w},
                ],
            }),
        )]),
        Router::GatewayApi(r) => {
            let backend = |service: &str, weight: i64| json!({"name": service, "port": r.port, "weight": weight});
            let mut rules = Vec::new();
            for m in &route.matches {
                if let RequestMatch::Header {
                    name,
                    value,
                    target,
                } = m
                {
                    let service = match target {
                        Target::Canary => &r.canary_service,
                        Target::Stable => &r.stable_service,
                    };
                    rules.push(json!({
                        "matches": [{"headers": [{"type": "Exact", "name": name, "value": value}]}],
                        "backendRefs": [backend(service, 1)],
                    }));
                }
            }
            rules.push(json!({
                "backendRefs": [backend(&r.stable_service, 100 - w), backend(&r.canary_service, w)],
            }));
            let parents: Vec<Value> = r
                .parent_refs
                .iter()
                .map(|p| {
                    let mut v = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": p.name});
                    if let Some(ns) = &p.namespace {
                        v["namespace"] = json!(ns);
                    }
                    if let Some(s) = &p.section_name {
                        v["sectionName"] = json!(s);
                    }
                    v
                })
                .collect();
            let mut spec = json!({"parentRefs": parents, "rules": rules});
            if !r.hostnames.is_empty() {
                spec["hostnames"] = json!(r.hostnames);
            }
            Ok(vec![named_object(
                &kinds::http_route(),
                &r.http_route,
                namespace,
                rollout,
                spec,
            )])
        }
        Router::NginxIngress(r) => {
            let stable = stable_ingress.ok_or_else(|| Error::Missing {
                what: format!("Ingress {namespace}/{}", r.ingress),
            })?;
            Ok(vec![nginx_canary_ingress(
                r, namespace, rollout, route, stable,
            )?])
        }
    }
}

/// The canary Ingress: the stable Ingress's class, hosts and paths, with every
/// backend that names the stable Service pointed at the canary Service.
fn nginx_canary_ingress(
    r: &NginxIngressRouter,
    namespace: &str,
    rollout: &str,
    route: &RouteState,
    stable: &Ingress,
) -> Result<Desired, Error> {
    let mut spec = serde_json::to_value(stable.spec.clone().unwrap_or_default())
        .map_err(|e| Error::Serialize(e.to_string()))?;
    let mut swapped = 0;
    retarget_backends(
        &mut spec,
        &r.stable_service,
        &r.canary_service,
        &mut swapped,
    );
    if swapped == 0 {
        return Err(Error::InvalidSpec(format!(
            "Ingress {namespace}/{}: no backend names the stable Service `{}`",
            r.ingress, r.stable_service
        )));
    }
    let mut annotations = BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/canary".to_owned(),
            "true".to_owned(),
        ),
        (
            "nginx.ingress.kubernetes.io/canary-weight".to_owned(),
            route.canary_weight.min(100).to_string(),
        ),
    ]);
    if let Some(RequestMatch::Header { name, value, .. }) = route.matches.first() {
        annotations.insert(
            "nginx.ingress.kubernetes.io/canary-by-header".into(),
            name.clone(),
        );
        annotations.insert(
            "nginx.ingress.kubernetes.io/canary-by-header-value".into(),
            value.clone(),
        );
    }
    let name = format!("{}-canary", r.ingress);
    let mut d = object(&kinds::ingress(), namespace, &name, rollout, spec);
    d.object["metadata"]["annotations"] = json!(annotations);
    Ok(d)
}

fn retarget_backends(v: &mut Value, from: &str, to: &str, swapped: &mut usize) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(service)) = map.get_mut("service")
                && service.get("name").and_then(Value::as_str) == Some(from)
            {
                service.insert("name".into(), json!(to));
                *swapped += 1;
            }
            map.values_mut()
                .for_each(|x| retarget_backends(x, from, to, swapped));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|x| retarget_backends(x, from, to, swapped)),
        _ => {}
    }
}

/// Writes `desired` with a forced server-side apply as the `fledge` field manager.
pub async fn apply(client: &kube::Client, desired: &Desired) -> Result<(), Error> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &desired.namespace, &desired.resource);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&desired.name, &params, &Patch::Apply(&desired.object))
        .await
        .map_err(|source| Error::Kube {
            what: format!(
                "apply {} {}/{}",
                desired.resource.kind, desired.namespace, desired.name
            ),
            source,
        })?;
    Ok(())
}

/// A value serialized for an apply patch body.
pub fn to_value<T: Serialize>(v: &T) -> Result<Value, Error> {
    serde_json::to_value(v).map_err(|e| Error::Serialize(e.to_string()))
}
