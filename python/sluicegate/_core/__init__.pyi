"""Typed surface of the Rust extension, one submodule per concept; each façade imports its own
(sluicegate.scheduling → scheduling, parse; sluicegate.flowcontrol → flowcontrol;
sluicegate.extproc → extproc; sluicegate.metrics → stats). The names also stay on `_core`."""

from . import extproc as extproc
from . import flowcontrol as flowcontrol
from . import kvblock as kvblock
from . import optimizer as optimizer
from . import parse as parse
from . import scheduling as scheduling
from . import stats as stats
from .parse import (
    ParsedRequest as ParsedRequest,
    parse_request as parse_request,
    rewrite_model as rewrite_model,
    replace_model_in_chunk as replace_model_in_chunk,
    prefix_block_hashes as prefix_block_hashes,
    find_usage as find_usage,
)
from .scheduling import (
    EndpointMetrics as EndpointMetrics,
    parse_metrics as parse_metrics,
    request_block_hashes as request_block_hashes,
    Decision as Decision,
    EndpointStatus as EndpointStatus,
    Router as Router,
    Tokens as Tokens,
)
from .stats import (
    SeriesSnapshot as SeriesSnapshot,
    RequestStats as RequestStats,
    plugin_timings as plugin_timings,
)
from .flowcontrol import (
    Completion as Completion,
    QueuedRequest as QueuedRequest,
    FlowController as FlowController,
)
from .optimizer import (
    evaluate_step as evaluate_step,
    max_rates_step as max_rates_step,
)
from .extproc import (
    ExtProcServer as ExtProcServer,
    FlowGate as FlowGate,
    configure_logging as configure_logging,
    DESTINATION_ENDPOINT as DESTINATION_ENDPOINT,
    DESTINATION_NAMESPACE as DESTINATION_NAMESPACE,
    SUBSET_NAMESPACE as SUBSET_NAMESPACE,
    SUBSET_KEY as SUBSET_KEY,
    SERVED_ENDPOINT as SERVED_ENDPOINT,
    OBJECTIVE_HEADERS as OBJECTIVE_HEADERS,
    FAIRNESS_HEADERS as FAIRNESS_HEADERS,
    MODEL_REWRITE_HEADERS as MODEL_REWRITE_HEADERS,
    SLO_TTFT_HEADERS as SLO_TTFT_HEADERS,
    DESTINATION_ENDPOINT_SCORES as DESTINATION_ENDPOINT_SCORES,
    SLO_TPOT_HEADERS as SLO_TPOT_HEADERS,
    PREFILLER_HEADER as PREFILLER_HEADER,
    ENCODERS_HEADER as ENCODERS_HEADER,
    DATA_PARALLEL_HEADER as DATA_PARALLEL_HEADER,
    SESSION_TOKEN_HEADER as SESSION_TOKEN_HEADER,
    SESSION_ID_HEADER as SESSION_ID_HEADER,
    DEFAULT_FAIRNESS_ID as DEFAULT_FAIRNESS_ID,
    DROPPED_REASON as DROPPED_REASON,
    REQUEST_ID as REQUEST_ID,
    BODY_CHUNK_BYTES as BODY_CHUNK_BYTES,
    EXT_PROC_SERVICE as EXT_PROC_SERVICE,
    HEALTH_SERVICES as HEALTH_SERVICES,
    MAX_BODY_BYTES as MAX_BODY_BYTES,
    STREAM_DURATION_BUCKETS as STREAM_DURATION_BUCKETS,
    GRPC_CODE_NAMES as GRPC_CODE_NAMES,
)

__version__: str

__all__ = [
    "__version__",
    "parse",
    "ParsedRequest",
    "parse_request",
    "rewrite_model",
    "replace_model_in_chunk",
    "prefix_block_hashes",
    "find_usage",
    "scheduling",
    "request_block_hashes",
    "EndpointMetrics",
    "Decision",
    "EndpointStatus",
    "Router",
    "Tokens",
    "parse_metrics",
    "stats",
    "RequestStats",
    "plugin_timings",
    "SeriesSnapshot",
    "flowcontrol",
    "optimizer",
    "max_rates_step",
    "evaluate_step",
    "FlowController",
    "QueuedRequest",
    "Completion",
    "extproc",
    "ExtProcServer",
    "FlowGate",
    "configure_logging",
    "DESTINATION_ENDPOINT",
    "DESTINATION_NAMESPACE",
    "SUBSET_NAMESPACE",
    "SUBSET_KEY",
    "SERVED_ENDPOINT",
    "OBJECTIVE_HEADERS",
    "FAIRNESS_HEADERS",
    "MODEL_REWRITE_HEADERS",
    "SLO_TTFT_HEADERS",
    "DESTINATION_ENDPOINT_SCORES",
    "SLO_TPOT_HEADERS",
    "PREFILLER_HEADER",
    "ENCODERS_HEADER",
    "DATA_PARALLEL_HEADER",
    "SESSION_TOKEN_HEADER",
    "SESSION_ID_HEADER",
    "DEFAULT_FAIRNESS_ID",
    "DROPPED_REASON",
    "REQUEST_ID",
    "BODY_CHUNK_BYTES",
    "EXT_PROC_SERVICE",
    "HEALTH_SERVICES",
    "MAX_BODY_BYTES",
    "STREAM_DURATION_BUCKETS",
    "GRPC_CODE_NAMES",
    "kvblock",
    "LocalTokenizer",
    "request_block_keys",
    "vllm_block_hashes",
]
from .kvblock import (
    LocalTokenizer as LocalTokenizer,
    request_block_keys as request_block_keys,
    vllm_block_hashes as vllm_block_hashes,
)
