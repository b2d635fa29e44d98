//! The filter contract: a filter narrows the candidate list in place, or fails the cycle. A
//! stateful filter may learn from the cycle's outcome, as a scorer does.

use crate::scheduling::contracts::scorer::{Picks, PrefixProducers};
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::producers::topology_extractor::TopologySource;
use crate::scheduling::session::ProfileRef;

pub trait Filter: Send + Sync {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError>;

    /// The topology-extractor this filter reads, for the scheduler to bind.
    fn topology(&self) -> Option<&TopologySource> {
        None
    }

    /// A session filter's `profileName`, for the scheduler to bind to a profile.
    fn session_profile(&self) -> Option<&ProfileRef> {
        None
    }

    /// The configured prefix producers, for filters that read prefix matches to bind to one
    /// (an error names the parameter that refers to a missing one).
    fn use_prefix_producers(&self, _producers: &PrefixProducers<'_>) -> Result<(), String> {
        Ok(())
    }

    /// Called once the cycle has picked (only for filters that say `learns`).
    fn picked(&self, _cycle: &Cycle<'_>, _picks: &Picks) {}

    /// The endpoint with this id left the pool: drop what is kept about it.
    fn endpoint_removed(&self, _id: u64) {}

    /// Whether `picked` and `endpoint_removed` do anything (the scheduler calls them only then).
    fn learns(&self) -> bool {
        false
    }
}
