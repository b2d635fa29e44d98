//! prefix-cache-scorer: scores each endpoint by the share of the request's leading blocks it
//! holds, as a prefix producer reports them (upstream's `PrefixCacheMatchInfo`). Approximate by
//! default: an approx-prefix-cache-producer's index of the blocks the EPP routed there before,
//! learnt after each pick (the one named by `prefixMatchInfoProducerName`, else the one
//! configured, else the scorer's own with upstream's defaults). Precise when a
//! precise-prefix-cache-producer is configured: the blocks the endpoint's own KV events say
//! it holds, at the engine's block size.
//!
//! Unlike upstream's scorer, a cached prefix yields to a server with free batch slots once the
//! wait at its own outweighs the prefill it saves (`affinityQueueTokens`, default 200): with
//! upstream's default weights (prefix 3 against queue 2 + KV 2) a full match wins over any
//! queue, so a hot prefix piles onto the one server that first cached it while others idle.
//! While some candidate reports no queue, staying saves the prefill of the blocks the match's
//! server holds beyond the longest match on such a candidate (where the turn would go, with
//! that shorter prefix, or cold), and costs the wait behind its queue, each queued request
//! counted as `affinityQueueTokens` prefill tokens. While the saving is larger the match counts
//! whole (upstream's scores); once the wait is larger it counts as that shorter match, and the
//! queue decides. "Queued" is what the server itself reports waiting (and, while it reports a
//! queue, the EPP's requests sent since beyond those it runs): a request sent since the last
//! scrape to a server with free slots is running, not waiting. When every candidate queues, a
//! match counts whole, as upstream: moving a request then gains no idle capacity, and the
//! prefill it repeats takes capacity from all. The value is a ratio of times: the wait one
//! queued request adds (a request's service time over the batch slots) over the prefill time
//! of one token.
//!
//! Its tokens are the model's: prefill time is spent per model token. The precise index with a
//! token-producer counts them; the approximate producer (and the precise index's byte scheme)
//! cuts blocks at one estimated token per 4 bytes, converted here with
//! `affinityCharactersPerToken`, the model's characters per token (default 4: the estimate
//! taken as is). With a tokenizer that makes 6.4 characters a token the estimate makes a
//! history 1.6× longer than it is, so turns stay on a queued server longer than their prefill
//! is worth; set 6.4 there to price what the model will really prefill.
//!
//! `affinityQueueSlack` (set, in place of the token rule; sluicegate's default until session
//! 7 with 4) discounts a match by queue depth alone: slack / (slack + requests queued at its
//! server), whatever the match saves; 0 = upstream's scorer, a match counts whatever the queue.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::{Picks, PrefixProducers, PrefixSource, Scorer};
use crate::scheduling::cycle::{Cycle, PrefixState};
pub use crate::scheduling::producers::approx_prefix_cache_producer::BYTES_PER_TOKEN;
use crate::scheduling::producers::approx_prefix_cache_producer::{
    ApproxParams, ApproxPrefixProducer,
};
use crate::scheduling::scorers::queue_scorer::waiting;

/// Prefill tokens one request queued at a match's server is worth (`affinityQueueTokens`, the
/// default rule): a full match of 1,500 tokens yields to an idle cold server once 8 requests
/// queue at its own, a match that holds 400 tokens more than an idle server's once 3 do.
pub const AFFINITY_QUEUE_TOKENS: f64 = 200.0;

/// The model's characters (bytes) per token the approximate estimate is converted with (its
/// default): the estimate's own 4, so it is taken as is.
pub const AFFINITY_CHARACTERS_PER_TOKEN: f64 = BYTES_PER_TOKEN as f64;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct PrefixParams {
    /// The producer whose match info to read ("" = the one configured, or the scorer's own).
    prefix_match_info_producer_name: String,
    /// Upstream's blend of the matched share and the matched length:
    /// score = w·min(1, matched tokens / matchLengthScaleTokens)² + (1 − w)·matched share.
    match_length_weight: f64,
    match_length_scale_tokens: usize,
    /// Requests queued at a match's server, while another candidate has free slots, at which
    /// the match counts half; 0 = matches count whatever the queue (upstream's scorer). Set,
    /// it replaces the default `affinityQueueTokens` rule.
    affinity_queue_slack: Option<f64>,
    /// Prefill tokens one request queued at a match's server is worth: while some candidate
    /// has free slots, a match counts whole while the tokens it holds beyond the longest match
    /// on such a candidate exceed queued requests × this, else as that shorter match; 0 = off
    /// (`affinityQueueSlack` applies).
    affinity_queue_tokens: Option<f64>,
    /// The model's characters (bytes) per token: converts the approximate producer's estimated
    /// tokens into the model's for `affinityQueueTokens`; the precise index counts the model's.
    affinity_characters_per_token: f64,
    // The scorer's older parameters (before upstream split off the producer): they configure
    // the scorer's own approximate producer.
    auto_tune: Option<bool>,
    #[serde(alias = "blockSizeTokens", alias = "hashBlockSize")]
    block_size: Option<usize>,
    max_prefix_blocks_to_match: Option<usize>,
    max_prefix_tokens_to_match: Option<usize>,
    lru_capacity_per_server: Option<usize>,
}

