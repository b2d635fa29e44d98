//! topology-affinity-filter (llm-d): in the prefill profile of a disaggregated request, keeps
//! the candidates co-located with the decode pick at `minAffinity` (`host`, the default, `rack`,
//! `zone` or `region`) or tighter. It fails open: with no peer topology, or when no candidate
//! is close enough, every candidate stays. A candidate without topology never matches.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::filter::Filter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, ScheduleError};
use crate::scheduling::producers::topology_extractor::{Level, TopologySource, LEVELS};

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct FilterParams {
    min_affinity: Option<String>,
    topology_producer_name: Option<String>,
}

pub struct TopologyAffinityFilter {
    min: Level,
    source: TopologySource,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: FilterParams = p.parse()?;
    let min = match params.min_affinity.as_deref() {
        None | Some("") => 0,
        Some(name) => LEVELS.iter().position(|l| *l == name).ok_or_else(|| {
            p.error(format_args!(
                "parameters.minAffinity: '{name}' is not one of host, rack, zone, region"
            ))
        })?,
    };
    let filter = Arc::new(TopologyAffinityFilter {
        min,
        source: TopologySource::new(params.topology_producer_name),
    });
    Ok(Plugin::Filter(filter))
}

impl Filter for TopologyAffinityFilter {
    fn topology(&self) -> Option<&TopologySource> {
        Some(&self.source)
    }

    fn filter(&self, cycle: &Cycle<'_>, candidates: &mut Vec<u32>) -> Result<(), ScheduleError> {
        let Some((keys, peer)) = self.source.peer(cycle) else {
            return Ok(());
        };
        let near = |c: u32| keys.compare(peer, cycle.endpoint(c)) <= self.min;
        if candidates.iter().any(|&c| near(c)) {
            candidates.retain(|&c| near(c));
        }
        Ok(())
    }
}
