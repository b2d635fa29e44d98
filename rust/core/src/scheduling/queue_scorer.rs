//! queue-scorer: prefers endpoints with fewer requests waiting in the model server's queue
//! (min-max over the candidates).

use std::sync::Arc;

use super::config::ConfigError;
use super::cycle::Cycle;
use super::params::{NoParams, Params};
use super::plugin::Plugin;
use super::scorer::{score_lower_is_better, Scorer};

pub struct QueueScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(QueueScorer)))
}

impl Scorer for QueueScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better(candidates, out, |c| {
            cycle
                .is_fresh(c)
                .then(|| cycle.endpoint(c).metrics.waiting as f64)
        });
    }
}
