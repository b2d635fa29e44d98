//! single-profile-handler: the one configured profile decides.

use super::config::ConfigError;
use super::cycle::{Cycle, ScheduleError};
use super::params::{NoParams, Params};
use super::plugin::Plugin;
use super::profile::SchedulingProfile;
use super::profile_handler::{HandlerSpec, ProfileHandler};
use super::scorer::Picks;

pub struct SingleProfileHandler;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::ProfileHandler(HandlerSpec::Single))
}

impl ProfileHandler for SingleProfileHandler {
    fn run(
        &self,
        profiles: &[SchedulingProfile],
        cycle: &Cycle<'_>,
        picks: &mut Picks,
    ) -> Result<(), ScheduleError> {
        picks.prefill = None;
        profiles[0].schedule(cycle, &mut picks.primary)
    }
}
