//! The plugin registry: every plugin is built by its upstream type name from its parameters.
//! Adding a plugin is one file with a `factory` and one line here.

use crate::scheduling::admitters::{latency_slo_admitter, probabilistic_admitter};
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::filters::{
    by_label_filter, endpoint_attribute_filter, header_based_testing_filter, label_selector_filter,
    prefix_cache_affinity_filter, role_filter, saturation_detector_filter, session_affinity_filter,
    slo_headroom_tier_filter, topology_affinity_filter, utilization_filter,
};
use crate::scheduling::handlers::{
    data_parallel_profile_handler, disagg_profile_handler, header_profile_handler, pd_decider,
    single_profile_handler,
};
use crate::scheduling::pickers::{max_score_picker, random_picker, weighted_random_picker};
use crate::scheduling::producers::{
    agent_identity, approx_prefix_cache_producer, burst_prefix_cache_producer,
    inflight_load_producer, mm_embeddings_cache_producer, p2p_source_producer,
    precise_prefix_cache_producer, predicted_latency_producer, request_attribute_reporter,
    session_id_producer, topology_extractor,
};
use crate::scheduling::scorers::{
    active_request_scorer, context_length_aware, endpoint_attribute_scorer,
    header_label_affinity_scorer, kv_cache_utilization_scorer, latency_scorer, load_aware_scorer,
    lora_affinity_scorer, mm_embeddings_cache_scorer, multicluster_scorers, no_hit_lru_scorer,
    prefix_cache_scorer, queue_scorer, running_requests_size_scorer, session_affinity_scorer,
    token_load_scorer, topology_affinity_scorer,
};
use crate::scheduling::screeners::disaggregatedset_rollout_screener;

