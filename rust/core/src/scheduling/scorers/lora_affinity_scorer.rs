//! lora-affinity-scorer: prefers endpoints where the requested adapter is already loaded (1.0),
//! then those with a free adapter slot (0.8), then those where it waits to load (0.6); an
//! endpoint with every slot taken by other adapters scores 0.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;

pub struct LoraAffinityScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(LoraAffinityScorer)))
}

impl Scorer for LoraAffinityScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let model = cycle.request.model;
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let m = &cycle.endpoint(c).metrics;
            let has = |list: &[String]| list.iter().any(|a| a == model);
            *slot = if has(&m.running_loras) {
                1.0
            } else if m.running_loras.len() + m.waiting_loras.len() < m.max_lora as usize {
                0.8
            } else if has(&m.waiting_loras) {
                0.6
            } else {
                0.0
            };
        }
    }
}
