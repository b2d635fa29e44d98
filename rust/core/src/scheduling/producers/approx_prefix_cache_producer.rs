//! approx-prefix-cache-producer: upstream's approximate prefix index. The prompt is cut into
//! blocks of `blockSizeTokens` estimated tokens (4 bytes each, upstream's tokenizer-free
//! `estimate` backend), chain-hashed with a trailing partial block; an LRU per endpoint
//! remembers the blocks of the requests routed there, and a lookup counts the leading blocks
//! each endpoint holds. `prefix-cache-scorer` reads it (by `prefixMatchInfoProducerName`, or
//! the one configured; without one it keeps its own with these defaults).

use std::sync::Arc;

use serde::Deserialize;

use crate::datalayer::Endpoint;
use crate::prefix::{prompt_block_hashes, PrefixIndex};
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::Request;

/// Without a tokenizer a token is taken to be about four bytes of prompt text (upstream's
/// `averageCharactersPerToken`).
pub const BYTES_PER_TOKEN: usize = 4;

/// Upstream clamps smaller block sizes up to this (one LRU entry per block and endpoint; see
/// llm-d-router#1158), wherever the size came from.
pub const MIN_BLOCK_TOKENS: usize = 64;

/// Upstream's defaults: vLLM's 16-token blocks (so 64 after the clamp), 128K tokens matched
/// at most, 31,250 blocks per endpoint (a Llama-3-8B's KV cache on an H100).
#[derive(Deserialize, Clone)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ApproxParams {
    /// Take the block size and the LRU capacity from the endpoints' reported KV-cache geometry.
    pub auto_tune: bool,
    #[serde(alias = "hashBlockSize")]
    pub block_size_tokens: usize,
    /// Deprecated upstream: mapped to `blockSizeTokens` when that is left at its default.
    pub block_size: usize,
    /// Used when `maxPrefixTokensToMatch` is 0; both 0 = the whole prompt.
    pub max_prefix_blocks_to_match: usize,
    pub max_prefix_tokens_to_match: usize,
    pub lru_capacity_per_server: usize,
}

impl Default for ApproxParams {
    fn default() -> Self {
        ApproxParams {
            auto_tune: true,
            block_size_tokens: 16,
            block_size: 0,
            max_prefix_blocks_to_match: 2048,
            max_prefix_tokens_to_match: 131_072,
            lru_capacity_per_server: 31_250,
        }
    }
}

pub struct ApproxPrefixProducer {
    block_tokens: usize,
    auto_tune: bool,
    max_blocks: usize,
    max_tokens: usize,
    capacity: usize,
    index: PrefixIndex,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ApproxParams = p.parse()?;
    let producer = ApproxPrefixProducer::new(params).map_err(|e| p.error(e))?;
    Ok(Plugin::ApproxProducer(Arc::new(producer)))
}

impl ApproxPrefixProducer {
    pub fn new(mut params: ApproxParams) -> Result<Self, String> {
        if params.block_size > 0
            && params.block_size_tokens == ApproxParams::default().block_size_tokens
        {
            params.block_size_tokens = params.block_size;
        }
        if params.block_size_tokens == 0 {
            return Err("parameters.blockSizeTokens: must be >= 1".into());
        }
        if params.lru_capacity_per_server == 0 {
            return Err("parameters.lruCapacityPerServer: must be >= 1".into());
        }
        Ok(ApproxPrefixProducer {
            block_tokens: params.block_size_tokens,
            auto_tune: params.auto_tune,
            max_blocks: params.max_prefix_blocks_to_match,
            max_tokens: params.max_prefix_tokens_to_match,
            capacity: params.lru_capacity_per_server,
            index: PrefixIndex::new(params.lru_capacity_per_server),
        })
    }

    /// Tokens per block: the first candidate's engine block size when auto-tuned and reported,
    /// else the configured one; never below `MIN_BLOCK_TOKENS`.
    pub fn block_tokens(&self, first: Option<&Endpoint>) -> usize {
        let reported = first
            .filter(|_| self.auto_tune)
            .map_or(0, |ep| ep.metrics.block_size as usize);
        let size = if reported > 0 {
            reported
        } else {
            self.block_tokens
        };
        size.max(MIN_BLOCK_TOKENS)
    }

    /// Blocks matched at most: the token cap at this block size when set, else the block cap,
    /// both 0 = unlimited.
    fn max_blocks(&self, block_tokens: usize) -> usize {
        match (self.max_tokens, self.max_blocks) {
            (0, 0) => usize::MAX,
            (0, blocks) => blocks,
            (tokens, _) => tokens / block_tokens,
        }
    }

    /// The request's chained block hashes at `block_tokens` estimated tokens per block.
    pub fn hashes(&self, r: &Request<'_>, block_tokens: usize) -> Vec<u64> {
        prompt_block_hashes(
            r.model,
            r.cache_salt,
            r.prompt,
            block_tokens * BYTES_PER_TOKEN,
            self.max_blocks(block_tokens),
        )
    }

