//! endpoint-attribute-filter (llm-d): keeps the endpoints whose numeric attribute satisfies
//! `algorithm.threshold` (`value <operator> threshold.value`). `onMissing` keeps (`Pass`, the
//! default) or drops (`Fail`) endpoints without the attribute; `fallbackOnEmpty` keeps every
//! candidate when none passes. The attribute is named by `attribute` and `producer`, as
//! upstream; the one published here is dcgm-extractor's `GPUUtilization` (core-metrics-extractor
//! custom metrics are not), and reading it needs a dcgm-data-source (checked by the scheduler).

use std::sync::Arc;

use serde::Deserialize;

use crate::datalayer::dcgm::{DCGM_EXTRACTOR, GPU_UTILIZATION};
use crate::datalayer::Endpoint;
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

/// Plugin types that read endpoint attributes a dcgm-extractor publishes.
pub const GPU_ATTRIBUTE_CONSUMERS: [&str; 2] =
    ["endpoint-attribute-filter", "endpoint-attribute-scorer"];

/// A numeric endpoint attribute some configured data source publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attribute {
    /// dcgm-extractor's busiest-GPU utilization in [0, 1].
    GpuUtilization,
}

impl Attribute {
    pub fn read(self, ep: &Endpoint) -> Option<f64> {
        match self {
            Attribute::GpuUtilization => ep.info.attributes.gpu_utilization(),
        }
    }
}