impl Default for PrefixParams {
    fn default() -> Self {
        PrefixParams {
            prefix_match_info_producer_name: String::new(),
            match_length_weight: 0.0,
            match_length_scale_tokens: 8192,
            affinity_queue_slack: None,
            affinity_queue_tokens: None,
            affinity_characters_per_token: AFFINITY_CHARACTERS_PER_TOKEN,
            auto_tune: None,
            block_size: None,
            max_prefix_blocks_to_match: None,
            max_prefix_tokens_to_match: None,
            lru_capacity_per_server: None,
        }
    }
}

impl PrefixParams {
    fn own_producer(&self) -> ApproxParams {
        let mut p = ApproxParams::default();
        if let Some(v) = self.auto_tune {
            p.auto_tune = v;
        }
        if let Some(v) = self.block_size {
            p.block_size_tokens = v;
        }
        if let Some(v) = self.max_prefix_blocks_to_match {
            // Named alone, the block cap is meant to apply.
            p.max_prefix_blocks_to_match = v;
            p.max_prefix_tokens_to_match = 0;
        }
        if let Some(v) = self.max_prefix_tokens_to_match {
            p.max_prefix_tokens_to_match = v;
        }
        if let Some(v) = self.lru_capacity_per_server {
            p.lru_capacity_per_server = v;
        }
        p
    }
}

pub struct PrefixCacheScorer {
    producer_name: String,
    match_length_weight: f64,
    match_length_scale_tokens: usize,
    affinity_queue_slack: f64,
    affinity_queue_tokens: f64,
    affinity_characters_per_token: f64,
    own: Arc<ApproxPrefixProducer>,
    linked: OnceLock<PrefixSource>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: PrefixParams = p.parse()?;
    if !(0.0..=1.0).contains(&params.match_length_weight) {
        return Err(p.error(format_args!(
            "parameters.matchLengthWeight: must be in [0, 1], got {}",
            params.match_length_weight
        )));
    }
    if params.match_length_scale_tokens == 0 {
        return Err(p.error("parameters.matchLengthScaleTokens: must be >= 1"));
    }
    let (slack, tokens) = match (params.affinity_queue_slack, params.affinity_queue_tokens) {
        (Some(s), Some(t)) if s > 0.0 && t > 0.0 => {
            return Err(p.error(
                "parameters.affinityQueueSlack, affinityQueueTokens: set one of them, not both",
            ))
        }
        (slack, Some(t)) => (slack.unwrap_or(0.0), t),
        (Some(s), None) => (s, 0.0),
        (None, None) => (0.0, AFFINITY_QUEUE_TOKENS),
    };
    if !(slack.is_finite() && slack >= 0.0) {
        return Err(p.error(format_args!(
            "parameters.affinityQueueSlack: must be >= 0, got {slack}"
        )));
    }
    if !(tokens.is_finite() && tokens >= 0.0) {
        return Err(p.error(format_args!(
            "parameters.affinityQueueTokens: must be >= 0, got {tokens}"
        )));
    }
    let chars = params.affinity_characters_per_token;
    if !(chars.is_finite() && chars > 0.0) {
        return Err(p.error(format_args!(
            "parameters.affinityCharactersPerToken: must be > 0, got {chars}"
        )));
    }
    let own = ApproxPrefixProducer::new(params.own_producer()).map_err(|e| p.error(e))?;
    let mut scorer = PrefixCacheScorer::new(own);
    scorer.producer_name = params.prefix_match_info_producer_name;
    scorer.match_length_weight = params.match_length_weight;
    scorer.match_length_scale_tokens = params.match_length_scale_tokens;
    scorer.affinity_queue_slack = slack;
    scorer.affinity_queue_tokens = tokens;
    scorer.affinity_characters_per_token = chars;
    Ok(Plugin::Scorer(Arc::new(scorer)))
}

