"""The flow controller behind the embeddable asyncio façade (sluicegate.flowcontrol)."""

from typing import Any, Mapping, Sequence, final

from typing import Self

from .scheduling import Decision, Router

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
    @property
    def id(self) -> int: ...
    @property
    def held(self) -> bool:
        """It waits for the scale-from-zero grace period (its TTL)."""
    def expired(self) -> str | None:
        """It failed at the end of its grace period: counted; the message to fail with."""
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
    def set_scale_from_zero(self, grace_s: float | None, message: str = ...) -> None:
        """While an activator manages the pool: a request with nothing to go to waits exactly
        `grace_s` (the global TTLs do not cut it short), then fails with `message`. None: off."""
    def hold_counts(self) -> tuple[int, int, int]:
        """(held for the grace period now, held in total, failed at its end in total)."""
    def hold_fd(self) -> int:
        """Readable when a request was held while none was (the activator's scale-up event)."""
    def take_hold_signal(self) -> None:
        """Re-arm that event; then drain `hold_fd` and read `hold_counts`."""
    def record_outcome(self, flow: str, priority: int, outcome: str, seconds: float, model: str = "",
                       target_model: str = "") -> None:
        """One request left the controller; `outcome` is upstream's QueueOutcome name (ValueError
        for any other)."""
    def queue_durations(self) -> list[tuple[tuple[str, int, str, str, str], tuple[list[float], list[int], float]]]:
        """As FlowGate.queue_durations."""
    def flow_metrics(self) -> tuple[list[tuple[str, int, str, str, int, int]],
                                    list[tuple[tuple[str, int, str], tuple[list[float], list[int], float]]],
                                    tuple[list[float], list[int], float]]:
        """((fairness id, priority, model, target model, queued requests, queued bytes) per flow
        and model, ((fairness id, priority, outcome), enqueue-duration histogram), dispatch-cycle
        histogram); flows idle for five minutes are forgotten."""
    def queue_totals(self) -> list[tuple[int, str, int]]:
        """(priority, outcome, requests) that left flow control; idle flows leave these alone."""
    def stats(self) -> dict[str, Any]:
        """queued_requests, queued_bytes, bands [(priority, requests, bytes)], band_limits
        [(priority, max requests, max bytes)], max_requests, max_bytes (0: no limit), enqueued,
        dispatched, rejected_capacity, expired_ttl, expired_no_endpoints, cancelled, evicted,
        in_flight, saturation, dispatch_cycles, dispatch_cycle_seconds, queue_wait_seconds."""
    def shutdown(self) -> None:
        """Evict every queued request (503 rejected-shutting-down) and stop the dispatch thread."""

__all__ = [
    "FlowController",
    "QueuedRequest",
    "Completion",
]
