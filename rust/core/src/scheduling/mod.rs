//! Scheduling: profiles of filters -> weighted scorers -> picker over an immutable endpoint
//! snapshot, run by a profile handler. One file per plugin, registered by upstream type name in
//! `plugin`; `scheduler` wires them from config, `router` adds parsing, state and scraping.

mod active_request_scorer;
pub mod config;
pub mod cycle;
mod disagg_profile_handler;
mod filter;
mod kv_cache_utilization_scorer;
pub mod kv_events;
mod label_selector_filter;
mod load_aware_scorer;
mod lora_affinity_scorer;
mod max_score_picker;
mod no_hit_lru_scorer;
mod params;
mod pd_decider;
mod picker;
mod picker_params;
mod plugin;
pub mod precise_prefix_cache_producer;
mod precise_prefix_params;
mod prefix_cache_scorer;
mod profile;
mod profile_handler;
mod queue_scorer;
mod random_picker;
mod role_filter;
pub mod router;
mod running_requests_size_scorer;
pub mod scheduler;
mod scorer;
mod session_affinity_scorer;
mod single_profile_handler;
mod stale_filter;
mod subset_filter;
mod token_producer;
mod utilization_filter;
mod weighted_random_picker;

#[cfg(test)]
mod plugin_tests;
#[cfg(test)]
mod test_pool;

pub use config::{ConfigError, RouterConfig};
pub use cycle::ScheduleError;
pub use disagg_profile_handler::PREFILLER_HEADER;
pub use kv_events::KvEventsError;
pub use plugin::known_types;
pub use precise_prefix_cache_producer::{request_block_hashes, BlockIndexStats};
pub use router::{Decision, EndpointStatus, ProfileExplanation, RouteError, RouteOptions, Router};
pub use session_affinity_scorer::{session_token, SESSION_TOKEN_HEADER};
