//! prefix-cache-affinity-filter (llm-d): keeps only the "sticky" endpoints, whose prefix-cache
//! score for this request (leading blocks held / request blocks, from the prefix producer) is at
//! least `affinityThreshold`; keeps all when none is. With probability `explorationProbability`
//! it keeps all, to seed caches elsewhere. Its TTFT gate keeps all when the best sticky
//! endpoint's TTFT exceeds the best other one's by more than `maxTTFTPenaltyMs`: TTFT is
//! in-flight tokens / `peakPrefillThroughput` (`prefillThroughput`), or the latency
//! predictor's (`latencyPredictor`). It runs before the scorers, so it matches prefixes itself
//! and leaves the match in the cycle for the plugins after it.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, PrefixProducers};
use crate::scheduling::cycle::{Cycle, PrefixState, ScheduleError};
use crate::scheduling::filters::utilization_filter::check_in_flight_producer;
use crate::scheduling::producers::approx_prefix_cache_producer::ApproxPrefixProducer;
use crate::scheduling::producers::precise_prefix_cache_producer::BlockIndex;

#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
pub enum TtftSource {
    #[serde(rename = "prefillThroughput")]
    PrefillThroughput,
    #[serde(rename = "latencyPredictor")]
    LatencyPredictor,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct AffinityParams {
    affinity_threshold: f64,
    exploration_probability: f64,
    #[serde(rename = "maxTTFTPenaltyMs")]
    max_ttft_penalty_ms: f64,
    ttft_source: TtftSource,
    peak_prefill_throughput: f64,
    prefix_match_info_producer_name: String,
    latency_prediction_info_producer_name: Option<String>,
    in_flight_load_producer_name: Option<String>,
}

/// Upstream's defaults; the throughput is calibrated for Qwen 32B on 2×H100 (TP=2).
impl Default for AffinityParams {
    fn default() -> Self {
        AffinityParams {
            affinity_threshold: 0.80,
            exploration_probability: 0.0,
            max_ttft_penalty_ms: 18_000.0,
            ttft_source: TtftSource::PrefillThroughput,
            peak_prefill_throughput: 15_928.0,
            prefix_match_info_producer_name: String::new(),
            latency_prediction_info_producer_name: None,
            in_flight_load_producer_name: None,
        }
    }
}

enum Source {
    Approx(Arc<ApproxPrefixProducer>),
    Precise(Arc<BlockIndex>),
}

pub struct PrefixCacheAffinityFilter {
    pub affinity_threshold: f64,
    pub exploration_probability: f64,
    pub max_ttft_penalty_ms: f64,
    pub ttft_source: TtftSource,
    pub peak_prefill_throughput: f64,
    producer_name: String,
    source: OnceLock<Source>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: AffinityParams = p.parse()?;
    check_in_flight_producer(p, params.in_flight_load_producer_name.as_deref())?;
    let _ = params.latency_prediction_info_producer_name; // one predictor here, whatever its name
    let fail = |what: String| Err(p.error(what));
    if params.affinity_threshold > 1.0 || params.affinity_threshold.is_nan() {
        return fail(format!(
            "parameters.affinityThreshold: must be <= 1.0, got {}",
            params.affinity_threshold
        ));
    }
    if !(0.0..=1.0).contains(&params.exploration_probability) {
        return fail(format!(
            "parameters.explorationProbability: must be in [0, 1], got {}",
            params.exploration_probability
        ));
    }
    if params.max_ttft_penalty_ms.is_nan() || params.max_ttft_penalty_ms < 0.0 {
        return fail(format!(
            "parameters.maxTTFTPenaltyMs: must be >= 0, got {}",
            params.max_ttft_penalty_ms
        ));
    }
    if params.peak_prefill_throughput.is_nan() || params.peak_prefill_throughput < 0.0 {
        return fail(format!(
            "parameters.peakPrefillThroughput: must be >= 0, got {}",
            params.peak_prefill_throughput
        ));
    }
    if params.ttft_source == TtftSource::PrefillThroughput
        && params.max_ttft_penalty_ms > 0.0
        && params.peak_prefill_throughput == 0.0
    {
        return fail(
            "parameters.peakPrefillThroughput: must be > 0 when ttftSource is prefillThroughput"
                .into(),
        );
    }
    Ok(Plugin::Filter(Arc::new(PrefixCacheAffinityFilter {
        affinity_threshold: params.affinity_threshold,
        exploration_probability: params.exploration_probability,
        max_ttft_penalty_ms: params.max_ttft_penalty_ms,
        ttft_source: params.ttft_source,
        peak_prefill_throughput: params.peak_prefill_throughput,
        producer_name: params.prefix_match_info_producer_name,
        source: OnceLock::new(),
    })))
}

impl PrefixCacheAffinityFilter {
    /// The request's blocks at the producer's size, and the producer's id in the cycle state.
    fn blocks(
        &self,
        source: &Source,
        cycle: &Cycle<'_>,
        candidates: &[u32],
    ) -> (Vec<u64>, usize, usize) {
        match source {
            Source::Precise(p) => (
                p.request_keys(&cycle.request),
                p.block_tokens(),
                Arc::as_ptr(p) as usize,
            ),
            Source::Approx(a) => {
                let block_tokens = a.block_tokens(candidates.first().map(|&c| cycle.endpoint(c)));
                (
                    a.hashes(&cycle.request, block_tokens),
                    block_tokens,
                    Arc::as_ptr(a) as usize,
                )
            }
        }
    }

