//! precise-prefix-cache-producer: an exact index of the KV-cache blocks each endpoint holds,
//! fed by the endpoint's own KV events (vLLM `BlockStored` / `BlockRemoved` / `AllBlocksCleared`,
//! subscribed over ZMQ by the control plane). When configured, `prefix-cache-scorer` reads this
//! index instead of its approximate one.
//!
//! Hash scheme (shared with the simulator): the flat prompt is cut into blocks of
//! `blockSize` tokens × 4 bytes and chain-hashed by `prefix::block_hashes`, seeded by the
//! model name and `cache_salt`; an engine that publishes those hashes is matched exactly.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use serde::Deserialize;

use crate::parse::{self, ParseError};
use crate::prefix::block_hashes;
use crate::prefix::{U64Map, U64Set};
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::producers::kv_events::{KvEvent, KvEventBatch};
use crate::scheduling::scorers::prefix_cache_scorer::BYTES_PER_TOKEN;

/// The block hashes an engine following the scheme publishes for this request: what the body's
/// model (as sent upstream), `cache_salt` and flat prompt hash to at `block_tokens` per block.
pub fn request_block_hashes(
    path: &str,
    body: &[u8],
    block_tokens: usize,
) -> Result<Vec<u64>, ParseError> {
    let request = parse::parse_request(path, body)?;
    Ok(block_hashes(
        request.model.as_deref().unwrap_or(""),
        request.cache_salt.as_deref(),
        request.prompt.as_bytes(),
        block_tokens * BYTES_PER_TOKEN,
    ))
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ProducerParams {
    /// Tokens per KV block; must equal the engines' `--block-size`.
    block_size: usize,
    /// The port of each endpoint's ZMQ publisher (vLLM `--kv-events-config` endpoint).
    socket_port: u16,
    /// ZMQ topic prefix subscribed to ("" = every topic).
    topic_filter: String,
}

impl Default for ProducerParams {
    fn default() -> Self {
        ProducerParams {
            block_size: 16,
            socket_port: 5557,
            topic_filter: String::new(),
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ProducerParams = p.parse()?;
    if params.block_size == 0 {
        return Err(p.error("parameters.blockSize: must be >= 1"));
    }
    if params.socket_port == 0 {
        return Err(p.error("parameters.socketPort: must be a port number >= 1"));
    }
    Ok(Plugin::Producer(Arc::new(BlockIndex::new(
        params.block_size,
        params.socket_port,
        params.topic_filter,
    ))))
}

#[derive(Default)]
struct EndpointBlocks {
    blocks: U64Set,
    last_seq: Option<u64>,
}

/// What the index has taken in since start, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockIndexStats {
    pub batches: u64,
    pub events: u64,
    /// Batches whose sequence number skipped ahead (events were lost on the way).
    pub seq_gaps: u64,
    /// `BlockStored` events of another block size than configured (they never match).
    pub block_size_mismatches: u64,
}

pub struct BlockIndex {
    block_tokens: usize,
    pub socket_port: u16,
    pub topic_filter: String,
    endpoints: RwLock<U64Map<Arc<RwLock<EndpointBlocks>>>>,
    batches: AtomicU64,
    events: AtomicU64,
    seq_gaps: AtomicU64,
    block_size_mismatches: AtomicU64,
}

impl BlockIndex {
    pub fn new(block_tokens: usize, socket_port: u16, topic_filter: String) -> Self {
        BlockIndex {
            block_tokens,
            socket_port,
            topic_filter,
            endpoints: RwLock::default(),
            batches: AtomicU64::new(0),
            events: AtomicU64::new(0),
            seq_gaps: AtomicU64::new(0),
            block_size_mismatches: AtomicU64::new(0),
        }
    }

    /// Tokens per block, as the engines cache them.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    fn endpoint(&self, endpoint: u64) -> Option<Arc<RwLock<EndpointBlocks>>> {
        self.endpoints.read().get(&endpoint).cloned()
    }

    /// Apply one batch from `endpoint`. `seq` is the publisher's sequence number: a lower one
    /// than last seen means the engine restarted, so what was indexed for it is dropped.
    pub fn apply(&self, endpoint: u64, batch: &KvEventBatch, seq: Option<u64>) {
        let entry = match self.endpoint(endpoint) {
            Some(e) => e,
            None => self.endpoints.write().entry(endpoint).or_default().clone(),
        };
        let mut e = entry.write();
        if let (Some(seq), Some(last)) = (seq, e.last_seq) {
            if seq <= last {
                e.blocks.clear();
            } else if seq > last + 1 {
                self.seq_gaps.fetch_add(1, Ordering::Relaxed);
            }
        }
        if seq.is_some() {
            e.last_seq = seq;
        }
        for ev in &batch.events {
            match ev {
                KvEvent::Stored {
                    hashes, block_size, ..
                } => {
                    if *block_size as usize != self.block_tokens {
                        self.block_size_mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                    e.blocks.extend(hashes.iter().copied());
                }
                KvEvent::Removed { hashes } => {
                    for h in hashes {
                        e.blocks.remove(h);
                    }
                }
                KvEvent::AllCleared => e.blocks.clear(),
            }
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.events
            .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
    }

    /// How many leading blocks of `hashes` the endpoint holds right now.
    pub fn longest_prefix_match(&self, endpoint: u64, hashes: &[u64]) -> usize {
        let Some(e) = self.endpoint(endpoint) else {
            return 0;
        };
        let e = e.read();
        hashes.iter().take_while(|h| e.blocks.contains(h)).count()
    }

    pub fn len(&self, endpoint: u64) -> usize {
        self.endpoint(endpoint).map_or(0, |e| e.read().blocks.len())
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints
            .read()
            .values()
            .all(|e| e.read().blocks.is_empty())
    }

    pub fn remove_endpoint(&self, endpoint: u64) {
        self.endpoints.write().remove(&endpoint);
    }

    pub fn stats(&self) -> BlockIndexStats {
        BlockIndexStats {
            batches: self.batches.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            seq_gaps: self.seq_gaps.load(Ordering::Relaxed),
            block_size_mismatches: self.block_size_mismatches.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(hashes: &[u64]) -> KvEvent {
        KvEvent::Stored {
            hashes: hashes.to_vec(),
            parent: None,
            block_size: 16,
        }
    }

    fn batch(events: Vec<KvEvent>) -> KvEventBatch {
        KvEventBatch { ts: 0.0, events }
    }

    #[test]
    fn stored_blocks_match_until_removed() {
        let index = BlockIndex::new(16, 5557, String::new());
        index.apply(1, &batch(vec![stored(&[10, 11, 12])]), Some(0));
        assert_eq!(index.longest_prefix_match(1, &[10, 11, 12, 13]), 3);
        assert_eq!(index.longest_prefix_match(2, &[10]), 0);
        index.apply(
            1,
            &batch(vec![KvEvent::Removed { hashes: vec![11] }]),
            Some(1),
        );
        assert_eq!(index.longest_prefix_match(1, &[10, 11, 12]), 1);
        index.apply(1, &batch(vec![KvEvent::AllCleared]), Some(2));
        assert!(index.is_empty());
        assert_eq!(index.stats().events, 3);
        assert_eq!(index.stats().seq_gaps, 0);
    }

    #[test]
    fn a_sequence_gap_is_counted_and_a_restart_clears_the_endpoint() {
        let index = BlockIndex::new(16, 5557, String::new());
        index.apply(1, &batch(vec![stored(&[1])]), Some(5));
        index.apply(1, &batch(vec![stored(&[2])]), Some(9));
        assert_eq!(index.stats().seq_gaps, 1);
        assert_eq!(index.len(1), 2);
        index.apply(1, &batch(vec![stored(&[3])]), Some(0));
        assert_eq!(index.len(1), 1);
        assert_eq!(index.longest_prefix_match(1, &[3]), 1);
    }

    #[test]
    fn another_block_size_is_counted_as_a_mismatch() {
        let index = BlockIndex::new(64, 5557, String::new());
        index.apply(1, &batch(vec![stored(&[1])]), None);
        assert_eq!(index.stats().block_size_mismatches, 1);
    }

    #[test]
    fn removing_an_endpoint_forgets_its_blocks() {
        let index = BlockIndex::new(16, 5557, String::new());
        index.apply(1, &batch(vec![stored(&[1, 2])]), None);
        index.remove_endpoint(1);
        assert_eq!(index.len(1), 0);
    }
}
