//! The `fledge` binary's library half: the server (store, controller, HTTP API,
//! built-in proxies) and its configuration, usable in-process by the CLI's `demo`
//! and by integration tests.

pub mod config;
pub mod server;
