//! fledge's HTTP API as types: every body the server accepts and answers (errors
//! included), the OpenAPI document generated from those same types, and the typed
//! client that the CLI, the demo and the tests use.
//!
//! The server builds its answers from these types and the client reads them back
//! into the same types, so the two cannot drift; `/openapi.json` is generated from
//! them ([`openapi::document`]), so the description cannot drift either.
//!
//! Must never depend on the server, the store, the proxy or the providers: a client
//! needs this crate and nothing of the server's. The spec's types come from
//! `fledge-spec`, the judge's evidence and the rollout phases from `fledge-engine`,
//! a version's recent health ([`status::ArmHealth`]) from `fledge-stats` (all pure).
//!
//! Modules, lowest first: [`error`] (the one error shape), [`app`] (apps and roles),
//! [`rollout`] (rollouts, their history and the operator's actions), [`group`]
//! (rollout groups), [`status`]
//! (`GET /status` and the live stream), [`openapi`] (the document), [`client`] (the
//! HTTP client). None imports one listed after it.

pub mod app;
pub mod client;
pub mod error;
pub mod group;
pub mod openapi;
pub mod rollout;
pub mod status;
pub mod ui;

pub use app::{AppConfig, Role};
pub use error::{ErrorBody, ErrorDetail};
pub use group::{Group, GroupEvent, GroupMember};
pub use rollout::{Action, Event, Rollout};
pub use status::Status;
