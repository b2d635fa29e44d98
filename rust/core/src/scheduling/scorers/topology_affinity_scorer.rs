//! topology-affinity-scorer (llm-d): in the prefill profile of a disaggregated request, rates
//! each candidate by the tightest level it shares with the decode pick, on upstream's fixed
//! curve shaped by KV-transfer bandwidth: host 1.0, rack 0.2, zone 0.05, region 0.02, none 0.
//! With no peer topology every candidate scores 0.

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::contracts::scorer::Scorer;
use crate::scheduling::cycle::Cycle;
use crate::scheduling::producers::topology_extractor::TopologySource;

/// Score by shared level: host, rack, zone, region, none.
const CURVE: [f64; 5] = [1.0, 0.2, 0.05, 0.02, 0.0];

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ScorerParams {
    topology_producer_name: Option<String>,
}

pub struct TopologyAffinityScorer {
    source: TopologySource,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ScorerParams = p.parse()?;
    Ok(Plugin::Scorer(Arc::new(TopologyAffinityScorer {
        source: TopologySource::new(params.topology_producer_name),
    })))
}

impl Scorer for TopologyAffinityScorer {
    fn topology(&self) -> Option<&TopologySource> {
        Some(&self.source)
    }

    fn score(&self, cycle: &Cycle<'_>, candidates: &[u32], out: &mut [f64]) {
        let peer = self.source.peer(cycle);
        for (slot, &c) in out.iter_mut().zip(candidates) {
            *slot = peer.map_or(0.0, |(keys, peer)| {
                CURVE[keys.compare(peer, cycle.endpoint(c))]
            });
        }
    }
}
