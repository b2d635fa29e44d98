//! label-selector-filter: keeps endpoints whose labels match a Kubernetes-style selector
//! (`matchLabels` and `matchExpressions` with In, NotIn, Exists, DoesNotExist).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct SelectorParams {
    match_labels: BTreeMap<String, String>,
    match_expressions: Vec<Expression>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expression {
    key: String,
    operator: Operator,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

pub struct LabelSelectorFilter {
    params: SelectorParams,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: SelectorParams = p.parse()?;
    if params.match_labels.is_empty() && params.match_expressions.is_empty() {
        return Err(p.error("parameters: give matchLabels or matchExpressions"));
    }
    for (i, e) in params.match_expressions.iter().enumerate() {
        let needs_values = matches!(e.operator, Operator::In | Operator::NotIn);
        if needs_values == e.values.is_empty() {
            return Err(p.error(format_args!(
                "parameters.matchExpressions[{i}].values: {:?} {} values",
                e.operator,
                if needs_values { "needs" } else { "takes no" }
            )));
        }
    }
    Ok(Plugin::Filter(Arc::new(LabelSelectorFilter { params })))
}

impl LabelSelectorFilter {
    fn matches(&self, labels: &[(String, String)]) -> bool {
        let get = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        self.params
            .match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v))
            && self.params.match_expressions.iter().all(|e| {
                let value = get(&e.key);
                match e.operator {
                    Operator::In => value.is_some_and(|v| e.values.contains(v)),
                    Operator::NotIn => value.is_none_or(|v| !e.values.contains(v)),
                    Operator::Exists => value.is_some(),
                    Operator::DoesNotExist => value.is_none(),
                }
            })
    }
}

impl Filter for LabelSelectorFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        candidates.retain(|&c| self.matches(&cycle.endpoint(c).info.labels));
        Ok(())
    }
}
