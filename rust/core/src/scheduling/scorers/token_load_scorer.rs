//! token-load-scorer (llm-d): prefers endpoints with fewer estimated tokens in flight. An
//! endpoint's load is the tokens this EPP's requests hold there (inflight-load-producer) plus
//! the uncached prompt tokens this request would add to it; it scores
//! `1 - min(1, load / queueThresholdTokens)`.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;
use crate::scheduling::filters::utilization_filter::check_in_flight_producer;

/// Upstream's default: 128 requests of 32K tokens.
pub const DEFAULT_QUEUE_THRESHOLD_TOKENS: i64 = 4_194_304;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct TokenLoadParams {
    queue_threshold_tokens: i64,
    in_flight_load_producer_name: Option<String>,
}

pub struct TokenLoadScorer {
    pub queue_threshold_tokens: f64,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: TokenLoadParams = p.parse()?;
    check_in_flight_producer(p, params.in_flight_load_producer_name.as_deref())?;
    // As upstream, a threshold of zero or less means the default.
    let threshold = match params.queue_threshold_tokens {
        n if n <= 0 => DEFAULT_QUEUE_THRESHOLD_TOKENS,
        n => n,
    };
    Ok(Plugin::Scorer(Arc::new(TokenLoadScorer {
        queue_threshold_tokens: threshold as f64,
    })))
}

impl Scorer for TokenLoadScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let load = cycle.endpoint(c).in_flight_tokens() + cycle.uncached_prompt_tokens(c);
            *slot = 1.0 - (load as f64 / self.queue_threshold_tokens).min(1.0);
        }
    }
}
