//! endpoint-attribute-scorer (llm-d): rates candidates linearly by a numeric attribute
//! (`attributeKey` + `producer`, resolved as endpoint-attribute-filter does).
//! `linear_lower_is_better` inverts the scale. The range is the candidates' own
//! (`adaptiveRange`, the default; all equal -> 1) or `fixedRange {min, max}` (values clamped).
//! Endpoints without the attribute score 0 and take no part in the adaptive range.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;
use crate::scheduling::filters::endpoint_attribute_filter::{resolve_attribute, Attribute};

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ScorerParams {
    attribute_key: String,
    producer: Option<String>,
    algorithm: AlgorithmParams,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AlgorithmParams {
    #[serde(rename = "type")]
    kind: String,
    normalization: Normalization,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct Normalization {
    fixed_range: Option<FixedRange>,
    adaptive_range: Option<AdaptiveRange>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixedRange {
    #[serde(default)]
    min: f64,
    #[serde(default)]
    max: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveRange {}

pub struct EndpointAttributeScorer {
    attribute: Attribute,
    lower_is_better: bool,
    fixed: Option<FixedRange>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ScorerParams = p.parse()?;
    let attribute = resolve_attribute(
        p,
        "attributeKey",
        &params.attribute_key,
        params.producer.as_deref(),
    )?;
    let lower_is_better = match params.algorithm.kind.as_str() {
        "linear_lower_is_better" => true,
        "linear_higher_is_better" => false,
        other => {
            return Err(p.error(format_args!(
                "parameters.algorithm.type: must be 'linear_lower_is_better' or \
                 'linear_higher_is_better', got '{other}'"
            )))
        }
    };
    let n = params.algorithm.normalization;
    if n.fixed_range.is_some() && n.adaptive_range.is_some() {
        return Err(p.error(
            "parameters.algorithm.normalization: at most one of fixedRange and adaptiveRange",
        ));
    }
    if let Some(r) = n.fixed_range {
        if r.min >= r.max || r.min.is_nan() || r.max.is_nan() {
            return Err(p.error(format_args!(
                "parameters.algorithm.normalization.fixedRange: min < max required, got min {}, max {}",
                r.min, r.max
            )));
        }
    }
    Ok(Plugin::Scorer(Arc::new(EndpointAttributeScorer {
        attribute,
        lower_is_better,
        fixed: n.fixed_range,
    })))
}

impl Scorer for EndpointAttributeScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let value = |c: u32| self.attribute.read(cycle.endpoint(c));
        let (min, max) = match self.fixed {
            Some(r) => (r.min, r.max),
            None => candidates
                .iter()
                .filter_map(|&c| value(c))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                    (lo.min(v), hi.max(v))
                }),
        };
        for (slot, &c) in out.iter_mut().zip(candidates) {
            *slot = match value(c) {
                None => 0.0,
                // Adaptive range, every value equal: neutral.
                Some(_) if max <= min => 1.0,
                Some(v) => {
                    let x = ((v - min) / (max - min)).clamp(0.0, 1.0);
                    if self.lower_is_better {
                        1.0 - x
                    } else {
                        x
                    }
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::scheduling::test_pool::{cycle, pool, scorer_of, scores, Ep};

    fn scored(algorithm: &str, eps: Vec<Ep>) -> Vec<f64> {
        let s = scorer_of(
            "endpoint-attribute-scorer",
            &format!(
                r#"{{"attributeKey": "GPUUtilization", "producer": "dcgm-extractor", "algorithm": {algorithm}}}"#
            ),
        );
        let (_store, snap) = pool(eps);
        scores(&*s, &cycle(&snap))
    }

    fn close(got: &[f64], want: &[f64]) -> bool {
        got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-9)
    }

    fn gpus() -> Vec<Ep> {
        vec![
            Ep::waiting(0).gpu(0.2),
            Ep::waiting(0).gpu(0.6),
            Ep::waiting(0).gpu(1.0),
            Ep::waiting(0),
        ]
    }

    #[test]
    fn adaptive_range_spans_the_candidates_and_missing_scores_zero() {
        let low = scored(r#"{"type": "linear_lower_is_better"}"#, gpus());
        assert!(close(&low, &[1.0, 0.5, 0.0, 0.0]), "{low:?}");
        let high = scored(
            r#"{"type": "linear_higher_is_better", "normalization": {"adaptiveRange": {}}}"#,
            gpus(),
        );
        assert!(close(&high, &[0.0, 0.5, 1.0, 0.0]), "{high:?}");
        let same = scored(
            r#"{"type": "linear_higher_is_better"}"#,
            vec![Ep::waiting(0).gpu(0.3), Ep::waiting(0).gpu(0.3)],
        );
        assert_eq!(same, vec![1.0, 1.0]);
    }

    #[test]
    fn fixed_range_clamps_and_inverts() {
        let s = scored(
            r#"{"type": "linear_lower_is_better", "normalization": {"fixedRange": {"min": 0.5, "max": 1.0}}}"#,
            gpus(),
        );
        assert!(close(&s, &[1.0, 0.8, 0.0, 0.0]), "{s:?}");
    }

    #[test]
    fn bad_normalisation_is_refused_by_field() {
        for (algorithm, field) in [
            (r#"{"type": "linear"}"#, "parameters.algorithm.type"),
            (
                r#"{"type": "linear_lower_is_better", "normalization": {"fixedRange": {"min": 1, "max": 1}}}"#,
                "fixedRange",
            ),
            (
                r#"{"type": "linear_lower_is_better", "normalization": {"fixedRange": {"min": 0, "max": 1}, "adaptiveRange": {}}}"#,
                "at most one",
            ),
        ] {
            let raw: serde_json::Value = serde_json::from_str(&format!(
                r#"{{"attributeKey": "GPUUtilization", "producer": "dcgm-extractor", "algorithm": {algorithm}}}"#
            ))
            .unwrap();
            let e =
                crate::scheduling::registry::build(&crate::scheduling::contracts::params::Params {
                    name: "s",
                    kind: "endpoint-attribute-scorer",
                    raw: Some(&raw),
                })
                .err()
                .unwrap();
            assert!(e.0.contains(field), "{algorithm}: {e}");
        }
    }
}
