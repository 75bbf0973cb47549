//! Durable state: apps, rollouts and their append-only event history, and leader
//! leases, behind the [`Store`] trait; an embedded SQLite implementation (the
//! default) and a PostgreSQL one for highly available setups.
//!
//! Every state change of a rollout and the events that explain it are written in one
//! transaction, guarded by the rollout's revision (optimistic concurrency) and,
//! for a leader, by the fencing epoch of its lease.
//!
//! Must never depend on the proxy, the API or the engine: states, specs and evidence
//! are opaque JSON here.

mod error;
mod model;
mod postgres;
mod rows;
mod sqlite;
mod store;

pub use error::{Result, StoreError, redact_url};
pub use model::{
    ACTIVE_PHASES, AppRecord, AppUpdate, EventRecord, Fence, Lease, NewEvent, NewRollout, PHASES,
    RolloutFilter, RolloutRecord, RolloutUpdate, Timestamp, is_active_phase,
};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use store::{Store, connect};
