//! precise-prefix-cache-producer: an exact index of the KV-cache blocks each endpoint holds,
//! fed by the endpoint's own KV events (vLLM `BlockStored` / `BlockRemoved` /
//! `AllBlocksCleared`, received over ZMQ by the control plane). `prefix-cache-scorer` reads it
//! instead of its approximate index when one is configured.
//!
//! Two key schemes. With a `token-producer`, upstream's: the EPP tokenizes the prompt and
//! derives llm-d's cbor-fnv block keys (`kvblock::RequestKeys`) from the token ids, and derives
//! the same keys from each event's `token_ids` (the engine's own hashes only name blocks), so
//! any engine hash algorithm and seed meets it; the engine hashes are also checked against
//! vLLM's sha256_cbor under the configured `hashSeed`, to show a misconfigured engine. Without
//! one, sluicegate's byte scheme: the flat prompt in blocks of `blockSize` tokens × 4 bytes,
//! chain-hashed (`prefix::block_hashes`); events whose engine publishes those hashes match.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::kvblock::{external, EndpointKeys, EngineHasher, KeyIndex, RequestKeys};
use crate::parse::{self, ParseError};
use crate::prefix::block_hashes;
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::Request;
use crate::scheduling::producers::kv_events::{decode_batch, KvEvent, KvEventsError, Stored};
use crate::scheduling::producers::precise_prefix_params::{ProducerParams, RedisConfig};
use crate::scheduling::scorers::prefix_cache_scorer::BYTES_PER_TOKEN;
use crate::stats::{AtomicHistogram, Histogram, DEFAULT_BUCKETS};
use crate::tokenize::TokenSource;

/// The block hashes an engine following the byte scheme publishes for this request: what the
/// body's model (as sent upstream), `cache_salt` and flat prompt hash to at `block_tokens`.
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

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ProducerParams = p.parse()?;
    let r = params.resolve().map_err(|e| p.error(e))?;
    let mut index = BlockIndex::new(r.block_tokens, r.socket_port, r.topic_filter);
    index.hash_seed = r.hash_seed;
    index.keys = RequestKeys::new(&index.hash_seed, r.block_tokens);
    index.engine = EngineHasher::new(&index.hash_seed, r.block_tokens);
    index.zmq_endpoint = r.zmq_endpoint;
    index.replay_socket_port = r.replay_socket_port;
    index.speculative_ttl = r.speculative_ttl;
    index.redis = r.redis;
    Ok(Plugin::Producer(Arc::new(index)))
}

/// What the index has taken in since start, for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockIndexStats {
    pub batches: u64,
    pub events: u64,
    /// Payloads that did not decode.
    pub decode_failures: u64,
    /// Batches whose sequence number skipped ahead (events were lost on the way).
    pub seq_gaps: u64,
    /// `BlockStored` events of another block size than configured (they never match).
    pub block_size_mismatches: u64,
    /// `BlockStored` events continuing a block the index never saw (skipped, as upstream).
    pub unknown_parents: u64,
    /// Block keys stored and removed by events.
    pub admissions: u64,
    pub evictions: u64,
    /// Engine hashes checked against vLLM's sha256_cbor under `hashSeed`, and those that differ
    /// (another seed or hash algorithm in the engine; harmless to matching, but not as configured).
    pub engine_hash_checks: u64,
    pub engine_hash_mismatches: u64,
    /// Lookups, the blocks they asked for, and the leading blocks the best endpoint held.
    pub lookups: u64,
    pub lookup_blocks: u64,
    pub lookup_hits: u64,
    /// Requests the token source could not tokenize (scored as no match).
    pub tokenize_failures: u64,
    /// Block hashes in `BlockRemoved` events that reached the index, and those an earlier
    /// announcement in the same place still held (upstream's dedup counters).
    pub dedup_forwarded: u64,
    pub dedup_suppressed: u64,
    /// Confirmed keys over all endpoints.
    pub size: u64,
}

/// Upstream's lookup-latency buckets (its histogram takes Prometheus' defaults), in seconds.
pub const LOOKUP_LATENCY_BUCKETS: &[f64] = DEFAULT_BUCKETS;

