//! disagg-profile-handler (llm-d disaggregation: P/D, E/PD, E/P/D): the decode profile is
//! primary. With `decode-first` (the default) decode runs first, then encode when the encode
//! decider approves, then prefill when the prefill decider approves (it reads the decode pick's
//! cache state). With `prefill-first` the prefill profile always runs first. The decode endpoint
//! learns its prefill and encode peers from request headers. A failed encode or prefill pick
//! falls back to fewer stages, which still serve the request.
//!
//! Parameters: upstream's nested `profiles`/`deciders`/`stageOrder`, or the deprecated flat
//! names (one format per config, as upstream). `pd-profile-handler` is the older flat handler.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::decider::PdDecider;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::profile_handler::{DisaggSpec, HandlerSpec, ProfileHandler};
use crate::scheduling::contracts::scorer::{Picks, StageProfiles};
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::profile::SchedulingProfile;

/// The header naming the prefill endpoint ("ip:port") on the request sent to the decode endpoint.
pub const PREFILLER_HEADER: &str = "x-prefiller-host-port";
/// The header naming the encode endpoints ("ip:port,ip:port") on the same request.
pub const ENCODERS_HEADER: &str = "x-encoder-hosts-ports";

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct NestedParams {
    stage_order: Option<String>,
    profiles: Profiles,
    deciders: Deciders,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Profiles {
    decode: Option<String>,
    prefill: Option<String>,
    encode: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Deciders {
    prefill: Option<String>,
    encode: Option<String>,
}

/// The deprecated flat names of disagg-profile-handler and pd-profile-handler.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct FlatParams {
    stage_order: Option<String>,
    decode_profile: Option<String>,
    prefill_profile: Option<String>,
    encode_profile: Option<String>,
    prefill_decider_plugin_name: Option<String>,
    encode_decider_plugin_name: Option<String>,
    decider_plugin_name: Option<String>,
    /// pd-profile-handler: uncached prompt tokens that trigger a prefill (a prefix-based decider
    /// built in).
    threshold: Option<usize>,
    /// pd-profile-handler: the prefix scorer's own block size and instance are used; the cycle
    /// holds one prefix result.
    hash_block_size: Option<usize>,
    prefix_plugin_name: Option<String>,
    prefix_plugin_type: Option<String>,
    prefix_match_info_producer_name: Option<String>,
    /// pd-profile-handler: data-parallel rank-0 port.
    primary_port: Option<u16>,
}

/// disagg-headers-handler and prefill-header-handler (deprecated upstream): the headers they set
/// are set by this handler itself; their parameters are checked and the profiles they name
/// must be the handler's.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct HeadersParams {
    prefill_profile: Option<String>,
    encode_profile: Option<String>,
}

pub fn headers_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: HeadersParams = p.parse()?;
    Ok(Plugin::HeadersHandler {
        prefill_profile: params.prefill_profile.unwrap_or_else(|| "prefill".into()),
        encode_profile: params.encode_profile.unwrap_or_else(|| "encode".into()),
    })
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let spec = match p.parse::<NestedParams>() {
        Ok(nested) => from_nested(p, nested)?,
        Err(nested_err) => {
            let flat = p.parse::<FlatParams>().map_err(|flat_err| {
                p.error(format_args!(
                    "parameters: neither the nested profiles/deciders format ({}) nor the \
                     deprecated flat one ({}); use one format",
                    strip(&nested_err),
                    strip(&flat_err)
                ))
            })?;
            from_flat(p, flat)?
        }
    };
    Ok(Plugin::ProfileHandler(HandlerSpec::Disagg(spec)))
}

fn strip(e: &ConfigError) -> &str {
    e.0.split_once("): ").map_or(&e.0, |(_, rest)| rest)
}

fn prefill_first(p: &Params<'_>, order: Option<&str>) -> Result<bool, ConfigError> {
    match order.unwrap_or("decode-first") {
        "decode-first" | "" => Ok(false),
        "prefill-first" => Ok(true),
        other => Err(p.error(format_args!(
            "parameters.stageOrder: '{other}' is not 'decode-first' or 'prefill-first'"
        ))),
    }
}

