//! queue-scorer: prefers endpoints with fewer requests waiting in the model server's queue
//! (min-max over the candidates). The scraped queue is up to one scrape interval old; requests
//! this EPP has in flight beyond those the server reports running must be waiting, so the
//! larger of the two counts: a burst between scrapes does not all land on one endpoint.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better, Scorer};
use crate::scheduling::cycle::Cycle;

pub struct QueueScorer;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Scorer(Arc::new(QueueScorer)))
}

impl Scorer for QueueScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better(candidates, out, |c| waiting(cycle, c).map(f64::from));
    }
}

/// Requests waiting at the candidate: the scraped queue, or this EPP's requests in flight
/// beyond those the server reports running, whichever is larger; None when stale.
pub fn waiting(cycle: &Cycle<'_>, c: u32) -> Option<u32> {
    let ep = cycle.endpoint(c);
    let routed_waiting = ep.in_flight().saturating_sub(ep.metrics.running);
    cycle
        .is_fresh(c)
        .then(|| ep.metrics.waiting.max(routed_waiting))
}
