//! The filter contract: a filter narrows the candidate list in place, or fails the cycle.

use crate::scheduling::cycle::{Cycle, ScheduleError};

pub trait Filter: Send + Sync {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError>;
}
