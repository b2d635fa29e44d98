//! Data producers: state built outside the cycle (endpoint KV events) that plugins read.
pub mod kv_events;
pub mod precise_prefix_cache_producer;
pub mod precise_prefix_params;
pub mod token_producer;
