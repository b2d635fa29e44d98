//! A scheduling profile: filters narrow the candidates, weighted scorers rate them, the picker
//! chooses. Per-cycle buffers live in a thread-local scratch so a cycle does not allocate.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::picker::Picker;
use crate::scheduling::contracts::scorer::{Picks, Scorer};
use crate::scheduling::cycle::{Cycle, ProfileTrace, ScheduleError};
use crate::scheduling::filters::stale_filter::StaleFilter;
use crate::scheduling::filters::subset_filter::SubsetFilter;
use crate::stats::{plugin_timing, PluginTiming};

/// A configured plugin instance: its name (unique in the config), upstream type and the plugin.
pub struct Named<T: ?Sized> {
    pub name: String,
    pub kind: String,
    pub plugin: Arc<T>,
}

impl<T: ?Sized> Clone for Named<T> {
    fn clone(&self) -> Self {
        Named {
            name: self.name.clone(),
            kind: self.kind.clone(),
            plugin: self.plugin.clone(),
        }
    }
}

pub struct SchedulingProfile {
    pub name: String,
    pub filters: Vec<Named<dyn Filter>>,
    pub scorers: Vec<(Named<dyn Scorer>, f64)>,
    pub picker: Named<dyn Picker>,
    /// The scorers' weights summed: totals reach the picker as shares of it.
    weight_sum: f64,
    /// Per-call durations of the filters, scorers and picker, in that order (bound once).
    timings: Vec<Arc<PluginTiming>>,
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
    pub fn new(
        name: String,
        filters: Vec<Named<dyn Filter>>,
        scorers: Vec<(Named<dyn Scorer>, f64)>,
        picker: Named<dyn Picker>,
    ) -> Self {
        let timings = (filters
            .iter()
            .map(|f| plugin_timing("Filter", &f.kind, &f.name)))
        .chain((scorers.iter()).map(|(s, _)| plugin_timing("Scorer", &s.kind, &s.name)))
        .chain([plugin_timing("Picker", &picker.kind, &picker.name)])
        .collect();
        let weight_sum = scorers.iter().map(|(_, w)| w).sum();
        SchedulingProfile {
            name,
            filters,
            scorers,
            picker,
            weight_sum,
            timings,
        }
    }

    /// Run one cycle; `picked` receives snapshot positions, best first.
    pub fn schedule(&self, cycle: &Cycle<'_>, picked: &mut Vec<u32>) -> Result<(), ScheduleError> {
        self.run(cycle, picked, false)
    }

    /// Run as the primary profile, whose picks are where the request goes (and whose scores a
    /// decision reports when asked).
    pub fn schedule_primary(
        &self,
        cycle: &Cycle<'_>,
        picks: &mut Picks,
    ) -> Result<(), ScheduleError> {
        self.run(cycle, &mut picks.primary, true)
    }

    fn run(
        &self,
        cycle: &Cycle<'_>,
        picked: &mut Vec<u32>,
        primary: bool,
    ) -> Result<(), ScheduleError> {
        if cycle.snapshot.endpoints.is_empty() {
            return Err(ScheduleError::NoEndpoints(
                "the pool has no endpoints".into(),
            ));
        }
        SCRATCH.with_borrow_mut(|s| {
            s.candidates.clear();
            s.candidates
                .extend(0..cycle.snapshot.endpoints.len() as u32);
            // Built in, ahead of the configured filters: the proxy's subset hint, then freshness.
            SubsetFilter.filter(cycle, &mut s.candidates)?;
            if let Some(screened) = &cycle.state.borrow().screened {
                s.candidates.retain(|c| screened.binary_search(c).is_ok());
            }
            StaleFilter.filter(cycle, &mut s.candidates)?;
            // One clock read per plugin: each call's end is the next one's start.
            let mut at = Instant::now();
            let mut timed = |i: usize| {
                let now = Instant::now();
                self.timings[i].duration.observe_duration(now - at);
                at = now;
            };
            for (i, f) in self.filters.iter().enumerate() {
                let filtered = f.plugin.filter(cycle, &mut s.candidates);
                timed(i);
                filtered?;
                if s.candidates.is_empty() {
                    return Err(ScheduleError::NoEndpoints(format!(
                        "no endpoint passed filter '{}' of profile '{}'",
                        f.name, self.name
                    )));
                }
            }
            let n = s.candidates.len();
            s.totals.clear();
            s.totals.resize(n, 0.0);
            s.scores.resize(n, 0.0);
            let mut trace = cycle.trace.as_ref().map(|_| ProfileTrace {
                profile: self.name.clone(),
                candidates: s.candidates.clone(),
                ..Default::default()
            });
            let first_scorer = self.filters.len();
            for (i, (scorer, weight)) in self.scorers.iter().enumerate() {
                scorer
                    .plugin
                    .score(cycle, &s.candidates, &mut s.scores[..n]);
                timed(first_scorer + i);
                if let Some(t) = trace.as_mut() {
                    t.scores
                        .push((scorer.name.clone(), *weight, s.scores[..n].to_vec()));
                }
                for (t, sc) in s.totals.iter_mut().zip(&s.scores[..n]) {
                    // A scorer's contract is [0, 1]; enforce it so one bad value cannot dominate.
                    let sc = if sc.is_nan() { 0.0 } else { sc.clamp(0.0, 1.0) };
                    *t += weight * sc;
                }
            }
            if let Some(t) = trace.as_mut() {
                t.totals = s.totals.clone();
            }
            if let Some(sink) = cycle.primary_scores.as_ref().filter(|_| primary) {
                let mut sink = sink.borrow_mut();
                sink.clear();
                sink.extend(s.candidates.iter().copied().zip(s.totals.iter().copied()));
            }
            if self.weight_sum > 0.0 {
                for t in &mut s.totals {
                    *t /= self.weight_sum;
                }
            }
            self.picker
                .plugin
                .pick(&mut s.candidates, &mut s.totals, picked);
            timed(self.timings.len() - 1);
            if let (Some(mut t), Some(sink)) = (trace, cycle.trace.as_ref()) {
                t.picked = picked.clone();
                sink.borrow_mut().push(t);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
