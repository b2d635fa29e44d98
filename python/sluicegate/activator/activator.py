"""Scale a pool's workload from zero when requests arrive and to zero after it idles.

Requests for a pool at zero stay queued in flow control; the first one sets replicas 0 → 1 and
all of them go as soon as an endpoint is ready, or fail with 503 rejected-no-endpoints at the
grace period. With scale-to-zero on, a pool with nothing queued or in flight for the
scale-down delay goes 1 → 0. Only those two edges are ours: replicas > 1 belong to an autoscaler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Protocol

from ..errors import NoEndpointsError
from ..flowcontrol import FlowController, Ticket

log = logging.getLogger(__name__)

TICK_S = 0.1  # how often idleness and the pool's annotations are looked at
RETRY_S = 1.0  # after a failed scale-up, before a waiting request may try again


class Actuator(Protocol):
    """Changes the pool's size on the activator's two edges; each returns whether it changed it
    and raises when it could not do what it meant to."""

    async def scale_up(self) -> bool: ...  # 0 → 1
    async def scale_down(self) -> bool: ...  # 1 → 0


@dataclass(frozen=True)
class Managed:
    """A pool the activator manages: its timings and what scales it."""

    grace_s: float
    scale_down_delay_s: float
    actuator: Actuator
    target: str  # for logs


class Source(Protocol):
    """Where the pool's activator settings come from (InferencePool annotations, static config)."""

    async def current(self) -> Managed | None: ...


@dataclass
class ActivatorStats:
    waiting: int = 0  # requests waiting for the pool's first ready endpoint
    scale_ups: int = 0
    scale_downs: int = 0
    expired: int = 0  # requests failed at the grace period
    managed: bool = False


