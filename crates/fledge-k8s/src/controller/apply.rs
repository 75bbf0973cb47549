//! Making the world match the persisted state: the canary Deployment, the stable
//! Deployment on promotion, and the router's objects. Every write is a server-side
//! apply, so applying the same state again changes nothing. The router's objects
//! and the promoted stable images are forced (fledge owns them); a field of the
//! canary Deployment that someone else set is left to them and reported.

use std::collections::BTreeMap;

use fledge_engine::{Action as EngineAction, Phase, RolloutState};
use fledge_spec::{RolloutSpec, Strategy};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::decide::Plan;
use crate::crd::{CanaryRollout, FIELD_MANAGER, LABEL_ROLE, LABEL_ROLLOUT, LABEL_VERSION};
use crate::error::Error;
use crate::router::{self, MirrorRoute, RouteState, Router};

/// The Deployment the rollout targets (its stable version).
pub(super) async fn target(
    client: &kube::Client,
    obj: &CanaryRollout,
) -> Result<Deployment, Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".to_owned());
    let name = &obj.spec.target_ref.name;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    deployments
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("get Deployment {ns}/{name}"), e))?
        .ok_or_else(|| Error::Missing {
            what: format!("Deployment {ns}/{name}"),
        })
}

/// Applies what `plan` asks of the workloads and the router, in this order: the
/// canary Deployment (left alone while a succeeded rollout still promotes the stable
/// one), the stable Deployment on promotion, then the router's objects with
/// the weight [`routed_weight`] gives.
pub(super) async fn follow(
    client: &kube::Client,
    obj: &CanaryRollout,
    target: &Deployment,
    spec: &RolloutSpec,
    router: &Router,
    plan: &Plan,
    stable_done: bool,
) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_else(|| "default".to_owned());
    let active = plan.state.phase.is_active();
    let canary = canary_deployment(obj, target, spec, active)?;
    // A conflict on the canary is reported once the router is set: the weights
    // (above all a rollback's 0) must not wait for a user's edit to be undone.
    let mut conflict = None;
    if plan.state.phase != Phase::Succeeded || stable_done {
        match apply_deployment(client, &ns, &canary, Ownership::Shared).await {
            Err(e @ Error::FieldConflict { .. }) => conflict = Some(e),
            other => {
                other?;
            }
        }
    }
    if plan.state.phase == Phase::Succeeded || plan.actions.contains(&EngineAction::PromoteCanary) {
        let stable = promoted_stable(obj, target, spec);
        apply_deployment(client, &ns, &stable, Ownership::Take).await?;
    }
    let matches = if active {
        router::request_matches(&spec.match_rules)
    } else {
        Vec::new()
    };
    // The engine copies requests only while a stage that asks for it runs.
    let mirror = (active && plan.state.canary_mirror > 0).then(|| MirrorRoute {
        percent: plan.state.canary_mirror,
        methods: spec.mirroring.methods.clone(),
    });
    let route = RouteState {
        canary_weight: routed_weight(&plan.state, stable_done),
        matches,
        mirror,
    };
    let ingress = match router {
        Router::NginxIngress(r) => {
            let api: Api<Ingress> = Api::namespaced(client.clone(), &ns);
            Some(
                api.get(&r.ingress)
                    .await
                    .map_err(|e| Error::kube(format!("get Ingress {ns}/{}", r.ingress), e))?,
            )
        }
        _ => None,
    };
    for desired in router::desired_objects(router, &ns, &obj.name_any(), &route, ingress.as_ref())?
    {
        router::apply(client, &desired).await?;
    }
    conflict.map_or(Ok(()), Err)
}

/// The canary weight the router holds: the engine's, except that a succeeded
/// rollout keeps the canary serving until the stable Deployment runs the new
/// version, and then routes everything to stable.
pub(super) fn routed_weight(state: &RolloutState, stable_done: bool) -> u8 {
    match state.phase {
        Phase::Succeeded if stable_done => 0,
        Phase::Succeeded => 100,
        Phase::Failed | Phase::Aborted | Phase::Pending => 0,
        _ => state.canary_weight,
    }
}

/// The version the target's pods run (its `fledge.dev/version` label), `stable`
/// when it has none.
pub fn target_version(target: &Deployment) -> String {
    target
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(LABEL_VERSION).cloned())
        .unwrap_or_else(|| "stable".to_owned())
}

fn owner(obj: &CanaryRollout) -> Option<OwnerReference> {
    obj.controller_owner_ref(&())
}

