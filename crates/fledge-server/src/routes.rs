//! The route an app's traffic must follow: stable only, or stable and canary at the
//! weight of its active rollout, with the rollout's match rules and stickiness.

use fledge_providers::router::{Desired, MirrorRules, RoutingRules, Upstreams};
use fledge_spec::RolloutSpec;
use fledge_store::{RolloutRecord, StoreError};

use super::Shared;
use super::engine::{self, spec_of};
use crate::config::AppConfig;

/// The route an app's traffic must follow now: stable only, or stable and canary at
/// the weight of its active rollout.
pub async fn desired_route(shared: &Shared, app: &AppConfig) -> anyhow::Result<Desired> {
    let active = active_rollout(shared, &app.name).await?;
    route_of(app, active.as_ref())
}

/// The route for `app` given its active rollout (`None`: stable only).
pub fn route_of(app: &AppConfig, active: Option<&RolloutRecord>) -> anyhow::Result<Desired> {
    match active {
        Some(record) => {
            let spec = spec_of(record)?;
            let summary = engine::summary(&record.state)?;
            Ok(route_for(
                app,
                &spec,
                summary.canary_weight,
                summary.canary_mirror,
            ))
        }
        None => Ok(Desired::stable_only(
            app.stable.version.clone(),
            app.stable.endpoints.clone(),
        )),
    }
}

/// The app's active rollout, if any.
pub async fn active_rollout(
    shared: &Shared,
    app: &str,
) -> Result<Option<RolloutRecord>, StoreError> {
    shared.store.active_rollout_for_app(app).await
}

/// The route of an active rollout at `weight`, copying `mirror` percent of stable's
/// requests to the canary.
pub fn route_for(app: &AppConfig, spec: &RolloutSpec, weight: u8, mirror: u8) -> Desired {
    let canary_endpoints = spec
        .canary
        .as_ref()
        .map(|c| c.endpoints.clone())
        .unwrap_or_else(|| app.canary_endpoints().to_vec());
    Desired {
        stable: Upstreams::new(app.stable.version.clone(), app.stable.endpoints.clone()),
        canary: Some(Upstreams::new(spec.version.clone(), canary_endpoints)),
        canary_weight: weight.min(100),
        mirror: mirror.min(100),
        rules: rules_of(spec),
    }
}

/// The spec's match rules, stickiness and copies, for the router.
pub fn rules_of(spec: &RolloutSpec) -> RoutingRules {
    RoutingRules {
        matches: spec.match_rules.clone(),
        stickiness: spec.stickiness.clone(),
        close_upgraded_on_abort: spec.close_upgraded_on_abort,
        mirror: MirrorRules::of_spec(spec),
    }
}
