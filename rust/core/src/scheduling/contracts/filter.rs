//! The filter contract: a filter narrows the candidate list in place, or fails the cycle.

use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::producers::topology_extractor::TopologySource;

pub trait Filter: Send + Sync {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError>;

    /// The topology-extractor this filter reads, for the scheduler to bind.
    fn topology(&self) -> Option<&TopologySource> {
        None
    }
}
