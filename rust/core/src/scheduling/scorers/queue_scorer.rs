//! queue-scorer: prefers endpoints with fewer requests waiting in the model server's queue
//! (min-max over the candidates), as upstream's. The scraped queue is up to one scrape interval
//! old, and the requests this EPP sent since (its requests in flight beyond those the server
//! reports running) count as waiting beyond the batch slots the server had free (`inFlight:
//! beyondFreeSlots`, the default): none at a server that reports a queue, so all of them
//! deepen it; `inFlightFreeSlots` (default 2) at one that reports none. `inFlight: never`
//! scores the scraped queue alone, as upstream's scorer; `inFlightFreeSlots: 0` is
//! sluicegate's rule until session 9 (every request sent since counts).
//!
//! Why both limits: min-max turns a one-request difference into the scorer's whole weight, so
//! counting a single request sent since the scrape moved turns of a conversation off the
//! server holding its history (a partial match elsewhere, 0.6 × 3 + 2, beats the full match,
//! 3 + 0): on the shared-prefix bench 1.6–2.5× upstream's moves and about 0.2 points of hit
//! rate. Counting none (upstream's) sends every request of a burst between two scrapes to the
//! one best-scored server: on the burst bench 2.9–3.2× round-robin's TTFT p90. Two free slots
//! kept upstream's placements on the first and round-robin's spread on the second
//! (benches/quality/README.md, session 9).

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better, Scorer};
use crate::scheduling::cycle::Cycle;

/// Requests sent since the scrape a server reporting no queue is taken to have started.
pub const IN_FLIGHT_FREE_SLOTS: u32 = 2;

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
/// beyond those the server reports running, whichever is larger; None when stale. The
/// prefix-cache-scorer's affinity rule reads it while the server reports a queue (where the
/// queue-scorer counts the same).
pub fn waiting(cycle: &Cycle<'_>, c: u32) -> Option<u32> {
    QueueScorer {
        in_flight: InFlight::BeyondFreeSlots,
        free_slots: 0,
    }
    .queue(cycle, c)
}
