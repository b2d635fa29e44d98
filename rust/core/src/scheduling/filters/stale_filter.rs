//! stale filter: drops endpoints without recent metrics while fresh ones remain; when none is
//! fresh all are kept (the metric scorers rate stale ones as saturated).

use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::cycle::{Cycle, ScheduleError};

pub struct StaleFilter;

impl Filter for StaleFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        if candidates.iter().any(|&c| cycle.is_fresh(c)) {
            candidates.retain(|&c| cycle.is_fresh(c));
        }
        Ok(())
    }
}
