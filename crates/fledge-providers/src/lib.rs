//! fledge's integrations with the world outside the binary: where metrics come from,
//! how traffic is split, and who is told what happened.
//!
//! - [`metrics`]: [`MetricSource`](metrics::MetricSource) and its Prometheus, Datadog,
//!   web (JSON over HTTP), New Relic (NRQL) and Loki (LogQL) implementations;
//! - [`router`]: [`TrafficRouter`](router::TrafficRouter) for HAProxy (runtime API)
//!   and nginx (generated upstream + reload), and the [`RetryingRouter`](router::RetryingRouter)
//!   wrapper that tracks whether the data plane is in sync;
//! - [`hooks`]: the spec's exec and HTTP hooks at each lifecycle point, with gates;
//! - [`notify`]: webhook and Slack notifications, delivered in the background with
//!   retries from a bounded queue that never blocks a rollout;
//! - [`testing`] (feature `testing`): fake servers and real-program helpers for tests.
//!
//! Must never depend on the `fledge` binary crate (API, server, store), nor on the
//! proxy: the server plugs these implementations into its controller (and implements
//! the `builtin` router and metric source over its own proxy), not the other way round.
//! The spec's hook, notification and custom-metric types come from `fledge-spec`, and
//! so does the one duration syntax of the settings (`500ms`, `5s`, `1m30s`:
//! `fledge_spec::duration`); the counters from `fledge-stats`.
//!
//! Each trait has its own error enum ([`MetricError`](metrics::MetricError),
//! [`RouterError`](router::RouterError), [`NotifyError`](notify::NotifyError)) rather
//! than one for the crate: the controller reacts to each differently (no data, out of
//! sync, log and move on), and a crate-wide enum would make every caller match
//! variants that its call can never return. Hooks never fail: their outcome is data.

pub mod alerts;
pub mod hooks;
pub mod metrics;
pub mod notify;
pub mod router;
mod settings;
pub mod template;
pub mod tls;

#[cfg(feature = "testing")]
pub mod testing;
