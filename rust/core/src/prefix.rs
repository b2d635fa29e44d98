//! Prefix block hashing and the per-endpoint index of blocks routed there.
//! A prompt is cut into fixed-size byte blocks hashed as a chain, so block i's hash stands for the
//! whole prefix up to it; the index remembers which chains each endpoint has probably cached.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;
use xxhash_rust::xxh3::xxh3_64;

/// Chained hashes of the full `block_bytes`-sized blocks of `prompt`:
/// h0 = xxh3(model, salt), h_i = xxh3(h_{i-1} ++ block_i). A trailing partial block is not
/// hashed (an engine publishes full blocks only); `block_bytes == 0` yields no blocks.
pub fn block_hashes(
    model: &str,
    cache_salt: Option<&str>,
    prompt: &[u8],
    block_bytes: usize,
) -> Vec<u64> {
    chain(model, cache_salt, prompt, block_bytes, false, usize::MAX)
}

/// The approximate index's blocks, as upstream's approx-prefix-cache-producer cuts them: the
/// same chain as `block_hashes`, with a trailing partial block hashed too (an exact repeat of a
/// short prompt still matches), at most `max_blocks`.
pub fn prompt_block_hashes(
    model: &str,
    cache_salt: Option<&str>,
    prompt: &[u8],
    block_bytes: usize,
    max_blocks: usize,
) -> Vec<u64> {
    chain(model, cache_salt, prompt, block_bytes, true, max_blocks)
}

fn chain(
    model: &str,
    cache_salt: Option<&str>,
    prompt: &[u8],
    block_bytes: usize,
    tail: bool,
    max_blocks: usize,
) -> Vec<u64> {
    if block_bytes == 0 || max_blocks == 0 {
        return Vec::new();
    }
    let blocks = prompt.len().div_ceil(block_bytes).min(max_blocks);
    let mut hashes = Vec::with_capacity(blocks);
    let mut buf = Vec::with_capacity(8 + block_bytes.max(model.len() + 2));
    // Seed: the model, then whether a salt is present and the salt, so None and Some("") differ.
    buf.extend_from_slice(model.as_bytes());
    buf.push(0);
    if let Some(salt) = cache_salt {
        buf.push(1);
        buf.extend_from_slice(salt.as_bytes());
    }
    let mut prev = xxh3_64(&buf);
    for block in prompt.chunks(block_bytes).take(max_blocks) {
        if block.len() < block_bytes && !tail {
            break;
        }
        buf.clear();
        buf.extend_from_slice(&prev.to_le_bytes());
        buf.extend_from_slice(block);
        prev = xxh3_64(&buf);
        hashes.push(prev);
    }
    hashes
}

/// Keys here are already well-mixed hashes or small caller ids; one multiply spreads the
/// latter into the high bits hashbrown uses, and costs far less than SipHash.
#[derive(Default)]
pub(crate) struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hasher>>;

const NIL: u32 = u32::MAX;

struct Node {
    hash: u64,
    prev: u32,
    next: u32,
}

/// An LRU set of block hashes: a map into a slab of nodes linked most-recent first.
struct Lru {
    index: U64Map<u32>,
    nodes: Vec<Node>,
    head: u32,
    tail: u32,
    capacity: usize,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Lru {
            index: U64Map::default(),
            nodes: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.min(NIL as usize),
        }
    }

    fn contains(&self, hash: u64) -> bool {
        self.index.contains_key(&hash)
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.nodes[i as usize].prev, self.nodes[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = self.head;
        match self.head {
            NIL => self.tail = i,
            h => self.nodes[h as usize].prev = i,
        }
        self.head = i;
    }

    /// Mark `hash` most recently used, evicting the least recently used when full.
    fn touch(&mut self, hash: u64) {
        if self.capacity == 0 {
            return;
        }
        if let Some(&i) = self.index.get(&hash) {
            self.unlink(i);
            self.push_front(i);
            return;
        }
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(Node {
                hash,
                prev: NIL,
                next: NIL,
            });
            (self.nodes.len() - 1) as u32
        } else {
            // Full: reuse the least recently used node for the new hash.
            let i = self.tail;
            self.unlink(i);
            self.index.remove(&self.nodes[i as usize].hash);
            self.nodes[i as usize].hash = hash;
            i
        };
        self.index.insert(hash, i);
        self.push_front(i);
    }

    /// Change the capacity; on shrinking, keep the most recent entries.
    fn resize(&mut self, capacity: usize) {
        let capacity = capacity.min(NIL as usize);
        if capacity < self.index.len() {
            let keep: Vec<u64> = self.iter_recent().take(capacity).collect();
            *self = Lru::new(capacity);
            for hash in keep.into_iter().rev() {
                self.touch(hash);
            }
        }
        self.capacity = capacity;
    }

    fn iter_recent(&self) -> impl Iterator<Item = u64> + '_ {
        let mut at = self.head;
        std::iter::from_fn(move || {
            let node = self.nodes.get(at as usize)?;
            at = node.next;
            Some(node.hash)
        })
    }
}

