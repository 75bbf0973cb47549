//! `--kind canaryrollout`: the converted spec as `spec.rollout` of a `CanaryRollout`,
//! with the target Deployment, the router and the metric source the source object
//! names. What it does not name is noted, and the result is checked against the
//! CanaryRollout type, so a missing field is an error naming it.

use serde_json::{Map, Value, json};

use super::spec::{Converted, Notes, items};

/// The CanaryRollout of `converted`, built from `source` (the Argo `Rollout` or
/// Flagger `Canary` it came from) and `images` (`container=image`, for a source that
/// does not say the new image).
pub fn canary_rollout(
    source: &Value,
    converted: &mut Converted,
    images: &[(String, String)],
) -> Value {
    let mut notes = Notes(std::mem::take(&mut converted.notes));
    let name = source["metadata"]["name"].as_str().unwrap_or_default();
    let mut metadata = json!({"name": name});
    if let Some(ns) = source["metadata"]["namespace"].as_str() {
        metadata["namespace"] = json!(ns);
    }
    let mut spec = Map::new();
    let (mut target, router) = match source["kind"].as_str() {
        Some("Rollout") => argo(source, name, &mut notes),
        _ => flagger(source, name, &mut notes),
    };
    if !images.is_empty() {
        target["containers"] = images
            .iter()
            .map(|(c, i)| json!({"name": c, "image": i}))
            .collect();
    } else if target["containers"].as_array().is_none_or(Vec::is_empty) {
        notes.add(
            "targetRef.containers",
            "the source does not say the new image: give it with --image CONTAINER=IMAGE",
        );
    }
    spec.insert("targetRef".into(), target);
    if let Some(router) = router {
        spec.insert("router".into(), router);
    }
    if let Some(address) = &converted.spec.prometheus_address {
        spec.insert(
            "metrics".into(),
            json!({"prometheus": {"address": address}}),
        );
    }
    spec.insert(
        "rollout".into(),
        serde_json::to_value(&converted.spec).unwrap_or_default(),
    );
    converted.notes = notes.0;
    json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": metadata,
        "spec": spec,
    })
}

/// The problem with `object` as a CanaryRollout, if any: a missing or wrong field,
/// named by its path.
pub fn check(object: &Value) -> Result<(), String> {
    let text = object.to_string();
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize::<_, fledge_k8s::crd::CanaryRollout>(de)
        .map_err(|e| {
            let inner = e.inner().to_string();
            let what = inner.split(" at line ").next().unwrap_or(&inner).to_owned();
            format!("{}: {what}", e.path())
        })
        .and_then(|cr| match cr.spec.target_ref.containers.is_empty() {
            true => Err(
                "spec.targetRef.containers: expected at least one new image, found none".to_owned(),
            ),
            false => Ok(()),
        })
}

/// Argo: the Rollout's pod template (or `workloadRef`) and `trafficRouting`.
fn argo(rollout: &Value, name: &str, notes: &mut Notes) -> (Value, Option<Value>) {
    let spec = &rollout["spec"];
    let deployment = spec["workloadRef"]["name"].as_str().unwrap_or(name);
    if spec["workloadRef"].is_null() {
        notes.add(
            "spec.template",
            format!("an Argo Rollout owns its pods; fledge rolls out a Deployment: create Deployment `{deployment}` from spec.template, its selector with `fledge.dev/role: stable`"),
        );
    }
    let containers: Vec<Value> = items(&spec["template"]["spec"]["containers"])
        .filter_map(|(_, c)| {
            Some(json!({"name": c["name"].as_str()?, "image": c["image"].as_str()?}))
        })
        .collect();
    let target = json!({"name": deployment, "containers": containers});
    let canary = &spec["strategy"]["canary"];
    let routing = &canary["trafficRouting"];
    let services = (
        canary["stableService"].as_str(),
        canary["canaryService"].as_str(),
    );
    let router = if let Some(smi) = routing["smi"].as_object() {
        let split = smi
            .get("trafficSplitName")
            .and_then(Value::as_str)
            .unwrap_or(name);
        Some(json!({"smi": {
            "trafficSplit": {"name": split},
            "rootService": smi.get("rootService"),
            "stableService": services.0,
            "canaryService": services.1,
        }}))
    } else if let Some(nginx) = routing["nginx"].as_object() {
        Some(json!({"nginxIngress": {
            "ingress": nginx.get("stableIngress"),
            "stableService": services.0,
            "canaryService": services.1,
        }}))
    } else if let Some(istio) = routing["istio"].as_object() {
        notes.add(
            "spec.strategy.canary.trafficRouting.istio",
            "fledge owns the VirtualService and DestinationRule it routes with and needs their hosts: fill in spec.router.istio.hosts and destinationHost",
        );
        let vs = &istio.get("virtualService").cloned().unwrap_or_default();
        let mut router = json!({
            "virtualService": {"name": vs["name"]},
            "destinationRule": {"name": istio.get("destinationRule").map(|d| d["name"].clone())},
        });
        if let Some(route) = vs["routes"][0].as_str() {
            router["routeName"] = json!(route);
        }
        Some(json!({"istio": router}))
    } else {
        notes.add(
            "spec.strategy.canary.trafficRouting",
            "no router fledge drives (Istio, SMI, NGINX Ingress): write spec.router",
        );
        None
    };
    (target, router)
}

/// Flagger: the target Deployment; the router is Flagger's own generated objects,
/// which fledge does not reuse.
fn flagger(canary: &Value, name: &str, notes: &mut Notes) -> (Value, Option<Value>) {
    let deployment = canary["spec"]["targetRef"]["name"].as_str().unwrap_or(name);
    notes.add(
        "spec.provider",
        "Flagger routes through objects it generates (`<name>-primary` and `<name>-canary` Services, its own VirtualService or Ingress); write fledge's spec.router for the objects fledge should own",
    );
    (json!({"name": deployment, "containers": []}), None)
}
