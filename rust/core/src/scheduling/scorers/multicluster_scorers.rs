//! The cluster-scoped metric scorers (llm-d), for an EPP whose endpoints are other clusters:
//! they read the pool averages multicluster-metrics-extractor writes (from what
//! multicluster-metrics-data-source polls), not per-pod metrics. A config listing one without
//! that source and extractor wired is refused at load. An endpoint whose average was never
//! read is unscored (0).
//!
//! - multicluster-queue-scorer: the pool's average queue, min-max over the candidates that have
//!   one (shortest 1, longest 0, all equal 1).
//! - multicluster-kv-cache-utilization-scorer: 1 − the pool's average KV-cache utilization.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better, Scorer};
use crate::scheduling::cycle::Cycle;

/// The plugin types that need the pool averages.
pub const POOL_METRICS_CONSUMERS: &[&str] = &[
    "multicluster-queue-scorer",
    "multicluster-kv-cache-utilization-scorer",
];

pub struct MultiClusterQueueScorer;

pub fn queue_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(MultiClusterQueueScorer)))
}

impl Scorer for MultiClusterQueueScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better(candidates, out, |c| {
            cycle.endpoint(c).info.attributes.pool_queue_size()
        });
    }
}

pub struct MultiClusterKvCacheUtilizationScorer;

pub fn kv_cache_utilization_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(
        MultiClusterKvCacheUtilizationScorer,
    )))
}

impl Scorer for MultiClusterKvCacheUtilizationScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let util = cycle
                .endpoint(c)
                .info
                .attributes
                .pool_kv_cache_utilization();
            *slot = util.map_or(0.0, |u| 1.0 - u);
        }
    }
}

#[cfg(test)]
#[path = "multicluster_tests.rs"]
mod tests;
