//! weighted-random-picker: picks at random with probability proportional to each candidate's
//! total score (weighted sampling without replacement, Efraimidis-Spirakis keys u^(1/w)), so
//! load spreads while better endpoints still win more often. All-zero totals pick uniformly.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::picker::Picker;
use crate::scheduling::contracts::picker_params::max_endpoints;
use crate::scheduling::contracts::plugin::Plugin;

pub struct WeightedRandomPicker {
    pub max_endpoints: usize,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    Ok(Plugin::Picker(Arc::new(WeightedRandomPicker {
        max_endpoints: max_endpoints(p)?,
    })))
}

impl Picker for WeightedRandomPicker {
    fn max_endpoints(&self) -> usize {
        self.max_endpoints
    }

    fn pick(&self, candidates: &mut [u32], totals: &mut [f64], picked: &mut Vec<u32>) {
        let uniform = totals.iter().all(|&t| t <= 0.0);
        // Replace each total by its sampling key (log form: ln(u)/w, larger wins; weight 0 never
        // beats a positive weight).
        for t in totals.iter_mut() {
            let w = if uniform { 1.0 } else { t.max(0.0) };
            let u = fastrand::f64().max(f64::MIN_POSITIVE);
            *t = if w > 0.0 {
                u.ln() / w
            } else {
                f64::NEG_INFINITY
            };
        }
        picked.clear();
        picked.extend(0..candidates.len() as u32);
        let by_key_desc = |a: &u32, b: &u32| totals[*b as usize].total_cmp(&totals[*a as usize]);
        let n = self.max_endpoints.min(picked.len());
        if n < picked.len() {
            picked.select_nth_unstable_by(n - 1, by_key_desc);
            picked.truncate(n);
        }
        picked.sort_unstable_by(by_key_desc);
        for p in picked.iter_mut() {
            *p = candidates[*p as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(totals: [f64; 3], trials: usize) -> [usize; 3] {
        let p = WeightedRandomPicker { max_endpoints: 1 };
        let mut picked = Vec::new();
        let mut counts = [0; 3];
        for _ in 0..trials {
            p.pick(&mut [0, 1, 2], &mut totals.clone(), &mut picked);
            counts[picked[0] as usize] += 1;
        }
        counts
    }

    #[test]
    fn higher_totals_are_picked_more_often_and_zero_never() {
        let c = counts([3.0, 1.0, 0.0], 4000);
        assert_eq!(c[2], 0);
        // Expected 3000 : 1000; a wide band keeps the test deterministic in practice.
        assert!(c[0] > 2 * c[1], "{c:?}");
    }

    #[test]
    fn all_zero_totals_pick_uniformly() {
        let c = counts([0.0, 0.0, 0.0], 3000);
        assert!(c.iter().all(|&n| n > 500), "{c:?}");
    }

    #[test]
    fn fallbacks_are_distinct() {
        let p = WeightedRandomPicker { max_endpoints: 3 };
        let mut picked = Vec::new();
        p.pick(&mut [7, 8, 9], &mut [1.0, 2.0, 3.0], &mut picked);
        let mut sorted = picked.clone();
        sorted.sort();
        assert_eq!(sorted, vec![7, 8, 9]);
    }
}
