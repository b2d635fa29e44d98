//! Which block keys each endpoint holds: confirmed by its KV events (with the engine's own
//! hash for each, so `BlockRemoved` and parent chaining can name them), or predicted for a
//! short while after the EPP routed a prompt there (speculative indexing).

use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;

use crate::prefix::U64Map;
use crate::scheduling::kv_events::Place;

#[derive(Default)]
pub struct EndpointKeys {
    /// Request key -> how many engine blocks stand for it.
    keys: U64Map<u32>,
    /// Engine block hash -> the request key it stands for and where the engine holds it.
    engine: U64Map<Held>,
    /// Request key -> when the prediction lapses.
    speculative: U64Map<Instant>,
    /// The places this endpoint has stored blocks in; `Held` names them by position.
    places: Vec<Place>,
    /// KV-cache group -> its kind, as the engine's `BlockStored` events named it (its
    /// `BlockRemoved` events name only the group).
    groups: Vec<(u32, String)>,
    pub last_seq: Option<u64>,
}

/// One engine block: its request key and, per place, how many `BlockStored` announcements a
/// `BlockRemoved` there has not yet answered (an engine that caches the same hash twice, as
/// vLLM does when two requests compute one block at once, announces it twice and removes it
/// twice). The block is held while any place holds it, as upstream's reference-counting
/// dedup filter and its per-tier, per-group index entries keep it.
struct Held {
    key: u64,
    places: Places,
}

/// (place, announcements) pairs; the common single place without a heap allocation, and the
/// rare several behind one pointer, so a block costs 16 bytes here whatever it holds.
enum Places {
    One(u16, u32),
    Many(Box<[(u16, u32)]>),
}

/// What a `BlockRemoved` did to one hash (upstream's dedup counters count these).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removal {
    /// Removals that reached the index: the hash's last announcement in that place, or a
    /// hash the place never held (a no-op).
    pub forwarded: u64,
    /// Removals an earlier announcement in the same place still outweighs.
    pub suppressed: u64,
}

impl Places {
    fn add(&mut self, place: u16) {
        match self {
            Places::One(p, n) if *p == place => *n += 1,
            Places::One(p, n) => *self = Places::Many(Box::new([(*p, *n), (place, 1)])),
            Places::Many(v) => match v.iter_mut().find(|(p, _)| *p == place) {
                Some((_, n)) => *n += 1,
                None => *v = v.iter().copied().chain([(place, 1)]).collect(),
            },
        }
    }

    /// One announcement in `place` answered.
    fn release(&mut self, place: u16) -> Released {
        match self {
            Places::One(p, n) if *p == place => {
                *n -= 1;
                if *n > 0 {
                    Released::StillThere
                } else {
                    Released::Gone { anywhere: false }
                }
            }
            Places::One(..) => Released::NeverThere,
            Places::Many(v) => match v.iter().position(|(p, _)| *p == place) {
                None => Released::NeverThere,
                Some(i) if v[i].1 > 1 => {
                    v[i].1 -= 1;
                    Released::StillThere
                }
                Some(i) => {
                    let rest: Vec<(u16, u32)> = (v.iter().enumerate())
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &x)| x)
                        .collect();
                    let anywhere = !rest.is_empty();
                    *self = match rest[..] {
                        [(p, n)] => Places::One(p, n),
                        _ => Places::Many(rest.into()),
                    };
                    Released::Gone { anywhere }
                }
            },
        }
    }
}

/// What answering one announcement left.
enum Released {
    /// The place never held the block: a no-op.
    NeverThere,
    /// An earlier announcement in the same place still holds it.
    StillThere,
    /// The place no longer holds it; `anywhere`: another place still does.
    Gone { anywhere: bool },
}

impl EndpointKeys {
    fn place_id(&mut self, place: &Place) -> u16 {
        match self.places.iter().position(|p| p == place) {
            Some(i) => i as u16,
            None => {
                self.places.push(place.clone());
                (self.places.len() - 1) as u16
            }
        }
    }

