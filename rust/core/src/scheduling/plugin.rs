//! The plugin registry: every plugin is built by its upstream type name from its parameters.
//! Adding a plugin is one file with a `factory` and one line here.

use std::sync::Arc;

use super::config::ConfigError;
use super::filter::Filter;
use super::params::Params;
use super::pd_decider::PdDecider;
use super::picker::Picker;
use super::precise_prefix_cache_producer::{self, BlockIndex};
use super::profile_handler::HandlerSpec;
use super::scorer::Scorer;
use super::{
    active_request_scorer, disagg_profile_handler, kv_cache_utilization_scorer,
    label_selector_filter, load_aware_scorer, lora_affinity_scorer, max_score_picker,
    no_hit_lru_scorer, pd_decider, prefix_cache_scorer, queue_scorer, random_picker, role_filter,
    running_requests_size_scorer, session_affinity_scorer, single_profile_handler,
    utilization_filter, weighted_random_picker,
};

pub enum Plugin {
    Filter(Arc<dyn Filter>),
    Scorer(Arc<dyn Scorer>),
    Picker(Arc<dyn Picker>),
    ProfileHandler(HandlerSpec),
    Decider(Arc<dyn PdDecider>),
    /// A data producer: the exact KV-block index fed by endpoint events.
    Producer(Arc<BlockIndex>),
    /// token-producer: where the precise index gets a request's token ids.
    Tokens(Arc<crate::tokenize::TokenSource>),
    /// Accepted for upstream configs; its behaviour is built in elsewhere (e.g. the disagg
    /// handler sets the prefill header itself, which upstream's prefill-header-handler does).
    BuiltIn,
}

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
        "precise-prefix-cache-producer",
        precise_prefix_cache_producer::factory,
    ),
    ("token-producer", super::token_producer::factory),
    // Upstream's deprecated name for token-producer.
    ("tokenizer", super::token_producer::factory),
    ("lora-affinity-scorer", lora_affinity_scorer::factory),
    (
        "running-requests-size-scorer",
        running_requests_size_scorer::factory,
    ),
    ("load-aware-scorer", load_aware_scorer::factory),
    ("active-request-scorer", active_request_scorer::factory),
    ("session-affinity-scorer", session_affinity_scorer::factory),
    ("no-hit-lru-scorer", no_hit_lru_scorer::factory),
    ("decode-filter", role_filter::decode_factory),
    ("prefill-filter", role_filter::prefill_factory),
    ("label-selector-filter", label_selector_filter::factory),
    ("utilization-filter", utilization_filter::factory),
    ("max-score-picker", max_score_picker::factory),
    ("random-picker", random_picker::factory),
    ("weighted-random-picker", weighted_random_picker::factory),
    ("single-profile-handler", single_profile_handler::factory),
    ("disagg-profile-handler", disagg_profile_handler::factory),
    ("pd-profile-handler", disagg_profile_handler::factory),
    ("prefill-header-handler", built_in_factory),
    ("prefix-based-pd-decider", pd_decider::prefix_based_factory),
    ("always-disagg-pd-decider", pd_decider::always_factory),
];

fn built_in_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<super::params::NoParams>()?;
    Ok(Plugin::BuiltIn)
}

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
