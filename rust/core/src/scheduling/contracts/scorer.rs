//! The scorer contract: each scorer rates every candidate in [0, 1]; the profile clamps, weighs
//! and sums them. A scorer may also learn from the cycle's outcome (upstream's PreRequest hook).

use std::sync::Arc;

use crate::scheduling::cycle::Cycle;
use crate::scheduling::producers::approx_prefix_cache_producer::ApproxPrefixProducer;
use crate::scheduling::producers::burst_prefix_cache_producer::BurstPrefixProducer;
use crate::scheduling::producers::mm_embeddings_cache_producer::MmEmbeddingsProducer;
use crate::scheduling::producers::precise_prefix_cache_producer::BlockIndex;
use crate::scheduling::producers::topology_extractor::TopologySource;
use crate::scheduling::session::ProfileRef;

/// What a scheduling cycle decided: snapshot positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Picks {
    /// The primary (decode) endpoint first, then fallbacks.
    pub primary: Vec<u32>,
    /// The prefill endpoint, when a disaggregation handler ran a prefill profile.
    pub prefill: Option<u32>,
    /// The encode endpoints, when a disaggregation handler ran an encode profile.
    pub encode: Vec<u32>,
    /// Positions in the scheduler's profile list of the profiles behind `primary`, `prefill`
    /// and `encode` (set by the profile handler; a session plugin's `profileName` reads them).
    pub profiles: StageProfiles,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageProfiles {
    pub primary: usize,
    pub prefill: Option<usize>,
    pub encode: Option<usize>,
}

impl Picks {
    /// The endpoint the profile at position `profile` picked for this request: none when that
    /// profile did not run or picked nothing (as upstream's lookup in the profile results).
    pub fn of_profile(&self, profile: usize) -> Option<u32> {
        if profile == self.profiles.primary {
            self.primary.first().copied()
        } else if Some(profile) == self.profiles.prefill {
            self.prefill
        } else if Some(profile) == self.profiles.encode {
            self.encode.first().copied()
        } else {
            None
        }
    }
}

pub trait Scorer: Send + Sync {
    /// Write one score in [0, 1] per candidate into `out` (same length and order).
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]);

    /// Called once the cycle has picked; stateful scorers record the decision here.
    fn picked(&self, _cycle: &Cycle<'_>, _picks: &Picks) {}

    /// The endpoint with this id left the pool: drop what is kept about it.
    fn endpoint_removed(&self, _id: u64) {}

    /// A session scorer's `profileName`, for the scheduler to bind to a profile.
    fn session_profile(&self) -> Option<&ProfileRef> {
        None
    }

    /// The topology-extractor this scorer reads, for the scheduler to bind.
    fn topology(&self) -> Option<&TopologySource> {
        None
    }

    /// The configured prefix producers, by name: prefix scorers bind to theirs (an error names
    /// the parameter that refers to a missing one).
    fn use_prefix_producers(&self, _producers: &PrefixProducers<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// The producers a config built (prefix caches, multimodal caches), for the plugins that read
/// them.
#[derive(Clone, Copy)]
pub struct PrefixProducers<'a> {
    pub precise: Option<(&'a str, &'a Arc<BlockIndex>)>,
    pub approx: &'a [(String, Arc<ApproxPrefixProducer>)],
    pub mm: &'a [(String, Arc<MmEmbeddingsProducer>)],
    pub burst: Option<(&'a str, &'a Arc<BurstPrefixProducer>)>,
}

impl PrefixProducers<'_> {
    /// The prefix producer `prefixMatchInfoProducerName` names; unnamed: the precise one, else
    /// the one approximate one, else None (the reader keeps its own or has none).
    pub fn resolve(&self, name: &str) -> Result<Option<PrefixSource>, String> {
        if name.is_empty() {
            return Ok(match (self.precise, self.approx) {
                (Some((_, p)), _) => Some(PrefixSource::Precise(p.clone())),
                (None, [(_, a)]) => Some(PrefixSource::Approx(a.clone())),
                _ => None,
            });
        }
        if let Some((_, p)) = self.precise.filter(|(n, _)| *n == name) {
            return Ok(Some(PrefixSource::Precise(p.clone())));
        }
        if let Some((_, b)) = self.burst.filter(|(n, _)| *n == name) {
            return Ok(Some(PrefixSource::Burst(b.clone())));
        }
        match self.approx.iter().find(|(n, _)| n == name) {
            Some((_, a)) => Ok(Some(PrefixSource::Approx(a.clone()))),
            None => Err(format!(
                "parameters.prefixMatchInfoProducerName: no prefix producer named '{name}'"
            )),
        }
    }
}

