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
/// With --emit-endpoint-scores: request-path metadata under envoy.lb, a struct of "ip:port" ->
/// the primary profile's weighted score for every endpoint it scored.
pub const DESTINATION_ENDPOINT_SCORES: &str = "x-gateway-destination-endpoint-scores";

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
/// Headers a decision adds to the request for the picked endpoint: its prefill peer, its encode
/// peers ("ip:port,ip:port"), and data-parallel the picked rank's own "ip:port".
pub use sluicegate_core::scheduling::{DATA_PARALLEL_HEADER, ENCODERS_HEADER, PREFILLER_HEADER};
/// Session affinity: the token naming the endpoint (request and response), and the opaque
/// session id a client sends (session_id strategy's default source).
pub use sluicegate_core::scheduling::{SESSION_ID_HEADER, SESSION_TOKEN_HEADER};
/// Request SLOs in milliseconds, each with its deprecated alias: TTFT orders
/// `slo-deadline-ordering-policy` and, with TPOT, sets predicted-latency-producer's headroom.
/// Defined by the core crate, which reads them.
pub use sluicegate_core::scheduling::{SLO_TPOT_HEADERS, SLO_TTFT_HEADERS};
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
