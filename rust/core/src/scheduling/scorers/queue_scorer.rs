//! queue-scorer: prefers endpoints with fewer requests waiting in the model server's queue
//! (min-max over the candidates), as upstream's. The scraped queue is up to one scrape interval
//! old, and the requests this EPP sent since (its requests in flight beyond those the server
//! reports running) count as waiting beyond the batch slots the server had free: all of them
//! where it reports a queue, those beyond `inFlightFreeSlots` (default 0: all of them) where it
//! reports none. `inFlight: never` scores the scraped queue alone, as upstream's scorer.
//!
//! Why all of them by default (session 9, benches/quality/README.md): counting none, every
//! request between two scrapes sees the same stale scores and the max-score picker sends them
//! all to the one best-scored server. On independent prompts at ~2 arrivals a scrape interval
//! (`varied`) upstream's EPP had 2× our TTFT p50, on clumps of 24 (`burst`) 2.9–3.2×
//! round-robin's p90. The cost: min-max turns one request into the scorer's whole weight, so a
//! request sent since the scrape moves a turn off the server holding its history when another
//! holds most of it (its system prompt): on `shared_prefix` 1.5–2.4× upstream's moves and
//! 0.1–0.2 points of median hit rate. Two free slots kept upstream's placements there, but cost
//! 1.5× the TTFT p50 on `varied`.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better, Scorer};
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

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct QueueParams {
    in_flight: InFlight,
    in_flight_free_slots: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueScorer {
    pub in_flight: InFlight,
    pub free_slots: u32,
}

impl Default for QueueScorer {
    fn default() -> Self {
        QueueScorer {
            in_flight: InFlight::BeyondFreeSlots,
            free_slots: IN_FLIGHT_FREE_SLOTS,
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
    Ok(Plugin::Scorer(Arc::new(QueueScorer {
        in_flight: params.in_flight,
        free_slots: params.in_flight_free_slots.unwrap_or(IN_FLIGHT_FREE_SLOTS),
    })))
}

impl Scorer for QueueScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better(candidates, out, |c| self.queue(cycle, c).map(f64::from));
    }
}

impl QueueScorer {
    /// The queue this scorer counts at the candidate; None when stale.
    pub fn queue(&self, cycle: &Cycle<'_>, c: u32) -> Option<u32> {
        let ep = cycle.endpoint(c);
        let scraped = ep.metrics.waiting;
        let sent = ep.in_flight().saturating_sub(ep.metrics.running);
        let counted = match self.in_flight {
            InFlight::Never => scraped,
            InFlight::BeyondFreeSlots if scraped > 0 => scraped.max(sent),
            InFlight::BeyondFreeSlots => sent.saturating_sub(self.free_slots),
        };
        cycle.is_fresh(c).then_some(counted)
    }
}

/// Requests waiting at the candidate: the scraped queue, or this EPP's requests in flight
/// beyond those the server reports running, whichever is larger (the default queue-scorer's
/// count); None when stale. The prefix-cache-scorer's affinity rule reads it.
pub fn waiting(cycle: &Cycle<'_>, c: u32) -> Option<u32> {
    QueueScorer {
        in_flight: InFlight::BeyondFreeSlots,
        free_slots: 0,
    }
    .queue(cycle, c)
}
