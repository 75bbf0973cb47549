//! fledge's Kubernetes operator: the `CanaryRollout` custom resource, the controller
//! that runs the rollout engine for it, leader election on a Lease, and the
//! service-mesh and ingress routers (Istio, SMI, Gateway API, NGINX Ingress).
//!
//! Must never depend on the `fledge` binary crate (API, server, store): the cluster is
//! the operator's store (the engine state lives in the resource's status).
//!
//! * [`crd`]: the resource (`fledge.dev/v1alpha1`, namespaced, status subresource)
//!   embedding [`fledge_spec::RolloutSpec`] under `spec.rollout`, and [`crd()`], its
//!   CRD with a structural schema generated from the types;
//! * [`controller`]: `reconcile` + `error_policy` for `kube::runtime::Controller`,
//!   "persist the engine state (with the resourceVersion read), then act";
//! * [`router`]: the objects each router writes (pure) and their server-side apply;
//! * [`leader`]: take, renew and hand over a `coordination.k8s.io/v1` Lease;
//! * [`operator`]: the process: lead, then reconcile while leading;
//! * [`schema`]: structural-schema checks and an OpenAPI v3 validator, with which the
//!   tests check every object fledge writes against the upstream CRDs;
//! * [`telemetry`]: the operator's metrics and readiness;
//! * [`manifests`]: `deploy/kubernetes/`, generated;
//! * [`client`]: what the CLI's `--kube` commands do with CanaryRollouts (read,
//!   list, watch, send a command through the kubeconfig).
//!
//! Tested without a cluster, against a mocked API server that checks every request.
//! What only a real cluster can show (admission, CEL rules of the upstream CRDs, the
//! data planes actually splitting traffic) is listed in `deploy/kubernetes/README.md`.

pub mod client;
pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod manifests;
pub mod operator;
mod pattern;
pub mod router;
pub mod schema;
pub mod telemetry;

pub use crd::{CanaryRollout, CanaryRolloutSpec, CanaryRolloutStatus, crd, crd_yaml};
pub use error::Error;
