//! utilization-filter (llm-d): keeps endpoints whose every configured metric is at most its
//! `maxValue` (`active-requests` counted by this EPP, `running-requests`, `waiting-queue`,
//! `kv-cache-utilization`). A metric never scraped counts as 0. When no endpoint is left,
//! `fallbackOnEmpty` keeps them all; otherwise the cycle fails at this filter.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

/// The in-flight counter built into the Router is upstream's default `inflight-load-producer`.
pub const IN_FLIGHT_PRODUCER: &str = "inflight-load-producer";

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct UtilizationParams {
    conditions: Vec<ConditionParams>,
    fallback_on_empty: bool,
    in_flight_load_producer_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConditionParams {
    metric: Metric,
    max_value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Metric {
    ActiveRequests,
    RunningRequests,
    WaitingQueue,
    KvCacheUtilization,
}

pub struct UtilizationFilter {
    conditions: Vec<(Metric, f64)>,
    fallback_on_empty: bool,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: UtilizationParams = p.parse()?;
    check_in_flight_producer(p, params.in_flight_load_producer_name.as_deref())?;
    if params.conditions.is_empty() {
        return Err(p.error("parameters.conditions: at least one {metric, maxValue} is required"));
    }
    let mut conditions = Vec::with_capacity(params.conditions.len());
    for (i, c) in params.conditions.iter().enumerate() {
        let at = format!("parameters.conditions[{i}].maxValue");
        let max = c
            .max_value
            .ok_or_else(|| p.error(format_args!("{at}: required")))?;
        if max.is_nan() || max < 0.0 || (c.metric == Metric::KvCacheUtilization && max > 1.0) {
            return Err(p.error(format_args!(
                "{at}: must be >= 0 (and at most 1 for kv-cache-utilization), got {max}"
            )));
        }
        conditions.push((c.metric, max));
    }
    Ok(Plugin::Filter(Arc::new(UtilizationFilter {
        conditions,
        fallback_on_empty: params.fallback_on_empty,
    })))
}

/// Plugins that read in-flight load may name its producer; only the built-in one exists.
pub fn check_in_flight_producer(p: &Params<'_>, name: Option<&str>) -> Result<(), ConfigError> {
    match name {
        None => Ok(()),
        Some(n) if n == IN_FLIGHT_PRODUCER => Ok(()),
        Some(n) => Err(p.error(format_args!(
            "parameters.inFlightLoadProducerName: '{n}' is not the built-in in-flight counter '{IN_FLIGHT_PRODUCER}'"
        ))),
    }
}

impl UtilizationFilter {
    fn passes(&self, cycle: &Cycle<'_>, c: u32) -> bool {
        let ep = cycle.endpoint(c);
        self.conditions.iter().all(|&(metric, max)| {
            let value = match metric {
                Metric::ActiveRequests => f64::from(ep.in_flight()),
                Metric::RunningRequests => f64::from(ep.metrics.running),
                Metric::WaitingQueue => f64::from(ep.metrics.waiting),
                Metric::KvCacheUtilization => ep.metrics.kv_usage,
            };
            value <= max
        })
    }
}

impl Filter for UtilizationFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        if self.fallback_on_empty && !candidates.iter().any(|&c| self.passes(cycle, c)) {
            return Ok(());
        }
        candidates.retain(|&c| self.passes(cycle, c));
        Ok(())
    }
}