/// Which prefix blocks the EPP routed to each endpoint, an LRU per endpoint bounded in blocks.
/// Safe to share between concurrent scheduling cycles: a lookup holds one endpoint's read lock
/// for one walk of the hashes; an insert holds that endpoint's write lock for one insert.
pub struct PrefixIndex {
    default_capacity: usize,
    endpoints: RwLock<U64Map<Arc<RwLock<Lru>>>>,
}

impl PrefixIndex {
    /// `default_capacity` blocks per endpoint unless an insert names another.
    pub fn new(default_capacity: usize) -> Self {
        PrefixIndex {
            default_capacity,
            endpoints: RwLock::new(U64Map::default()),
        }
    }

    fn endpoint(&self, endpoint: u64) -> Option<Arc<RwLock<Lru>>> {
        self.endpoints.read().get(&endpoint).cloned()
    }

    /// Record that the prefix `hashes` was routed to `endpoint`. `capacity` (e.g. the endpoint's
    /// KV-cache size in blocks) replaces the endpoint's bound when given.
    pub fn insert(&self, endpoint: u64, hashes: &[u64], capacity: Option<usize>) {
        let lru = match self.endpoint(endpoint) {
            Some(lru) => lru,
            None => {
                let fresh = Lru::new(capacity.unwrap_or(self.default_capacity));
                self.endpoints
                    .write()
                    .entry(endpoint)
                    .or_insert_with(|| Arc::new(RwLock::new(fresh)))
                    .clone()
            }
        };
        let mut lru = lru.write();
        if let Some(capacity) = capacity {
            lru.resize(capacity);
        }
        // Insert last block first, so the first blocks end up most recent: evicting a chain's
        // head would make the rest of it unmatchable, evicting its tail only shortens it.
        for &hash in hashes.iter().rev() {
            lru.touch(hash);
        }
    }

    /// How many leading blocks of `hashes` are recorded for `endpoint`.
    pub fn longest_prefix_match(&self, endpoint: u64, hashes: &[u64]) -> usize {
        let Some(lru) = self.endpoint(endpoint) else {
            return 0;
        };
        let lru = lru.read();
        hashes.iter().take_while(|&&h| lru.contains(h)).count()
    }

    /// How many of `hashes`, wherever they stand, are recorded for `endpoint`.
    pub fn count_held(&self, endpoint: u64, hashes: &[u64]) -> usize {
        let Some(lru) = self.endpoint(endpoint) else {
            return 0;
        };
        let lru = lru.read();
        hashes.iter().filter(|&&h| lru.contains(h)).count()
    }

    /// Forget an endpoint (it left the pool or restarted with an empty cache).
    pub fn remove_endpoint(&self, endpoint: u64) {
        self.endpoints.write().remove(&endpoint);
    }

    /// Blocks recorded for `endpoint`.
    pub fn len(&self, endpoint: u64) -> usize {
        self.endpoint(endpoint)
            .map_or(0, |lru| lru.read().index.len())
    }

