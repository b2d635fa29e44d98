//! inflight-load-producer (llm-d): per endpoint, the requests this EPP sent and has not seen
//! finish, and their estimated tokens. The Router keeps both always (active-request-scorer,
//! utilization-filter, token-load-scorer and prefix-cache-affinity-filter read them); listing
//! the producer sets how tokens are estimated. A request holds the uncached part of its prompt
//! (about four bytes a token, less the leading blocks the picked endpoint has cached) until its
//! first response byte, or, with `addEstimatedOutputTokens`, that plus an output estimate until
//! it completes. Cross-replica sync is not implemented, so asking for it fails.

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::Cycle;

/// Upstream's default output-to-input ratio.
pub const DEFAULT_OUTPUT_RATIO: f64 = 1.5;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct InFlightParams {
    add_estimated_output_tokens: bool,
    output_ratio: Option<f64>,
    max_estimated_output_tokens: Option<i64>,
    prefix_match_info_producer_name: Option<String>,
    sync_cross_replica_state: Option<bool>,
}

/// How a routed request's in-flight tokens are estimated and when they are given back.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEstimate {
    pub add_estimated_output_tokens: bool,
    pub output_ratio: f64,
    pub max_estimated_output_tokens: Option<u64>,
    /// The prefix producer whose matches discount the cached prompt; None = whichever the
    /// cycle's prefix plugins read.
    pub prefix_producer: Option<String>,
}

impl Default for TokenEstimate {
    fn default() -> Self {
        TokenEstimate {
            add_estimated_output_tokens: false,
            output_ratio: DEFAULT_OUTPUT_RATIO,
            max_estimated_output_tokens: None,
            prefix_producer: None,
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: InFlightParams = p.parse()?;
    let output_ratio = params.output_ratio.unwrap_or(DEFAULT_OUTPUT_RATIO);
    if !(output_ratio >= 0.0 && output_ratio.is_finite()) {
        return Err(p.error(format_args!(
            "parameters.outputRatio: must be non-negative, got {output_ratio}"
        )));
    }
    let max_output = match params.max_estimated_output_tokens {
        Some(n) if n < 0 => {
            return Err(p.error(format_args!(
                "parameters.maxEstimatedOutputTokens: must be non-negative, got {n}"
            )))
        }
        n => n.map(|n| n as u64),
    };
    if params.sync_cross_replica_state == Some(true) {
        return Err(
            p.error("parameters.syncCrossReplicaState: in-flight counts are per EPP replica here")
        );
    }
    Ok(Plugin::InFlightLoad(TokenEstimate {
        add_estimated_output_tokens: params.add_estimated_output_tokens,
        output_ratio,
        max_estimated_output_tokens: max_output,
        prefix_producer: params.prefix_match_info_producer_name,
    }))
}

impl TokenEstimate {
    /// The tokens a request routed to `candidate` holds there: its uncached prompt tokens, plus
    /// the output estimate when asked (from the whole prompt, capped by the request's own
    /// `max_tokens` and by `maxEstimatedOutputTokens`).
    pub fn held(&self, cycle: &Cycle<'_>, candidate: u32, max_tokens: Option<u64>) -> u32 {
        let uncached = cycle.uncached_prompt_tokens(candidate);
        if !self.add_estimated_output_tokens {
            return saturate(uncached);
        }
        let input = cycle.prompt_tokens();
        let mut output = (input as f64 * self.output_ratio).round() as u64;
        for cap in [max_tokens, self.max_estimated_output_tokens]
            .into_iter()
            .flatten()
        {
            output = output.min(cap);
        }
        saturate(uncached + output)
    }

    /// Whether the tokens are given back at the first response byte (prefill done) rather
    /// than when the response completes (an output estimate is held to the end).
    pub fn released_at_first_byte(&self) -> bool {
        !self.add_estimated_output_tokens
    }
}

fn saturate(tokens: u64) -> u32 {
    u32::try_from(tokens).unwrap_or(u32::MAX)
}
