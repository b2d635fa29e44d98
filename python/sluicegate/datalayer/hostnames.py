"""Endpoints named by hostname become one endpoint per address DNS gives for them.

Discovery (file or Kubernetes) hands over its endpoints; those whose address is an IP pass
through, each hostname is followed by its own task: resolved at once, then again every refresh
interval (sooner when its TTL is shorter) and, after a failure, with backoff. Every A/AAAA
answer is an endpoint `ip:port` labelled with the hostname. A hostname that stops resolving
keeps its last addresses until their TTL runs out, then leaves the pool; one that never
resolves is logged once per failure streak, counted, and skipped. Nothing here is fatal and
nothing runs on the request path: the Router only ever sees the expanded list.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

from .discovery import Endpoint
from .dns import Answer, DnsFailure, Resolver

log = logging.getLogger(__name__)

HOSTNAME_LABEL = "sluicegate.io/hostname"
DEFAULT_REFRESH_S = 30.0
MIN_REFRESH_S = 0.2  # a TTL of 0 must not become a busy loop
BACKOFF_START_S = 0.2


@dataclass
class HostnameState:
    """What is known about one hostname; read by the metrics collector at scrape time."""

    addresses: tuple[str, ...] = ()
    expires_at: float = 0.0  # time.monotonic() after which the addresses are dropped
    failing: bool = False
    failures: int = 0
    resolutions: int = 0
    last_error: str = ""


class HostnameResolution:
    """Sits between discovery and the Router: `update` takes discovery's endpoints,
    `on_change` gets them with every hostname replaced by its current addresses."""

    def __init__(self, on_change: Callable[[list[Endpoint]], None], resolver: Resolver | None = None,
                 refresh_s: float = DEFAULT_REFRESH_S) -> None:
        if refresh_s <= 0:
            raise ValueError(f"refresh_s: {refresh_s!r} must be positive")
        self._on_change = on_change
        self._resolver = resolver
        self._refresh_s = refresh_s
        self._source: list[Endpoint] = []
        self._published: list[Endpoint] | None = None
        self.hostnames: dict[str, HostnameState] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._started = False

    def update(self, endpoints: list[Endpoint]) -> None:
        """Discovery's current endpoints (called on the event loop, or before `start`)."""
        self._source = list(endpoints)
        wanted = {e.address for e in endpoints if e.is_hostname}
        for gone in set(self.hostnames) - wanted:
            del self.hostnames[gone]
            task = self._tasks.pop(gone, None)
            if task is not None:
                task.cancel()
        for name in wanted - set(self.hostnames):
            self.hostnames[name] = HostnameState()
            if self._started:
                self._follow(name)
        self._publish()

    def start(self) -> None:
        self._started = True
        for name in self.hostnames:
            if name not in self._tasks:
                self._follow(name)

    async def stop(self) -> None:
        self._started = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def expanded(self) -> list[Endpoint]:
        """IP endpoints as given; each hostname endpoint once per current address."""
        out: list[Endpoint] = []
        seen: set[str] = set()  # a hostname may resolve to an address also listed by IP: first wins
        for e in self._source:
            if not e.is_hostname:
                candidates = [e]
            else:
                state = self.hostnames.get(e.address)
                addresses = state.addresses if state is not None else ()
                candidates = [replace(e, name=f"{e.name}-{ip}", address=ip,
                                      labels={**e.labels, HOSTNAME_LABEL: e.address}) for ip in addresses]
            for c in candidates:
                if c.hostport not in seen:
                    seen.add(c.hostport)
                    out.append(c)
        return out

    def _publish(self) -> None:
        endpoints = self.expanded()
        if endpoints != self._published:
            self._published = endpoints
            self._on_change(endpoints)

    def _follow(self, name: str) -> None:
        if self._resolver is None:
            try:
                self._resolver = Resolver()
            except (DnsFailure, OSError) as e:  # no usable /etc/resolv.conf: hostnames stay unresolved
                self._failed(name, f"no system resolver: {e}", self._refresh_s)
                return
        self._tasks[name] = asyncio.get_running_loop().create_task(self._loop(name), name=f"dns:{name}")

    async def _loop(self, name: str) -> None:
        assert self._resolver is not None
        backoff = BACKOFF_START_S
        while name in self.hostnames:
            try:
                answer = await self._resolver.resolve(name)
            except DnsFailure as e:
                delay = self._failed(name, str(e), backoff)
                backoff = min(backoff * 2, self._refresh_s)
            else:
                delay = self._resolved(name, answer)
                backoff = BACKOFF_START_S
            await asyncio.sleep(delay)

    def _resolved(self, name: str, answer: Answer) -> float:
        state = self.hostnames.get(name)
        if state is None:
            return 0.0
        if state.failing:
            log.info("hostname %s resolves again: %s", name, ", ".join(answer.addresses))
        state.failing, state.last_error = False, ""
        state.resolutions += 1
        state.expires_at = time.monotonic() + answer.ttl_s
        if answer.addresses != state.addresses:
            state.addresses = answer.addresses
            self._publish()
        return max(MIN_REFRESH_S, min(self._refresh_s, answer.ttl_s))

    def _failed(self, name: str, error: str, backoff: float) -> float:
        """Keep the last addresses until their TTL ends; the next try after `backoff` (or at expiry)."""
        state = self.hostnames.get(name)
        if state is None:
            return 0.0
        state.failures += 1
        state.last_error = error
        if not state.failing:
            state.failing = True
            log.warning("hostname %s does not resolve (%s); %s", name, error,
                        "keeping its addresses until their TTL ends" if state.addresses else "skipped")
        now = time.monotonic()
        if state.addresses and now >= state.expires_at:
            state.addresses = ()
            log.warning("hostname %s: TTL over, its endpoints leave the pool", name)
            self._publish()
        delay = min(backoff, self._refresh_s)
        if state.addresses:
            delay = min(delay, max(0.0, state.expires_at - now))
        return max(delay, 0.01)
