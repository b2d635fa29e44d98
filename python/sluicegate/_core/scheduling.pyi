"""The per-pool Router: endpoints, scheduler, scraper, objectives and rewrite tables."""

from typing import Mapping, Sequence, final

from typing import Self

from .stats import RequestStats

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

def request_block_hashes(path: str, body: bytes, block_tokens: int) -> list[int]:
    """The block hashes of a request under the precise-prefix scheme (body model and cache_salt
    as seed, flat prompt in blocks of block_tokens x 4 bytes); BadRequestError if unparsable."""

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
    response_headers: dict[str, str] | None  # to add to the client's response (session token); None when none
    session_token: str | None  # x-session-token naming the primary, with session affinity
    endpoint_scores: dict[str, float] | None  # "ip:port" -> weighted score (emitEndpointScores); else None
    held_tokens: int  # estimated tokens held on the primary; give back with Router.release

@final
class EndpointStatus:
    name: str
    address: str
    waiting: int
    running: int
    kv_usage: float
    in_flight: int
    in_flight_tokens: int  # estimated tokens of the in-flight requests (inflight-load-producer)
    models: list[str] | None  # what the endpoint's /v1/models listed (models-data-source)
    age_ms: int  # since the last good scrape; -1 when never scraped
    stale: bool
    scrape_errors: int
    scrape_error: str | None  # why the last metrics scrape failed; None once one succeeds
    # (source type, extractor type, poll errors, extract errors, why the last poll failed) per
    # attribute source (models-data-source, dcgm-data-source, multicluster-metrics-data-source)
    # that has failed at this endpoint
    source_errors: list[tuple[str, str, int, int, str | None]]

@final
class Tokens:
    """A request's token ids from `Router.tokenize`, kept on the Rust side for
    `Router.route(..., tokens=)`."""

    @property
    def error(self) -> str | None:
        """Why tokenizing failed (the route then scores no prefix match); None when it worked."""
    def __len__(self) -> int: ...

@final
class Router:
    """Endpoint snapshot + scheduler + metrics scraper, one per pool."""

    def __new__(cls, config_json: str = "{}") -> Self:
        """config_json: the scheduling part of an EndpointPickerConfig as JSON ("plugins",
        "schedulingProfiles") plus "stalenessMs", "scrapeIntervalMs", "scrapeTimeoutMs",
        "maxMetricSeries", "ignoreSubsetHint", "emitEndpointScores"; none of the first two gives upstream's default profile (queue-scorer 2,
        kv-cache-utilization-scorer 2, prefix-cache-scorer 3, max-score-picker). Unknown keys,
        plugin types or parameters raise ConfigError naming the plugin and the field."""
    def describe(self) -> str:
        """The resolved configuration as JSON: profileHandler, profiles, producers."""
    def set_endpoints(self, endpoints: Sequence[tuple[str, str, Mapping[str, str]]],
                      pods: Mapping[str, tuple[str | None, str | None, str | None]] | None = None) -> None:
        """Replace the endpoint set: (name, "ip:port", labels). Metrics of kept endpoints survive.
        The label `llm-d.ai/engine-type` picks the metric names the scraper reads (default vllm).
        `pods`: "ip:port" -> (metadata.name, spec.hostname, status.hostIP) of the Pod behind the
        endpoint (Kubernetes mode): the `pod` label of its DCGM samples, topology-extractor's
        fallback when the hostname label is absent, where a node's DCGM exporter listens
        (`useNodeAddress`); replaced with the endpoints."""
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
        tokens: Tokens | None = None,
    ) -> Decision:
        """Parse, then schedule over the current snapshot, GIL released. Counts one in-flight
        request on the primary. `tokens`: the ids `tokenize` computed before the cycle. Raises
        BadRequestError (400), NoEndpointsError (503)."""
    def tokenize(self, path: str, body: bytes) -> Tokens | None:
        """When the token-producer tokenizes through the model server's render API: that call,
        made now with the GIL released, for `route(..., tokens=)` (the ext_proc server's order:
        the round trip is never part of a routing cycle). None when tokenizing is in-process or
        there is no precise index."""
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
    def apply_kv_events(self, address: str, payload: bytes, seq: int | None = None, model: str = "") -> bool:
        """One msgpack KVEventBatch (either vLLM wire form) from the endpoint at `address`, for
        `model` (from the topic), into the precise prefix index (GIL released); False when no
        endpoint has that address. ValueError: bad payload, or no precise-prefix-cache-producer."""
    def kv_event_stats(self) -> dict[str, int] | None:
        """The precise index's counters (batches, events, decode_failures, seq_gaps,
        block_size_mismatches, unknown_parents, admissions, evictions, engine_hash_checks,
        engine_hash_mismatches, lookups, lookup_blocks, lookup_hits, tokenize_failures, dedup_forwarded,
        dedup_suppressed, size);
        None without a producer."""
    def kv_event_skips(self) -> list[tuple[bool, str, str, int]]:
        """Events the precise index left out since start: (removal, cache kind, reason, count)
        each, as upstream counts them (a KV-cache group that is not full attention, a group never
        described, tokens that are not one block per hash); empty without a producer."""
    def kv_lookup_latency(self) -> tuple[list[float], list[int], float] | None:
        """The precise index's lookups by latency: (bucket upper bounds in seconds, count per
        bucket plus one above them all, not cumulative, sum of seconds); None without a
        producer."""
    def release(self, address: str, held_tokens: int = 0) -> None:
        """The request sent to `address` finished: drop its in-flight count and the tokens its
        decision held (`Decision.held_tokens`)."""
    def status(self) -> list[EndpointStatus]: ...
    def set_objectives(self, priorities: Mapping[str, int]) -> None:
        """Replace every objective at once: InferenceObjective name → priority (absent → 0)."""
    def priority_of(self, objective: str) -> int:
        """The priority requests naming `objective` are admitted with now (unknown or "" → 0)."""
    def set_rewrites(self, table_json: str) -> None:
        """Replace the whole InferenceModelRewrite table at once: {"exact": {model: rule},
        "matchAll": rule | null}, a rule being {"source", "targets": [{"model", "weight"}]}.
        Routing applies it (after parsing the body once) unless the proxy named a rewrite.
        ConfigError names a rule without targets or with a zero weight."""
    def rewrite_of(self, model: str | None) -> str | None:
        """The model a request naming `model` is sent upstream as (a weighted draw), or None."""
    def request_stats(self) -> RequestStats:
        """The request metrics this Router's request paths record into (scheduler cycle
        durations are recorded by `route`)."""

__all__ = [
    "request_block_hashes",
    "EndpointMetrics",
    "Decision",
    "EndpointStatus",
    "Router",
    "Tokens",
    "parse_metrics",
]