type Factory = fn(&Params<'_>) -> Result<Plugin, ConfigError>;

const REGISTRY: &[(&str, Factory)] = &[
    ("queue-scorer", queue_scorer::factory),
    (
        "kv-cache-utilization-scorer",
        kv_cache_utilization_scorer::factory,
    ),
    // The name upstream used before kv-cache-utilization-scorer.
    ("kv-cache-scorer", kv_cache_utilization_scorer::factory),
    ("prefix-cache-scorer", prefix_cache_scorer::factory),
    (
        "disaggregatedset-rollout-screener",
        disaggregatedset_rollout_screener::factory,
    ),
    // Cluster endpoints scored by the pool averages their EPPs publish.
    (
        "multicluster-queue-scorer",
        multicluster_scorers::queue_factory,
    ),
    (
        "multicluster-kv-cache-utilization-scorer",
        multicluster_scorers::kv_cache_utilization_factory,
    ),
    // Upstream's cluster-scoped type: the same scorer over cluster endpoints
    // (multicluster-file-discovery).
    (
        "multicluster-prefix-cache-scorer",
        prefix_cache_scorer::factory,
    ),
    (
        "precise-prefix-cache-producer",
        precise_prefix_cache_producer::factory,
    ),
    (
        "approx-prefix-cache-producer",
        approx_prefix_cache_producer::factory,
    ),
    // Upstream's cluster-scoped type: the same producer over cluster endpoints.
    (
        "multicluster-approx-prefix-cache-producer",
        approx_prefix_cache_producer::factory,
    ),
    (
        "burst-prefix-cache-producer",
        burst_prefix_cache_producer::factory,
    ),
    (
        "token-producer",
        crate::scheduling::producers::token_producer::factory,
    ),
    // Upstream's deprecated name for token-producer.
    (
        "tokenizer",
        crate::scheduling::producers::token_producer::factory,
    ),
    ("lora-affinity-scorer", lora_affinity_scorer::factory),
    (
        "mm-embeddings-cache-producer",
        mm_embeddings_cache_producer::factory,
    ),
    (
        "mm-embeddings-cache-scorer",
        mm_embeddings_cache_scorer::factory,
    ),
    (
        "running-requests-size-scorer",
        running_requests_size_scorer::factory,
    ),
    ("load-aware-scorer", load_aware_scorer::factory),
    ("active-request-scorer", active_request_scorer::factory),
    ("context-length-aware", context_length_aware::factory),
    (
        "header-label-affinity-scorer",
        header_label_affinity_scorer::factory,
    ),
    ("session-affinity-scorer", session_affinity_scorer::factory),
    ("session-affinity-filter", session_affinity_filter::factory),
    // Cluster identity comes from discovery: pinning the endpoint pins its cluster.
    (
        "multicluster-session-affinity-filter",
        session_affinity_filter::factory,
    ),
    ("session-id-producer", session_id_producer::factory),
    ("no-hit-lru-scorer", no_hit_lru_scorer::factory),
    ("p2p-source-producer", p2p_source_producer::factory),
    ("decode-filter", role_filter::decode_factory),
    ("prefill-filter", role_filter::prefill_factory),
    ("encode-filter", role_filter::encode_factory),
    (
        "header-based-testing-filter",
        header_based_testing_filter::factory,
    ),
    ("label-selector-filter", label_selector_filter::factory),
    // Deprecated upstream names.
    ("by-label-selector", label_selector_filter::factory),
    ("by-label", by_label_filter::factory),
    ("utilization-filter", utilization_filter::factory),
    // The detectors' filter role (their saturation role is flow control's).
    (
        "utilization-detector",
        saturation_detector_filter::utilization_factory,
    ),
    (
        "concurrency-detector",
        saturation_detector_filter::concurrency_factory,
    ),
    ("latency-scorer", latency_scorer::factory),
    (
        "endpoint-attribute-filter",
        endpoint_attribute_filter::factory,
    ),
    (
        "endpoint-attribute-scorer",
        endpoint_attribute_scorer::factory,
    ),
    (
        "slo-headroom-tier-filter",
        slo_headroom_tier_filter::factory,
    ),
    ("inflight-load-producer", inflight_load_producer::factory),
    ("token-load-scorer", token_load_scorer::factory),
    (
        "request-attribute-reporter",
        request_attribute_reporter::factory,
    ),
    (
        "prefix-cache-affinity-filter",
        prefix_cache_affinity_filter::factory,
    ),
    ("topology-extractor", topology_extractor::factory),
    ("agent-identity", agent_identity::factory),
    (
        "destination-endpoint-served-verifier",
        crate::scheduling::producers::served_verifier::factory,
    ),
    (
        "topology-affinity-filter",
        topology_affinity_filter::factory,
    ),
    (
        "topology-affinity-scorer",
        topology_affinity_scorer::factory,
    ),
    (
        "predicted-latency-producer",
        predicted_latency_producer::factory,
    ),
    ("latency-slo-admitter", latency_slo_admitter::factory),
    ("probabilistic-admitter", probabilistic_admitter::factory),
    ("max-score-picker", max_score_picker::factory),
    ("random-picker", random_picker::factory),
    ("weighted-random-picker", weighted_random_picker::factory),
    ("single-profile-handler", single_profile_handler::factory),
    ("disagg-profile-handler", disagg_profile_handler::factory),
    ("pd-profile-handler", disagg_profile_handler::factory),
    (
        "prefill-header-handler",
        disagg_profile_handler::headers_factory,
    ),
    (
        "disagg-headers-handler",
        disagg_profile_handler::headers_factory,
    ),
    ("prefix-based-pd-decider", pd_decider::prefix_based_factory),
    ("always-disagg-pd-decider", pd_decider::always_factory),
    (
        "always-disagg-multimodal-decider",
        pd_decider::multimodal_factory,
    ),
    (
        "data-parallel-profile-handler",
        data_parallel_profile_handler::factory,
    ),
    ("header-profile-handler", header_profile_handler::factory),
];

pub fn known_types() -> impl Iterator<Item = &'static str> {
    REGISTRY.iter().map(|(t, _)| *t)
}

pub fn build(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let factory = REGISTRY
        .iter()
        .find(|(t, _)| *t == p.kind)
        .map(|(_, f)| f)
        .ok_or_else(|| {
            let known: Vec<_> = known_types().collect();
            p.error(format_args!(
                "unknown plugin type '{}' (known: {})",
                p.kind,
                known.join(", ")
            ))
        })?;
    factory(p)
}
