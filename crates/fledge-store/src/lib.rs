//! Durable state: apps, rollouts and their append-only event history, behind the
//! `Store` trait, with an embedded SQLite implementation.
//!
//! Must never depend on the proxy or the API.
