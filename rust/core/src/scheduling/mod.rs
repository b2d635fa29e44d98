//! Scheduling: profiles of filters -> weighted scorers -> picker over an immutable endpoint
//! snapshot, run by a profile handler. `contracts` says what each kind of plugin promises;
//! `registry` builds plugins by upstream type name from the folders of plugins (one file each);
//! `scheduler` wires them from config, `router` adds parsing, state and scraping.

mod admitters;
pub mod config;
mod contracts;
pub mod cycle;
mod filters;
mod handler_wiring;
mod handlers;
mod pickers;
mod producers;
mod profile;
mod registry;
mod request_parsers;
pub mod router;
pub mod scheduler;
mod scorers;
mod screeners;
mod session;

#[cfg(test)]
mod admitter_tests;
#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod filter_tests;
#[cfg(test)]
mod handler_tests;
#[cfg(test)]
mod latency_tests;
#[cfg(test)]
mod plugin_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod test_pool;

pub use config::{ConfigError, RouterConfig};
pub use cycle::ScheduleError;
pub use handlers::data_parallel_profile_handler::DATA_PARALLEL_HEADER;
pub use handlers::disagg_profile_handler::{ENCODERS_HEADER, PREFILLER_HEADER};
pub use producers::burst_prefix_cache_producer::Ticket as BurstTicket;
pub use producers::kv_events::{self, KvEventsError};
pub use producers::p2p_source_producer::KV_CACHE_SOURCE_HEADER;
pub use producers::precise_prefix_cache_producer::{self, request_block_hashes, BlockIndexStats};
pub use producers::predicted_latency_producer::{SLO_TPOT_HEADERS, SLO_TTFT_HEADERS};
pub use registry::known_types;
pub use request_parsers::known_parsers;
pub use router::{Decision, EndpointStatus, ProfileExplanation, RouteError, RouteOptions, Router};
pub use session::{session_token, SESSION_ID_HEADER, SESSION_TOKEN_HEADER};
