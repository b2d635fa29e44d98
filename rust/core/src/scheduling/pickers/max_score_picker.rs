//! max-score-picker: the highest total wins, ties broken at random; with more than one
//! endpoint wanted, the rest follow in score order as fallbacks.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::picker::{shuffle_together, Picker};
use crate::scheduling::contracts::picker_params::max_endpoints;
use crate::scheduling::contracts::plugin::Plugin;

/// Scores closer than this are ties (sums of weighted floats are not exact).
const TIE: f64 = 1e-9;

pub struct MaxScorePicker {
    pub max_endpoints: usize,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::Picker(Arc::new(MaxScorePicker {
        max_endpoints: max_endpoints(p)?,
    })))
}

impl Picker for MaxScorePicker {
    fn max_endpoints(&self) -> usize {
        self.max_endpoints
    }

    fn pick(&self, candidates: &mut [u32], totals: &mut [f64], picked: &mut Vec<u32>) {
        picked.clear();
        if self.max_endpoints == 1 {
            picked.push(candidates[best_with_random_tie(totals)]);
            return;
        }
        // Shuffle first so ties land in random order; positions sort without allocating.
        shuffle_together(candidates, totals);
        picked.extend(0..candidates.len() as u32);
        let by_total_desc = |a: &u32, b: &u32| totals[*b as usize].total_cmp(&totals[*a as usize]);
        let n = self.max_endpoints.min(picked.len());
        if n < picked.len() {
            picked.select_nth_unstable_by(n - 1, by_total_desc);
            picked.truncate(n);
        }
        picked.sort_unstable_by(by_total_desc);
        for p in picked.iter_mut() {
            *p = candidates[*p as usize];
        }
    }
}

/// Index of the highest total; among ties each is equally likely (reservoir sampling).
fn best_with_random_tie(totals: &[f64]) -> usize {
    let (mut best, mut ties) = (0, 1u32);
    for (i, &t) in totals.iter().enumerate().skip(1) {
        if t > totals[best] + TIE {
            best = i;
            ties = 1;
        } else if (t - totals[best]).abs() <= TIE {
            ties += 1;
            if fastrand::u32(..ties) == 0 {
                best = i;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_total_wins() {
        let p = MaxScorePicker { max_endpoints: 1 };
        let mut picked = Vec::new();
        p.pick(&mut [7, 8, 9], &mut [0.1, 0.9, 0.5], &mut picked);
        assert_eq!(picked, vec![8]);
    }

    #[test]
    fn every_tied_candidate_gets_picked_over_many_trials() {
        let p = MaxScorePicker { max_endpoints: 1 };
        let mut seen = std::collections::HashSet::new();
        let mut picked = Vec::new();
        for _ in 0..400 {
            p.pick(&mut [0, 1, 2, 3], &mut [1.0, 0.2, 1.0, 1.0], &mut picked);
            seen.insert(picked[0]);
        }
        assert_eq!(seen, [0, 2, 3].into_iter().collect());
    }

    #[test]
    fn fallbacks_follow_in_score_order() {
        let p = MaxScorePicker { max_endpoints: 3 };
        let mut picked = Vec::new();
        p.pick(
            &mut [10, 11, 12, 13],
            &mut [0.3, 0.9, 0.1, 0.6],
            &mut picked,
        );
        assert_eq!(picked, vec![11, 13, 10]);
    }

    #[test]
    fn tied_fallbacks_come_in_random_order() {
        let p = MaxScorePicker { max_endpoints: 2 };
        let mut firsts = std::collections::HashSet::new();
        let mut picked = Vec::new();
        for _ in 0..200 {
            p.pick(&mut [0, 1, 2], &mut [0.5, 0.5, 0.1], &mut picked);
            assert_eq!(picked.len(), 2);
            assert!(!picked.contains(&2));
            firsts.insert(picked[0]);
        }
        assert_eq!(firsts.len(), 2);
    }
}
