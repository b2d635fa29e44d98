//! max-score-picker: the highest total wins, ties broken at random; with more than one
//! endpoint wanted, the rest follow in score order as fallbacks.
//!
//! `tieTolerance` (sluicegate's; default 0, upstream's picker): totals within this share of
//! the profile's summed weights of the highest are ties too. A lead that small (a chat
//! template's shared first block, held by the one server that has served a request) is below
//! what the load scores can see of requests no scrape shows yet (a server reporting its new
//! requests running before their KV blocks): picked deterministically, the requests routed in
//! that window all go to that server.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::picker::{shuffle_together, Picker};
use crate::scheduling::contracts::picker_params::checked_max_endpoints;
use crate::scheduling::contracts::plugin::Plugin;

/// Scores closer than this are ties (sums of weighted floats are not exact).
const TIE: f64 = 1e-9;

pub struct MaxScorePicker {
    pub max_endpoints: usize,
    /// Totals (shares of the summed weights) within this of the highest are ties
    /// (`tieTolerance`).
    pub tie_tolerance: f64,
}

impl MaxScorePicker {
    /// Upstream's picker: the strict maximum (no tolerance).
    pub fn strict(max_endpoints: usize) -> Self {
        MaxScorePicker {
            max_endpoints,
            tie_tolerance: 0.0,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct MaxScoreParams {
    max_num_of_endpoints: usize,
    tie_tolerance: f64,
}

impl Default for MaxScoreParams {
    fn default() -> Self {
        MaxScoreParams {
            max_num_of_endpoints: 1,
            tie_tolerance: 0.0,
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: MaxScoreParams = p.parse()?;
    let max_endpoints = checked_max_endpoints(p, params.max_num_of_endpoints)?;
    if !(0.0..1.0).contains(&params.tie_tolerance) {
        return Err(p.error(format_args!(
            "parameters.tieTolerance: must be in [0, 1), a share of the summed weights, got {}",
            params.tie_tolerance
        )));
    }
    Ok(Plugin::Picker(Arc::new(MaxScorePicker {
        max_endpoints,
        tie_tolerance: params.tie_tolerance,
    })))
}

impl Picker for MaxScorePicker {
    fn max_endpoints(&self) -> usize {
        self.max_endpoints
    }

    fn pick(&self, candidates: &mut [u32], totals: &mut [f64], picked: &mut Vec<u32>) {
        picked.clear();
        if self.max_endpoints == 1 {
            picked.push(candidates[best_with_random_tie(totals, self.tie_tolerance)]);
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
        // Within the tolerance of the highest, any may lead: swap one at random to the front.
        if self.tie_tolerance > 0.0 && picked.len() > 1 {
            let top = totals[picked[0] as usize] - self.tie_tolerance - TIE;
            let band = picked
                .iter()
                .take_while(|&&i| totals[i as usize] >= top)
                .count();
            picked.swap(0, fastrand::usize(..band));
        }
        for p in picked.iter_mut() {
            *p = candidates[*p as usize];
        }
    }
}

/// Index of the highest total; among ties (totals within `tolerance` of the highest) each is
/// equally likely (reservoir sampling; a second pass when there is a tolerance).
fn best_with_random_tie(totals: &[f64], tolerance: f64) -> usize {
    if tolerance > 0.0 {
        let top = totals.iter().copied().fold(f64::NEG_INFINITY, f64::max) - tolerance - TIE;
        let ties = totals.iter().filter(|&&t| t >= top).count();
        let nth = fastrand::usize(..ties);
        return totals
            .iter()
            .enumerate()
            .filter(|(_, &t)| t >= top)
            .nth(nth)
            .map_or(0, |(i, _)| i);
    }
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
        let p = MaxScorePicker::strict(1);
        let mut picked = Vec::new();
        p.pick(&mut [7, 8, 9], &mut [0.1, 0.9, 0.5], &mut picked);
        assert_eq!(picked, vec![8]);
    }

    #[test]
    fn every_tied_candidate_gets_picked_over_many_trials() {
        let p = MaxScorePicker::strict(1);
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
        let p = MaxScorePicker::strict(3);
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
        let p = MaxScorePicker::strict(2);
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

    #[test]
    fn totals_within_the_tolerance_of_the_highest_are_ties() {
        for max_endpoints in [1, 3] {
            let p = MaxScorePicker {
                max_endpoints,
                tie_tolerance: 0.05,
            };
            let mut leaders = std::collections::HashSet::new();
            let mut picked = Vec::new();
            for _ in 0..400 {
                // 0.96 is within 0.05 of 1.0; 0.9 is not.
                p.pick(&mut [0, 1, 2, 3], &mut [0.96, 1.0, 0.9, 0.2], &mut picked);
                leaders.insert(picked[0]);
                if max_endpoints == 3 {
                    assert!(picked.contains(&2) && !picked.contains(&3), "{picked:?}");
                }
            }
            assert_eq!(
                leaders,
                [0, 1].into_iter().collect(),
                "max_endpoints {max_endpoints}"
            );
        }
    }
}
