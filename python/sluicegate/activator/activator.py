"""Scale a pool's workload from zero when requests arrive and to zero after it idles.

While the activator manages a pool, a request with nothing to go to waits in flow control for
exactly the scale-from-zero grace period, enforced per request in Rust (so flow control's own
TTLs never cut it short), and goes as soon as an endpoint is ready or fails with 503
rejected-no-endpoints at its end. The activator decides on what Rust tells it, never per
request: an event when a request is held while none was (a byte on `hold_fd`, read by the event
loop) and counters it reads every tick; one scale-up per episode, however many wait. With scale-to-zero on, a pool with nothing queued or in flight for the
scale-down delay goes 1 → 0. Only those two edges are ours: replicas > 1 belong to an autoscaler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

TICK_S = 0.1  # how often the counters, idleness and the pool's annotations are looked at
RETRY_S = 1.0  # after a failed scale-up, before waiting requests ask again


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


class Flow(Protocol):
    """The flow control the requests wait in (the EPP's Rust gate, or the asyncio façade)."""

    def stats(self) -> dict[str, Any]: ...
    def set_scale_from_zero(self, grace_s: float | None, message: str = "") -> None: ...
    def hold_counts(self) -> tuple[int, int, int]: ...
    def hold_fd(self) -> int: ...
    def take_hold_signal(self) -> None: ...


class ActivatorStats:
    """What the activator did, and (read live from flow control) what waits for it."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self.scale_ups = 0
        self.scale_downs = 0
        self.managed = False

    @property
    def waiting(self) -> int:
        """Requests waiting for the pool's first ready endpoint (held for the grace period)."""
        return self._flow.hold_counts()[0]

    @property
    def expired(self) -> int:
        """Requests failed at the end of the grace period."""
        return self._flow.hold_counts()[2]


class Activator:
    def __init__(self, pool: str, flow: Flow, source: Source, *, scale_to_zero: bool = False,
                 is_leader: Callable[[], bool] = lambda: True, servers_busy: Callable[[], bool] = lambda: False,
                 tick_s: float = TICK_S) -> None:
        self.pool = pool
        self.flow = flow
        self._source = source
        self._scale_to_zero = scale_to_zero
        self._is_leader = is_leader
        self._servers_busy = servers_busy
        self._tick_s = tick_s
        self.managed: Managed | None = None
        self.stats = ActivatorStats(flow)
        self.ready_endpoints: int | None = None  # None until discovery first reports
        self._scale_up: asyncio.Task[None] | None = None
        self._episode_until = 0.0  # a scale-up was asked for; no new one before this
        # Requests held up to the end of the last episode (Rust's running count): they were asked
        # for, and their own grace period answers them; only a request held after it asks again.
        self._covered = 0
        self._episode_end: asyncio.TimerHandle | None = None
        self._retry = False  # the last scale-up failed: ask again after RETRY_S whatever waits
        self._idle_since = time.monotonic()
        self._submitted = -1
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"activator-{self.pool}")
        fd = self.flow.hold_fd()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_hold)
        self._loop = loop

    async def stop(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.flow.hold_fd())
        self._loop = None
        if self._episode_end is not None:
            self._episode_end.cancel()
        for t in (self._task, self._scale_up):
            if t is not None and not t.done():
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        self.flow.set_scale_from_zero(None)

    def _on_hold(self) -> None:
        """Rust held a request while none was: ask for a scale-up now, not at the next tick."""
        self.flow.take_hold_signal()  # re-arm first: a hold after this writes a new byte
        try:
            os.read(self.flow.hold_fd(), 64)
        except BlockingIOError:
            pass
        if self.managed is not None and self.flow.hold_counts()[0]:
            self._ask_scale_up(self.managed)

    # what the EPP tells us

    def endpoints_changed(self, ready: int) -> None:
        self.ready_endpoints = ready
        if ready > 0:
            self._episode_until = 0.0
            if self._episode_end is not None:
                self._episode_end.cancel()
                self._episode_end = None

    # scale from zero

    def _manage(self, managed: Managed | None) -> None:
        """New settings: the grace period requests are held for, in Rust."""
        if managed == self.managed:
            return
        self.managed = managed
        self.stats.managed = managed is not None
        if managed is None:
            self.flow.set_scale_from_zero(None)
            return
        self.flow.set_scale_from_zero(managed.grace_s, (
            f"InferencePool {self.pool}: no endpoint became ready within the scale-from-zero grace "
            f"period ({managed.grace_s:g} s) after scaling {managed.target} up"))

    def _ask_scale_up(self, managed: Managed) -> None:
        """Once per scale-from-zero episode, however many requests are waiting."""
        now = time.monotonic()
        if now < self._episode_until or (self._scale_up is not None and not self._scale_up.done()):
            return
        held = self.flow.hold_counts()[1]
        if not self._retry and self._covered and held <= self._covered:
            return  # all still waiting arrived during the last episode: their grace period ends them
        self._retry = False
        self._episode_until = now + managed.grace_s
        loop = asyncio.get_running_loop()
        if self._episode_end is not None:
            self._episode_end.cancel()
        self._episode_end = loop.call_later(managed.grace_s, self._end_episode)
        self._scale_up = loop.create_task(self._do_scale_up(managed))

    def _end_episode(self) -> None:
        self._episode_end = None
        self._covered = self.flow.hold_counts()[1]

    async def _do_scale_up(self, managed: Managed) -> None:
        try:
            if await managed.actuator.scale_up():
                self.stats.scale_ups += 1
                log.info("activator: InferencePool %s at zero with requests waiting: scaled %s to 1",
                         self.pool, managed.target)
        except Exception as e:  # noqa: BLE001 — the requests still fail cleanly at the grace period
            log.error("activator: InferencePool %s: scaling %s up failed: %s", self.pool, managed.target, e)
            self._episode_until = time.monotonic() + RETRY_S  # requests still waiting then ask again
            self._retry = True

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
        self._manage(await self._source.current())
        if self.managed is None:
            return
        s = self.flow.stats()
        # Requests wait while the pool is at zero (held, or queued before the settings were known):
        # one scale-up per episode; again after a failed one, or for a request held after an
        # episode ended unserved (those held during it are answered by their grace period).
        if self.ready_endpoints == 0 and s["queued_requests"]:
            self._ask_scale_up(self.managed)
        now = time.monotonic()
        # Busy: anything of ours queued, in flight or new since the last look, or the model servers
        # report work (requests through another EPP replica or straight to the pods).
        if (s["queued_requests"] or s["in_flight"] or s["submitted"] != self._submitted
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


def servers_busy(router: Any) -> Callable[[], bool]:
    """True while a freshly scraped endpoint of the pool reports running or waiting requests."""
    if router is None:
        return lambda: False
    return lambda: any((e.running or e.waiting) and not e.stale for e in router.status())
