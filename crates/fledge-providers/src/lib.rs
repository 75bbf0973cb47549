//! fledge's integrations with the world outside the binary: where metrics come from,
//! how traffic is split, and who is told what happened.
//!
//! - [`metrics`]: [`MetricSource`](metrics::MetricSource) and its Prometheus, Datadog
//!   and web (JSON over HTTP) implementations;
//! - [`router`]: [`TrafficRouter`](router::TrafficRouter) for HAProxy (runtime API)
//!   and nginx (generated upstream + reload), and the [`RetryingRouter`](router::RetryingRouter)
//!   wrapper that tracks whether the data plane is in sync;
//! - [`hooks`]: the spec's exec and HTTP hooks at each lifecycle point, with gates;
//! - [`notify`]: webhook and Slack notifications, delivered in the background with
//!   retries from a bounded queue that never blocks a rollout;
//! - [`testing`] (feature `testing`): fake servers and real-program helpers for tests.
//!
//! Must never depend on the `fledge` binary crate (API, server, store): the server
//! plugs these implementations into its controller, not the other way round.

pub mod duration;
pub mod hooks;
pub mod metrics;
pub mod notify;
pub mod router;
pub mod template;
pub mod tls;

#[cfg(feature = "testing")]
pub mod testing;
