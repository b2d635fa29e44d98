"""Typed surface of the Rust extension. Only sluicegate's façade modules import it."""

from typing import Any, Mapping, Sequence, final

from typing_extensions import Self

__all__ = ["__version__", "ParsedRequest", "parse_request", "rewrite_model", "replace_model_in_chunk",
           "prefix_block_hashes", "find_usage", "request_block_hashes", "EndpointMetrics", "Decision",
           "EndpointStatus", "Router", "parse_metrics", "RequestStats", "SeriesSnapshot", "FlowController",
           "QueuedRequest", "Completion", "ExtProcServer"]

__version__: str

@final
class ParsedRequest:
    kind: str  # "chat_completions" | "completions" | "embeddings" | "responses" | "anthropic_messages" | "passthrough"
    model: str | None
    stream: bool
    max_tokens: int | None
    cache_salt: str | None
    prompt_len: int  # bytes of flat prompt text

def parse_request(path: str, body: bytes) -> ParsedRequest:
    """Parse an inference request body; raises sluicegate.errors.BadRequestError naming the field."""

def rewrite_model(body: bytes, model: str) -> bytes:
    """Return the body with its top-level "model" replaced; every other byte kept as it was."""

def replace_model_in_chunk(chunk: bytes, old: str, new: str) -> bytes:
    """Replace `"model":"old"` (any JSON spacing) with `"model":"new"` in a response chunk."""

def prefix_block_hashes(model: str, cache_salt: str | None, prompt: bytes, block_bytes: int) -> list[int]:
    """Chained hashes of the prompt's full blocks, seeded by model and salt."""

def request_block_hashes(path: str, body: bytes, block_tokens: int) -> list[int]:
    """The block hashes of a request under the precise-prefix scheme (body model and cache_salt
    as seed, flat prompt in blocks of block_tokens x 4 bytes); BadRequestError if unparsable."""

def find_usage(tail: bytes) -> tuple[int, int, int] | None:
    """(prompt_tokens, completion_tokens, cached_tokens) of the last complete OpenAI `usage`
    object in the tail of a response body or SSE stream; None when there is none."""

@final
class EndpointMetrics:
    waiting: int
    running: int
    kv_usage: float  # 0..1
    running_loras: list[str]
    waiting_loras: list[str]
    max_lora: int
    block_size: int
    num_gpu_blocks: int

def parse_metrics(text: bytes, engine: str) -> EndpointMetrics:
    """Parse Prometheus text with the metric names of `engine` ("vllm" | "sglang" | "trtllm",
    alias "trtllm-serve"); metrics absent from the text read as 0. Unknown engine: ConfigError."""

@final
class Decision:
    endpoints: str  # "ip:port[,ip:port...]": primary first, then fallbacks
    primary: str  # the first of `endpoints`
    model: str | None  # model named by the client
    target_model: str | None  # model after rewrite (None when not rewritten)
    body: bytes | None  # rewritten body when the model was rewritten, else None
    stream: bool
    kind: str
    headers: dict[str, str] | None  # to add upstream, e.g. x-prefiller-host-port; None when none
    session_token: str | None  # x-session-token naming the primary, with session affinity

@final
class EndpointStatus:
    name: str
    address: str
    waiting: int
    running: int
    kv_usage: float
    in_flight: int
    age_ms: int  # since the last good scrape; -1 when never scraped
    stale: bool
    scrape_errors: int