    pub fn longest_prefix_match(&self, endpoint: u64, hashes: &[u64]) -> usize {
        self.index.longest_prefix_match(endpoint, hashes)
    }

    /// The request's blocks were routed to `ep` (upstream's PreRequest). The LRU holds the
    /// endpoint's KV-cache size in blocks when auto-tuned and reported, as upstream counts it
    /// (entries of this index's blocks, not converted from the engine's block size).
    pub fn record(&self, ep: &Endpoint, hashes: &[u64]) {
        let reported = ep.metrics.num_gpu_blocks as usize;
        let capacity = if self.auto_tune && reported > 0 {
            reported
        } else {
            self.capacity
        };
        self.index.insert(ep.info.id, hashes, Some(capacity));
    }

    pub fn remove_endpoint(&self, id: u64) {
        self.index.remove_endpoint(id);
    }

    /// Blocks recorded for the endpoint with this id.
    pub fn len(&self, id: u64) -> usize {
        self.index.len(id)
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datalayer::MetricsUpdate;
    use crate::scheduling::test_pool::{pool, Ep};

    fn producer(json: serde_json::Value) -> Result<ApproxPrefixProducer, String> {
        ApproxPrefixProducer::new(serde_json::from_value(json).map_err(|e| e.to_string())?)
    }

    fn geometry(block_size: u32, num_gpu_blocks: u64) -> Ep {
        Ep::with(MetricsUpdate {
            block_size: Some(block_size),
            num_gpu_blocks: Some(num_gpu_blocks),
            ..Default::default()
        })
    }

    fn endpoint(block_size: u32, num_gpu_blocks: u64) -> Endpoint {
        let (_store, snap) = pool(vec![geometry(block_size, num_gpu_blocks)]);
        (*snap.endpoints[0]).clone()
    }

    #[test]
    fn block_size_is_clamped_to_64_wherever_it_comes_from() {
        let p = producer(serde_json::json!({})).unwrap();
        assert_eq!(p.block_tokens(None), 64);
        assert_eq!(p.block_tokens(Some(&endpoint(16, 0))), 64);
        assert_eq!(p.block_tokens(Some(&endpoint(128, 0))), 128);
        let fixed =
            producer(serde_json::json!({"autoTune": false, "blockSizeTokens": 96})).unwrap();
        assert_eq!(fixed.block_tokens(Some(&endpoint(128, 0))), 96);
    }

    #[test]
    fn deprecated_block_size_maps_to_block_size_tokens() {
        let p = producer(serde_json::json!({"autoTune": false, "blockSize": 80})).unwrap();
        assert_eq!(p.block_tokens(None), 80);
    }

    #[test]
    fn token_cap_wins_over_block_cap_and_both_zero_is_unlimited() {
        let prompt = vec![b'a'; 64 * 4 * 10];
        let r = Request {
            prompt: &prompt,
            ..Request::default()
        };
        let capped = producer(serde_json::json!({"maxPrefixTokensToMatch": 256})).unwrap();
        assert_eq!(capped.hashes(&r, 64).len(), 4);
        let blocks =
            producer(serde_json::json!({"maxPrefixTokensToMatch": 0, "maxPrefixBlocksToMatch": 3}))
                .unwrap();
        assert_eq!(blocks.hashes(&r, 64).len(), 3);
        let all =
            producer(serde_json::json!({"maxPrefixTokensToMatch": 0, "maxPrefixBlocksToMatch": 0}))
                .unwrap();
        assert_eq!(all.hashes(&r, 64).len(), 10);
    }

    #[test]
    fn lru_holds_the_reported_block_count_unconverted() {
        let p = producer(serde_json::json!({"lruCapacityPerServer": 2})).unwrap();
        let hashes: Vec<u64> = (0..10).collect();
        let (_store, snap) = pool(vec![geometry(16, 5), geometry(16, 0)]);
        let (sized, unreported) = (&snap.endpoints[0], &snap.endpoints[1]);
        p.record(sized, &hashes);
        assert_eq!(p.len(sized.info.id), 5);
        assert_eq!(p.longest_prefix_match(sized.info.id, &hashes), 5);
        p.record(unreported, &hashes);
        assert_eq!(p.len(unreported.info.id), 2);
    }

    #[test]
    fn bad_params_name_the_field() {
        let e = producer(serde_json::json!({"lruCapacityPerServer": 0}))
            .err()
            .unwrap();
        assert!(e.contains("lruCapacityPerServer"), "{e}");
        let e = producer(serde_json::json!({"blockSizeTokens": 0}))
            .err()
            .unwrap();
        assert!(e.contains("blockSizeTokens"), "{e}");
    }
}
