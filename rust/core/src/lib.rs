//! sluicegate-core: the hot path of an Endpoint Picker for LLM inference gateways.
//! Pure Rust, no Python: request parsing, endpoint state, scheduling and (later) flow control.
//! The `sluicegate-py` crate wraps it for Python; other gateways can embed it directly.

pub mod admission;
pub mod datalayer;
pub mod flowcontrol;
pub mod kvblock;
pub mod optimizer;
pub mod parse;
pub mod prefix;
pub mod scheduling;
pub mod stats;
pub mod tokenize;
