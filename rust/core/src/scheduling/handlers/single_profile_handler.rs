//! single-profile-handler: the one configured profile decides.

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::profile_handler::{HandlerSpec, ProfileHandler};
use crate::scheduling::contracts::scorer::{Picks, StageProfiles};
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::profile::SchedulingProfile;

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
        picks.encode.clear();
        picks.profiles = StageProfiles::default();
        profiles[0].schedule_primary(cycle, picks)
    }
}