/// Events left out of the index, as upstream counts them: (`removal`, cache kind, reason).
pub type Skips = BTreeMap<(bool, String, &'static str), u64>;

/// KV-cache group kinds whose blocks a prefix lookup can count: the full-attention kinds.
/// A sliding-window or Mamba group keeps only the end of a sequence, so its blocks (and their
/// removals) say nothing about which prefixes an engine can reuse; upstream skips them too.
fn prefix_indexable(kind: &str) -> bool {
    matches!(
        kind,
        "full_attention" | "mla_attention" | "sink_full_attention"
    )
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
    decode_failures: AtomicU64,
    seq_gaps: AtomicU64,
    block_size_mismatches: AtomicU64,
    unknown_parents: AtomicU64,
    admissions: AtomicU64,
    evictions: AtomicU64,
    engine_hash_checks: AtomicU64,
    engine_hash_mismatches: AtomicU64,
    lookups: AtomicU64,
    lookup_blocks: AtomicU64,
    lookup_hits: AtomicU64,
    tokenize_failures: AtomicU64,
    dedup_forwarded: AtomicU64,
    dedup_suppressed: AtomicU64,
    skips: Mutex<Skips>,
}

impl Counters {
    fn skip(&self, removal: bool, kind: Option<&str>, reason: &'static str) {
        let kind = kind.filter(|k| !k.is_empty()).unwrap_or("unknown");
        *self
            .skips
            .lock()
            .entry((removal, kind.to_owned(), reason))
            .or_insert(0) += 1;
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub struct BlockIndex {
    block_tokens: usize,
    pub socket_port: u16,
    pub topic_filter: String,
    /// The endpoint the EPP binds for publishers to dial ("" = dial each endpoint's publisher).
    pub zmq_endpoint: String,
    /// Each engine's replay port (0: none); the subscriber asks it for batches it missed.
    pub replay_socket_port: u16,
    pub hash_seed: String,
    pub speculative_ttl: Option<Duration>,
    pub redis: Option<RedisConfig>,
    keys: RequestKeys,
    engine: EngineHasher,
    tokens: OnceLock<Arc<TokenSource>>,
    index: KeyIndex,
    counters: Counters,
    lookup_latency: AtomicHistogram,
}

impl BlockIndex {
    pub fn new(block_tokens: usize, socket_port: u16, topic_filter: String) -> Self {
        BlockIndex {
            block_tokens,
            socket_port,
            topic_filter,
            zmq_endpoint: String::new(),
            replay_socket_port: 0,
            hash_seed: String::new(),
            speculative_ttl: None,
            redis: None,
            keys: RequestKeys::new("", block_tokens),
            engine: EngineHasher::new("", block_tokens),
            tokens: OnceLock::new(),
            index: KeyIndex::default(),
            counters: Counters::default(),
            lookup_latency: AtomicHistogram::new(LOOKUP_LATENCY_BUCKETS),
        }
    }

    /// Tokens per block, as the engines cache them.
    pub fn block_tokens(&self) -> usize {
        self.block_tokens
    }

    /// A token-producer is configured: switch to token-level block keys.
    pub fn use_tokens(&self, source: Arc<TokenSource>) {
        let _ = self.tokens.set(source);
    }

    pub fn token_level(&self) -> bool {
        self.tokens.get().is_some()
    }

    /// The token-producer's source when it needs the network: requests are then tokenized
    /// before their cycle (`Request::tokens`).
    pub fn remote_tokens(&self) -> Option<&Arc<TokenSource>> {
        self.tokens.get().filter(|s| s.is_remote())
    }

    /// The token-producer's source when it tokenizes in-process: the Router then tokenizes
    /// before the cycle's load scores are read (`Router::decide`).
    pub fn local_tokens(&self) -> Option<&Arc<TokenSource>> {
        self.tokens.get().filter(|s| !s.is_remote())
    }

    /// Decode and apply one payload from `endpoint`, whose publisher named `model` in its topic
    /// (empty when unknown). Counts a payload that does not decode.
    pub fn apply_payload(
        &self,
        endpoint: u64,
        model: &str,
        payload: &[u8],
        seq: Option<u64>,
    ) -> Result<(), KvEventsError> {
        match decode_batch(payload) {
            Ok(batch) => {
                self.apply(endpoint, model, &batch.events, seq);
                Ok(())
            }
            Err(e) => {
                add(&self.counters.decode_failures, 1);
                Err(e)
            }
        }
    }

    /// Apply one batch from `endpoint`. `seq` is the publisher's sequence number: a lower one
    /// than last seen means the engine restarted, so what was indexed for it is dropped.
    pub fn apply(&self, endpoint: u64, model: &str, events: &[KvEvent], seq: Option<u64>) {
        let entry = self.index.entry(endpoint);
        let mut e = entry.write();
        if let (Some(seq), Some(last)) = (seq, e.last_seq) {
            if seq <= last {
                e.clear();
            } else if seq > last + 1 {
                add(&self.counters.seq_gaps, 1);
            }
        }
        if seq.is_some() {
            e.last_seq = seq;
        }
        for ev in events {
            match ev {
                KvEvent::Stored(s) => {
                    if self.indexable_store(&mut e, s) {
                        self.store(&mut e, model, s);
                    }
                }
                KvEvent::Removed { hashes, place } => {
                    if !self.indexable_removal(&e, place.group) {
                        continue;
                    }
                    let before = e.len();
                    let r = e.remove(place, hashes);
                    add(&self.counters.dedup_forwarded, r.forwarded);
                    add(&self.counters.dedup_suppressed, r.suppressed);
                    add(
                        &self.counters.evictions,
                        before.saturating_sub(e.len()) as u64,
                    );
                }
                KvEvent::AllCleared => {
                    add(&self.counters.evictions, e.len() as u64);
                    e.clear();
                }
            }
        }
        add(&self.counters.batches, 1);
        add(&self.counters.events, events.len() as u64);
    }

    /// Whether a `BlockStored` from a KV-cache group can enter the index, as upstream's
    /// pool decides: a full-attention kind (named by the event, or learnt from an earlier one
    /// of its group), and with its tokens, exactly one block of them per hash. Events without
    /// a group (vLLM before its hybrid allocator, one group) always can.
    fn indexable_store(&self, e: &mut EndpointKeys, s: &Stored) -> bool {
        let Some(g) = s.place.group else {
            return true;
        };
        if let Some(kind) = s.spec_kind.as_deref().filter(|k| !k.is_empty()) {
            e.learn_group(g, kind);
        }
        let kind = e.group_kind(g);
        if !kind.is_some_and(prefix_indexable) {
            self.counters.skip(false, kind, "unsupported_cache_kind");
            return false;
        }
        let (tokens, size) = (s.token_ids.len(), s.block_size as usize);
        if tokens > 0 && (tokens % size != 0 || tokens / size != s.hashes.len()) {
            self.counters.skip(false, kind, "non_dense_block_span");
            return false;
        }
        true
    }

    /// Whether a `BlockRemoved` from `group` can touch the index: a group its `BlockStored`
    /// events described as a full-attention kind (upstream skips the others, and a group it
    /// never learnt, as unknown).
    fn indexable_removal(&self, e: &EndpointKeys, group: Option<u32>) -> bool {
        let Some(g) = group else {
            return true;
        };
        match e.group_kind(g) {
            None => self.counters.skip(true, None, "unknown_group"),
            Some(k) if !prefix_indexable(k) => {
                self.counters.skip(true, Some(k), "unsupported_cache_kind")
            }
            Some(_) => return true,
        }
        false
    }

    fn store(&self, e: &mut EndpointKeys, model: &str, s: &Stored) {
        if s.block_size as usize != self.block_tokens {
            add(&self.counters.block_size_mismatches, 1);
            return;
        }
        if !self.token_level() || s.token_ids.is_empty() {
            // Byte scheme: the engine's hashes are the keys.
            let before = e.len();
            e.store(&s.place, &s.hashes, &s.hashes);
            add(&self.counters.admissions, (e.len() - before) as u64);
            return;
        }
        let parent = match s.parent {
            None => None,
            Some(p) => match e.request_key(p) {
                Some(k) => Some(k),
                None => {
                    add(&self.counters.unknown_parents, 1);
                    return;
                }
            },
        };
        let model = s
            .lora_name
            .as_deref()
            .filter(|l| !l.is_empty())
            .unwrap_or(model);
        // Upstream keys a block by its extra strings other than the adapter's name (that is the
        // model the chain is rooted in): the cache salt on block 0, multimodal identifiers.
        let extras: Vec<Vec<String>> = s
            .extra_keys
            .iter()
            .map(|keys| {
                keys.iter()
                    .filter(|k| Some(k.as_str()) != s.lora_name.as_deref())
                    .cloned()
                    .collect()
            })
            .collect();
        let keys = self.keys.keys(parent, &s.token_ids, model, |i| {
            extras.get(i).map_or(&[][..], |v| &v[..])
        });
        if parent.is_none() {
            self.check_engine_hashes(s, &extras, keys.first().copied());
        }
        let n = keys.len().min(s.hashes.len());
        let before = e.len();
        e.store(&s.place, &s.hashes[..n], &keys[..n]);
        add(&self.counters.admissions, (e.len() - before) as u64);
    }

    /// A chain from the prompt's start can be recomputed as vLLM does: count whether the
    /// engine's hashes are what the configured seed gives. A publisher that sends llm-d's own
    /// block keys as its hashes (llm-d-inference-sim) is consistent too: `key` is ours.
    fn check_engine_hashes(&self, s: &Stored, extras: &[Vec<String>], key: Option<u64>) {
        let (Some(block), Some(&theirs)) = (s.token_ids.get(..self.block_tokens), s.hashes.first())
        else {
            return;
        };
        add(&self.counters.engine_hash_checks, 1);
        if key == Some(theirs) {
            return; // no sha256 to compute
        }
        let salt = extras.first().and_then(|k| k.first()).map(String::as_str);
        let ours = self
            .engine
            .hashes(None, block, s.lora_name.as_deref(), salt);
        if ours.first().is_none_or(|h| external(h) != theirs) {
            add(&self.counters.engine_hash_mismatches, 1);
        }
    }

    /// The block keys of a request under the index's scheme; empty when it cannot be keyed
    /// (counted when tokenization failed).
    pub fn request_keys(&self, r: &Request<'_>) -> Vec<u64> {
        let computed;
        let tokens = match (r.tokens, self.tokens.get()) {
            (_, None) => None,
            (Some(before), Some(_)) => Some(before),
            (None, Some(source)) => {
                computed = source.tokens(r.path, r.body);
                Some(&computed)
            }
        };
        match tokens {
            Some(Ok(tokens)) => self.keys.prompt_keys(tokens, r.model, r.cache_salt),
            Some(Err(_)) => {
                add(&self.counters.tokenize_failures, 1);
                Vec::new()
            }
            None => block_hashes(
                r.model,
                r.cache_salt,
                r.prompt,
                self.block_tokens * BYTES_PER_TOKEN,
            ),
        }
    }

    /// How many leading blocks of `keys` the endpoint holds right now (or was just sent).
    pub fn longest_prefix_match(&self, endpoint: u64, keys: &[u64]) -> usize {
        self.index
            .get(endpoint)
            .map_or(0, |e| e.read().longest_prefix_match(keys, Instant::now()))
    }

    /// One scoring lookup: `asked` blocks, the best endpoint holding `best` of them, matched
    /// over every candidate in `took`.
    pub fn record_lookup(&self, asked: usize, best: usize, took: Duration) {
        let c = &self.counters;
        add(&c.lookups, 1);
        add(&c.lookup_blocks, asked as u64);
        add(&c.lookup_hits, best as u64);
        self.lookup_latency.observe_duration(took);
    }

    pub fn lookup_latency(&self) -> Histogram {
        self.lookup_latency.snapshot()
    }

    /// Events left out of the index since start, by (removal, cache kind, reason).
    pub fn skips(&self) -> Skips {
        self.counters.skips.lock().clone()
    }

    /// Speculative indexing: `keys` were just routed to `endpoint`.
    pub fn speculate(&self, endpoint: u64, keys: &[u64]) {
        if let Some(ttl) = self.speculative_ttl {
            let now = Instant::now();
            self.index
                .entry(endpoint)
                .write()
                .speculate(keys, now + ttl, now);
        }
    }

    pub fn len(&self, endpoint: u64) -> usize {
        self.index.get(endpoint).map_or(0, |e| e.read().len())
    }

    pub fn is_empty(&self) -> bool {
        self.index.total() == 0
    }

    pub fn remove_endpoint(&self, endpoint: u64) {
        self.index.remove(endpoint);
    }

    pub fn stats(&self) -> BlockIndexStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BlockIndexStats {
            batches: l(&c.batches),
            events: l(&c.events),
            decode_failures: l(&c.decode_failures),
            seq_gaps: l(&c.seq_gaps),
            block_size_mismatches: l(&c.block_size_mismatches),
            unknown_parents: l(&c.unknown_parents),
            admissions: l(&c.admissions),
            evictions: l(&c.evictions),
            engine_hash_checks: l(&c.engine_hash_checks),
            engine_hash_mismatches: l(&c.engine_hash_mismatches),
            lookups: l(&c.lookups),
            lookup_blocks: l(&c.lookup_blocks),
            lookup_hits: l(&c.lookup_hits),
            tokenize_failures: l(&c.tokenize_failures),
            dedup_forwarded: l(&c.dedup_forwarded),
            dedup_suppressed: l(&c.dedup_suppressed),
            size: self.index.total() as u64,
        }
    }
}

#[cfg(test)]
#[path = "precise_prefix_cache_producer_tests.rs"]
mod tests;
