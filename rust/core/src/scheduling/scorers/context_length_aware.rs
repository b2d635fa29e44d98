//! context-length-aware (llm-d): endpoints declare the prompt lengths they serve in a label
//! ("min-max" tokens, default key `llm-d.ai/context-length-range`). In range scores in (0.3, 1],
//! tighter ranges and more headroom higher; out of range scores below 0.3 by distance to the
//! range; unlabelled endpoints 0.5, malformed labels 0. With `enableFiltering` it is also a
//! filter dropping labelled endpoints whose range excludes the prompt. The prompt length is
//! estimated from its bytes, as upstream's tokenizer-free estimate.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::scorers::prefix_cache_scorer::BYTES_PER_TOKEN;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ContextParams {
    label: String,
    enable_filtering: bool,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams {
            label: "llm-d.ai/context-length-range".into(),
            enable_filtering: false,
        }
    }
}

pub struct ContextLengthAware {
    label: String,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ContextParams = p.parse()?;
    if params.label.is_empty() {
        return Err(p.error("parameters.label: must not be empty"));
    }
    let plugin = Arc::new(ContextLengthAware {
        label: params.label,
    });
    Ok(if params.enable_filtering {
        Plugin::FilterAndScorer(plugin.clone(), plugin)
    } else {
        Plugin::Scorer(plugin)
    })
}

/// A "min-max" range label; None when malformed.
fn range(label: &str) -> Option<(u64, u64)> {
    let (lo, hi) = label.split_once('-')?;
    let (lo, hi): (u64, u64) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
    (lo <= hi).then_some((lo, hi))
}

fn range_score(len: u64, (lo, hi): (u64, u64)) -> f64 {
    const FALLBACK: f64 = 0.3;
    if (lo..=hi).contains(&len) {
        let width = (hi - lo) as f64;
        if width == 0.0 {
            return 1.0;
        }
        let tightness = 1.0 / (1.0 + width / 10_000.0);
        let headroom = (hi - len) as f64 / width;
        return FALLBACK + (0.7 * tightness + 0.3 * headroom) * (1.0 - FALLBACK);
    }
    let distance = if len > hi { len - hi } else { lo - len };
    FALLBACK / (1.0 + distance as f64 / 1000.0)
}

impl ContextLengthAware {
    fn label_of<'c>(&self, cycle: &'c Cycle<'_>, c: u32) -> Option<&'c str> {
        let labels = &cycle.endpoint(c).info.labels;
        labels
            .iter()
            .find(|(k, _)| *k == self.label)
            .map(|(_, v)| v.as_str())
    }
}

fn context_length(cycle: &Cycle<'_>) -> u64 {
    cycle.request.prompt.len().div_ceil(BYTES_PER_TOKEN) as u64
}

impl Scorer for ContextLengthAware {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let len = context_length(cycle);
        for (slot, &c) in out.iter_mut().zip(candidates) {
            *slot = match self.label_of(cycle, c) {
                None => 0.5,
                Some(label) => range(label).map_or(0.0, |r| range_score(len, r)),
            };
        }
    }
}

impl Filter for ContextLengthAware {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let len = context_length(cycle);
        candidates.retain(|&c| match self.label_of(cycle, c) {
            None => true,
            Some(label) => range(label).is_some_and(|(lo, hi)| (lo..=hi).contains(&len)),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tighter_ranges_and_nearer_misses_score_higher() {
        // 1000 tokens: in both ranges; the tight one wins.
        assert!(range_score(1000, (0, 2048)) > range_score(1000, (0, 128_000)));
        assert!(range_score(1000, (0, 128_000)) > 0.3);
        // 9000 tokens: out of both; the nearer boundary wins, both under 0.3.
        assert!(range_score(9000, (0, 8192)) > range_score(9000, (0, 2048)));
        assert!(range_score(9000, (0, 8192)) < 0.3);
        assert_eq!(range_score(5, (5, 5)), 1.0);
        assert_eq!(range("2048-0"), None);
        assert_eq!(range(" 0 - 2048 "), Some((0, 2048)));
    }
}
