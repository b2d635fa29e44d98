//! A scheduling profile: filters narrow the candidates, weighted scorers rate them, the picker
//! chooses. Per-cycle buffers live in a thread-local scratch so a cycle does not allocate.

use std::cell::RefCell;

use super::config::{ConfigError, RouterConfig};
use super::cycle::{Cycle, ScheduleError};
use super::filter::Filter;
use super::max_score_picker::MaxScorePicker;
use super::scorer::{self, Scorer};
use super::stale_filter::StaleFilter;
use super::subset_filter::SubsetFilter;

pub struct SchedulingProfile {
    filters: Vec<Box<dyn Filter>>,
    scorers: Vec<(Box<dyn Scorer>, f64)>,
    picker: MaxScorePicker,
}

#[derive(Default)]
struct Scratch {
    candidates: Vec<u32>,
    totals: Vec<f64>,
    scores: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

impl SchedulingProfile {
    pub fn from_config(config: &RouterConfig) -> Result<SchedulingProfile, ConfigError> {
        let mut scorers = Vec::with_capacity(config.scorers.len());
        for (name, &weight) in &config.scorers {
            let s = scorer::build(name)
                .ok_or_else(|| ConfigError(format!("unknown scorer '{name}'")))?;
            if weight > 0.0 {
                scorers.push((s, weight));
            }
        }
        Ok(SchedulingProfile {
            filters: vec![Box::new(SubsetFilter), Box::new(StaleFilter)],
            scorers,
            picker: MaxScorePicker {
                max_endpoints: config.max_num_of_endpoints,
            },
        })
    }

    /// Run one cycle; `picked` receives snapshot positions, best first.
    pub fn schedule(&self, cycle: &Cycle<'_>, picked: &mut Vec<u32>) -> Result<(), ScheduleError> {
        if cycle.snapshot.endpoints.is_empty() {
            return Err(ScheduleError::NoEndpoints(
                "the pool has no endpoints".into(),
            ));
        }
        SCRATCH.with_borrow_mut(|s| {
            s.candidates.clear();
            s.candidates
                .extend(0..cycle.snapshot.endpoints.len() as u32);
            for f in &self.filters {
                f.filter(cycle, &mut s.candidates)?;
            }
            let n = s.candidates.len();
            s.totals.clear();
            s.totals.resize(n, 0.0);
            s.scores.resize(n, 0.0);
            for (scorer, weight) in &self.scorers {
                scorer.score(cycle, &s.candidates, &mut s.scores[..n]);
                for (t, sc) in s.totals.iter_mut().zip(&s.scores[..n]) {
                    *t += weight * sc;
                }
            }
            self.picker.pick(&mut s.candidates, &mut s.totals, picked);
            Ok(())
        })
    }
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