fn from_nested(p: &Params<'_>, n: NestedParams) -> Result<DisaggSpec, ConfigError> {
    let prefill_first = prefill_first(p, n.stage_order.as_deref())?;
    if prefill_first && n.deciders.prefill.is_some() {
        return Err(p.error(
            "parameters.deciders.prefill: a prefill decider is not used with stageOrder prefill-first",
        ));
    }
    Ok(DisaggSpec {
        decode_profile: n.profiles.decode.unwrap_or_else(|| "decode".into()),
        prefill_profile: n.profiles.prefill.unwrap_or_else(|| "prefill".into()),
        encode_profile: n.profiles.encode.unwrap_or_else(|| "encode".into()),
        prefill_decider: n.deciders.prefill,
        encode_decider: n.deciders.encode,
        threshold: None,
        prefill_first,
        primary_port: None,
    })
}

fn from_flat(p: &Params<'_>, f: FlatParams) -> Result<DisaggSpec, ConfigError> {
    let prefill_decider = f.prefill_decider_plugin_name.or(f.decider_plugin_name);
    if f.threshold.is_some() && prefill_decider.is_some() {
        return Err(p.error(
            "parameters: give threshold or prefillDeciderPluginName/deciderPluginName, not both",
        ));
    }
    let _ = (
        f.hash_block_size,
        f.prefix_plugin_name,
        f.prefix_plugin_type,
        f.prefix_match_info_producer_name,
    );
    Ok(DisaggSpec {
        decode_profile: f.decode_profile.unwrap_or_else(|| "decode".into()),
        prefill_profile: f.prefill_profile.unwrap_or_else(|| "prefill".into()),
        encode_profile: f.encode_profile.unwrap_or_else(|| "encode".into()),
        prefill_decider,
        encode_decider: f.encode_decider_plugin_name,
        threshold: f.threshold,
        prefill_first: prefill_first(p, f.stage_order.as_deref())?,
        primary_port: f.primary_port,
    })
}

pub struct DisaggProfileHandler {
    /// Positions in the scheduler's profile list.
    pub decode: usize,
    pub prefill: Option<usize>,
    pub encode: Option<usize>,
    pub prefill_decider: Option<Arc<dyn PdDecider>>,
    pub encode_decider: Option<Arc<dyn PdDecider>>,
    pub prefill_first: bool,
}

impl DisaggProfileHandler {
    fn run_prefill(&self, profiles: &[SchedulingProfile], cycle: &Cycle<'_>, picks: &mut Picks) {
        let Some(prefill) = self.prefill else { return };
        let mut picked = Vec::with_capacity(1);
        if profiles[prefill].schedule(cycle, &mut picked).is_ok() {
            picks.prefill = picked.first().copied();
        }
    }

    fn run_encode(&self, profiles: &[SchedulingProfile], cycle: &Cycle<'_>, picks: &mut Picks) {
        let (Some(encode), Some(decider)) = (self.encode, &self.encode_decider) else {
            return;
        };
        if decider.decide(cycle, picks.primary[0]) {
            let mut picked = Vec::new();
            if profiles[encode].schedule(cycle, &mut picked).is_ok() {
                picks.encode = picked;
            }
        }
    }
}

impl ProfileHandler for DisaggProfileHandler {
    fn run(
        &self,
        profiles: &[SchedulingProfile],
        cycle: &Cycle<'_>,
        picks: &mut Picks,
    ) -> Result<(), ScheduleError> {
        picks.prefill = None;
        picks.encode.clear();
        picks.profiles = StageProfiles {
            primary: self.decode,
            prefill: self.prefill,
            encode: self.encode,
        };
        if self.prefill_first {
            self.run_prefill(profiles, cycle, picks);
            profiles[self.decode].schedule_primary(cycle, picks)?;
            self.run_encode(profiles, cycle, picks);
            return Ok(());
        }
        profiles[self.decode].schedule_primary(cycle, picks)?;
        self.run_encode(profiles, cycle, picks);
        if let Some(decider) = &self.prefill_decider {
            if decider.decide(cycle, picks.primary[0]) {
                cycle.state.borrow_mut().peer = Some(picks.primary[0]);
                self.run_prefill(profiles, cycle, picks);
            }
        }
        Ok(())
    }
}
