//! The one parameter every picker takes: how many endpoints a decision names (primary plus
//! fallbacks).

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct PickerParams {
    max_num_of_endpoints: usize,
}

impl Default for PickerParams {
    fn default() -> Self {
        PickerParams {
            max_num_of_endpoints: 1,
        }
    }
}

pub fn max_endpoints(p: &Params<'_>) -> Result<usize, ConfigError> {
    let params: PickerParams = p.parse()?;
    checked_max_endpoints(p, params.max_num_of_endpoints)
}

/// `maxNumOfEndpoints` as read by a picker that takes more parameters.
pub fn checked_max_endpoints(p: &Params<'_>, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(p.error("parameters.maxNumOfEndpoints: must be >= 1, got 0"));
    }
    Ok(n)
}
