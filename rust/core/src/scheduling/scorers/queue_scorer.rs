//! queue-scorer: prefers endpoints with fewer requests waiting in the model server's queue
//! (min-max over the candidates), as upstream's. The scraped queue is up to one scrape interval
//! old, and the requests this EPP sent since (its requests in flight beyond those the server
//! reports running) count too: where the server reports a queue, each as one waiting; where it
//! reports none, those beyond `inFlightFreeSlots` (default 0) each as `inFlightWeight` of one
//! (default 0.5): the server has free batch slots, so they mostly run at once and slow the
//! batch rather than wait. Scores are min-max over a range of at least one request waiting,
//! so for whole queues they are upstream's, and a request sent to a server with free slots
//! moves `inFlightWeight` of the scorer's weight, not all of it. `inFlight: never` scores the
//! scraped queue alone, as upstream's scorer.
//!
//! Why count them (session 9, benches/quality/README.md): counting none, every request between
//! two scrapes sees the same stale scores and the max-score picker sends them all to the one
//! best-scored server. On independent prompts at ~2 arrivals a scrape interval (`varied`)
//! upstream's EPP had 2× our TTFT p50, on clumps of 24 (`burst`) 2.9–3.2× round-robin's p90.
//! Why half of one (session 10): counted whole, min-max turned one request sent since the
//! scrape into the scorer's whole weight (2), which moved a turn off the server holding its
//! history whenever another held most of it (its system prompt, 0.6 × 3 + 2 > 3): on
//! `shared_prefix` 1.5–2.4× upstream's moves and 0.1–0.2 points of median hit rate. Half of
//! one keeps the order among servers, which is all a clump of independent prompts needs.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better_over, Scorer};
use crate::scheduling::cycle::Cycle;

/// Requests sent since the scrape a server reporting no queue is taken to have started.
pub const IN_FLIGHT_FREE_SLOTS: u32 = 0;

/// How requests this EPP sent since the last scrape count in a server's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InFlight {
    /// Beyond the batch slots the server had free: none where it reports a queue,
    /// `inFlightFreeSlots` where it reports none.
    #[default]
    BeyondFreeSlots,
    /// Not at all: the scraped queue alone (upstream's scorer).
    Never,
}

/// What one request sent since the scrape to a server reporting no queue weighs, in
/// requests waiting.
pub const IN_FLIGHT_WEIGHT: f64 = 0.5;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct QueueParams {
    in_flight: InFlight,
    in_flight_free_slots: Option<u32>,
    in_flight_weight: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueScorer {
    pub in_flight: InFlight,
    pub free_slots: u32,
    /// Where the server reports no queue, what each request sent since the scrape beyond the
    /// free slots weighs against one waiting; scores are min-max over at least one request
    /// waiting, so a lighter one moves less than the scorer's whole weight.
    pub weight: f64,
}

impl Default for QueueScorer {
    fn default() -> Self {
        QueueScorer {
            in_flight: InFlight::BeyondFreeSlots,
            free_slots: IN_FLIGHT_FREE_SLOTS,
            weight: IN_FLIGHT_WEIGHT,
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: QueueParams = p.parse()?;
    if params.in_flight == InFlight::Never && params.in_flight_free_slots.is_some() {
        return Err(p.error(
            "parameters.inFlightFreeSlots: only with inFlight: beyondFreeSlots (never counts \
             no request in flight)",
        ));
    }
    let weight = params.in_flight_weight.unwrap_or(IN_FLIGHT_WEIGHT);
    if params.in_flight == InFlight::Never && params.in_flight_weight.is_some() {
        return Err(p.error(
            "parameters.inFlightWeight: only with inFlight: beyondFreeSlots (never counts no \
             request in flight)",
        ));
    }
    if !(weight > 0.0 && weight <= 1.0) {
        return Err(p.error(format_args!(
            "parameters.inFlightWeight: must be in (0, 1], got {weight}"
        )));
    }
    Ok(Plugin::Scorer(Arc::new(QueueScorer {
        in_flight: params.in_flight,
        free_slots: params.in_flight_free_slots.unwrap_or(IN_FLIGHT_FREE_SLOTS),
        weight,
    })))
}

impl Scorer for QueueScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better_over(candidates, out, 1.0, |c| self.queue(cycle, c));
    }
}

impl QueueScorer {
    /// The queue this scorer counts at the candidate, in requests waiting; None when stale.
    pub fn queue(&self, cycle: &Cycle<'_>, c: u32) -> Option<f64> {
        let ep = cycle.endpoint(c);
        let scraped = ep.metrics.waiting;
        let sent = ep.sent_since_scrape();
        let counted = match self.in_flight {
            InFlight::Never => f64::from(scraped),
            InFlight::BeyondFreeSlots if scraped > 0 => f64::from(scraped.max(sent)),
            InFlight::BeyondFreeSlots => {
                self.weight * f64::from(sent.saturating_sub(self.free_slots))
            }
        };
        cycle.is_fresh(c).then_some(counted)
    }
}

/// Requests waiting at the candidate: the scraped queue, or this EPP's requests in flight
/// beyond those the server reports running, whichever is larger, each counted whole (the
/// default queue-scorer's count where the server reports a queue); None when stale. The
/// prefix-cache-scorer's affinity rule reads it.
pub fn waiting(cycle: &Cycle<'_>, c: u32) -> Option<u32> {
    let ep = cycle.endpoint(c);
    cycle
        .is_fresh(c)
        .then_some(ep.metrics.waiting.max(ep.sent_since_scrape()))
}