impl PrefixCacheScorer {
    /// A scorer with its own approximate producer.
    pub fn new(producer: ApproxPrefixProducer) -> Self {
        PrefixCacheScorer {
            producer_name: String::new(),
            match_length_weight: 0.0,
            match_length_scale_tokens: 8192,
            affinity_queue_slack: 0.0,
            affinity_queue_tokens: AFFINITY_QUEUE_TOKENS,
            affinity_characters_per_token: AFFINITY_CHARACTERS_PER_TOKEN,
            own: Arc::new(producer),
            linked: OnceLock::new(),
        }
    }

    fn source(&self) -> PrefixSource {
        match self.linked.get() {
            Some(linked) => linked.clone(),
            None => PrefixSource::Approx(self.own.clone()),
        }
    }

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

    /// What a match of `n` blocks scores at a candidate with `queue` requests queued, given the
    /// shallowest queue among the candidates and the longest match on a candidate with free
    /// slots (`free_best`).
    fn counted(&self, n: usize, m: &MatchContext, queue: Option<u32>) -> f64 {
        let whole = self.blend(n, m.total, m.block_tokens);
        let (Some(w), Some(0)) = (queue, m.shallowest) else {
            return whole; // every candidate queues, or its queue is unknown
        };
        if w == 0 {
            return whole;
        }
        if self.affinity_queue_tokens > 0.0 {
            let kept = m.free_best.min(n);
            let saved = (n - kept) as f64 * m.priced_block;
            if f64::from(w) * self.affinity_queue_tokens > saved {
                return if kept == 0 {
                    0.0
                } else {
                    self.blend(kept, m.total, m.block_tokens)
                };
            }
            return whole;
        }
        let slack = self.affinity_queue_slack;
        if slack > 0.0 {
            whole * slack / (slack + f64::from(w))
        } else {
            whole
        }
    }
}

/// What every candidate's match is weighed against in one cycle.
struct MatchContext {
    total: f64,
    block_tokens: usize,
    /// One block in the model's tokens, the unit of `affinityQueueTokens`.
    priced_block: f64,
    shallowest: Option<u32>,
    free_best: usize,
}

/// Requests queued at the candidate, for the affinity share: none while the server reports
/// no queue (the EPP's requests sent since its last scrape found free batch slots), else the
/// queue-scorer's count (its queue, or the EPP's requests beyond those it runs); None when
/// stale.
fn queued(cycle: &Cycle<'_>, c: u32) -> Option<u32> {
    let reported = cycle.endpoint(c).metrics.waiting;
    waiting(cycle, c).map(|w| if reported == 0 { 0 } else { w })
}