    /// Match the request's blocks on every candidate: (candidate, blocks held) where any, and
    /// the request's block count. Leaves the match in the cycle for the plugins after this one.
    fn matches(&self, cycle: &Cycle<'_>, candidates: &[u32]) -> (Vec<(u32, usize)>, usize) {
        let Some(source) = self.source.get() else {
            return (Vec::new(), 0);
        };
        let (hashes, block_tokens, producer) = self.blocks(source, cycle, candidates);
        let mut matched = Vec::new();
        if !hashes.is_empty() {
            for &c in candidates {
                let id = cycle.endpoint(c).info.id;
                let n = match source {
                    Source::Precise(p) => p.longest_prefix_match(id, &hashes),
                    Source::Approx(a) => a.longest_prefix_match(id, &hashes),
                };
                if n > 0 {
                    matched.push((c, n));
                }
            }
        }
        let total = hashes.len();
        cycle.state.borrow_mut().prefix = Some(PrefixState {
            producer,
            hashes,
            block_tokens,
            matched: matched.clone(),
        });
        (matched, total)
    }

    /// The endpoint's TTFT in ms as the gate sees it; an endpoint the predictor has nothing
    /// for is never the fastest.
    fn ttft_ms(&self, cycle: &Cycle<'_>, c: u32) -> f64 {
        match self.ttft_source {
            TtftSource::PrefillThroughput => {
                cycle.endpoint(c).in_flight_tokens() as f64 / self.peak_prefill_throughput * 1000.0
            }
            TtftSource::LatencyPredictor => cycle
                .state
                .borrow()
                .latency
                .as_ref()
                .and_then(|l| l.predicted.get(c as usize).copied().flatten())
                .map_or(f64::MAX, |(ttft, _)| ttft),
        }
    }

    fn best_ttft(&self, cycle: &Cycle<'_>, endpoints: impl Iterator<Item = u32>) -> f64 {
        endpoints
            .map(|c| self.ttft_ms(cycle, c))
            .fold(f64::MAX, f64::min)
    }
}

impl Filter for PrefixCacheAffinityFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        if candidates.len() <= 1 || self.affinity_threshold <= 0.0 {
            return Ok(());
        }
        if self.exploration_probability > 0.0 && fastrand::f64() < self.exploration_probability {
            return Ok(());
        }
        let (matched, total) = self.matches(cycle, candidates);
        if total == 0 {
            return Ok(());
        }
        let is_sticky = |c: u32| {
            let n = matched.iter().find(|(m, _)| *m == c).map_or(0, |(_, n)| *n);
            n as f64 / total as f64 >= self.affinity_threshold
        };
        let (sticky, other): (Vec<u32>, Vec<u32>) = candidates.iter().partition(|&&c| is_sticky(c));
        if sticky.is_empty() {
            return Ok(());
        }
        if self.max_ttft_penalty_ms > 0.0 && !other.is_empty() {
            let penalty = self.best_ttft(cycle, sticky.iter().copied())
                - self.best_ttft(cycle, other.iter().copied());
            if penalty > self.max_ttft_penalty_ms {
                return Ok(()); // the sticky endpoints are too loaded: stickiness breaks
            }
        }
        *candidates = sticky;
        Ok(())
    }

    /// Bind to the producer named by `prefixMatchInfoProducerName`; unnamed, to the precise
    /// producer, else the first approximate one (the scheduler adds a default when none).
    fn use_prefix_producers(&self, producers: &PrefixProducers<'_>) -> Result<(), String> {
        let name = self.producer_name.as_str();
        let source = if name.is_empty() {
            match (producers.precise, producers.approx.first()) {
                (Some((_, p)), _) => Source::Precise(p.clone()),
                (None, Some((_, a))) => Source::Approx(a.clone()),
                (None, None) => return Err("no prefix producer to read".into()),
            }
        } else if let Some((_, p)) = producers.precise.filter(|(n, _)| *n == name) {
            Source::Precise(p.clone())
        } else if let Some((_, a)) = producers.approx.iter().find(|(n, _)| n == name) {
            Source::Approx(a.clone())
        } else {
            return Err(format!(
                "parameters.prefixMatchInfoProducerName: no prefix producer named '{name}'"
            ));
        };
        let _ = self.source.set(source);
        Ok(())
    }

    /// The approximate index learns where the request's blocks went (upstream's producer does
    /// this itself in PreRequest; a prefix-cache-scorer on the same producer records the same
    /// blocks again, which only refreshes them).
    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        let Some(Source::Approx(a)) = self.source.get() else {
            return;
        };
        let state = cycle.state.borrow();
        let rehashed;
        let hashes = match state.prefix.as_ref() {
            Some(p) if p.producer == Arc::as_ptr(a) as usize => &p.hashes,
            _ => {
                rehashed = self
                    .blocks(self.source.get().unwrap(), cycle, &picks.primary)
                    .0;
                &rehashed
            }
        };
        if hashes.is_empty() {
            return;
        }
        for &e in picks.primary.first().into_iter().chain(&picks.prefill) {
            a.record(cycle.endpoint(e), hashes);
        }
    }

    fn learns(&self) -> bool {
        true
    }
}
