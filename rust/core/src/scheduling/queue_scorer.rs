//! queue-scorer: prefers endpoints with fewer requests waiting in the model server's queue.

use super::cycle::Cycle;
use super::scorer::{score_lower_is_better, Scorer};

pub struct QueueScorer;

impl Scorer for QueueScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        score_lower_is_better(candidates, out, |c| {
            cycle
                .is_fresh(c)
                .then(|| cycle.endpoint(c).metrics.waiting as f64)
        });
    }
}
