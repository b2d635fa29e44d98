//! Prefill/decode deciders (llm-d): after the decode endpoint is chosen, say whether the prompt
//! should be prefilled elsewhere. `prefix-based-pd-decider` does so when the prompt tokens the
//! decode endpoint has not cached reach `nonCachedTokens`; `always-disagg-pd-decider` always.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::decider::PdDecider;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::Cycle;
use crate::scheduling::scorers::prefix_cache_scorer::BYTES_PER_TOKEN;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct PrefixDeciderParams {
    non_cached_tokens: usize,
}

pub struct PrefixBasedPdDecider {
    pub non_cached_tokens: usize,
}

pub fn prefix_based_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: PrefixDeciderParams = p.parse()?;
    Ok(Plugin::Decider(Arc::new(PrefixBasedPdDecider {
        non_cached_tokens: params.non_cached_tokens,
    })))
}

pub struct AlwaysDisaggPdDecider;

pub fn always_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Decider(Arc::new(AlwaysDisaggPdDecider)))
}

impl PdDecider for AlwaysDisaggPdDecider {
    fn decide(&self, _cycle: &Cycle<'_>, _decode: u32) -> bool {
        true
    }
}

impl PdDecider for PrefixBasedPdDecider {
    fn decide(&self, cycle: &Cycle<'_>, decode: u32) -> bool {
        let prompt_tokens = cycle.request.prompt.len().div_ceil(BYTES_PER_TOKEN);
        // Without a prefix-cache scorer in the decode profile nothing counts as cached.
        let cached = cycle
            .state
            .borrow()
            .prefix
            .as_ref()
            .map_or(0, |p| p.matched_blocks(decode) * p.block_tokens);
        let uncached = prompt_tokens.saturating_sub(cached);
        uncached > 0 && uncached >= self.non_cached_tokens
    }
}