    pub fn store(&mut self, place: &Place, engine_hashes: &[u64], keys: &[u64]) {
        let at = self.place_id(place);
        for (&e, &k) in engine_hashes.iter().zip(keys) {
            // Stored (again): the prediction is confirmed, and what follows is the events'.
            self.speculative.remove(&k);
            let fresh = Held {
                key: k,
                places: Places::One(at, 1),
            };
            match self.engine.entry(e) {
                Entry::Occupied(mut o) if o.get().key == k => {
                    o.get_mut().places.add(at);
                    continue;
                }
                // The engine reuses a hash for other content: it stands for the new key only.
                Entry::Occupied(mut o) => {
                    let old = o.insert(fresh).key;
                    self.release(old);
                }
                Entry::Vacant(v) => {
                    v.insert(fresh);
                }
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

    pub fn remove(&mut self, place: &Place, engine_hashes: &[u64]) -> Removal {
        let mut out = Removal::default();
        let Some(at) = self.places.iter().position(|p| p == place) else {
            out.forwarded = engine_hashes.len() as u64; // never held there: a no-op
            return out;
        };
        for e in engine_hashes {
            let Some(h) = self.engine.get_mut(e) else {
                out.forwarded += 1;
                continue;
            };
            match h.places.release(at as u16) {
                Released::StillThere => out.suppressed += 1,
                Released::NeverThere | Released::Gone { anywhere: true } => out.forwarded += 1,
                Released::Gone { anywhere: false } => {
                    out.forwarded += 1;
                    let key = h.key;
                    self.engine.remove(e);
                    self.release(key);
                }
            }
        }
        out
    }

    pub fn learn_group(&mut self, group: u32, kind: &str) {
        match self.groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, k)) if k == kind => {}
            Some((_, k)) => *k = kind.to_owned(),
            None => self.groups.push((group, kind.to_owned())),
        }
    }

    pub fn group_kind(&self, group: u32) -> Option<&str> {
        self.groups
            .iter()
            .find(|(g, _)| *g == group)
            .map(|(_, k)| k.as_str())
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.engine.clear();
        self.speculative.clear();
    }