/// The canary Deployment: the target's pod template with the new images and the
/// `fledge.dev/role: canary` and `fledge.dev/version` labels, `replicas` pods when
/// `running` and none otherwise.
pub fn canary_deployment(
    obj: &CanaryRollout,
    target: &Deployment,
    spec: &RolloutSpec,
    running: bool,
) -> Result<Value, Error> {
    let name = obj.name_any();
    let target_name = target.name_any();
    let tspec = target
        .spec
        .clone()
        .ok_or_else(|| Error::InvalidSpec(format!("Deployment {target_name} has no spec")))?;
    let mut selector = tspec.selector.clone();
    let labels = selector.match_labels.get_or_insert_with(BTreeMap::new);
    if labels.get(LABEL_ROLE).map(String::as_str) != Some("stable") {
        return Err(Error::InvalidSpec(format!(
            "Deployment {target_name}: its selector must include `{LABEL_ROLE}: stable`, so the canary's pods (`{LABEL_ROLE}: canary`) are never the stable Deployment's"
        )));
    }
    labels.insert(LABEL_ROLE.into(), "canary".into());
    labels.insert(LABEL_ROLLOUT.into(), name.clone());
    let mut template = tspec.template;
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    let tl = meta.labels.get_or_insert_with(BTreeMap::new);
    tl.insert(LABEL_ROLE.into(), "canary".into());
    tl.insert(LABEL_ROLLOUT.into(), name.clone());
    tl.insert(LABEL_VERSION.into(), spec.version.clone());
    let pod = template
        .spec
        .as_mut()
        .ok_or_else(|| Error::InvalidSpec(format!("Deployment {target_name} has no pod spec")))?;
    for wanted in &obj.spec.target_ref.containers {
        let c = pod
            .containers
            .iter_mut()
            .find(|c| c.name == wanted.name)
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "spec.targetRef.containers: Deployment {target_name} has no container `{}`",
                    wanted.name
                ))
            })?;
        c.image = Some(wanted.image.clone());
    }
    // A blue/green switch sends every request to the canary, so by default it runs
    // as many pods as stable; a canary takes a share, and one pod by default.
    let default_replicas = match spec.strategy {
        Strategy::BlueGreen => tspec.replicas.unwrap_or(1).max(1),
        Strategy::Canary => 1,
    };
    let replicas = if running {
        obj.spec
            .target_ref
            .canary_replicas
            .unwrap_or(default_replicas)
    } else {
        0
    };
    let mut owners = Vec::new();
    owners.extend(owner(obj));
    Ok(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": format!("{target_name}-canary"),
            "namespace": obj.namespace(),
            "labels": {LABEL_ROLLOUT: name, LABEL_ROLE: "canary"},
            "ownerReferences": owners,
        },
        "spec": {
            "replicas": replicas,
            "selector": router::to_value(&selector)?,
            "template": router::to_value(&template)?,
        },
    }))
}

/// The fields of the stable Deployment that promotion sets: the new images and the
/// version label of its pod template. Applied server-side, only these fields change.
pub fn promoted_stable(obj: &CanaryRollout, target: &Deployment, spec: &RolloutSpec) -> Value {
    let containers: Vec<Value> = obj
        .spec
        .target_ref
        .containers
        .iter()
        .map(|c| json!({"name": c.name, "image": c.image}))
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target.name_any(), "namespace": obj.namespace()},
        "spec": {
            "template": {
                "metadata": {"labels": {LABEL_VERSION: spec.version}},
                "spec": {"containers": containers},
            },
        },
    })
}

/// Whether the stable Deployment runs the new images on every pod.
pub(super) fn stable_promoted(
    target: &Deployment,
    obj: &CanaryRollout,
    spec: &RolloutSpec,
) -> bool {
    let Some(tspec) = &target.spec else {
        return false;
    };
    let on_new = obj.spec.target_ref.containers.iter().all(|want| {
        tspec.template.spec.as_ref().is_some_and(|p| {
            p.containers
                .iter()
                .any(|c| c.name == want.name && c.image.as_deref() == Some(&want.image))
        })
    }) && target_version(target) == spec.version;
    on_new && deployment_ready(target)
}

/// Whether a Deployment has rolled out: observed, every replica updated and available.
pub fn deployment_ready(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = &d.status else { return false };
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= want
        && st.available_replicas.unwrap_or(0) >= want
        && st.replicas.unwrap_or(0) == want
}

/// Whose value wins when another field manager set a field fledge applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ownership {
    /// Theirs: the apply fails with [`Error::FieldConflict`] (the canary
    /// Deployment, which people scale or edit by hand during a rollout).
    Shared,
    /// fledge's (forced): promotion sets the stable Deployment's images, which
    /// whoever deployed it owns.
    Take,
}

/// Server-side applies a Deployment; returns it as the API server now holds it.
pub(super) async fn apply_deployment(
    client: &kube::Client,
    ns: &str,
    body: &Value,
    ownership: Ownership,
) -> Result<Deployment, Error> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if ownership == Ownership::Take {
        params = params.force();
    }
    api.patch(&name, &params, &Patch::Apply(body))
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => Error::FieldConflict {
                object: format!("Deployment {ns}/{name}"),
                message: s.message,
            },
            e => Error::kube(format!("apply Deployment {ns}/{name}"), e),
        })
}
