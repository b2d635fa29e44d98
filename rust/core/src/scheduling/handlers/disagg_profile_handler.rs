//! disagg-profile-handler (llm-d prefill/decode disaggregation): the decode profile runs first
//! and is primary; when the decider says the prompt is worth prefilling elsewhere, the prefill
//! profile picks a prefill endpoint, which the decode endpoint learns from a request header.
//! A failed prefill pick falls back to decode-only, which still serves the request.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::decider::PdDecider;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::profile_handler::{HandlerSpec, ProfileHandler};
use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::profile::SchedulingProfile;

/// The header naming the prefill endpoint ("ip:port") on the request sent to the decode endpoint.
pub const PREFILLER_HEADER: &str = "x-prefiller-host-port";

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct DisaggParams {
    decode_profile: String,
    prefill_profile: String,
    prefill_decider_plugin_name: Option<String>,
    /// Accepted for upstream compatibility: the cycle holds one prefix result.
    prefix_plugin_name: Option<String>,
    prefix_plugin_type: Option<String>,
    /// Legacy pd-profile-handler: uncached prompt tokens that trigger a prefill.
    threshold: Option<usize>,
    /// Legacy pd-profile-handler: the prefix block size is the prefix scorer's own.
    hash_block_size: Option<usize>,
}

impl Default for DisaggParams {
    fn default() -> Self {
        DisaggParams {
            decode_profile: "decode".into(),
            prefill_profile: "prefill".into(),
            prefill_decider_plugin_name: None,
            prefix_plugin_name: None,
            prefix_plugin_type: None,
            threshold: None,
            hash_block_size: None,
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: DisaggParams = p.parse()?;
    let _ = (
        params.prefix_plugin_name,
        params.prefix_plugin_type,
        params.hash_block_size,
    );
    if params.threshold.is_some() && params.prefill_decider_plugin_name.is_some() {
        return Err(p.error("parameters: give threshold or prefillDeciderPluginName, not both"));
    }
    Ok(Plugin::ProfileHandler(HandlerSpec::Disagg {
        decode_profile: params.decode_profile,
        prefill_profile: params.prefill_profile,
        decider: params.prefill_decider_plugin_name,
        threshold: params.threshold,
    }))
}

pub struct DisaggProfileHandler {
    /// Positions in the scheduler's profile list.
    pub decode: usize,
    pub prefill: Option<usize>,
    pub decider: Option<Arc<dyn PdDecider>>,
}

impl ProfileHandler for DisaggProfileHandler {
    fn run(
        &self,
        profiles: &[SchedulingProfile],
        cycle: &Cycle<'_>,
        picks: &mut Picks,
    ) -> Result<(), ScheduleError> {
        picks.prefill = None;
        profiles[self.decode].schedule(cycle, &mut picks.primary)?;
        let (Some(prefill), Some(decider)) = (self.prefill, &self.decider) else {
            return Ok(());
        };
        if !decider.decide(cycle, picks.primary[0]) {
            return Ok(());
        }
        let mut picked = Vec::with_capacity(1);
        if profiles[prefill].schedule(cycle, &mut picked).is_ok() {
            picks.prefill = picked.first().copied();
        }
        Ok(())
    }
}
