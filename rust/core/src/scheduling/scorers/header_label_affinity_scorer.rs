//! header-label-affinity-scorer (llm-d): a soft preference for endpoints whose `labelKey` label
//! equals the request's `headerName` header (1), every other endpoint 0. One instance per
//! header-to-label mapping, so each has its own weight.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct AffinityParams {
    header_name: String,
    label_key: String,
}

pub struct HeaderLabelAffinityScorer {
    header: String,
    label: String,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: AffinityParams = p.parse()?;
    for (key, value) in [
        ("headerName", &params.header_name),
        ("labelKey", &params.label_key),
    ] {
        if value.trim().is_empty() {
            return Err(p.error(format_args!("parameters.{key}: required")));
        }
    }
    Ok(Plugin::Scorer(Arc::new(HeaderLabelAffinityScorer {
        header: params.header_name.to_ascii_lowercase(),
        label: params.label_key,
    })))
}

impl Scorer for HeaderLabelAffinityScorer {
    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let wanted = cycle.request.header(&self.header).map(str::trim);
        for (slot, &c) in out.iter_mut().zip(candidates) {
            let labels = &cycle.endpoint(c).info.labels;
            let matches = wanted.is_some_and(|w| {
                !w.is_empty() && labels.iter().any(|(k, v)| *k == self.label && v == w)
            });
            *slot = if matches { 1.0 } else { 0.0 };
        }
    }
}
