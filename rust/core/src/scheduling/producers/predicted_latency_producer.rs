//! predicted-latency-producer (llm-d): before the profiles run, predicts each endpoint's TTFT and
//! TPOT for this request with the in-process predictor, and the headroom to the request's SLOs
//! (`x-llm-d-slo-ttft-ms`, `x-llm-d-slo-tpot-ms`, or their deprecated aliases `x-slo-ttft-ms`,
//! `x-slo-tpot-ms`; absent = 0, so headroom is minus the prediction). As upstream, the TPOT SLO
//! (times `sloBufferFactor`) is judged only with `streamingMode: true`; otherwise TPOT headroom
//! is 0. latency-scorer and slo-headroom-tier-filter read them. Each finished request
//! trains the predictor with its observed TTFT and TPOT (`Router::observe_latency`).

use std::sync::Arc;

use serde::Deserialize;

use crate::scheduling::config::ConfigError;
use crate::scheduling::contracts::params::Params;
use crate::scheduling::contracts::plugin::Plugin;
use crate::scheduling::cycle::{Cycle, LatencyState};
use crate::scheduling::producers::latency_predictor::{features, Features, LatencyPredictor};
use crate::scheduling::scorers::prefix_cache_scorer::BYTES_PER_TOKEN;

/// The request's time-to-first-token SLO in ms, then its deprecated alias (as upstream).
pub const SLO_TTFT_HEADERS: [&str; 2] = ["x-llm-d-slo-ttft-ms", "x-slo-ttft-ms"];
/// The request's time-per-output-token SLO in ms, then its deprecated alias (as upstream).
pub const SLO_TPOT_HEADERS: [&str; 2] = ["x-llm-d-slo-tpot-ms", "x-slo-tpot-ms"];

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct ProducerParams {
    /// Upstream's decode-token sampling for its sidecar; TPOT here is the request's mean.
    sampling_mean: f64,
    max_decode_token_samples_for_prediction: u32,
    slo_buffer_factor: f64,
    /// Upstream keeps per-request context this long; here the decision carries it.
    #[serde(rename = "contextTTL")]
    context_ttl: Option<String>,
    streaming_mode: bool,
    endpoint_role_label: String,
    predict_in_produce: bool,
    use_encoder_cache_features: bool,
    encoder_cache_match_info_producer_name: String,
}

impl Default for ProducerParams {
    fn default() -> Self {
        ProducerParams {
            sampling_mean: 1000.0,
            max_decode_token_samples_for_prediction: 0,
            slo_buffer_factor: 1.0,
            context_ttl: None,
            streaming_mode: false,
            endpoint_role_label: String::new(),
            predict_in_produce: true,
            use_encoder_cache_features: false,
            encoder_cache_match_info_producer_name: String::new(),
        }
    }
}

pub struct PredictedLatencyProducer {
    pub predictor: Arc<LatencyPredictor>,
    slo_buffer_factor: f64,
    /// False: training only (upstream's predictInProduce: false).
    predict: bool,
    /// Upstream's streamingMode: only then is the TPOT SLO judged.
    streaming: bool,
}

impl Default for PredictedLatencyProducer {
    fn default() -> Self {
        PredictedLatencyProducer {
            predictor: Arc::default(),
            slo_buffer_factor: 1.0,
            predict: true,
            streaming: false,
        }
    }
}

pub fn factory(p: &Params<'_>) -> Result<Plugin, ConfigError> {
    let params: ProducerParams = p.parse()?;
    if params.use_encoder_cache_features
        || !params.encoder_cache_match_info_producer_name.is_empty()
    {
        return Err(p.error(
            "parameters.useEncoderCacheFeatures: multimodal encoder-cache features are not tracked here",
        ));
    }
    if !(params.slo_buffer_factor.is_finite() && params.slo_buffer_factor > 0.0) {
        return Err(p.error(format_args!(
            "parameters.sloBufferFactor: must be a positive number, got {}",
            params.slo_buffer_factor
        )));
    }
    let _ = (
        params.sampling_mean,
        params.max_decode_token_samples_for_prediction,
        params.context_ttl,
        params.endpoint_role_label,
    );
    Ok(Plugin::LatencyProducer(Arc::new(
        PredictedLatencyProducer {
            predictor: Arc::default(),
            slo_buffer_factor: params.slo_buffer_factor,
            predict: params.predict_in_produce,
            streaming: params.streaming_mode,
        },
    )))
}

fn slo(cycle: &Cycle<'_>, names: &[&str]) -> f64 {
    cycle
        .request
        .header_of(names)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(0.0)
}

impl PredictedLatencyProducer {
    /// What the predictor sees for this request on the endpoint at snapshot position `c`.
    pub fn features_of(&self, cycle: &Cycle<'_>, c: u32) -> Features {
        let ep = cycle.endpoint(c);
        let tokens = cycle.request.prompt.len().div_ceil(BYTES_PER_TOKEN);
        features(
            tokens,
            ep.metrics.waiting,
            ep.metrics.running,
            ep.metrics.kv_usage,
            ep.in_flight(),
        )
    }

    /// Predict for every endpoint of the snapshot, once per cycle.
    pub fn prepare(&self, cycle: &Cycle<'_>) {
        if !self.predict {
            return;
        }
        let n = cycle.snapshot.endpoints.len() as u32;
        let predicted: Vec<Option<(f64, f64)>> = (0..n)
            .map(|c| self.predictor.predict(&self.features_of(cycle, c)))
            .collect();
        if predicted.iter().all(Option::is_none) {
            return; // untrained: latency plugins fall back
        }
        cycle.state.borrow_mut().latency = Some(LatencyState {
            predicted,
            // As upstream: the buffer factor loosens the TPOT SLO only.
            ttft_slo: slo(cycle, &SLO_TTFT_HEADERS),
            tpot_slo: self
                .streaming
                .then(|| slo(cycle, &SLO_TPOT_HEADERS) * self.slo_buffer_factor),
        });
    }
}
