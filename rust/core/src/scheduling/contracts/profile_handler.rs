//! The profile-handler contract: which profiles a cycle runs, in what order, and how their picks
//! combine into the decision.

use crate::scheduling::contracts::scorer::Picks;
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::profile::SchedulingProfile;

pub trait ProfileHandler: Send + Sync {
    fn run(
        &self,
        profiles: &[SchedulingProfile],
        cycle: &Cycle<'_>,
        picks: &mut Picks,
    ) -> Result<(), ScheduleError>;
}

/// A handler as its factory parsed it; profile and decider names are resolved once every
/// plugin and profile exists.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerSpec {
    Single,
    Disagg {
        decode_profile: String,
        prefill_profile: String,
        /// A decider plugin's name.
        decider: Option<String>,
        /// Legacy `pd-profile-handler`: a prefix-based decider with this threshold, built in.
        threshold: Option<usize>,
    },
}
