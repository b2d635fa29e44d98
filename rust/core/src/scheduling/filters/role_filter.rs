//! decode-filter, prefill-filter and encode-filter (llm-d): keep endpoints whose
//! `llm-d.ai/role` label names a role that serves the stage (`encode-prefill`,
//! `prefill-decode`, `encode-prefill-decode`, and the deprecated `both` = prefill-decode).
//! Only decode keeps unlabelled endpoints: a plain pool is all decode.

use std::sync::Arc;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::{NoParams, Params};
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};

pub const ROLE_LABEL: &str = "llm-d.ai/role";

pub struct RoleFilter {
    roles: &'static [&'static str],
    allow_unlabelled: bool,
}

pub const DECODE: RoleFilter = RoleFilter {
    roles: &["decode", "prefill-decode", "both", "encode-prefill-decode"],
    allow_unlabelled: true,
};
pub const PREFILL: RoleFilter = RoleFilter {
    roles: &[
        "prefill",
        "encode-prefill",
        "prefill-decode",
        "both",
        "encode-prefill-decode",
    ],
    allow_unlabelled: false,
};
pub const ENCODE: RoleFilter = RoleFilter {
    roles: &["encode", "encode-prefill", "encode-prefill-decode"],
    allow_unlabelled: false,
};

pub fn decode_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Filter(Arc::new(DECODE)))
}

pub fn prefill_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Filter(Arc::new(PREFILL)))
}

pub fn encode_factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    p.parse::<NoParams>()?;
    Ok(Plugin::Filter(Arc::new(ENCODE)))
}

impl Filter for RoleFilter {
    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        candidates.retain(|&c| {
            let labels = &cycle.endpoint(c).info.labels;
            match labels.iter().find(|(k, _)| k == ROLE_LABEL) {
                Some((_, role)) => self.roles.contains(&role.as_str()),
                None => self.allow_unlabelled,
            }
        });
        Ok(())
    }
}