class Activator:
    def __init__(self, pool: str, flow: FlowController, source: Source, *, scale_to_zero: bool = False,
                 is_leader: Callable[[], bool] = lambda: True, servers_busy: Callable[[], bool] = lambda: False,
                 tick_s: float = TICK_S) -> None:
        self.pool = pool
        self.flow = ActivatedFlow(flow, self)
        self._inner = flow
        self._source = source
        self._scale_to_zero = scale_to_zero
        self._is_leader = is_leader
        self._servers_busy = servers_busy
        self._tick_s = tick_s
        self.managed: Managed | None = None
        self.stats = ActivatorStats()
        self.ready_endpoints: int | None = None  # None until discovery first reports
        self._ready: asyncio.Future[None] | None = None  # resolved when an endpoint becomes ready
        self._scale_up: asyncio.Task[None] | None = None
        self._episode_until = 0.0  # a scale-up was asked for; no new one before this
        self._failed = False  # the last scale-up raised: waiting requests may try again
        self._idle_since = time.monotonic()
        self._submitted = -1
        self._ttl_warned = False
        self._task: asyncio.Task[None] | None = None

    # lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"activator-{self.pool}")

    async def stop(self) -> None:
        for t in (self._task, self._scale_up):
            if t is not None and not t.done():
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)

    # what the EPP tells us

    def endpoints_changed(self, ready: int) -> None:
        self.ready_endpoints = ready
        if ready > 0:
            self._episode_until = 0.0
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            self._ready = None

    # scale from zero

    def at_zero(self) -> Managed | None:
        """The pool's settings when a request must wait for capacity (managed and no ready endpoint)."""
        return self.managed if self.managed is not None and self.ready_endpoints == 0 else None

    async def hold(self, acquiring: asyncio.Future[Ticket], managed: Managed) -> Ticket:
        """Wait in flow control for the pool's first ready endpoint, asking for one; 503 at the grace period."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + managed.grace_s
        self.stats.waiting += 1
        waiting = True
        try:
            self._ask_scale_up(managed)
            while not acquiring.done() and self.ready_endpoints == 0:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.stats.expired += 1
                    _abandon(acquiring)
                    raise NoEndpointsError(
                        f"InferencePool {self.pool}: no endpoint became ready within the scale-from-zero grace "
                        f"period ({managed.grace_s:g} s) after scaling {managed.target} up")
                await asyncio.wait((acquiring, self._ready_future(loop)), timeout=remaining)
            self.stats.waiting -= 1
            waiting = False
            return await acquiring
        except asyncio.CancelledError:
            _abandon(acquiring)
            raise
        finally:
            if waiting:
                self.stats.waiting -= 1

    def _ready_future(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        if self._ready is None:
            self._ready = loop.create_future()
        return self._ready

    def _ask_scale_up(self, managed: Managed) -> None:
        """Once per scale-from-zero episode, however many requests are waiting."""
        now = time.monotonic()
        if now < self._episode_until or (self._scale_up is not None and not self._scale_up.done()):
            return
        self._episode_until = now + managed.grace_s
        self._failed = False
        self._scale_up = asyncio.get_running_loop().create_task(self._do_scale_up(managed))

    async def _do_scale_up(self, managed: Managed) -> None:
        try:
            if await managed.actuator.scale_up():
                self.stats.scale_ups += 1
                log.info("activator: InferencePool %s at zero with requests waiting: scaled %s to 1",
                         self.pool, managed.target)
        except Exception as e:  # noqa: BLE001 — the requests still fail cleanly at the grace period
            log.error("activator: InferencePool %s: scaling %s up failed: %s", self.pool, managed.target, e)
            self._episode_until = time.monotonic() + RETRY_S  # a request after this tries again
            self._failed = True

    # scale to zero, and picking up annotation changes

    async def _run(self) -> None:
        while True:
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("activator: InferencePool %s: check failed", self.pool)
            await asyncio.sleep(self._tick_s)

    async def _tick(self) -> None:
        self.managed = await self._source.current()
        self.stats.managed = self.managed is not None
        if self.managed is None:
            return
        self._warn_short_ttl(self.managed)
        s = self._inner.stats()
        # Ask again for requests held after a failed scale-up, and for requests queued in flow
        # control before the settings were known (not held by us). Not merely because requests
        # are still held: they belong to the current episode and end with it.
        unheld = s["queued_requests"] > self.stats.waiting
        if self.ready_endpoints == 0 and (unheld or (self._failed and self.stats.waiting)):
            self._ask_scale_up(self.managed)
        now = time.monotonic()
        # Busy: anything of ours queued, in flight or new since the last look, or the model servers
        # report work (requests through another EPP replica or straight to the pods).
        if (s["queued_requests"] or s["in_flight"] or self.stats.waiting or s["submitted"] != self._submitted
                or self._servers_busy()):
            self._submitted = s["submitted"]
            self._idle_since = now
            return
        if self._scale_to_zero and now - self._idle_since >= self.managed.scale_down_delay_s and self._is_leader():
            self._idle_since = now  # one attempt per delay, whatever it finds
            try:
                changed = await self.managed.actuator.scale_down()
            except Exception as e:  # noqa: BLE001 — tried again after the next delay
                log.error("activator: InferencePool %s: scaling %s down failed: %s", self.pool, self.managed.target, e)
                return
            if changed:
                self.stats.scale_downs += 1
                log.info("activator: InferencePool %s idle for %g s: scaled %s to 0", self.pool,
                         self.managed.scale_down_delay_s, self.managed.target)

    def _warn_short_ttl(self, managed: Managed) -> None:
        fc = self._inner.settings
        ttls = [t for t in (fc.no_endpoint_request_ttl_ms, fc.default_request_ttl_ms) if t]
        if not self._ttl_warned and ttls and min(ttls) / 1000 < managed.grace_s:
            self._ttl_warned = True
            log.warning("activator: InferencePool %s: flow control gives up on requests after %g s, before the "
                        "scale-from-zero grace period (%g s); raise flowControl.defaultRequestTTL / "
                        "noEndpointRequestTTL", self.pool, min(ttls) / 1000, managed.grace_s)


def servers_busy(router: Any) -> Callable[[], bool]:
    """True while a freshly scraped endpoint of the pool reports running or waiting requests."""
    if router is None:
        return lambda: False
    return lambda: any((e.running or e.waiting) and not e.stale for e in router.status())


class ActivatedFlow:
    """The flow controller the request path sees: requests for a pool at zero wait for capacity
    through the activator; everything else is the flow controller's own."""

    def __init__(self, flow: FlowController, activator: Activator) -> None:
        self._flow = flow
        self._activator = activator

    def __getattr__(self, name: str) -> Any:
        return getattr(self._flow, name)

    def acquire(self, *args: Any, **kwargs: Any) -> Awaitable[Ticket]:
        """FlowController.acquire; held by the activator while the pool is at zero. A plain
        function returning the awaitable, so the usual case costs no extra coroutine."""
        act = self._activator
        managed = act.at_zero()
        if managed is None:
            return self._flow.acquire(*args, **kwargs)
        return act.hold(asyncio.ensure_future(self._flow.acquire(*args, **kwargs)), managed)

    @contextlib.asynccontextmanager
    async def admit(self, *args: Any, **kwargs: Any) -> AsyncIterator[Ticket]:
        """`async with flow.admit(...) as ticket:` as FlowController's, through `acquire` above."""
        ticket = await self.acquire(*args, **kwargs)
        try:
            yield ticket
        finally:
            ticket.release()


def _abandon(acquiring: asyncio.Future[Ticket]) -> None:
    """Leave a flow-control wait; a ticket that arrives anyway is handed straight back."""
    def release(f: asyncio.Future[Ticket]) -> None:
        if not f.cancelled() and f.exception() is None:
            f.result().release()

    if acquiring.done():
        release(acquiring)
    else:
        acquiring.cancel()
        acquiring.add_done_callback(release)
