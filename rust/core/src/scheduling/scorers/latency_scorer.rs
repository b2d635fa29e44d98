//! latency-scorer (llm-d): scores endpoints by predicted headroom to the request's SLOs
//! (predicted-latency-producer). When some endpoints meet both SLOs only they score; when none
//! does, idle endpoints absorb the request first, then the least severe violation (only TPOT,
//! then only TTFT, then both). Within the scored set TTFT and TPOT headroom are min-max
//! normalised and blended by `ttftWeight`/`tpotWeight`; `least` prefers the endpoint closest to
//! the SLO (packing), `most` the one with most room. Without predictions it falls back to a blend
//! of free KV cache, short queue and prefix-cache hits.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::{Cycle, LatencyState};

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct LatencyParams {
    ttft_weight: f64,
    tpot_weight: f64,
    headroom_selection_strategy: String,
    #[serde(rename = "compositeKVWeight")]
    composite_kv_weight: f64,
    composite_queue_weight: f64,
    composite_prefix_weight: f64,
}

impl Default for LatencyParams {
    fn default() -> Self {
        LatencyParams {
            ttft_weight: 0.8,
            tpot_weight: 0.2,
            headroom_selection_strategy: "least".into(),
            composite_kv_weight: 1.0,
            composite_queue_weight: 1.0,
            composite_prefix_weight: 1.0,
        }
    }
}

pub struct LatencyScorer {
    ttft_weight: f64,
    tpot_weight: f64,
    most: bool,
    composite: [f64; 3],
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: LatencyParams = p.parse()?;
    for (key, v) in [
        ("ttftWeight", params.ttft_weight),
        ("tpotWeight", params.tpot_weight),
        ("compositeKVWeight", params.composite_kv_weight),
        ("compositeQueueWeight", params.composite_queue_weight),
        ("compositePrefixWeight", params.composite_prefix_weight),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            return Err(p.error(format_args!("parameters.{key}: must be >= 0, got {v}")));
        }
    }
    let most = match params.headroom_selection_strategy.as_str() {
        "least" => false,
        "most" => true,
        other => {
            return Err(p.error(format_args!(
                "parameters.headroomSelectionStrategy: '{other}' is not 'least' or 'most'"
            )))
        }
    };
    Ok(Plugin::Scorer(Arc::new(LatencyScorer {
        ttft_weight: params.ttft_weight,
        tpot_weight: params.tpot_weight,
        most,
        composite: [
            params.composite_kv_weight,
            params.composite_queue_weight,
            params.composite_prefix_weight,
        ],
    })))
}

/// Which SLOs a prediction violates, best first.
fn bucket((ttft, tpot): (f64, f64)) -> u8 {
    match (ttft >= 0.0, tpot >= 0.0) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (false, false) => 3,
    }
}

/// Min-max position of `v` in `[min, max]`; None when the range is empty.
fn position(v: f64, min: f64, max: f64) -> Option<f64> {
    (max > min).then(|| (v - min) / (max - min))
}

impl LatencyScorer {
    fn with_predictions(
        &self,
        cycle: &Cycle<'_>,
        l: &LatencyState,
        candidates: &[u32],
        out: &mut [f64],
    ) {
        let heads: Vec<Option<(f64, f64)>> = candidates.iter().map(|&c| l.headroom(c)).collect();
        let best = heads.iter().flatten().map(|&h| bucket(h)).min();
        let Some(best) = best else {
            return self.fallback(cycle, candidates, out);
        };
        let any_idle = best > 0
            && candidates
                .iter()
                .zip(&heads)
                .any(|(&c, h)| h.is_some() && cycle.endpoint(c).in_flight() == 0);
        let scored = |i: usize| -> Option<(f64, f64)> {
            let h = heads[i]?;
            let idle_ok = !any_idle || cycle.endpoint(candidates[i]).in_flight() == 0;
            (idle_ok && (any_idle || bucket(h) == best) && (best > 0 || bucket(h) == 0))
                .then_some(h)
        };
        let set: Vec<(f64, f64)> = (0..candidates.len()).filter_map(scored).collect();
        let range = |f: fn(&(f64, f64)) -> f64| {
            set.iter()
                .map(f)
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                })
        };
        let (t_lo, t_hi) = range(|h| h.0);
        let (p_lo, p_hi) = range(|h| h.1);
        // Positive headroom with `most`: more room is better; otherwise nearer the SLO is.
        let prefer_more = self.most && best == 0;
        let norm = |v: f64, lo: f64, hi: f64| {
            position(v, lo, hi).map(|x| if prefer_more || best > 0 { x } else { 1.0 - x })
        };
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = match scored(i) {
                None => 0.0,
                Some((t, p)) => {
                    let parts = [
                        (norm(t, t_lo, t_hi), self.ttft_weight),
                        (norm(p, p_lo, p_hi), self.tpot_weight),
                    ];
                    let weight: f64 = parts
                        .iter()
                        .filter(|(n, _)| n.is_some())
                        .map(|(_, w)| w)
                        .sum();
                    if weight == 0.0 {
                        1.0
                    } else {
                        parts
                            .iter()
                            .filter_map(|(n, w)| n.map(|n| n * w))
                            .sum::<f64>()
                            / weight
                    }
                }
            };
        }
    }

    /// No predictions: free KV cache, a short queue and prefix-cache hits, blended.
    fn fallback(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let max_queue = candidates
            .iter()
            .map(|&c| cycle.endpoint(c).metrics.waiting)
            .max()
            .unwrap_or(0);
        let state = cycle.state.borrow();
        let total: f64 = self.composite.iter().sum();
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let m = &cycle.endpoint(c).metrics;
            let queue = if max_queue == 0 {
                1.0
            } else {
                1.0 - f64::from(m.waiting) / f64::from(max_queue)
            };
            let prefix = state.prefix.as_ref().map_or(0.0, |p| {
                if p.hashes.is_empty() {
                    0.0
                } else {
                    p.matched_blocks(c) as f64 / p.hashes.len() as f64
                }
            });
            let parts = [1.0 - m.kv_usage, queue, prefix];
            *slot = if total == 0.0 {
                0.0
            } else {
                parts
                    .iter()
                    .zip(&self.composite)
                    .map(|(v, w)| v * w)
                    .sum::<f64>()
                    / total
            };
        }
    }
}

impl Scorer for LatencyScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let state = cycle.state.borrow();
        match &state.latency {
            Some(l) => {
                // The fallback borrows the state again; predictions are read under this borrow.
                let l = LatencyState {
                    predicted: l.predicted.clone(),
                    ttft_slo: l.ttft_slo,
                    tpot_slo: l.tpot_slo,
                };
                drop(state);
                self.with_predictions(cycle, &l, candidates, out);
            }
            None => {
                drop(state);
                self.fallback(cycle, candidates, out);
            }
        }
    }
}
