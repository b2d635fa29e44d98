//! stale filter: drops endpoints without recent metrics while fresh ones remain; when none is
//! fresh all are kept (the metric scorers rate stale ones as saturated).

use super::cycle::{Cycle, ScheduleError};
use super::filter::Filter;

pub struct StaleFilter;

impl Filter for StaleFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        if candidates.iter().any(|&c| cycle.is_fresh(c)) {
            candidates.retain(|&c| cycle.is_fresh(c));
        }
        Ok(())
    }
}
