//! queue-scorer: prefers endpoints with fewer requests waiting in the model server's queue
//! (min-max over the candidates), as upstream's. The scraped queue is up to one scrape interval
//! old; `inFlight` decides how this EPP's requests sent since then (its requests in flight
//! beyond those the server reports running) count:
//!
//! - `whileQueued`: they deepen a queue the server reports (it had no free batch slot, so they
//!   wait too), and count for nothing at a server that reported none (it most likely started
//!   them). Beyond `inFlightFreeSlots` of them, they count there too.
//! - `always`: the larger of the scraped queue and the requests beyond those running, at every
//!   server (sluicegate's rule until session 9).
//! - `never`: the scraped queue alone (upstream's scorer).
//!
//! Min-max turns a one-request difference into the scorer's full weight: counting a single
//! request sent since the scrape moves a turn off the server holding its history (a partial
//! match elsewhere, 0.6 × 3 + 2, beats the full match, 3 + 0).

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{score_lower_is_better, Scorer};
use crate::scheduling::cycle::Cycle;

/// How requests this EPP sent since the last scrape count in a server's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InFlight {
    #[default]
    WhileQueued,
    Always,
    Never,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct QueueParams {
    in_flight: InFlight,
    /// With `whileQueued`: requests sent since the scrape that a server reporting no queue
    /// is taken to have started; beyond these they count as waiting. Absent: all of them.
    in_flight_free_slots: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueScorer {
    pub in_flight: InFlight,
    /// `inFlightFreeSlots` (u32::MAX when absent: every one started).
    pub free_slots: u32,
}

impl Default for QueueScorer {
    fn default() -> Self {
        QueueScorer {
            in_flight: InFlight::WhileQueued,
            free_slots: u32::MAX,
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: QueueParams = p.parse()?;
    let free_slots = match (params.in_flight, params.in_flight_free_slots) {
        (InFlight::WhileQueued, slots) => slots.unwrap_or(u32::MAX),
        (_, None) => 0,
        (_, Some(_)) => {
            return Err(p.error(
                "parameters.inFlightFreeSlots: only with inFlight: whileQueued",
            ))
        }
    };
    Ok(Plugin::Scorer(Arc::new(QueueScorer {
        in_flight: params.in_flight,
        free_slots,
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
            InFlight::Always => scraped.max(sent),
            InFlight::WhileQueued if scraped > 0 => scraped.max(sent),
            InFlight::WhileQueued => sent.saturating_sub(self.free_slots),
        };
        cycle.is_fresh(c).then_some(counted)
    }
}

/// Requests waiting at the candidate: the scraped queue, or this EPP's requests in flight
/// beyond those the server reports running, whichever is larger; None when stale. The
/// prefix-cache-scorer's affinity rule reads it while the server reports a queue.
pub fn waiting(cycle: &Cycle<'_>, c: u32) -> Option<u32> {
    QueueScorer {
        in_flight: InFlight::Always,
        free_slots: 0,
    }
    .queue(cycle, c)
}
