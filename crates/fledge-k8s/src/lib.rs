//! fledge's Kubernetes operator: the `CanaryRollout` custom resource, the controller
//! that runs the rollout engine for it, leader election on a Lease, and the
//! service-mesh and ingress routers (Istio, SMI, Gateway API, NGINX Ingress).
//!
//! Must never depend on the `fledge` binary crate (API, server, store): the cluster is
//! the operator's store (the engine state lives in the resource's status).

pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod manifests;
pub mod operator;
mod pattern;
pub mod router;
pub mod schema;

pub use crd::{CanaryRollout, CanaryRolloutSpec, CanaryRolloutStatus, crd, crd_yaml};
pub use error::Error;
