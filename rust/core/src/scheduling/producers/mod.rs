//! Data producers: state built outside the cycle (endpoint KV events) that plugins read.
pub mod agent_identity;
pub mod approx_prefix_cache_producer;
pub mod burst_prefix_cache_producer;
pub mod inflight_load_producer;
pub mod kv_events;
pub mod latency_predictor;
pub mod mm_embeddings_cache_producer;
pub mod p2p_source_producer;
pub mod precise_prefix_cache_producer;
pub mod precise_prefix_params;
pub mod predicted_latency_producer;
pub mod request_attribute_reporter;
pub mod served_verifier;
pub mod session_id_producer;
pub mod token_producer;
pub mod topology_extractor;
pub mod usage_expression;
