//! inflight-load-producer (llm-d): the per-endpoint count of requests this EPP sent and has not
//! seen finish. The Router counts them always (active-request-scorer and utilization-filter's
//! `active-requests` read it); listing the producer names that counter. Its token estimates
//! (for token-load-scorer) and cross-replica sync are not implemented, so asking for them fails.

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct InFlightParams {
    add_estimated_output_tokens: bool,
    output_ratio: Option<f64>,
    max_estimated_output_tokens: Option<i64>,
    prefix_match_info_producer_name: Option<String>,
    sync_cross_replica_state: Option<bool>,
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: InFlightParams = p.parse()?;
    let token_fields = [
        (
            "addEstimatedOutputTokens",
            params.add_estimated_output_tokens,
        ),
        ("outputRatio", params.output_ratio.is_some()),
        (
            "maxEstimatedOutputTokens",
            params.max_estimated_output_tokens.is_some(),
        ),
        (
            "prefixMatchInfoProducerName",
            params.prefix_match_info_producer_name.is_some(),
        ),
    ];
    if let Some((key, _)) = token_fields.iter().find(|(_, set)| *set) {
        return Err(p.error(format_args!(
            "parameters.{key}: in-flight token estimates are not kept (requests are counted)"
        )));
    }
    if params.sync_cross_replica_state == Some(true) {
        return Err(
            p.error("parameters.syncCrossReplicaState: in-flight counts are per EPP replica here")
        );
    }
    Ok(Plugin::InFlightCounter)
}
