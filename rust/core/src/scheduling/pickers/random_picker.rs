//! random-picker: ignores scores and picks uniformly among the candidates that passed the
//! filters; with `maxNumOfEndpoints` > 1, distinct fallbacks in random order.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::picker::{shuffle_together, Picker};
use crate::scheduling::contracts::picker_params::max_endpoints;
use crate::scheduling::contracts::plugin::Plugin;

pub struct RandomPicker {
    pub max_endpoints: usize,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::Picker(Arc::new(RandomPicker {
        max_endpoints: max_endpoints(p)?,
    })))
}

impl Picker for RandomPicker {
    fn max_endpoints(&self) -> usize {
        self.max_endpoints
    }

    fn pick(&self, candidates: &mut [u32], totals: &mut [f64], picked: &mut Vec<u32>) {
        picked.clear();
        if self.max_endpoints == 1 {
            picked.push(candidates[fastrand::usize(..candidates.len())]);
            return;
        }
        shuffle_together(candidates, totals);
        picked.extend(candidates.iter().take(self.max_endpoints));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_is_picked_regardless_of_score() {
        let p = RandomPicker { max_endpoints: 1 };
        let mut seen = std::collections::HashSet::new();
        let mut picked = Vec::new();
        for _ in 0..300 {
            p.pick(&mut [4, 5, 6], &mut [1.0, 0.0, 0.0], &mut picked);
            seen.insert(picked[0]);
        }
        assert_eq!(seen, [4, 5, 6].into_iter().collect());
    }

    #[test]
    fn fallbacks_are_distinct_and_capped() {
        let p = RandomPicker { max_endpoints: 2 };
        let mut picked = Vec::new();
        p.pick(&mut [1, 2, 3], &mut [0.0; 3], &mut picked);
        assert_eq!(picked.len(), 2);
        assert_ne!(picked[0], picked[1]);
    }
}
