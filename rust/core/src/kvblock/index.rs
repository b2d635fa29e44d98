//! Which block keys each endpoint holds: confirmed by its KV events (with the engine's own
//! hash for each, so `BlockRemoved` and parent chaining can name them), or predicted for a
//! short while after the EPP routed a prompt there (speculative indexing).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::prefix::U64Map;

#[derive(Default)]
pub struct EndpointKeys {
    /// Request key -> how many engine blocks stand for it.
    keys: U64Map<u32>,
    /// Engine block hash -> request key.
    engine: U64Map<u64>,
    /// Request key -> when the prediction lapses.
    speculative: U64Map<Instant>,
    pub last_seq: Option<u64>,
}

impl EndpointKeys {
    pub fn store(&mut self, engine_hashes: &[u64], keys: &[u64]) {
        for (&e, &k) in engine_hashes.iter().zip(keys) {
            // Stored (again): the prediction is confirmed, and what follows is the events'.
            self.speculative.remove(&k);
            if let Some(old) = self.engine.insert(e, k) {
                if old == k {
                    continue;
                }
                self.release(old);
            }
            *self.keys.entry(k).or_insert(0) += 1;
        }
    }

    fn release(&mut self, key: u64) {
        if let Some(n) = self.keys.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.keys.remove(&key);
            }
        }
    }

    pub fn remove(&mut self, engine_hashes: &[u64]) {
        for e in engine_hashes {
            if let Some(k) = self.engine.remove(e) {
                self.release(k);
            }
        }
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.engine.clear();
        self.speculative.clear();
    }

    /// The request key of an engine block this endpoint reported.
    pub fn request_key(&self, engine_hash: u64) -> Option<u64> {
        self.engine.get(&engine_hash).copied()
    }

    /// A request holding `keys` was just routed here. Blocks already confirmed are predicted
    /// too, as upstream does: the engine may evict them before it admits the request, which
    /// then stores them again, so its `BlockRemoved` does not take them from this endpoint
    /// until the prediction lapses or a `BlockStored` confirms them again.
    pub fn speculate(&mut self, keys: &[u64], until: Instant, now: Instant) {
        // Lapsed predictions are dropped here, off the lookup path, when they pile up.
        if self.speculative.len() > 4 * (self.keys.len() + keys.len()) + 1024 {
            self.speculative.retain(|_, t| *t > now);
        }
        for &k in keys {
            self.speculative.insert(k, until);
        }
    }

    pub fn longest_prefix_match(&self, keys: &[u64], now: Instant) -> usize {
        keys.iter()
            .take_while(|k| {
                self.keys.contains_key(k) || self.speculative.get(k).is_some_and(|t| *t > now)
            })
            .count()
    }

    /// Confirmed keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Endpoints' keys, each behind its own lock so events for one never wait on lookups of another.
#[derive(Default)]
pub struct KeyIndex {
    endpoints: RwLock<U64Map<Arc<RwLock<EndpointKeys>>>>,
}

impl KeyIndex {
    pub fn get(&self, endpoint: u64) -> Option<Arc<RwLock<EndpointKeys>>> {
        self.endpoints.read().get(&endpoint).cloned()
    }

    pub fn entry(&self, endpoint: u64) -> Arc<RwLock<EndpointKeys>> {
        if let Some(e) = self.get(endpoint) {
            return e;
        }
        self.endpoints.write().entry(endpoint).or_default().clone()
    }

    pub fn remove(&self, endpoint: u64) {
        self.endpoints.write().remove(&endpoint);
    }

    /// Confirmed keys over all endpoints.
    pub fn total(&self) -> usize {
        self.endpoints.read().values().map(|e| e.read().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stored_keys_match_until_their_engine_blocks_are_removed() {
        let mut e = EndpointKeys::default();
        let now = Instant::now();
        e.store(&[100, 101, 102], &[1, 2, 3]);
        assert_eq!(e.longest_prefix_match(&[1, 2, 3, 4], now), 3);
        assert_eq!(e.request_key(101), Some(2));
        e.remove(&[101]);
        assert_eq!(e.longest_prefix_match(&[1, 2, 3], now), 1);
        e.clear();
        assert!(e.is_empty());
    }

    #[test]
    fn a_key_held_by_two_engine_blocks_stays_until_both_go() {
        let mut e = EndpointKeys::default();
        e.store(&[100, 200], &[1, 1]);
        e.remove(&[100]);
        assert_eq!(e.len(), 1);
        e.remove(&[200]);
        assert_eq!(e.len(), 0);
    }

    #[test]
    fn speculative_keys_match_until_they_lapse_or_are_confirmed() {
        let mut e = EndpointKeys::default();
        let now = Instant::now();
        e.speculate(&[1, 2], now + Duration::from_secs(2), now);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 2);
        assert_eq!(
            e.longest_prefix_match(&[1, 2], now + Duration::from_secs(3)),
            0
        );
        e.store(&[100], &[1]);
        assert_eq!(
            e.longest_prefix_match(&[1, 2], now + Duration::from_secs(3)),
            1
        );
    }

    #[test]
    fn a_routed_request_keeps_its_held_blocks_through_an_eviction_until_it_stores_them_again() {
        let mut e = EndpointKeys::default();
        let now = Instant::now();
        e.store(&[100, 101], &[1, 2]);
        // Routed here while the engine holds both blocks; it evicts them before admitting it.
        e.speculate(&[1, 2], now + Duration::from_secs(2), now);
        e.remove(&[100, 101]);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 2);
        // Admitted: stored again, confirmed; a later eviction is the events' to report.
        e.store(&[100, 101], &[1, 2]);
        e.remove(&[101]);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 1);
    }

    #[test]
    fn a_prediction_of_held_blocks_lapses_after_an_eviction_nobody_undoes() {
        let mut e = EndpointKeys::default();
        let now = Instant::now();
        e.store(&[100], &[1]);
        e.speculate(&[1], now + Duration::from_secs(2), now);
        e.remove(&[100]);
        assert_eq!(
            e.longest_prefix_match(&[1], now + Duration::from_secs(3)),
            0
        );
    }
}
