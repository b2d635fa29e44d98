//! slo-headroom-tier-filter (llm-d): splits candidates into those predicted to meet both SLOs
//! and the rest (predicted-latency-producer); keeps the meeting tier, except with probability
//! `epsilonExploreNeg` the other, so recovering endpoints are re-evaluated. One tier, or no
//! predictions: everyone stays. Endpoints without a prediction count as not meeting.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct TierParams {
    epsilon_explore_neg: f64,
}

impl Default for TierParams {
    fn default() -> Self {
        TierParams {
            epsilon_explore_neg: 0.01,
        }
    }
}

pub struct SloHeadroomTierFilter {
    epsilon: f64,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let epsilon = p.parse::<TierParams>()?.epsilon_explore_neg;
    if !(0.0..=1.0).contains(&epsilon) {
        return Err(p.error(format_args!(
            "parameters.epsilonExploreNeg: must be in [0, 1], got {epsilon}"
        )));
    }
    Ok(Plugin::Filter(Arc::new(SloHeadroomTierFilter { epsilon })))
}

impl Filter for SloHeadroomTierFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let state = cycle.state.borrow();
        let Some(l) = &state.latency else {
            return Ok(());
        };
        let meets = |c: u32| l.headroom(c).is_some_and(|(t, p)| t >= 0.0 && p >= 0.0);
        let positive = candidates.iter().filter(|&&c| meets(c)).count();
        if positive == 0 || positive == candidates.len() {
            return Ok(());
        }
        let keep_positive = fastrand::f64() >= self.epsilon;
        candidates.retain(|&c| meets(c) == keep_positive);
        Ok(())
    }
}
