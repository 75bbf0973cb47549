//! fledge's integrations with the world outside the binary: where metrics come from,
//! how traffic is split, and who is told what happened.
//!
//! Must never depend on the `fledge` binary crate (API, server, store).
