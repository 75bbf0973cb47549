//! How the API's answers look in a terminal: tables and figures ([`output`]),
//! rollouts as text ([`render`]), and a rollout followed live until it ends
//! ([`follow`]), and CanaryRollouts as the same views ([`kube`]). Shared by the
//! CLI's commands and the demo; depends on neither.

pub mod follow;
pub mod kube;
pub mod output;
pub mod render;
