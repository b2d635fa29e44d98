//! by-label (llm-d, deprecated upstream for label-selector-filter and the role filters): keeps
//! endpoints whose `label` has one of `validValues`; endpoints without the label are kept only
//! with `allowsNoLabel`.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ByLabelParams {
    label: String,
    valid_values: Vec<String>,
    allows_no_label: bool,
}

pub struct ByLabelFilter {
    label: String,
    valid_values: Vec<String>,
    allows_no_label: bool,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ByLabelParams = p.parse()?;
    if params.label.is_empty() {
        return Err(p.error("parameters.label: required"));
    }
    if params.valid_values.is_empty() && !params.allows_no_label {
        return Err(p.error(
            "parameters.validValues: empty with allowsNoLabel false would keep no endpoint",
        ));
    }
    Ok(Plugin::Filter(Arc::new(ByLabelFilter {
        label: params.label,
        valid_values: params.valid_values,
        allows_no_label: params.allows_no_label,
    })))
}

impl Filter for ByLabelFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        candidates.retain(|&c| {
            let labels = &cycle.endpoint(c).info.labels;
            match labels.iter().find(|(k, _)| *k == self.label) {
                Some((_, v)) => self.valid_values.iter().any(|ok| ok == v),
                None => self.allows_no_label,
            }
        });
        Ok(())
    }
}