impl Scorer for PrefixCacheScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let source = self.source();
        let (hashes, block_tokens) = source.blocks(cycle, candidates);
        // One block in model tokens: the producer's own count, or its estimate converted.
        let priced_block = if source.counts_model_tokens() {
            block_tokens as f64
        } else {
            block_tokens as f64 * BYTES_PER_TOKEN as f64 / self.affinity_characters_per_token
        };
        let mut matched = Vec::new();
        if hashes.is_empty() {
            out.fill(0.0);
        } else {
            // First pass: each candidate's match, parked in its score slot (no buffer per
            // request), and what every match is weighed against.
            let mut shallowest: Option<u32> = None;
            // The precise index's lookup latency (upstream's histogram): its matching, timed.
            let started = matches!(source, PrefixSource::Precise(_)).then(Instant::now);
            // The longest prefix a turn keeps if it moves to a candidate with free slots.
            let mut free_best = 0;
            for (slot, &c) in out.iter_mut().zip(candidates) {
                let n = source.matched(cycle, cycle.endpoint(c).info.id, &hashes);
                let queue = queued(cycle, c);
                if let Some(q) = queue {
                    shallowest = Some(shallowest.map_or(q, |s| s.min(q)));
                }
                if queue == Some(0) {
                    free_best = free_best.max(n);
                }
                *slot = n as f64;
            }
            let m = MatchContext {
                total: hashes.len() as f64,
                block_tokens,
                priced_block,
                shallowest,
                free_best,
            };
            let mut best = 0;
            for (slot, &c) in out.iter_mut().zip(candidates) {
                let n = *slot as usize;
                if n > 0 {
                    matched.push((c, n));
                }
                best = best.max(n);
                *slot = if n == 0 {
                    0.0
                } else {
                    self.counted(n, &m, queued(cycle, c))
                };
            }
            if let (PrefixSource::Precise(p), Some(started)) = (&source, started) {
                p.record_lookup(hashes.len(), best, started.elapsed());
            }
        }
        cycle.state.borrow_mut().prefix = Some(PrefixState {
            producer: source.id(),
            hashes,
            block_tokens,
            matched,
        });
    }

    fn picked(&self, cycle: &Cycle<'_>, picks: &Picks) {
        let source = self.source();
        let state = cycle.state.borrow();
        let rehashed;
        let hashes = match state.prefix.as_ref() {
            Some(p) if p.producer == source.id() => &p.hashes,
            // Another prefix scorer, reading another producer, scored after this one.
            _ => {
                rehashed = source.blocks(cycle, &picks.primary).0;
                &rehashed
            }
        };
        if hashes.is_empty() {
            return;
        }
        // The model server caches the prompt where it runs: the primary, and the prefill
        // endpoint when disaggregated.
        for &e in picks.primary.first().into_iter().chain(&picks.prefill) {
            let ep = cycle.endpoint(e);
            match &source {
                // The endpoints' own events keep the precise index; a prediction bridges the
                // time until they arrive (speculativeIndexing).
                PrefixSource::Precise(p) => p.speculate(ep.info.id, hashes),
                PrefixSource::Approx(a) => a.record(ep, hashes),
                // The window's assignment is the prediction; nothing outlives it.
                PrefixSource::Burst(_) => {}
            }
        }
    }

    fn endpoint_removed(&self, id: u64) {
        // A configured producer hears of it from the scheduler itself.
        self.own.remove_endpoint(id);
    }

    /// Bind to the producer named by `prefixMatchInfoProducerName`; unnamed, to the precise
    /// producer, else the one approximate producer, else keep the scorer's own.
    fn use_prefix_producers(&self, producers: &PrefixProducers<'_>) -> Result<(), String> {
        if let Some(source) = producers.resolve(&self.producer_name)? {
            let _ = self.linked.set(source);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scorer(tokens: f64) -> PrefixCacheScorer {
        let mut s =
            PrefixCacheScorer::new(ApproxPrefixProducer::new(ApproxParams::default()).unwrap());
        s.affinity_queue_tokens = tokens;
        s
    }

    fn context(free_best: usize) -> MatchContext {
        MatchContext {
            total: 40.0,
            block_tokens: 64,
            priced_block: 64.0,
            shallowest: Some(0),
            free_best,
        }
    }

    #[test]
    fn a_move_to_a_shorter_prefix_weighs_only_the_blocks_it_loses() {
        // 40 blocks here, 32 on a candidate with free slots: staying saves 8 × 64 = 512 tokens.
        let s = scorer(600.0);
        assert_eq!(s.counted(40, &context(32), Some(1)), 32.0 / 40.0);
        let s = scorer(400.0);
        assert_eq!(s.counted(40, &context(32), Some(1)), 1.0);
        // Nothing held elsewhere: the whole 2,560 tokens against 5 × 400 queued.
        assert_eq!(s.counted(40, &context(0), Some(5)), 1.0);
        assert_eq!(s.counted(40, &context(0), Some(7)), 0.0);
    }

    #[test]
    fn a_match_counts_whole_without_a_queue_or_when_every_candidate_queues() {
        let s = scorer(10_000.0);
        assert_eq!(s.counted(40, &context(0), Some(0)), 1.0);
        assert_eq!(s.counted(40, &context(0), None), 1.0);
        let all_queue = MatchContext {
            shallowest: Some(2),
            ..context(0)
        };
        assert_eq!(s.counted(40, &all_queue, Some(9)), 1.0);
    }

    #[test]
    fn without_a_token_cost_the_slack_weighs_the_queue() {
        let mut s = scorer(0.0);
        s.affinity_queue_slack = 4.0; // sluicegate's default until session 7
        assert_eq!(s.counted(40, &context(0), Some(4)), 0.5);
    }
}
