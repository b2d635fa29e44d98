//! no-hit-lru-scorer (llm-d): for a request no endpoint has cached (a cold request), prefers the
//! endpoints that least recently received a cold request, so new cache contents spread evenly;
//! requests with a prefix hit get a neutral 0.5 everywhere. Reads the prefix-cache scorer's
//! result of the same cycle, so it must follow it in the profile.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, PrefixProducers, Scorer};
use crate::scheduling::cycle::Cycle;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct NoHitLruParams {
    /// The prefix producer whose matches tell a cold request (upstream's); checked to name
    /// one. The cycle holds the prefix-cache-scorer's match, read from the producer it is
    /// bound to: list the two with the same producer, as upstream's guides do.
    prefix_match_info_producer_name: String,
    /// Deprecated upstream ("never used"), accepted.
    prefix_plugin_type: Option<String>,
    /// Deprecated upstream ("never used"), accepted.
    prefix_plugin_name: Option<String>,
    /// From older upstream releases, accepted; the prefill pick is always tracked.
    prefill_profile: Option<String>,
    /// Endpoints tracked; 0 (or unset) = 1024, as upstream.
    lru_size: usize,
}

/// Endpoints the LRU tracks when `lruSize` is unset or 0 (upstream's default).
const DEFAULT_LRU_SIZE: usize = 1024;

pub struct NoHitLruScorer {
    /// Endpoint ids that received cold requests, least recent first.
    lru: Mutex<VecDeque<u64>>,
    capacity: usize,
    producer_name: String,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: NoHitLruParams = p.parse()?;
    let _ = (
        params.prefix_plugin_type,
        params.prefix_plugin_name,
        params.prefill_profile,
    );
    let capacity = match params.lru_size {
        0 => DEFAULT_LRU_SIZE,
        n => n,
    };
    let mut scorer = NoHitLruScorer::new(capacity);
    scorer.producer_name = params.prefix_match_info_producer_name;
    Ok(Plugin::Scorer(Arc::new(scorer)))
}

impl NoHitLruScorer {
    pub fn new(capacity: usize) -> Self {
        NoHitLruScorer {
            lru: Mutex::new(VecDeque::new()),
            capacity,
            producer_name: String::new(),
        }
    }
}

fn is_cold(cycle: &Cycle<'_>) -> bool {
    cycle
        .state
        .borrow()
        .prefix
        .as_ref()
        .is_none_or(|p| p.matched.is_empty())
}

impl Scorer for NoHitLruScorer {
    fn use_prefix_producers(&self, producers: &PrefixProducers<'_>) -> Result<(), String> {
        if !self.producer_name.is_empty() {
            producers.resolve(&self.producer_name)?;
        }
        Ok(())
    }

    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        if !is_cold(cycle) {
            out.fill(0.5);
            return;
        }
        let n = candidates.len();
        if n == 1 {
            out[0] = 1.0;
            return;
        }
        let lru = self.lru.lock();
        let position = |c: u32| {
            let id = cycle.endpoint(c).info.id;
            lru.iter().position(|&x| x == id)
        };
        // Never-used endpoints rank first, in candidate order; then used ones, oldest first.
        let mut never = 0usize;
        for (slot, &c) in out.iter_mut().zip(candidates) {
            if position(c).is_none() {
                *slot = 1.0 - never as f64 / (n - 1) as f64;
                never += 1;
            }
        }
        for (slot, &c) in out.iter_mut().zip(candidates) {
            if let Some(pos) = position(c) {
                *slot = (1.0 - (never + pos) as f64 / (n - 1) as f64).max(0.0);
            }
        }
    }

    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        if !is_cold(cycle) {
            return;
        }
        let mut lru = self.lru.lock();
        for &e in picks.primary.first().into_iter().chain(&picks.prefill) {
            let id = cycle.endpoint(e).info.id;
            lru.retain(|&x| x != id);
            lru.push_back(id);
            if lru.len() > self.capacity {
                lru.pop_front();
            }
        }
    }

    fn endpoint_removed(&self, id: u64) {
        self.lru.lock().retain(|&x| x != id);
    }
}
