//! latency-slo-admitter (llm-d): refuses a sheddable request (priority < 0) that carries a latency
//! SLO (`x-llm-d-slo-ttft-ms` or `x-llm-d-slo-tpot-ms` > 0) when no candidate can serve it: none
//! is predicted to meet its SLOs (predicted-latency-producer), none is idle (no running requests)
//! and none is cold (KV cache under 2%, where predictions are unreliable). Without predictions
//! (the predictor not trained yet) it admits. A prediction is valid when its TTFT is under the TTFT
//! SLO; TPOT is neutral, as in upstream's default non-streaming mode (so a request giving only a
//! TPOT SLO has no valid endpoint, as upstream).

use std::sync::Arc;

use serde::Deserialize;

use super::sheddable;
use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::admitter::Admitter;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::Cycle;

/// Below this KV-cache usage an endpoint is cold: admitted regardless of predictions.
const COLD_KV: f64 = 0.02;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct LatencySloParams {
    /// Upstream's name of the producer whose predictions it reads; there is one producer here.
    latency_prediction_info_producer_name: String,
}

pub struct LatencySloAdmitter;

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let _: LatencySloParams = p.parse()?;
    Ok(Plugin::Admitter(Arc::new(LatencySloAdmitter)))
}

impl Admitter for LatencySloAdmitter {
    fn admit(&self, cycle: &Cycle<'_>, candidates: &[u32]) -> Result<(), String> {
        if !sheddable(cycle.request.priority) {
            return Ok(());
        }
        let state = cycle.state.borrow();
        let Some(latency) = state.latency.as_ref() else {
            return Ok(()); // no predictions (no SLO header makes them meaningless too)
        };
        if latency.ttft_slo <= 0.0 && latency.tpot_slo.is_none_or(|s| s <= 0.0) {
            return Ok(());
        }
        let meets = |c: u32| {
            latency
                .predicted
                .get(c as usize)
                .copied()
                .flatten()
                .is_some_and(|(ttft, _)| ttft < latency.ttft_slo)
        };
        let servable = candidates.iter().any(|&c| {
            let m = &cycle.endpoint(c).metrics;
            m.kv_usage < COLD_KV || m.running == 0 || meets(c)
        });
        if servable {
            Ok(())
        } else {
            Err("no valid endpoint available to serve the request".into())
        }
    }
}
