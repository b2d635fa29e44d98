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
}

impl Default for PrefixParams {
    fn default() -> Self {
        PrefixParams {
            block_size: 64,
            max_prefix_blocks_to_match: 256,
            lru_capacity_per_server: 31250,
            auto_tune: true,
        }
    }
}

pub struct PrefixCacheScorer {
    block_tokens: usize,
    max_blocks: usize,
    default_capacity: usize,
    auto_tune: bool,
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
    Ok(Plugin::Scorer(Arc::new(PrefixCacheScorer::new(
        params.block_size,
        params.max_prefix_blocks_to_match,
        params.lru_capacity_per_server,
        params.auto_tune,
    ))))
}

impl PrefixCacheScorer {
    pub fn new(block_tokens: usize, max_blocks: usize, capacity: usize, auto_tune: bool) -> Self {
        PrefixCacheScorer {
            block_tokens,
            max_blocks,
            default_capacity: capacity,
            auto_tune,
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

impl Scorer for PrefixCacheScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let r = &cycle.request;
        let precise = self.precise.get();
        let block_tokens = precise.map_or(self.block_tokens, |p| p.block_tokens());
        let mut hashes = block_hashes(
            r.model,
            r.cache_salt,
            r.prompt,
            block_tokens * BYTES_PER_TOKEN,
        );
        // The cap is in this scorer's blocks: keep the same number of tokens at the index's size.
        hashes.truncate((self.max_blocks * self.block_tokens / block_tokens).max(1));
        let mut matched = Vec::new();
        if hashes.is_empty() {
            out.fill(0.0);
        } else {
            let total = hashes.len() as f64;
            for (slot, &c) in out.iter_mut().zip(candidates) {
                let id = cycle.endpoint(c).info.id;
                let n = match precise {
                    Some(p) => p.longest_prefix_match(id, &hashes),
                    None => self.index.longest_prefix_match(id, &hashes),
                };
                if n > 0 {
                    matched.push((c, n));
                }
                *slot = n as f64 / total;
            }
        }
        cycle.state.borrow_mut().prefix = Some(PrefixState {
            hashes,
            block_tokens,
            matched,
        });
    }

    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        if self.precise.get().is_some() {
            return; // the endpoints' own events keep the precise index
        }
        let state = cycle.state.borrow();
        let Some(prefix) = state.prefix.as_ref().filter(|p| !p.hashes.is_empty()) else {
            return;
        };
        // The model server caches the prompt where it runs: the primary, and the prefill
        // endpoint when disaggregated.
        for &e in picks.primary.first().into_iter().chain(&picks.prefill) {
            let ep = cycle.endpoint(e);
            self.index
                .insert(ep.info.id, &prefix.hashes, Some(self.capacity(ep)));
        }
    }

    fn endpoint_removed(&self, id: u64) {
        self.index.remove_endpoint(id);
    }

    fn use_block_index(&self, index: &Arc<BlockIndex>) {
        let _ = self.precise.set(index.clone());
    }
}
