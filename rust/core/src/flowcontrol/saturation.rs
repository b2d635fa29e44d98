//! Saturation detectors: how full the pool is, 0.0 = idle, ≥ 1.0 = saturated.
//! `utilization-detector` reads the endpoint snapshot's scraped metrics; `concurrency-detector`
//! counts requests this controller dispatched and the caller has not released yet.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::SaturationConfig;
use crate::datalayer::{EndpointStore, Snapshot};

pub enum SaturationDetector {
    Utilization {
        store: Arc<EndpointStore>,
        queue_depth_threshold: f64,
        kv_cache_util_threshold: f64,
        staleness: Duration,
    },
    Concurrency {
        /// Pool size comes from here; without a store the pool counts as one endpoint.
        store: Option<Arc<EndpointStore>>,
        max_concurrency: u64,
    },
}

impl SaturationDetector {
    /// Build from config. The utilization detector needs an endpoint store.
    pub fn from_config(
        config: &SaturationConfig,
        store: Option<Arc<EndpointStore>>,
    ) -> Result<Self, String> {
        Ok(match *config {
            SaturationConfig::Utilization {
                queue_depth_threshold,
                kv_cache_util_threshold,
                metrics_staleness_ms,
            } => {
                if queue_depth_threshold <= 0.0 || kv_cache_util_threshold <= 0.0 {
                    return Err(
                        "utilization-detector: queueDepthThreshold and kvCacheUtilThreshold must be > 0"
                            .into(),
                    );
                }
                SaturationDetector::Utilization {
                    store: store.ok_or(
                        "utilization-detector needs an endpoint pool; use concurrency-detector without one",
                    )?,
                    queue_depth_threshold,
                    kv_cache_util_threshold,
                    staleness: Duration::from_millis(metrics_staleness_ms),
                }
            }
            SaturationConfig::Concurrency { max_concurrency } => SaturationDetector::Concurrency {
                store,
                max_concurrency,
            },
        })
    }

    pub fn saturation(&self, now: Instant, in_flight: u64) -> f64 {
        match self {
            SaturationDetector::Utilization {
                store,
                queue_depth_threshold,
                kv_cache_util_threshold,
                staleness,
            } => utilization(
                &store.snapshot(),
                now,
                *staleness,
                *queue_depth_threshold,
                *kv_cache_util_threshold,
            ),
            SaturationDetector::Concurrency {
                store,
                max_concurrency,
            } => {
                let endpoints = store.as_ref().map_or(1, |s| s.snapshot().endpoints.len());
                if endpoints == 0 {
                    return 1.0;
                }
                in_flight as f64 / (*max_concurrency as f64 * endpoints as f64)
            }
        }
    }

    /// Whether the saturation can change without this controller doing anything (new metrics
    /// arrive on their own): the dispatcher then polls while blocked.
    pub fn changes_on_its_own(&self) -> bool {
        matches!(self, SaturationDetector::Utilization { .. })
    }
}

/// Mean over endpoints of max(waiting/queueDepth, kv/kvUtil); stale or unscraped = 1.0; empty = 1.0.
pub fn utilization(
    snapshot: &Snapshot,
    now: Instant,
    staleness: Duration,
    queue_depth_threshold: f64,
    kv_cache_util_threshold: f64,
) -> f64 {
    if snapshot.endpoints.is_empty() {
        return 1.0;
    }
    let total: f64 = snapshot
        .endpoints
        .iter()
        .map(|ep| {
            if !ep.is_fresh(now, staleness) {
                return 1.0;
            }
            let q = ep.metrics.waiting as f64 / queue_depth_threshold;
            let kv = ep.metrics.kv_usage / kv_cache_util_threshold;
            q.max(kv)
        })
        .sum();
    total / snapshot.endpoints.len() as f64
}
