//! The scorer contract: each scorer rates every candidate in [0, 1]; the profile weighs and
//! sums them. Scorers are built by their upstream type name.

use super::active_request_scorer::ActiveRequestScorer;
use super::cycle::Cycle;
use super::kv_cache_utilization_scorer::KvCacheUtilizationScorer;
use super::queue_scorer::QueueScorer;

pub trait Scorer: Send + Sync {
    /// Write one score in [0, 1] per candidate into `out` (same length and order).
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]);
}

pub const SCORER_NAMES: [&str; 3] = [
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "active-request-scorer",
];

pub fn build(name: &str) -> Option<Box<dyn Scorer>> {
    match name {
        "queue-scorer" => Some(Box::new(QueueScorer)),
        "kv-cache-utilization-scorer" => Some(Box::new(KvCacheUtilizationScorer)),
        "active-request-scorer" => Some(Box::new(ActiveRequestScorer)),
        _ => None,
    }
}

/// Min-max normalisation where less is better: the smallest value scores 1, the largest 0,
/// and all-equal values score 1. Candidates for which `value` is None score 0 and do not
/// take part in the range (stale endpoints count as saturated).
pub fn score_lower_is_better(
    candidates: &[u32],
    out: &mut [f64],
    value: impl Fn(u32) -> Option<f64>,
) {
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &c in candidates {
        if let Some(v) = value(c) {
            min = min.min(v);
            max = max.max(v);
        }
    }
    let range = max - min;
    for (slot, &c) in out.iter_mut().zip(candidates) {
        *slot = match value(c) {
            None => 0.0,
            Some(_) if range <= 0.0 => 1.0,
            Some(v) => (max - v) / range,
        };
    }
}
