//! data-parallel-profile-handler (llm-d, deprecated upstream in favour of single-profile-handler
//! with Istio >= 1.28.1): the one profile picks a pod; the request is sent to that pod's
//! `primaryPort` (the data-parallel rank-0 server) with the picked `ip:port` in the
//! `x-data-parallel-host-port` header, which the pod's sidecar uses to reach the right rank.

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::profile_handler::{HandlerSpec, ProfileHandler};
use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::handlers::single_profile_handler::SingleProfileHandler;
use crate::scheduling::profile::SchedulingProfile;

pub const DATA_PARALLEL_HEADER: &str = "x-data-parallel-host-port";

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct DataParallelParams {
    primary_port: u32,
}

impl Default for DataParallelParams {
    fn default() -> Self {
        DataParallelParams { primary_port: 8000 }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let port = p.parse::<DataParallelParams>()?.primary_port;
    let primary_port = u16::try_from(port).ok().filter(|&p| p > 0).ok_or_else(|| {
        p.error(format_args!(
            "parameters.primaryPort: must be in 1..=65535, got {port}"
        ))
    })?;
    Ok(Plugin::ProfileHandler(HandlerSpec::DataParallel {
        primary_port,
    }))
}

/// Runs the one profile as the single-profile handler does; the Router rewrites the port and
/// adds the header.
pub struct DataParallelProfileHandler;

impl ProfileHandler for DataParallelProfileHandler {
    fn run(
        &self,
        profiles: &[SchedulingProfile],
        cycle: &Cycle<'_>,
        picks: &mut Picks,
    ) -> Result<(), ScheduleError> {
        SingleProfileHandler.run(profiles, cycle, picks)
    }
}
