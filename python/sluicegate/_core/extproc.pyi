"""The Rust ext_proc server, its flow-control gate, per-request logging and the wire names."""

from typing import Any, final

from typing import Self

from .scheduling import Router

@final
class ExtProcServer:
    """The Envoy ext_proc server in Rust (tonic): ext_proc on `port`, grpc.health.v1 on
    `health_port` (services "", liveness, readiness and the ext_proc service name), served by
    its own tokio threads. Each stream admits its request through `gate` (flow control, or
    legacy shedding) and routes with `router` (the same object Python updates) without calling
    into Python. Binds both ports at construction (0 = pick a free one);
    health is NOT_SERVING until `set_serving(True)`. Raises OSError when a port cannot be
    bound, ConfigError for a bad TLS certificate or key, ValueError for bad arguments."""

    port: int
    health_port: int

    def __new__(cls,
        router: Router,
        host: str = "0.0.0.0",
        port: int = 9002,
        health_port: int = 9003,
        *,
        tls_cert_pem: bytes | None = None,
        tls_key_pem: bytes | None = None,
        skip_response: bool = False,
        worker_threads: int | None = None,
        max_body_bytes: int | None = None,
        gate: FlowGate | None = None,
        health_checking: bool = False,  # grpc.health.v1 on the ext_proc port too
        max_recv_msg_bytes: int | None = None,  # gRPC message limits; None = 64 MiB
        max_send_msg_bytes: int | None = None,
        tls_reload_dir: str | None = None,  # --enable-cert-reload: re-read tls.crt/tls.key on change
        tls_min_version: str | None = None,  # Go name: VersionTLS10 … VersionTLS13
        tls_cipher_suites: list[str] = ...,  # Go names of TLS 1.2 suites; TLS 1.3 ones stay on
        stream_metrics: bool = False,  # --enable-grpc-stream-metrics
    ) -> Self: ...
    def stream_metrics(self) -> tuple[int, list[int], float, list[tuple[str, int]]] | None:
        """(streams open, cumulative bucket counts over STREAM_DURATION_BUCKETS then +Inf, sum of
        durations in s, [(Go gRPC code name, streams ended with it)]); None when not enabled."""
    def start(self) -> None:
        """Start serving; returns at once. RuntimeError when started already or stopped."""
    def set_serving(self, serving: bool) -> None: ...
    def stop(self, drain_timeout: float = 0.0) -> None:
        """NOT_SERVING, up to min(drain_timeout, 1) s for proxies to see it, queued requests 503
        rejected-shutting-down, up to
        `drain_timeout` s for open streams, then stop (GIL released). Idempotent."""


@final
class FlowGate:
    """Flow control inside the ext_proc server: the objective's priority picks the band, the
    fairness id the flow; dispatched at once when nothing waits and there is room, else queued
    until its turn (a stream reset cancels it). `queueing` False: the flowControl gate is off and
    only legacy shedding applies (priority < 0 → 429 while saturated)."""

    def __new__(cls, router: Router, config_json: str = "{}", queueing: bool = True) -> Self: ...
    @property
    def queueing(self) -> bool: ...
    def notify(self) -> None:
        """Endpoints or metrics changed: requests waiting for them may go now."""
    def saturation(self) -> float: ...
    def set_scale_from_zero(self, grace_s: float | None, message: str = ...) -> None:
        """While an activator manages the pool: a request with nothing to go to waits exactly
        `grace_s`, then fails 503 with `message`. None: not managed."""
    def hold_counts(self) -> tuple[int, int, int]:
        """(held for the grace period now, held in total, failed at its end in total)."""
    def hold_fd(self) -> int:
        """Readable when a request was held while none was (the activator's scale-up event)."""
    def take_hold_signal(self) -> None:
        """Re-arm that event; then drain `hold_fd` and read `hold_counts`."""
    def stats(self) -> dict[str, Any]:
        """As FlowController.stats()."""
    def queue_durations(self) -> list[tuple[tuple[str, int, str, str, str], tuple[list[float], list[int], float]]]:
        """((fairness id, priority, outcome, model, target model), (bounds, per-bucket counts with
        +Inf last, sum)): time in flow control per label set, upstream's QueueOutcome names."""
    def flow_metrics(self) -> tuple[list[tuple[str, int, str, str, int, int]],
                                    list[tuple[tuple[str, int, str], tuple[list[float], list[int], float]]],
                                    tuple[list[float], list[int], float]]:
        """((fairness id, priority, model, target model, queued requests, queued bytes) per flow
        and model, ((fairness id, priority, outcome), enqueue-duration histogram), dispatch-cycle
        histogram); flows idle for five minutes are forgotten."""
    def queue_totals(self) -> list[tuple[int, str, int]]:
        """(priority, outcome, requests) that left flow control; idle flows leave these alone."""
    def shutdown(self) -> None:
        """Answer every queued request 503 rejected-shutting-down; stop the dispatch thread."""

def configure_logging(level: int, encoder: str = "json", time_encoding: str | None = None) -> None:
    """Rust log lines: Python level number, "json" / "console" / "text", --zap-time-encoding."""

STREAM_DURATION_BUCKETS: list[float]  # upstream's extproc_stream_duration_seconds bounds
GRPC_CODE_NAMES: list[str]  # gRPC codes by number as Go spells them ("OK", "Canceled", …)

# Wire names of the Endpoint Picker Protocol (rust/extproc/src/protocol.rs).
DESTINATION_ENDPOINT: str
DESTINATION_NAMESPACE: str
SUBSET_NAMESPACE: str
SUBSET_KEY: str
SERVED_ENDPOINT: str
OBJECTIVE_HEADERS: list[str]
FAIRNESS_HEADERS: list[str]
MODEL_REWRITE_HEADERS: list[str]
SLO_TTFT_HEADERS: list[str]
SLO_TPOT_HEADERS: list[str]
DESTINATION_ENDPOINT_SCORES: str
PREFILLER_HEADER: str
ENCODERS_HEADER: str
DATA_PARALLEL_HEADER: str
SESSION_TOKEN_HEADER: str
SESSION_ID_HEADER: str
DEFAULT_FAIRNESS_ID: str
DROPPED_REASON: str
REQUEST_ID: str
BODY_CHUNK_BYTES: int
EXT_PROC_SERVICE: str
HEALTH_SERVICES: list[str]
MAX_BODY_BYTES: int

__all__ = [
    "ExtProcServer",
    "FlowGate",
    "configure_logging",
    "STREAM_DURATION_BUCKETS",
    "GRPC_CODE_NAMES",
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
]
