"""Wire names of the Endpoint Picker Protocol, kept byte-for-byte as upstream defines them."""

# Where the EPP tells the proxy to send a request: a header and dynamic metadata under envoy.lb.
DESTINATION_ENDPOINT = "x-gateway-destination-endpoint"
DESTINATION_NAMESPACE = "envoy.lb"
# Where the proxy restricts the candidates: request metadata envoy.lb.subset_hint.
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
# Where the proxy reports which endpoint actually served the request (response metadata).
SERVED_ENDPOINT = "x-gateway-destination-endpoint-served"

OBJECTIVE_HEADERS = ("x-llm-d-inference-objective", "x-gateway-inference-objective")
FAIRNESS_HEADERS = ("x-llm-d-inference-fairness-id", "x-gateway-inference-fairness-id")
MODEL_REWRITE_HEADERS = ("x-llm-d-model-name-rewrite", "x-gateway-model-name-rewrite")
DEFAULT_FAIRNESS_ID = "default-flow"
SLO_TTFT_HEADERS = ("x-llm-d-slo-ttft-ms", "x-slo-ttft-ms")
DROPPED_REASON = "x-llm-d-request-dropped-reason"

# Envoy keeps streamed body chunks under its gRPC message limit with this size (as upstream).
BODY_CHUNK_BYTES = 62_000

EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
# "inference-extension": the service name upstream's chart probes.
HEALTH_SERVICES = ("", "liveness", "readiness", EXT_PROC_SERVICE, "inference-extension")