/// Upstream's key resolution: `producer` unset means a core-metrics-extractor custom metric,
/// and an attribute containing '/' then needs an explicit producer.
pub fn resolve_attribute(
    p: &Params<'_>,
    field: &str,
    attribute: &str,
    producer: Option<&str>,
) -> Result<Attribute, ConfigError> {
    if attribute.is_empty() {
        return Err(p.error(format_args!("parameters.{field}: required (non-empty)")));
    }
    match producer {
        Some(DCGM_EXTRACTOR) if attribute == GPU_UTILIZATION => Ok(Attribute::GpuUtilization),
        None if attribute.contains('/') => {
            let (a, prod) = attribute.rsplit_once('/').unwrap_or_default();
            Err(p.error(format_args!(
                "parameters.{field}: '{attribute}' contains '/' but no producer is set; \
                 write {field}: '{a}' and producer: '{prod}'"
            )))
        }
        None => Err(p.error(format_args!(
            "parameters.{field}: '{attribute}' would be a core-metrics-extractor custom metric \
             (engineConfigs customMetrics), which is not supported; the attribute published here \
             is {GPU_UTILIZATION} with producer: {DCGM_EXTRACTOR}"
        ))),
        Some(prod) => Err(p.error(format_args!(
            "parameters.{field}: no plugin publishes '{attribute}' from producer '{prod}' here \
             (published: {GPU_UTILIZATION} by {DCGM_EXTRACTOR})"
        ))),
    }
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct FilterParams {
    attribute: String,
    producer: Option<String>,
    on_missing: Option<String>,
    fallback_on_empty: bool,
    algorithm: AlgorithmParams,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AlgorithmParams {
    #[serde(rename = "type")]
    kind: String,
    threshold: Option<ThresholdParams>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdParams {
    operator: Operator,
    value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
enum Operator {
    LessThan,
    LessThanOrEqual,
    GreaterThan,
    GreaterThanOrEqual,
    Equal,
    NotEqual,
}

impl Operator {
    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Operator::LessThan => value < threshold,
            Operator::LessThanOrEqual => value <= threshold,
            Operator::GreaterThan => value > threshold,
            Operator::GreaterThanOrEqual => value >= threshold,
            Operator::Equal => value == threshold,
            Operator::NotEqual => value != threshold,
        }
    }
}

pub struct EndpointAttributeFilter {
    attribute: Attribute,
    pass_on_missing: bool,
    fallback_on_empty: bool,
    operator: Operator,
    threshold: f64,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: FilterParams = p.parse()?;
    let attribute = resolve_attribute(
        p,
        "attribute",
        &params.attribute,
        params.producer.as_deref(),
    )?;
    let pass_on_missing = match params.on_missing.as_deref() {
        None | Some("Pass") => true,
        Some("Fail") => false,
        Some(other) => {
            return Err(p.error(format_args!(
                "parameters.onMissing: must be 'Pass' or 'Fail', got '{other}'"
            )))
        }
    };
    if params.algorithm.kind != "threshold" {
        return Err(p.error(format_args!(
            "parameters.algorithm.type: must be 'threshold', got '{}'",
            params.algorithm.kind
        )));
    }
    let threshold = params.algorithm.threshold.ok_or_else(|| {
        p.error("parameters.algorithm.threshold: required when algorithm.type is 'threshold'")
    })?;
    Ok(Plugin::Filter(Arc::new(EndpointAttributeFilter {
        attribute,
        pass_on_missing,
        fallback_on_empty: params.fallback_on_empty,
        operator: threshold.operator,
        threshold: threshold.value,
    })))
}

impl EndpointAttributeFilter {
    fn passes(&self, cycle: &Cycle<'_>, c: u32) -> bool {
        match self.attribute.read(cycle.endpoint(c)) {
            None => self.pass_on_missing,
            Some(v) => self.operator.holds(v, self.threshold),
        }
    }
}

impl Filter for EndpointAttributeFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        if self.fallback_on_empty && !candidates.iter().any(|&c| self.passes(cycle, c)) {
            return Ok(());
        }
        candidates.retain(|&c| self.passes(cycle, c));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::scheduling::test_pool::{filter_of, kept, Ep};

    fn gpu_filter(extra: &str) -> std::sync::Arc<dyn crate::scheduling::contracts::filter::Filter> {
        filter_of(
            "endpoint-attribute-filter",
            &format!(
                r#"{{"attribute": "GPUUtilization", "producer": "dcgm-extractor", {extra}
                    "algorithm": {{"type": "threshold", "threshold": {{"operator": "LessThanOrEqual", "value": 0.9}}}}}}"#
            ),
        )
    }

    fn pool() -> Vec<Ep> {
        vec![
            Ep::waiting(0).gpu(0.95),
            Ep::waiting(0).gpu(0.5),
            Ep::waiting(0),
        ]
    }

    #[test]
    fn busy_gpus_are_dropped_and_missing_ones_pass_by_default() {
        assert_eq!(kept(&*gpu_filter(""), pool()), vec![1, 2]);
        assert_eq!(
            kept(&*gpu_filter(r#""onMissing": "Fail","#), pool()),
            vec![1]
        );
    }

    #[test]
    fn fallback_on_empty_keeps_everyone_when_no_gpu_is_cool_enough() {
        let busy = || vec![Ep::waiting(0).gpu(0.99), Ep::waiting(0).gpu(0.97)];
        let f = gpu_filter(r#""fallbackOnEmpty": true,"#);
        assert_eq!(kept(&*f, busy()), vec![0, 1]);
        assert_eq!(kept(&*gpu_filter(""), busy()), Vec::<u32>::new());
    }

    #[test]
    fn every_operator_compares_the_value_with_the_threshold() {
        let eps = || {
            vec![
                Ep::waiting(0).gpu(0.2),
                Ep::waiting(0).gpu(0.5),
                Ep::waiting(0).gpu(0.8),
            ]
        };
        for (op, want) in [
            ("LessThan", vec![0]),
            ("LessThanOrEqual", vec![0, 1]),
            ("GreaterThan", vec![2]),
            ("GreaterThanOrEqual", vec![1, 2]),
            ("Equal", vec![1]),
            ("NotEqual", vec![0, 2]),
        ] {
            let f = filter_of(
                "endpoint-attribute-filter",
                &format!(
                    r#"{{"attribute": "GPUUtilization", "producer": "dcgm-extractor",
                        "algorithm": {{"type": "threshold", "threshold": {{"operator": "{op}", "value": 0.5}}}}}}"#
                ),
            );
            assert_eq!(kept(&*f, eps()), want, "{op}");
        }
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let err = |params: &str| {
            let raw: serde_json::Value = serde_json::from_str(params).unwrap();
            crate::scheduling::registry::build(&crate::scheduling::contracts::params::Params {
                name: "f",
                kind: "endpoint-attribute-filter",
                raw: Some(&raw),
            })
            .err()
            .unwrap()
            .0
        };
        let algo = r#""algorithm": {"type": "threshold", "threshold": {"operator": "LessThan", "value": 1}}"#;
        let e = err(&format!(
            r#"{{"attribute": "num_requests_running", {algo}}}"#
        ));
        assert!(
            e.contains("parameters.attribute") && e.contains("customMetrics"),
            "{e}"
        );
        let e = err(&format!(
            r#"{{"attribute": "GPUUtilization/dcgm-extractor", {algo}}}"#
        ));
        assert!(e.contains("producer: 'dcgm-extractor'"), "{e}");
        let e = err(&format!(
            r#"{{"attribute": "x", "producer": "my-extractor", {algo}}}"#
        ));
        assert!(e.contains("from producer 'my-extractor'"), "{e}");
        let e = err(
            r#"{"attribute": "GPUUtilization", "producer": "dcgm-extractor", "algorithm": {"type": "topK"}}"#,
        );
        assert!(e.contains("parameters.algorithm.type"), "{e}");
        let e = err(&format!(
            r#"{{"attribute": "GPUUtilization", "producer": "dcgm-extractor", "onMissing": "Drop", {algo}}}"#
        ));
        assert!(e.contains("parameters.onMissing"), "{e}");
        let e = err(
            r#"{"attribute": "GPUUtilization", "producer": "dcgm-extractor",
            "algorithm": {"type": "threshold", "threshold": {"operator": "Between", "value": 1}}}"#,
        );
        assert!(e.contains("parameters.algorithm"), "{e}");
    }
}
