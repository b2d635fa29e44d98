"""asyncio façade over the Rust flow controller: `async with controller.admit(...) as ticket:`.

The Rust dispatch thread hands outcomes over in batches: one byte on a pipe registered with
`loop.add_reader` wakes the loop, which takes the whole batch in one call and resolves every
waiting future from it (no `call_soon_threadsafe` per request).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any, Mapping, Sequence

from .. import errors
from .._core.flowcontrol import Completion, QueuedRequest
from .._core.flowcontrol import FlowController as _CoreController
from .._core.scheduling import Decision, Router
from .config import DEFAULT_FLOW, FlowControlSettings

_ERRORS: dict[str, type[errors.SluicegateError]] = {
    "rejected-saturated": errors.SaturatedError,
    "rejected-ttl-expired": errors.TtlExpiredError,
    "rejected-no-endpoints": errors.NoEndpointsError,
    "rejected-shutting-down": errors.ShuttingDownError,
}


# A rejection's reason -> upstream's QueueOutcome name (a bad request was dispatched, then refused).
_QUEUE_OUTCOME = {"rejected-saturated": "RejectedCapacity", "rejected-ttl-expired": "EvictedTTL",
                  "rejected-no-endpoints": "EvictedNoEndpoints", "rejected-shutting-down": "EvictedOther"}


class Ticket:
    """A dispatched request; `decision` says where it goes when the controller routes.
    `release()` (or leaving `async with`) frees its place once the request has finished."""

    __slots__ = ("_controller", "_released", "decision", "waited")

    def __init__(self, controller: FlowController, decision: Decision | None, waited: float) -> None:
        self._controller = controller
        self._released = False
        self.decision = decision
        self.waited = waited  # seconds spent queued

    def release(self) -> None:
        """The request finished: free its place (idempotent)."""
        if not self._released:
            self._released = True
            self._controller._release(self.decision)


class _Admission:
    __slots__ = ("_controller", "_args", "_ticket")

    def __init__(self, controller: FlowController, args: tuple) -> None:
        self._controller = controller
        self._args = args
        self._ticket: Ticket | None = None

    async def __aenter__(self) -> Ticket:
        self._ticket = await self._controller.acquire(*self._args)
        return self._ticket

    async def __aexit__(self, *exc: object) -> None:
        if self._ticket is not None:
            self._ticket.release()


class FlowController:
    """Holds requests while the pool is saturated and lets them go by priority, fairness across
    flows and each flow's own order.

    Standalone: `FlowController(max_concurrency=8)` admits at most 8 at a time. In the EPP it
    is built from the config with the pool's Router; it then routes each request in the
    dispatch thread when its turn comes and waits while the pool has no endpoints.
    Use it from one event loop; `close()` evicts whatever still waits.
    """

    def __init__(self, settings: FlowControlSettings | None = None, *, max_concurrency: int | None = None,
                 router: Router | None = None, queueing: bool = True) -> None:
        settings = settings or FlowControlSettings()
        if max_concurrency is not None:
            settings = replace(settings, detector={"type": "concurrency-detector", "maxConcurrency": max_concurrency})
        self.settings = settings
        # False: the EPP with the flowControl gate off, where only `shed` (legacy admission) is used.
        self.queueing = queueing
        self._router = router
        self._core = _CoreController(settings.to_json(), router)
        self._fd = self._core.wake_fd()
        os.set_blocking(self._fd, False)
        self._waiting: dict[int, asyncio.Future[Completion]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._objectives: dict[str, int] = dict(settings.objectives)

    # objectives

    def priority_of(self, objective: str) -> int:
        """Priority of an InferenceObjective; absent or unknown → 0."""
        return self._objectives.get(objective, 0) if objective else 0

    def set_objective_priority(self, name: str, priority: int) -> None:
        """An InferenceObjective appeared or changed (Kubernetes mode feeds these)."""
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise errors.ConfigError(f"objective {name!r}: priority {priority!r} is not an integer")
        self._objectives[name] = priority

    def remove_objective(self, name: str) -> None:
        self._objectives.pop(name, None)

    def set_objectives(self, priorities: Mapping[str, int]) -> None:
        """Replace every objective at once (Kubernetes mode: the InferenceObjectives of the pool)."""
        for name, priority in priorities.items():
            self.set_objective_priority(name, priority)
        self._objectives = dict(priorities)

    # admission

    def shed(self, objective: str) -> int:
        """Upstream's legacy admission (no queueing): a sheddable request (priority < 0) is refused
        with SaturatedError (429) while the pool is saturated. Returns the request's priority."""
        priority = self.priority_of(objective)
        if priority < 0 and self._core.saturation() >= 1.0:
            raise errors.SaturatedError("the pool is saturated: sheddable request shed")
        return priority

    def admit(self, flow: str = DEFAULT_FLOW, priority: int = 0, size: int = 0, ttl: float | None = None,
              slo_ttft: float | None = None) -> _Admission:
        """`async with controller.admit(...) as ticket:` waits for its turn and releases on exit.
        `size` (bytes) counts against capacity; `ttl` and `slo_ttft` are seconds."""
        return _Admission(self, (flow, priority, size, ttl, slo_ttft))

    async def acquire(self, flow: str = DEFAULT_FLOW, priority: int = 0, size: int = 0, ttl: float | None = None,
                      slo_ttft: float | None = None, *, path: str | None = None, body: bytes | None = None,
                      model_rewrite: str | None = None, subset: Sequence[str] | None = None,
                      headers: Mapping[str, str] | None = None) -> Ticket:
        """Wait for dispatch; the caller must `release()` the ticket. With `path` (and a Router)
        the request is routed at dispatch and the ticket carries the Decision. Raises the
        rejection's SluicegateError: SaturatedError, TtlExpiredError, NoEndpointsError,
        ShuttingDownError, or BadRequestError when the body cannot be routed. Cancelling the
        waiting task removes the request from its queue."""
        loop = self._attach()
        # Nothing waiting and room in the pool: dispatched here at once, no hand-off.
        queued = self._core.enqueue(flow, priority, size, ttl, slo_ttft, path=path, body=body,
                                    model_rewrite=model_rewrite,
                                    subset=list(subset) if subset is not None else None,
                                    headers=dict(headers) if headers else None, dispatch_now=True)
        if type(queued) is Completion:
            c = queued
        else:
            fut: asyncio.Future[Completion] = loop.create_future()
            self._waiting[queued.id] = fut
            started = loop.time()
            try:
                c = await fut
            except asyncio.CancelledError:
                self._abandon(queued, fut)
                self._core.record_outcome(flow, priority, "EvictedContextCancelled", loop.time() - started)
                raise
        self._record(flow, priority, c)
        if c.status != 200:
            message = c.message
            if type(queued) is not Completion and c.reason == "rejected-no-endpoints" and queued.held:
                message = queued.expired() or message  # its scale-from-zero grace period ended
            raise _ERRORS.get(c.reason, errors.BadRequestError)(message)
        return Ticket(self, c.decision, c.waited_s)

    # observation

    def queue_durations(self) -> list:
        """Time in the controller per (flow, priority, outcome, model, target model): histograms
        kept in Rust, upstream's QueueOutcome names (what the metrics collector reads)."""
        return self._core.queue_durations()

    def queue_totals(self) -> list[tuple[int, str, int]]:
        """(priority, outcome, requests) that left the controller (kept when idle flows go)."""
        return self._core.queue_totals()

    def flow_metrics(self) -> tuple[list, list, Any]:
        """(queue gauges per flow and model, enqueue durations, dispatch-cycle durations), kept
        in Rust (what the metrics collector reads)."""
        return self._core.flow_metrics()

    def saturation(self) -> float:
        return self._core.saturation()

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for a metrics exporter. Every request submitted has exactly one
        outcome: submitted == dispatched + rejected + expired + cancelled + queued_requests
        (rejected = capacity at enqueue + evicted on shutdown; expired = TTL + no-endpoint TTL)."""
        s = self._core.stats()
        s["submitted"] = s["enqueued"] + s["rejected_capacity"]
        s["rejected"] = s["rejected_capacity"] + s["evicted"]
        s["expired"] = s["expired_ttl"] + s["expired_no_endpoints"]
        s["waiting_tasks"] = len(self._waiting)
        return s

    def notify(self) -> None:
        """Endpoints or metrics changed outside the controller: look again now."""
        self._core.notify()

    def set_scale_from_zero(self, grace_s: float | None, message: str = "") -> None:
        """While the pool is managed by an activator: a request with nothing to go to waits
        exactly `grace_s` (flow control's own TTLs do not cut it short), then fails with
        NoEndpointsError(`message`). None: not managed."""
        self._core.set_scale_from_zero(grace_s, message)

    def hold_counts(self) -> tuple[int, int, int]:
        """(held for the grace period now, held in total, failed at its end in total)."""
        return self._core.hold_counts()

    def hold_fd(self) -> int:
        """Readable when a request was held while none was (the activator's scale-up event)."""
        return self._core.hold_fd()

    def take_hold_signal(self) -> None:
        """Re-arm that event; then drain `hold_fd` and read `hold_counts`."""
        self._core.take_hold_signal()

    def close(self) -> None:
        """Evict everything queued (waiters get ShuttingDownError) and stop the dispatch thread.
        Call it from the loop the controller serves."""
        self._core.shutdown()
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            self._on_wake()
            loop.remove_reader(self._fd)

    # internals

    def _attach(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        running = asyncio.get_running_loop()
        if loop is running:
            return running
        if loop is not None:
            if self._waiting and not loop.is_closed():
                raise RuntimeError("FlowController is serving another event loop")
            if not loop.is_closed():
                loop.remove_reader(self._fd)
        running.add_reader(self._fd, self._on_wake)
        self._loop = running
        return running

    def _on_wake(self) -> None:
        # Drain the pipe before taking the batch: a batch delivered after the take writes a new byte.
        try:
            os.read(self._fd, 4096)
        except BlockingIOError:
            pass
        waiting = self._waiting
        for c in self._core.take_completions():
            fut = waiting.pop(c.id, None)
            if fut is None or fut.done():
                # The caller went away after dispatch had begun: hand the place straight back.
                if c.status == 200:
                    self._release(c.decision)
                continue
            fut.set_result(c)

    def _record(self, flow: str, priority: int, c: Completion) -> None:
        """The request's one queue-duration observation; a body the Router could not parse (400)
        never counts as having been in flow control (upstream parses before it)."""
        if c.status == 200:
            d = c.decision
            model = (d.model or "") if d is not None else ""
            target = (d.target_model or model) if d is not None else ""
            self._core.record_outcome(flow, priority, "Dispatched", c.waited_s, model, target)
        elif c.reason in _QUEUE_OUTCOME:
            self._core.record_outcome(flow, priority, _QUEUE_OUTCOME[c.reason], c.waited_s)

    def _abandon(self, queued: QueuedRequest, fut: asyncio.Future[Completion]) -> None:
        if queued.cancel():
            self._waiting.pop(queued.id, None)
        elif fut.done() and not fut.cancelled():
            c = fut.result()  # dispatched just before the cancellation landed
            if c.status == 200:
                self._release(c.decision)
        # else: the outcome is on its way; _on_wake finds the future done and releases.

    def _release(self, decision: Decision | None) -> None:
        if decision is not None and self._router is not None:
            self._router.release(decision.primary, decision.held_tokens)
        self._core.release()