    /// Whether no endpoint has any block recorded.
    pub fn is_empty(&self) -> bool {
        self.endpoints
            .read()
            .values()
            .all(|lru| lru.read().index.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_hashes_cover_full_blocks_only() {
        assert_eq!(block_hashes("m", None, &[7u8; 1000], 256).len(), 3);
        assert!(block_hashes("m", None, &[7u8; 255], 256).is_empty());
        assert!(block_hashes("m", None, &[7u8; 1000], 0).is_empty());
    }

    #[test]
    fn prompt_block_hashes_add_the_partial_tail_and_stop_at_the_cap() {
        let p = [7u8; 1000];
        let full = block_hashes("m", None, &p, 256);
        let all = prompt_block_hashes("m", None, &p, 256, usize::MAX);
        assert_eq!(all.len(), 4);
        assert_eq!(all[..3], full[..]);
        assert_eq!(prompt_block_hashes("m", None, &p, 256, 2), full[..2]);
        assert_eq!(prompt_block_hashes("m", None, &[7u8; 10], 256, 8).len(), 1);
        assert!(prompt_block_hashes("m", None, &p, 256, 0).is_empty());
    }

    #[test]
    fn block_hashes_chain_so_a_shared_prefix_shares_hashes() {
        let a = [b"x".repeat(512), b"y".repeat(256)].concat();
        let b = [b"x".repeat(512), b"z".repeat(256)].concat();
        let (ha, hb) = (
            block_hashes("m", None, &a, 256),
            block_hashes("m", None, &b, 256),
        );
        assert_eq!(ha[..2], hb[..2]);
        assert_ne!(ha[2], hb[2]);
    }

    #[test]
    fn block_hashes_depend_on_everything_before_the_block() {
        let a = [b"a".repeat(256), b"same".repeat(64)].concat();
        let b = [b"b".repeat(256), b"same".repeat(64)].concat();
        assert_ne!(
            block_hashes("m", None, &a, 256)[1],
            block_hashes("m", None, &b, 256)[1]
        );
    }

    #[test]
    fn block_hashes_are_seeded_by_model_and_salt() {
        let p = [1u8; 256];
        let base = block_hashes("m", None, &p, 256);
        assert_ne!(base, block_hashes("other", None, &p, 256));
        assert_ne!(base, block_hashes("m", Some("salt"), &p, 256));
        assert_ne!(base, block_hashes("m", Some(""), &p, 256));
        assert_eq!(base, block_hashes("m", None, &p, 256));
    }

    #[test]
    fn match_counts_leading_consecutive_blocks() {
        let index = PrefixIndex::new(100);
        index.insert(1, &[10, 11, 12], None);
        assert_eq!(index.longest_prefix_match(1, &[10, 11, 12, 13]), 3);
        assert_eq!(index.longest_prefix_match(1, &[10, 99, 12]), 1);
        assert_eq!(index.longest_prefix_match(1, &[99, 11, 12]), 0);
        assert_eq!(index.longest_prefix_match(1, &[]), 0);
    }

    #[test]
    fn endpoints_are_indexed_separately() {
        let index = PrefixIndex::new(100);
        index.insert(1, &[10, 11], None);
        assert_eq!(index.longest_prefix_match(2, &[10, 11]), 0);
        index.insert(2, &[10], None);
        assert_eq!(index.longest_prefix_match(2, &[10, 11]), 1);
        assert_eq!(index.longest_prefix_match(1, &[10, 11]), 2);
    }

    #[test]
    fn lru_evicts_least_recently_inserted_at_capacity() {
        let index = PrefixIndex::new(3);
        index.insert(1, &[1, 2, 3], None);
        index.insert(1, &[4], None);
        assert_eq!(index.len(1), 3);
        // The chain was inserted head-last, so its tail (3) was the least recent.
        assert_eq!(index.longest_prefix_match(1, &[1, 2, 3]), 2);
        assert_eq!(index.longest_prefix_match(1, &[4]), 1);
    }

    #[test]
    fn reinserting_refreshes_recency() {
        let index = PrefixIndex::new(2);
        index.insert(1, &[1], None);
        index.insert(1, &[2], None);
        index.insert(1, &[1], None);
        index.insert(1, &[3], None);
        assert_eq!(index.longest_prefix_match(1, &[1]), 1);
        assert_eq!(index.longest_prefix_match(1, &[2]), 0);
        assert_eq!(index.longest_prefix_match(1, &[3]), 1);
    }

    #[test]
    fn a_chain_longer_than_capacity_keeps_its_head() {
        let index = PrefixIndex::new(2);
        index.insert(1, &[1, 2, 3, 4], None);
        assert_eq!(index.longest_prefix_match(1, &[1, 2, 3, 4]), 2);
    }

    #[test]
    fn insert_capacity_overrides_default_and_shrinks_keeping_recent() {
        let index = PrefixIndex::new(10);
        index.insert(1, &[1, 2, 3, 4], None);
        index.insert(1, &[5], Some(2));
        assert_eq!(index.len(1), 2);
        assert_eq!(index.longest_prefix_match(1, &[5]), 1);
        assert_eq!(index.longest_prefix_match(1, &[1]), 1);
        assert_eq!(index.longest_prefix_match(1, &[2]), 0);
    }

    #[test]
    fn zero_capacity_records_nothing() {
        let index = PrefixIndex::new(0);
        index.insert(1, &[1, 2], None);
        assert_eq!(index.longest_prefix_match(1, &[1, 2]), 0);
        assert!(index.is_empty());
    }

    #[test]
    fn remove_endpoint_forgets_its_blocks() {
        let index = PrefixIndex::new(10);
        index.insert(1, &[1, 2], None);
        index.insert(2, &[1, 2], None);
        index.remove_endpoint(1);
        assert_eq!(index.longest_prefix_match(1, &[1, 2]), 0);
        assert_eq!(index.longest_prefix_match(2, &[1, 2]), 2);
    }

    #[test]
    fn concurrent_inserts_and_lookups_stay_consistent() {
        let index = Arc::new(PrefixIndex::new(64));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let index = Arc::clone(&index);
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        let chain = [t * 1_000_000 + i % 50, i % 7];
                        index.insert(t % 2, &chain, None);
                        assert!(index.longest_prefix_match(t % 2, &chain) <= 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(index.len(0) <= 64 && index.len(1) <= 64);
    }
}
