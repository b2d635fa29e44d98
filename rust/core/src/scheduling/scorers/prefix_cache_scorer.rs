//! prefix-cache-scorer: hashes the prompt in chained blocks and scores each endpoint by the share
//! of leading blocks it holds. Approximate by default: the blocks the EPP has routed there before
//! (an LRU per endpoint, sized from the endpoint's KV cache when it reports one), learnt after
//! each pick. Precise when a precise-prefix-cache-producer is configured: the blocks the
//! endpoint's own KV events say it holds, at the engine's block size.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use crate::datalayer::Endpoint;
use crate::prefix::{block_hashes, PrefixIndex};
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, Scorer};
use crate::scheduling::cycle::{Cycle, PrefixState};
use crate::scheduling::producers::precise_prefix_cache_producer::BlockIndex;

/// Without a tokenizer a token is taken to be about four bytes of prompt text.
pub const BYTES_PER_TOKEN: usize = 4;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct PrefixParams {
    /// Block size in tokens.
    #[serde(alias = "blockSizeTokens", alias = "hashBlockSize")]
    block_size: usize,
    max_prefix_blocks_to_match: usize,
    lru_capacity_per_server: usize,
    /// Size each endpoint's LRU from its KV-cache geometry when it reports one.
    auto_tune: bool,
    /// Upstream's blend of the matched share and the matched length:
    /// score = w·min(1, matched tokens / matchLengthScaleTokens)² + (1 − w)·matched share.
    match_length_weight: f64,
    match_length_scale_tokens: usize,
    /// Upstream names the producer whose match info to read; here the precise producer, when
    /// configured, is read whatever the name.
    #[allow(dead_code)]
    prefix_match_info_producer_name: String,
}

impl Default for PrefixParams {
    fn default() -> Self {
        PrefixParams {
            block_size: 64,
            max_prefix_blocks_to_match: 256,
            lru_capacity_per_server: 31250,
            auto_tune: true,
            match_length_weight: 0.0,
            match_length_scale_tokens: 8192,
            prefix_match_info_producer_name: String::new(),
        }
    }
}

pub struct PrefixCacheScorer {
    block_tokens: usize,
    max_blocks: usize,
    default_capacity: usize,
    auto_tune: bool,
    match_length_weight: f64,
    match_length_scale_tokens: usize,
    index: PrefixIndex,
    precise: OnceLock<Arc<BlockIndex>>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: PrefixParams = p.parse()?;
    for (field, value) in [
        ("blockSize", params.block_size),
        ("maxPrefixBlocksToMatch", params.max_prefix_blocks_to_match),
        ("lruCapacityPerServer", params.lru_capacity_per_server),
    ] {
        if value == 0 {
            return Err(p.error(format_args!("parameters.{field}: must be >= 1")));
        }
    }
    if !(0.0..=1.0).contains(&params.match_length_weight) {
        return Err(p.error(format_args!(
            "parameters.matchLengthWeight: must be in [0, 1], got {}",
            params.match_length_weight
        )));
    }
    if params.match_length_scale_tokens == 0 {
        return Err(p.error("parameters.matchLengthScaleTokens: must be >= 1"));
    }
    let mut scorer = PrefixCacheScorer::new(
        params.block_size,
        params.max_prefix_blocks_to_match,
        params.lru_capacity_per_server,
        params.auto_tune,
    );
    scorer.match_length_weight = params.match_length_weight;
    scorer.match_length_scale_tokens = params.match_length_scale_tokens;
    Ok(Plugin::Scorer(Arc::new(scorer)))
}

impl PrefixCacheScorer {
    pub fn new(block_tokens: usize, max_blocks: usize, capacity: usize, auto_tune: bool) -> Self {
        PrefixCacheScorer {
            block_tokens,
            max_blocks,
            default_capacity: capacity,
            auto_tune,
            match_length_weight: 0.0,
            match_length_scale_tokens: 8192,
            index: PrefixIndex::new(capacity),
            precise: OnceLock::new(),
        }
    }

    /// LRU bound in our blocks: the endpoint's KV cache converted from its block size.
    fn capacity(&self, ep: &Endpoint) -> usize {
        let m = &ep.metrics;
        if self.auto_tune && m.num_gpu_blocks > 0 && m.block_size > 0 {
            let tokens = m.num_gpu_blocks.saturating_mul(u64::from(m.block_size));
            ((tokens / self.block_tokens as u64) as usize).max(1)
        } else {
            self.default_capacity
        }
    }
}

impl PrefixCacheScorer {
    fn blend(&self, matched: usize, total: f64, block_tokens: usize) -> f64 {
        let ratio = matched as f64 / total;
        let w = self.match_length_weight;
        if w == 0.0 {
            return ratio;
        }
        let length =
            ((matched * block_tokens) as f64 / self.match_length_scale_tokens as f64).min(1.0);
        w * length * length + (1.0 - w) * ratio
    }

    /// The request's blocks at the index's size: the precise index's keys, or the byte-scheme
    /// hashes of the approximate one; capped at `maxPrefixBlocksToMatch` worth of tokens.
    fn blocks(&self, cycle: &Cycle<'_>) -> (Vec<u64>, usize) {
        let r = &cycle.request;
        let (mut hashes, block_tokens) = match self.precise.get() {
            Some(p) => (p.request_keys(r), p.block_tokens()),
            None => (
                block_hashes(
                    r.model,
                    r.cache_salt,
                    r.prompt,
                    self.block_tokens * BYTES_PER_TOKEN,
                ),
                self.block_tokens,
            ),
        };
        hashes.truncate((self.max_blocks * self.block_tokens / block_tokens).max(1));
        (hashes, block_tokens)
    }
}

impl Scorer for PrefixCacheScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let precise = self.precise.get();
        let (hashes, block_tokens) = self.blocks(cycle);
        let mut matched = Vec::new();
        if hashes.is_empty() {
            out.fill(0.0);
        } else {
            let total = hashes.len() as f64;
            let mut best = 0;
            for (slot, &c) in out.iter_mut().zip(candidates) {
                let id = cycle.endpoint(c).info.id;
                let n = match precise {
                    Some(p) => p.longest_prefix_match(id, &hashes),
                    None => self.index.longest_prefix_match(id, &hashes),
                };
                if n > 0 {
                    matched.push((c, n));
                }
                best = best.max(n);
                *slot = self.blend(n, total, block_tokens);
            }
            if let Some(p) = precise {
                p.record_lookup(hashes.len(), best);
            }
        }
        cycle.state.borrow_mut().prefix = Some(PrefixState {
            hashes,
            block_tokens,
            matched,
        });
    }

    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        let state = cycle.state.borrow();
        let Some(prefix) = state.prefix.as_ref().filter(|p| !p.hashes.is_empty()) else {
            return;
        };
        // The model server caches the prompt where it runs: the primary, and the prefill
        // endpoint when disaggregated.
        for &e in picks.primary.first().into_iter().chain(&picks.prefill) {
            let ep = cycle.endpoint(e);
            match self.precise.get() {
                // The endpoints' own events keep the precise index; a prediction bridges the
                // time until they arrive (speculativeIndexing).
                Some(p) => p.speculate(ep.info.id, &prefix.hashes),
                None => self
                    .index
                    .insert(ep.info.id, &prefix.hashes, Some(self.capacity(ep))),
            }
        }
    }

    fn endpoint_removed(&self, id: u64) {
        self.index.remove_endpoint(id);
    }

    fn use_block_index(&self, index: &Arc<BlockIndex>) {
        let _ = self.precise.set(index.clone());
    }
}
