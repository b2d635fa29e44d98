//! active-request-scorer: prefers endpoints with fewer requests this EPP has sent and not yet
//! seen finish. Needs no scrape, so it reacts between scrapes and on stale endpoints.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better, Scorer};
use crate::scheduling::cycle::Cycle;

pub struct ActiveRequestScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(ActiveRequestScorer)))
}

impl Scorer for ActiveRequestScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better(candidates, out, |c| {
            Some(cycle.endpoint(c).in_flight() as f64)
        });
    }
}
