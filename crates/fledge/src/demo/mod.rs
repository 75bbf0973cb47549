//! The parts of `fledge demo` that are not the server: demo backends with a chosen
//! error rate and latency, a bounded load generator, the scenarios, and what the demo
//! prints. `cli/demo.rs` wires them to an in-process server.

pub mod backend;
pub mod load;
pub mod report;
pub mod scenario;
