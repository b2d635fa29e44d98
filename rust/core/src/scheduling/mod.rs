//! Scheduling: filters -> weighted scorers -> picker over an immutable endpoint snapshot.
//! One file per plugin; `profile` wires them, `router` puts parsing, state and scheduling together.

mod active_request_scorer;
pub mod config;
pub mod cycle;
mod filter;
mod kv_cache_utilization_scorer;
mod max_score_picker;
mod profile;
mod queue_scorer;
pub mod router;
mod scorer;
mod stale_filter;
mod subset_filter;

pub use config::{ConfigError, RouterConfig};
pub use cycle::ScheduleError;
pub use router::{Decision, EndpointStatus, RouteError, Router};