    /// The request key of an engine block this endpoint reported.
    pub fn request_key(&self, engine_hash: u64) -> Option<u64> {
        self.engine.get(&engine_hash).map(|h| h.key)
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

    fn gpu() -> Place {
        Place::default()
    }

    fn place(medium: Option<&str>, group: Option<u32>) -> Place {
        Place {
            medium: medium.map(str::to_owned),
            group,
        }
    }

    #[test]
    fn stored_keys_match_until_their_engine_blocks_are_removed() {
        let mut e = EndpointKeys::default();
        let now = Instant::now();
        e.store(&gpu(), &[100, 101, 102], &[1, 2, 3]);
        assert_eq!(e.longest_prefix_match(&[1, 2, 3, 4], now), 3);
        assert_eq!(e.request_key(101), Some(2));
        e.remove(&gpu(), &[101]);
        assert_eq!(e.longest_prefix_match(&[1, 2, 3], now), 1);
        e.clear();
        assert!(e.is_empty());
    }

    #[test]
    fn a_key_held_by_two_engine_blocks_stays_until_both_go() {
        let mut e = EndpointKeys::default();
        e.store(&gpu(), &[100, 200], &[1, 1]);
        e.remove(&gpu(), &[100]);
        assert_eq!(e.len(), 1);
        e.remove(&gpu(), &[200]);
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
        e.store(&gpu(), &[100], &[1]);
        assert_eq!(
            e.longest_prefix_match(&[1, 2], now + Duration::from_secs(3)),
            1
        );
    }

    #[test]
    fn a_routed_request_keeps_its_held_blocks_through_an_eviction_until_it_stores_them_again() {
        let mut e = EndpointKeys::default();
        let now = Instant::now();
        e.store(&gpu(), &[100, 101], &[1, 2]);
        // Routed here while the engine holds both blocks; it evicts them before admitting it.
        e.speculate(&[1, 2], now + Duration::from_secs(2), now);
        e.remove(&gpu(), &[100, 101]);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 2);
        // Admitted: stored again, confirmed; a later eviction is the events' to report.
        e.store(&gpu(), &[100, 101], &[1, 2]);
        e.remove(&gpu(), &[101]);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 1);
    }

    #[test]
    fn a_prediction_of_held_blocks_lapses_after_an_eviction_nobody_undoes() {
        let mut e = EndpointKeys::default();
        let now = Instant::now();
        e.store(&gpu(), &[100], &[1]);
        e.speculate(&[1], now + Duration::from_secs(2), now);
        e.remove(&gpu(), &[100]);
        assert_eq!(
            e.longest_prefix_match(&[1], now + Duration::from_secs(3)),
            0
        );
    }

    #[test]
    fn a_block_costs_24_bytes_beside_its_hash() {
        assert_eq!(std::mem::size_of::<Places>(), 16);
        assert_eq!(std::mem::size_of::<Held>(), 24);
    }

    #[test]
    fn a_hash_announced_twice_stays_until_removed_twice() {
        // vLLM caches one hash in two blocks when two requests compute it at once, and evicts
        // (and announces) each block on its own.
        let mut e = EndpointKeys::default();
        e.store(&gpu(), &[100], &[1]);
        e.store(&gpu(), &[100], &[1]);
        assert_eq!(
            e.remove(&gpu(), &[100]),
            Removal {
                forwarded: 0,
                suppressed: 1
            }
        );
        assert_eq!(e.len(), 1);
        assert_eq!(
            e.remove(&gpu(), &[100]),
            Removal {
                forwarded: 1,
                suppressed: 0
            }
        );
        assert_eq!(e.len(), 0);
        // A hash nobody holds passes through, a no-op.
        assert_eq!(e.remove(&gpu(), &[100]).forwarded, 1);
    }

    #[test]
    fn a_block_held_in_two_places_leaves_when_both_remove_it() {
        let now = Instant::now();
        let mut e = EndpointKeys::default();
        let (full, offload) = (place(None, Some(0)), place(Some("cpu"), Some(0)));
        e.store(&full, &[100, 101], &[1, 2]);
        e.store(&offload, &[100], &[1]);
        // The GPU evicts both; the CPU copy of the first still counts as cached.
        assert_eq!(e.remove(&full, &[100, 101]).forwarded, 2);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 1);
        // A removal from a place that never held the block changes nothing.
        e.remove(&place(None, Some(1)), &[100]);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 1);
        e.remove(&offload, &[100]);
        assert_eq!(e.longest_prefix_match(&[1, 2], now), 0);
        assert!(e.is_empty());
    }

    proptest::proptest! {
        /// Any sequence of announcements and removals over a few hashes and places: a block is
        /// held exactly while some place has more announcements of it than removals (removals
        /// beyond that are no-ops), as upstream's per-place reference counts hold it.
        #[test]
        fn a_block_is_held_while_some_place_holds_more_announcements_than_removals(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u64..4, 0usize..3), 0..60)
        ) {
            let places = [place(None, None), place(Some("cpu"), None), place(None, Some(0))];
            let mut e = EndpointKeys::default();
            let mut model = std::collections::HashMap::new();
            for (store, hash, at) in ops {
                let count = model.entry((hash, at)).or_insert(0u32);
                if store {
                    e.store(&places[at], &[100 + hash], &[hash]);
                    *count += 1;
                } else {
                    e.remove(&places[at], &[100 + hash]);
                    *count = count.saturating_sub(1);
                }
            }
            let now = Instant::now();
            for hash in 0..4 {
                let held = (0..3).any(|at| model.get(&(hash, at)).is_some_and(|&n| n > 0));
                proptest::prop_assert_eq!(e.longest_prefix_match(&[hash], now) == 1, held);
            }
            let held = (0..4u64)
                .filter(|h| (0..3).any(|at| model.get(&(*h, at)).is_some_and(|&n| n > 0)))
                .count();
            proptest::prop_assert_eq!(e.len(), held);
        }
    }
}
