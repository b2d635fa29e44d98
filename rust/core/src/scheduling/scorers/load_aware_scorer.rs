//! load-aware-scorer (llm-d): 0.5 for an empty waiting queue, falling linearly to 0 at
//! `threshold` waiting requests; absolute, not relative to the other candidates.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LoadAwareParams {
    threshold: u32,
}

impl Default for LoadAwareParams {
    fn default() -> Self {
        LoadAwareParams { threshold: 128 }
    }
}

pub struct LoadAwareScorer {
    threshold: f64,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: LoadAwareParams = p.parse()?;
    if params.threshold == 0 {
        return Err(p.error("parameters.threshold: must be >= 1"));
    }
    Ok(Plugin::Scorer(Arc::new(LoadAwareScorer::new(
        params.threshold,
    ))))
}

impl LoadAwareScorer {
    pub fn new(threshold: u32) -> Self {
        LoadAwareScorer {
            threshold: f64::from(threshold.max(1)),
        }
    }
}

impl Scorer for LoadAwareScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let waiting = cycle.endpoint(c).metrics.waiting as f64;
            *slot = if !cycle.is_fresh(c) {
                0.0
            } else {
                0.5 * (1.0 - waiting.min(self.threshold) / self.threshold)
            };
        }
    }
}
