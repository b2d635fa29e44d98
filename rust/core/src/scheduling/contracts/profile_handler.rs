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
    Disagg(DisaggSpec),
    /// data-parallel-profile-handler: one profile; the request goes to the picked pod's
    /// `primaryPort`, the picked `ip:port` in a header.
    DataParallel {
        primary_port: u16,
    },
    /// header-profile-handler: the profile named by a request header runs alone.
    Header {
        header: String,
        default_profile: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct DisaggSpec {
    pub decode_profile: String,
    pub prefill_profile: String,
    pub encode_profile: String,
    /// Decider plugin names.
    pub prefill_decider: Option<String>,
    pub encode_decider: Option<String>,
    /// Legacy `pd-profile-handler`: a prefix-based decider with this threshold, built in.
    pub threshold: Option<usize>,
    pub prefill_first: bool,
    /// Legacy `pd-profile-handler`: data-parallel rank-0 port for the decode request.
    pub primary_port: Option<u16>,
}
