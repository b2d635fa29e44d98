//! subset filter: keeps only the endpoints the proxy's subset hint names, by IP or ip:port.

use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::cycle::{Cycle, ScheduleError};

pub struct SubsetFilter;

impl Filter for SubsetFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let Some(subset) = cycle.subset else {
            return Ok(());
        };
        if subset.is_empty() {
            return Err(ScheduleError::NoEndpoints(
                "the endpoint subset hint is empty".into(),
            ));
        }
        candidates.retain(|&c| {
            let info = &cycle.endpoint(c).info;
            subset
                .iter()
                .any(|s| s.as_str() == info.address || s.as_str() == info.ip)
        });
        if candidates.is_empty() {
            return Err(ScheduleError::NoEndpoints(format!(
                "no endpoint of the pool matches the subset hint [{}]",
                subset.join(", ")
            )));
        }
        Ok(())
    }
}
