//! kv-cache-utilization-scorer: 1 - KV-cache use, so emptier caches win.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;

pub struct KvCacheUtilizationScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(KvCacheUtilizationScorer)))
}

impl Scorer for KvCacheUtilizationScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        for (slot, &c) in out.iter_mut().zip(candidates) {
            *slot = if cycle.is_fresh(c) {
                1.0 - cycle.endpoint(c).metrics.kv_usage.clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
    }
}
