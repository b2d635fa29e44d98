//! Disaggregation deciders (llm-d): after the decode endpoint is chosen, say whether a stage
//! runs elsewhere. `prefix-based-pd-decider` prefills elsewhere when the prompt tokens the
//! decode endpoint has not cached reach `nonCachedTokens` (0 disables it) and the prompt has at
//! least `promptTokens`; `always-disagg-pd-decider` always does; `always-disagg-multimodal-decider`
//! encodes elsewhere when the request carries images, video or audio.

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
    prompt_tokens: usize,
}

pub struct PrefixBasedPdDecider {
    pub non_cached_tokens: usize,
    pub prompt_tokens: usize,
}

pub fn prefix_based_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: PrefixDeciderParams = p.parse()?;
    Ok(Plugin::Decider(Arc::new(PrefixBasedPdDecider {
        non_cached_tokens: params.non_cached_tokens,
        prompt_tokens: params.prompt_tokens,
    })))
}

pub struct AlwaysDisaggPdDecider;

pub fn always_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Decider(Arc::new(AlwaysDisaggPdDecider)))
}

pub struct AlwaysDisaggMultimodalDecider;

pub fn multimodal_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Decider(Arc::new(AlwaysDisaggMultimodalDecider)))
}

/// Whether a chat body has a content block of a media type: the quoted type name as a JSON
/// string of its own (`"image_url"`, not the same word inside a text, where its quotes would be
/// escaped).
pub fn carries_media(body: &[u8]) -> bool {
    const MEDIA: [&[u8]; 3] = [b"\"image_url\"", b"\"video_url\"", b"\"input_audio\""];
    MEDIA.iter().any(|needle| {
        body.windows(needle.len())
            .enumerate()
            .any(|(i, w)| w == *needle && (i == 0 || body[i - 1] != b'\\'))
    })
}

impl PdDecider for AlwaysDisaggMultimodalDecider {
    fn decide(&self, cycle: &Cycle<'_>, _decode: u32) -> bool {
        cycle.request.multimodal
    }
}

impl PdDecider for AlwaysDisaggPdDecider {
    fn decide(&self, _cycle: &Cycle<'_>, _decode: u32) -> bool {
        true
    }
}

impl PdDecider for PrefixBasedPdDecider {
    fn decide(&self, cycle: &Cycle<'_>, decode: u32) -> bool {
        if self.non_cached_tokens == 0 {
            return false;
        }
        let prompt_tokens = cycle.request.prompt.len().div_ceil(BYTES_PER_TOKEN);
        if prompt_tokens < self.prompt_tokens {
            return false;
        }
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
