//! The saturation detectors' scheduling role (upstream's detectors are filters too): named in a
//! profile, `utilization-detector` and `concurrency-detector` drop endpoints past their ideal
//! capacity widened by `headroom` (capacity · (1 + headroom)), so scorers may burst above the
//! level flow control targets, but not without bound. Their flow-control role (pool saturation)
//! is configured from the same plugin by the flowControl section.
//!
//! - utilization: keeps fresh endpoints with waiting < queueDepthThreshold·(1+h) and KV usage <
//!   kvCacheUtilThreshold·(1+h); when none is left it keeps them all (upstream's fail-open).
//! - concurrency (requests mode): keeps endpoints with fewer in-flight requests (this EPP's
//!   count, the inflight-load-producer's) than ⌊maxConcurrency·(1+h)⌋; no fail-open.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::producers::precise_prefix_params::parse_duration;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct UtilizationParams {
    queue_depth_threshold: i64,
    kv_cache_util_threshold: f64,
    metrics_staleness_threshold: String,
    headroom: f64,
}

impl Default for UtilizationParams {
    fn default() -> Self {
        UtilizationParams {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            metrics_staleness_threshold: "200ms".into(),
            headroom: 0.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ConcurrencyParams {
    max_concurrency: i64,
    max_token_concurrency: i64,
    concurrency_mode: String,
    headroom: f64,
    in_flight_load_producer_name: String,
}

impl Default for ConcurrencyParams {
    fn default() -> Self {
        ConcurrencyParams {
            max_concurrency: 100,
            max_token_concurrency: 1_000_000,
            concurrency_mode: "requests".into(),
            headroom: 0.0,
            in_flight_load_producer_name: String::new(),
        }
    }
}

fn headroom(p: &Params<'_>, h: f64) -> Result<f64, ConfigError> {
    if h.is_finite() && h >= 0.0 {
        Ok(h)
    } else {
        Err(p.error(format_args!("parameters.headroom: must be >= 0, got {h}")))
    }
}

pub struct UtilizationFilter {
    max_waiting: f64,
    max_kv: f64,
    staleness: Duration,
}

pub fn utilization_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: UtilizationParams = p.parse()?;
    let h = headroom(p, params.headroom)?;
    if params.queue_depth_threshold <= 0 {
        return Err(p.error(format_args!(
            "parameters.queueDepthThreshold: must be > 0, got {}",
            params.queue_depth_threshold
        )));
    }
    let kv = params.kv_cache_util_threshold;
    if !(kv > 0.0 && kv <= 1.0) {
        return Err(p.error(format_args!(
            "parameters.kvCacheUtilThreshold: must be in (0.0, 1.0], got {kv}"
        )));
    }
    let staleness = parse_duration(&params.metrics_staleness_threshold)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            p.error(format_args!(
                "parameters.metricsStalenessThreshold: '{}' is not a positive duration like '200ms'",
                params.metrics_staleness_threshold
            ))
        })?;
    Ok(Plugin::Filter(Arc::new(UtilizationFilter {
        max_waiting: params.queue_depth_threshold as f64 * (1.0 + h),
        max_kv: kv * (1.0 + h),
        staleness,
    })))
}

impl Filter for UtilizationFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let kept = candidates.iter().copied().filter(|&c| {
            let ep = cycle.endpoint(c);
            ep.is_fresh(cycle.now, self.staleness)
                && f64::from(ep.metrics.waiting) < self.max_waiting
                && ep.metrics.kv_usage < self.max_kv
        });
        let kept: Vec<u32> = kept.collect();
        if !kept.is_empty() {
            *candidates = kept;
        }
        Ok(())
    }
}

pub struct ConcurrencyFilter {
    limit: u32,
}

pub fn concurrency_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ConcurrencyParams = p.parse()?;
    let h = headroom(p, params.headroom)?;
    for (key, v) in [
        ("maxConcurrency", params.max_concurrency),
        ("maxTokenConcurrency", params.max_token_concurrency),
    ] {
        if v <= 0 {
            return Err(p.error(format_args!("parameters.{key}: must be > 0, got {v}")));
        }
    }
    match params.concurrency_mode.as_str() {
        "requests" => {}
        "tokens" | "hybrid" => {
            return Err(p.error(format_args!(
                "parameters.concurrencyMode: '{}' is not supported yet: in-flight tokens are not counted per endpoint here (use 'requests')",
                params.concurrency_mode
            )))
        }
        other => {
            return Err(p.error(format_args!(
                "parameters.concurrencyMode: '{other}' must be 'requests', 'tokens' or 'hybrid'"
            )))
        }
    }
    let _ = params.in_flight_load_producer_name; // one in-flight counter here, whatever its name
    let limit = (params.max_concurrency as f64 * (1.0 + h)).floor();
    Ok(Plugin::Filter(Arc::new(ConcurrencyFilter {
        limit: limit.min(f64::from(u32::MAX)) as u32,
    })))
}

impl Filter for ConcurrencyFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        candidates.retain(|&c| cycle.endpoint(c).in_flight() < self.limit);
        Ok(())
    }
}
