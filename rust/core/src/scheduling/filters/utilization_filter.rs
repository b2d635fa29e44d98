//! utilization-filter: drops endpoints whose waiting queue or KV-cache use is above a threshold,
//! so saturated replicas get no new work while others have room. When every candidate is over,
//! all are kept: refusing work is flow control's decision, not the scheduler's.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct UtilizationParams {
    queue_threshold: u32,
    kv_cache_usage_threshold: f64,
}

impl Default for UtilizationParams {
    fn default() -> Self {
        UtilizationParams {
            queue_threshold: 128,
            kv_cache_usage_threshold: 0.8,
        }
    }
}

pub struct UtilizationFilter {
    queue_threshold: u32,
    kv_threshold: f64,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: UtilizationParams = p.parse()?;
    let kv = params.kv_cache_usage_threshold;
    if !(0.0..=1.0).contains(&kv) {
        return Err(p.error(format_args!(
            "parameters.kvCacheUsageThreshold: must be in [0, 1], got {kv}"
        )));
    }
    Ok(Plugin::Filter(Arc::new(UtilizationFilter {
        queue_threshold: params.queue_threshold,
        kv_threshold: kv,
    })))
}

impl UtilizationFilter {
    fn has_room(&self, cycle: &Cycle<'_>, c: u32) -> bool {
        let m = &cycle.endpoint(c).metrics;
        m.waiting <= self.queue_threshold && m.kv_usage <= self.kv_threshold
    }
}

impl Filter for UtilizationFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        if candidates.iter().any(|&c| self.has_room(cycle, c)) {
            candidates.retain(|&c| self.has_room(cycle, c));
        }
        Ok(())
    }
}
