//! active-request-scorer (llm-d): prefers endpoints with fewer requests this EPP has sent and
//! not yet seen finish. Endpoints at or below `idleThreshold` score 1; busier ones score
//! `(max - count) / max * maxBusyScore`, the busiest 0. Needs no scrape, so it reacts between
//! scrapes and on stale endpoints.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;
use crate::scheduling::filters::utilization_filter::check_in_flight_producer;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ActiveRequestParams {
    idle_threshold: u32,
    max_busy_score: Option<f64>,
    /// Deprecated upstream and without effect there: requests are tracked until they finish.
    request_timeout: Option<String>,
    in_flight_load_producer_name: Option<String>,
}

pub struct ActiveRequestScorer {
    pub idle_threshold: u32,
    pub max_busy_score: f64,
}

impl Default for ActiveRequestScorer {
    fn default() -> Self {
        ActiveRequestScorer {
            idle_threshold: 0,
            max_busy_score: 1.0,
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ActiveRequestParams = p.parse()?;
    check_in_flight_producer(p, params.in_flight_load_producer_name.as_deref())?;
    let _ = params.request_timeout;
    let max_busy_score = params.max_busy_score.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&max_busy_score) {
        return Err(p.error(format_args!(
            "parameters.maxBusyScore: must be in [0, 1], got {max_busy_score}"
        )));
    }
    Ok(Plugin::Scorer(Arc::new(ActiveRequestScorer {
        idle_threshold: params.idle_threshold,
        max_busy_score,
    })))
}

impl Scorer for ActiveRequestScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let count = |c: u32| cycle.endpoint(c).in_flight();
        let max = candidates.iter().map(|&c| count(c)).max().unwrap_or(0);
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let n = count(c);
            *slot = if n <= self.idle_threshold {
                1.0
            } else {
                f64::from(max - n) / f64::from(max) * self.max_busy_score
            };
        }
    }
}
