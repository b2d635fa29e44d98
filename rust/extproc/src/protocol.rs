//! Wire names of the Endpoint Picker Protocol, byte-for-byte as upstream defines them. Defined
//! here only: Python reads them from `sluicegate._core.extproc`.

/// Where the EPP tells the proxy to send a request: a header and dynamic metadata under envoy.lb.
pub const DESTINATION_ENDPOINT: &str = "x-gateway-destination-endpoint";
pub const DESTINATION_NAMESPACE: &str = "envoy.lb";
/// Where the proxy restricts the candidates: request metadata envoy.lb.subset_hint.
pub const SUBSET_NAMESPACE: &str = "envoy.lb.subset_hint";
pub const SUBSET_KEY: &str = "x-gateway-destination-endpoint-subset";
/// Where the proxy reports which endpoint actually served the request (response metadata).
pub const SERVED_ENDPOINT: &str = "x-gateway-destination-endpoint-served";

pub const OBJECTIVE_HEADERS: [&str; 2] = [
    "x-llm-d-inference-objective",
    "x-gateway-inference-objective",
];
pub const FAIRNESS_HEADERS: [&str; 2] = [
    "x-llm-d-inference-fairness-id",
    "x-gateway-inference-fairness-id",
];
pub const MODEL_REWRITE_HEADERS: [&str; 2] =
    ["x-llm-d-model-name-rewrite", "x-gateway-model-name-rewrite"];
pub const DEFAULT_FAIRNESS_ID: &str = "default-flow";
/// TTFT objective in milliseconds: the key of `slo-deadline-ordering-policy`.
pub const SLO_TTFT_HEADERS: [&str; 2] = ["x-llm-d-slo-ttft-ms", "x-slo-ttft-ms"];
/// The latency SLOs the scheduler's predicted-latency plugins and latency-slo-admitter read.
pub const SCHEDULER_SLO_HEADERS: [&str; 2] = ["x-llm-d-slo-ttft-ms", "x-llm-d-slo-tpot-ms"];
/// Envoy's request id, carried in every per-request log line.
pub const REQUEST_ID: &str = "x-request-id";
pub const DROPPED_REASON: &str = "x-llm-d-request-dropped-reason";

/// Envoy keeps streamed body chunks under its gRPC message limit with this size (as upstream).
pub const BODY_CHUNK_BYTES: usize = 62_000;

pub const EXT_PROC_SERVICE: &str = "envoy.service.ext_proc.v3.ExternalProcessor";
/// The gRPC health service name upstream's chart probes.
pub const INFERENCE_EXTENSION_SERVICE: &str = "inference-extension";
pub const HEALTH_SERVICES: [&str; 5] = [
    "",
    "liveness",
    "readiness",
    EXT_PROC_SERVICE,
    INFERENCE_EXTENSION_SERVICE,
];
