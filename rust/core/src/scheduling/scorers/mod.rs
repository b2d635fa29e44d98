//! Scorers: each rates every candidate in [0, 1]; one file per upstream type.
pub mod active_request_scorer;
pub mod context_length_aware;
pub mod endpoint_attribute_scorer;
pub mod header_label_affinity_scorer;
pub mod kv_cache_utilization_scorer;
pub mod latency_scorer;
pub mod load_aware_scorer;
pub mod lora_affinity_scorer;
pub mod mm_embeddings_cache_scorer;
pub mod multicluster_scorers;
pub mod no_hit_lru_scorer;
pub mod prefix_cache_scorer;
pub mod queue_scorer;
pub mod running_requests_size_scorer;
pub mod session_affinity_scorer;
pub mod token_load_scorer;
pub mod topology_affinity_scorer;