@final
class Router:
    """Endpoint snapshot + scheduler + metrics scraper, one per pool."""

    def __new__(cls, config_json: str = "{}") -> Self:
        """config_json: the scheduling part of an EndpointPickerConfig as JSON ("plugins",
        "schedulingProfiles") plus "stalenessMs", "scrapeIntervalMs", "scrapeTimeoutMs",
        "maxMetricSeries", "ignoreSubsetHint"; none of the first two gives upstream's default profile (queue-scorer 2,
        kv-cache-utilization-scorer 2, prefix-cache-scorer 3, max-score-picker). Unknown keys,
        plugin types or parameters raise ConfigError naming the plugin and the field."""
    def describe(self) -> str:
        """The resolved configuration as JSON: profileHandler, profiles, producers."""
    def set_endpoints(self, endpoints: Sequence[tuple[str, str, Mapping[str, str]]]) -> None:
        """Replace the endpoint set: (name, "ip:port", labels). Metrics of kept endpoints survive.
        The label `llm-d.ai/engine-type` picks the metric names the scraper reads (default vllm)."""
    def set_allowed_models(self, pool: str, models: Sequence[str] | None = None) -> None:
        """Serve only `models` (others fail with ModelNotServedError naming the model and `pool`);
        None serves any model (the default)."""
    def ingest_metrics(self, address: str, text: bytes, engine: str = "vllm") -> bool:
        """Feed a scrape result by hand (tests, push-based discovery); False when `address` is
        not in the pool. Missing metrics keep their last value."""
    def start_scraper(self) -> None:
        """Start the Rust scrape thread: GET http://address/metrics every scrapeIntervalMs."""
    def stop_scraper(self) -> None: ...
    def route(
        self,
        path: str,
        body: bytes,
        model_rewrite: str | None = None,
        subset: Sequence[str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Decision:
        """Parse, then schedule over the current snapshot, GIL released. Counts one in-flight
        request on the primary. Raises BadRequestError (400), NoEndpointsError (503)."""
    def explain(
        self,
        path: str,
        body: bytes,
        model_rewrite: str | None = None,
        subset: Sequence[str] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Decision, list[tuple[str, list[str], list[tuple[str, float, list[float]]], list[float], list[str]]]]:
        """What `route` would decide, changing nothing (no in-flight count, no learning), and
        per profile: (name, candidates after filters, [(scorer, weight, raw scores)], totals,
        picked)."""
    def apply_kv_events(self, address: str, payload: bytes, seq: int | None = None) -> bool:
        """One msgpack KVEventBatch from the endpoint at `address` into the precise prefix index
        (GIL released); False when no endpoint has that address. ValueError: bad payload, or no
        precise-prefix-cache-producer configured."""
    def kv_event_stats(self) -> dict[str, int] | None:
        """batches, events, seq_gaps, block_size_mismatches; None without a producer."""
    def release(self, address: str) -> None:
        """The request sent to `address` finished: drop its in-flight count."""
    def status(self) -> list[EndpointStatus]: ...
    def request_stats(self) -> RequestStats:
        """The request metrics this Router's request paths record into (scheduler cycle
        durations are recorded by `route`)."""

# (bucket upper bounds, per-bucket counts with +Inf last, sum)
_Histogram = tuple[list[float], list[int], float]

@final
class SeriesSnapshot:
    model: str
    target_model: str
    fairness_id: str
    priority: int
    requests: int
    errors: list[tuple[str, int]]  # (error_code, count)
    running: int
    duration: _Histogram
    request_size: _Histogram
    response_size: _Histogram
    input_tokens: _Histogram
    output_tokens: _Histogram
    cached_tokens: _Histogram
    ntpot: _Histogram
    ttft: _Histogram
    ttft_streaming: _Histogram
    tpot: _Histogram  # streamed responses: (duration - ttft) / (output tokens - 1)

@final
class RequestStats:
    """Per-request metrics by (model, target model, fairness id, priority); label sets past
    `max_series` count under model "__other__"."""

    def __new__(cls, max_series: int = 1000) -> Self: ...
    def started(self, model: str, target_model: str, fairness_id: str, priority: int) -> None: ...
    def finished(
        self, model: str, target_model: str, fairness_id: str, priority: int, was_started: bool, *,
        error_code: str | None = None, request_bytes: int | None = None, response_bytes: int | None = None,
        input_tokens: int | None = None, output_tokens: int | None = None, cached_tokens: int | None = None,
        duration_s: float | None = None, ttft_s: float | None = None, streaming: bool = False,
    ) -> None: ...
    def snapshot(self) -> list[SeriesSnapshot]: ...
    def scheduler(self) -> _Histogram: ...
    def attempts(self) -> list[tuple[bool, str, str, str, int]]:
        """(success, target model, endpoint name, endpoint "ip:port", count) per scheduling outcome."""

@final
class ExtProcServer:
    """The Envoy ext_proc server in Rust (tonic): ext_proc on `port`, grpc.health.v1 on
    `health_port` (services "", liveness, readiness and the ext_proc service name), served by
    its own tokio threads. Each stream routes with `router` (the same object Python updates)
    without calling into Python. Binds both ports at construction (0 = pick a free one);
    health is NOT_SERVING until `set_serving(True)`. Raises OSError when a port cannot be
    bound, ConfigError for a bad TLS certificate or key, ValueError for bad arguments."""

    port: int
    health_port: int

    def __new__(
        cls,
        router: Router,
        host: str = "0.0.0.0",
        port: int = 9002,
        health_port: int = 9003,
        *,
        tls_cert_pem: bytes | None = None,
        tls_key_pem: bytes | None = None,
        skip_response: bool = False,
        max_body_bytes: int | None = None,
        worker_threads: int | None = None,
        health_checking: bool = False,  # grpc.health.v1 on the ext_proc port too
        max_recv_msg_bytes: int | None = None,  # gRPC message limits; None = 64 MiB
        max_send_msg_bytes: int | None = None,
        tls_reload_dir: str | None = None,  # --enable-cert-reload: re-read tls.crt/tls.key on change
        tls_min_version: str | None = None,  # Go name: VersionTLS10 … VersionTLS13
        tls_cipher_suites: list[str] = [],  # Go names of TLS 1.2 suites; TLS 1.3 ones stay on
        stream_metrics: bool = False,  # --enable-grpc-stream-metrics
    ) -> Self: ...
    def stream_metrics(self) -> tuple[int, list[int], float, list[tuple[str, int]]] | None:
        """(streams open, cumulative bucket counts over STREAM_DURATION_BUCKETS then +Inf, sum of
        durations in s, [(Go gRPC code name, streams ended with it)]); None when not enabled."""
    def start(self) -> None:
        """Start serving; returns at once. RuntimeError when started already or stopped."""
    def set_serving(self, serving: bool) -> None: ...
    def stop(self, drain_timeout: float = 0.0) -> None:
        """NOT_SERVING, up to min(drain_timeout, 1) s for proxies to see it, up to
        `drain_timeout` s for open streams, then stop (GIL released). Idempotent."""

STREAM_DURATION_BUCKETS: list[float]  # upstream's extproc_stream_duration_seconds bounds
GRPC_CODE_NAMES: list[str]  # gRPC codes by number as Go spells them ("OK", "Canceled", …)

def configure_logging(level: int, encoder: str = "json", time_encoding: str | None = None) -> None:
    """Rust log lines: Python level number, "json" / "console" / "text", --zap-time-encoding."""

@final
class Completion:
    """The one outcome of a queued request, as the flow controller's dispatch thread gave it."""

    id: int
    status: int  # 200 when dispatched, else the HTTP status of the rejection
    reason: str  # x-llm-d-request-dropped-reason ("" when dispatched or for a bad request)
    message: str
    waited_s: float  # time spent queued
    decision: Decision | None  # where it goes, when it was enqueued with a path and a Router

@final
class QueuedRequest:
    id: int
    def cancel(self) -> bool:
        """Remove the request if it still waits; False when its outcome is already decided."""

@final
class FlowController:
    """Per-flow queues, priority bands, fairness/ordering policies, capacity, TTLs, a saturation
    detector and a dispatch thread. Outcomes are handed over in batches: `wake_fd()` becomes
    readable when `take_completions()` has something."""

    def __new__(cls, config_json: str = "{}", router: Router | None = None) -> Self:
        """config_json: the Rust FlowControlConfig (see sluicegate.flowcontrol.config.to_json);
        the utilization detector needs `router`. Bad config: ConfigError naming the field."""
    def wake_fd(self) -> int: ...
    def enqueue(
        self,
        flow: str,
        priority: int = 0,
        size: int = 0,
        ttl: float | None = None,
        slo_ttft: float | None = None,
        *,
        path: str | None = None,
        body: bytes | None = None,
        model_rewrite: str | None = None,
        subset: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        dispatch_now: bool = False,
    ) -> QueuedRequest | Completion:
        """Queue a request (routed at dispatch when `path` is given and there is a Router); with
        `dispatch_now`, first dispatch it in this thread when nothing waits and the pool has
        room (a Completion, waited_s 0). Raises SaturatedError / NoEndpointsError when capacity
        is full, ShuttingDownError after shutdown; ValueError for a non-positive ttl or slo_ttft."""
    def take_completions(self) -> list[Completion]:
        """Every outcome delivered since the last call, oldest first."""
    def release(self) -> None:
        """A dispatched request finished: its place is free again."""
    def notify(self) -> None:
        """Endpoints or metrics changed: the dispatcher looks again now."""
    def saturation(self) -> float: ...
    def stats(self) -> dict[str, Any]:
        """queued_requests, queued_bytes, bands [(priority, requests, bytes)], enqueued, dispatched,
        rejected_capacity, expired_ttl, expired_no_endpoints, cancelled, evicted, in_flight,
        saturation, dispatch_cycles, dispatch_cycle_seconds, queue_wait_seconds."""
    def shutdown(self) -> None:
        """Evict every queued request (503 rejected-shutting-down) and stop the dispatch thread."""
