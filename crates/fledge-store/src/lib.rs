//! Durable state: apps, rollouts and their append-only event history, rollout groups
//! (several apps' rollouts that move together), the chart samples of rollouts, and
//! leader leases, behind the [`Store`] trait; an embedded SQLite implementation (the
//! default) and a PostgreSQL one for highly available setups.
//!
//! Every state change of a rollout and the events that explain it are written in one
//! transaction, guarded by the rollout's revision (optimistic concurrency) and,
//! for a leader, by the fencing epoch of its lease.
//!
//! Must never depend on the proxy, the API or the engine: states, specs and evidence
//! are opaque JSON here. Of fledge's crates it depends only on `fledge-stats`, whose
//! [`ArmHealth`](fledge_stats::ArmHealth) (what `GET /status` serves of a version's
//! health) is what a chart sample keeps of each version.
//!
//! Choices worth knowing:
//! - The trait uses `async-trait` so that the server can hold an `Arc<dyn Store>`.
//! - Rollout ids are `ro-` and 12 characters of Crockford base 32 (60 random bits),
//!   group ids `gr-` and the same.
//! - Times are [`Timestamp`]s, Unix milliseconds; records are stamped with the
//!   writer's clock, leases are judged by the database's clock.
//! - JSON is stored as text, so it round-trips exactly on both backends.
//! - Leader leases are rows with a TTL and a fencing epoch: a leader attaches
//!   [`Lease::fence`] to its writes and they are refused with [`StoreError::Fenced`]
//!   once another node has taken the lease.
//!
//! ```
//! # async fn demo() -> Result<(), fledge_store::StoreError> {
//! use fledge_store::{NewEvent, NewRollout, RolloutUpdate};
//! use serde_json::json;
//!
//! let store = fledge_store::connect("sqlite::memory:").await?;
//! let rollout = store
//!     .create_rollout(NewRollout {
//!         app: "checkout".into(),
//!         version: "v2".into(),
//!         phase: "Pending".into(),
//!         spec_text: "app: checkout\nversion: v2\n".into(),
//!         spec: json!({"app": "checkout", "version": "v2"}),
//!         state: json!({}),
//!         events: vec![NewEvent::new("Created", "alice", "rollout created")],
//!         group: None,
//!         fence: None,
//!     })
//!     .await?;
//! let rollout = store
//!     .update_rollout(RolloutUpdate {
//!         id: rollout.id,
//!         expected_revision: rollout.revision,
//!         phase: "Progressing".into(),
//!         state: json!({"stage": 0}),
//!         events: vec![NewEvent::new("StageStarted", "engine", "10% to v2")],
//!         app_update: None,
//!         fence: None,
//!     })
//!     .await?;
//! assert_eq!(rollout.revision, 2);
//! assert_eq!(store.events(&rollout.id, 0).await?.len(), 2);
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```

mod error;
mod model;
mod postgres;
mod rows;
mod samples;
mod sql;
mod sqlite;
mod store;

pub use error::{Result, StoreError, redact_url};
pub use model::{
    ACTIVE_PHASES, AppRecord, AppUpdate, EventRecord, Fence, GROUP_PHASES, GroupRecord,
    GroupUpdate, Lease, NewEvent, NewGroup, NewRollout, PHASES, RolloutFilter, RolloutRecord,
    RolloutUpdate, StateUpdate, Timestamp, is_active_group_phase, is_active_phase,
};
pub use postgres::{IDLE_IN_TRANSACTION_TIMEOUT, PgStore};
pub use samples::{Sample, SampleBounds, thin};
pub use sqlite::SqliteStore;
pub use store::{Store, connect};
