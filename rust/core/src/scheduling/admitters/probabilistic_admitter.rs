//! probabilistic-admitter (llm-d): sheds sheddable requests (priority < 0) with probability
//! `min(saturation^power · k, 1)`, where saturation is the mean over the candidates of
//! `max(waiting / queueDepthThreshold, kv / kvCacheUtilThreshold)` (an endpoint never scraped
//! counts 1.0). Priority ≥ 0, or no candidates: always admitted.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;

use super::sheddable;
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::admitter::Admitter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::Cycle;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ProbabilisticParams {
    queue_depth_threshold: i64,
    kv_cache_util_threshold: f64,
    power: f64,
    k: f64,
}

impl Default for ProbabilisticParams {
    fn default() -> Self {
        ProbabilisticParams {
            queue_depth_threshold: 5,
            kv_cache_util_threshold: 0.8,
            power: 5.0,
            k: 300.0,
        }
    }
}

pub struct ProbabilisticAdmitter {
    queue_depth_threshold: f64,
    kv_cache_util_threshold: f64,
    power: f64,
    k: f64,
    /// Seeded generator (tests); None draws from the thread's own generator.
    rng: Option<Mutex<fastrand::Rng>>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ProbabilisticParams = p.parse()?;
    let positive = [
        ("queueDepthThreshold", params.queue_depth_threshold as f64),
        ("kvCacheUtilThreshold", params.kv_cache_util_threshold),
        ("power", params.power),
        ("k", params.k),
    ];
    if let Some((key, v)) = positive.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
        return Err(p.error(format_args!("parameters.{key}: must be > 0, got {v}")));
    }
    Ok(Plugin::Admitter(Arc::new(ProbabilisticAdmitter {
        queue_depth_threshold: params.queue_depth_threshold as f64,
        kv_cache_util_threshold: params.kv_cache_util_threshold,
        power: params.power,
        k: params.k,
        rng: None,
    })))
}

impl ProbabilisticAdmitter {
    /// Upstream's defaults with a seeded generator, for reproducible rates.
    #[cfg(test)]
    pub fn seeded(seed: u64) -> ProbabilisticAdmitter {
        let d = ProbabilisticParams::default();
        ProbabilisticAdmitter {
            queue_depth_threshold: d.queue_depth_threshold as f64,
            kv_cache_util_threshold: d.kv_cache_util_threshold,
            power: d.power,
            k: d.k,
            rng: Some(Mutex::new(fastrand::Rng::with_seed(seed))),
        }
    }

    /// Mean over `candidates` of the roofline score.
    pub fn saturation(&self, cycle: &Cycle<'_>, candidates: &[u32]) -> f64 {
        let total: f64 = candidates
            .iter()
            .map(|&c| {
                let ep = cycle.endpoint(c);
                if ep.scraped_at.is_none() {
                    return 1.0;
                }
                let q = f64::from(ep.metrics.waiting) / self.queue_depth_threshold;
                let kv = ep.metrics.kv_usage / self.kv_cache_util_threshold;
                q.max(kv)
            })
            .sum();
        total / candidates.len() as f64
    }

    /// The shedding probability at `saturation`.
    pub fn probability(&self, saturation: f64) -> f64 {
        (saturation.powf(self.power) * self.k).min(1.0)
    }

    fn draw(&self) -> f64 {
        match &self.rng {
            Some(rng) => rng.lock().f64(),
            None => fastrand::f64(),
        }
    }
}

impl Admitter for ProbabilisticAdmitter {
    fn admit(&self, cycle: &Cycle<'_>, candidates: &[u32]) -> Result<(), String> {
        if !sheddable(cycle.request.priority) || candidates.is_empty() {
            return Ok(());
        }
        let saturation = self.saturation(cycle, candidates);
        let p = self.probability(saturation);
        if self.draw() < p {
            return Err(format!(
                "probabilistic-admitter: rejected, saturation={saturation:.3} prob={p:.2}"
            ));
        }
        Ok(())
    }
}