/// A prefix producer whose matches a plugin reads (upstream's PrefixCacheMatchInfo).
#[derive(Clone)]
pub enum PrefixSource {
    Approx(Arc<ApproxPrefixProducer>),
    Precise(Arc<BlockIndex>),
    /// A full match on the replica the request's window assigned it, none elsewhere.
    Burst(Arc<BurstPrefixProducer>),
}

impl PrefixSource {
    /// Tells producers apart within a cycle.
    pub fn id(&self) -> usize {
        match self {
            PrefixSource::Approx(a) => Arc::as_ptr(a) as usize,
            PrefixSource::Precise(p) => Arc::as_ptr(p) as usize,
            PrefixSource::Burst(b) => Arc::as_ptr(b) as usize,
        }
    }

    /// The request's blocks at the producer's size, and that size in tokens: the precise index's
    /// keys, or the approximate producer's estimated-token blocks.
    pub fn blocks(&self, cycle: &Cycle<'_>, candidates: &[u32]) -> (Vec<u64>, usize) {
        match self {
            PrefixSource::Precise(p) => (p.request_keys(&cycle.request), p.block_tokens()),
            PrefixSource::Approx(a) => {
                let first = candidates.first().map(|&c| cycle.endpoint(c));
                let block_tokens = a.block_tokens(first);
                (a.hashes(&cycle.request, block_tokens), block_tokens)
            }
            PrefixSource::Burst(b) => {
                let r = &cycle.request;
                (b.hashes(r.model, r.cache_salt, r.prompt), b.block_tokens())
            }
        }
    }

    /// How many leading blocks of `hashes` the endpoint with this id holds.
    pub fn matched(&self, cycle: &Cycle<'_>, endpoint: u64, hashes: &[u64]) -> usize {
        match self {
            PrefixSource::Precise(p) => p.longest_prefix_match(endpoint, hashes),
            PrefixSource::Approx(a) => a.longest_prefix_match(endpoint, hashes),
            PrefixSource::Burst(_) if cycle.request.burst == Some(endpoint) => hashes.len(),
            PrefixSource::Burst(_) => 0,
        }
    }

    /// Whether the producer's tokens are the model's own (the precise index tokenizing with a
    /// token-producer) rather than an estimate of `BYTES_PER_TOKEN` bytes each.
    pub fn counts_model_tokens(&self) -> bool {
        matches!(self, PrefixSource::Precise(p) if p.token_level())
    }
}

/// Min-max normalisation where less is better: the smallest value scores 1, the largest 0,
/// and all-equal values score 1. Candidates for which `value` is None score 0 and do not
/// take part in the range (stale endpoints count as saturated).
pub fn score_lower_is_better(
    candidates: &[u32],
    out: &mut [f64],
    value: impl Fn(u32) -> Option<f64>,
) {
    score_lower_is_better_over(candidates, out, 0.0, value)
}

/// As `score_lower_is_better`, but the range divided by is at least `min_range`: the smallest
/// value still scores 1, and values that differ by less than `min_range` do not take the whole
/// unit between them.
pub fn score_lower_is_better_over(
    candidates: &[u32],
    out: &mut [f64],
    min_range: f64,
    value: impl Fn(u32) -> Option<f64>,
) {
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &c in candidates {
        if let Some(v) = value(c) {
            min = min.min(v);
            max = max.max(v);
        }
    }
    let range = (max - min).max(min_range);
    for (slot, &c) in out.iter_mut().zip(candidates) {
        *slot = match value(c) {
            None => 0.0,
            Some(_) if range <= 0.0 => 1.0,
            Some(v) => (min + range - v) / range,
        };
    }
}
