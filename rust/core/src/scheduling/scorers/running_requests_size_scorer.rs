//! running-requests-size-scorer: prefers endpoints running fewer requests (min-max over the
//! candidates), a signal of decode batch size when queues are empty.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better, Scorer};
use crate::scheduling::cycle::Cycle;

pub struct RunningRequestsSizeScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(RunningRequestsSizeScorer)))
}

impl Scorer for RunningRequestsSizeScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better(candidates, out, |c| {
            cycle
                .is_fresh(c)
                .then(|| cycle.endpoint(c).metrics.running as f64)
        });
    }
}
