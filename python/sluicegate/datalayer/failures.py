"""Why scrapes fail, in the log: the counters on /metrics say that an endpoint's data sources
fail, this says why (a refused certificate, an HTTP status, a timeout, an answer the extractor
could not read). One warning line when a source starts failing at an endpoint or fails for a
new reason, one info line when it recovers; nothing while the reason stays the same."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Iterable

from ..scheduling import EndpointStatus

log = logging.getLogger(__name__)

INTERVAL_S = 2.0

# (endpoint address, source type) -> the reason last logged
_Key = tuple[str, str]


def failures(endpoints: Iterable[EndpointStatus]) -> dict[_Key, str | None]:
    """Each endpoint's sources and why they last failed (None: the last poll succeeded)."""
    out: dict[_Key, str | None] = {}
    for e in endpoints:
        if e.scrape_errors:
            out[e.address, "metrics-data-source"] = e.scrape_error
        for source, _, _, _, why in e.source_errors:
            out[e.address, source] = why
    return out


def transitions(before: dict[_Key, str | None], now: dict[_Key, str | None]) -> list[tuple[int, str]]:
    """(log level, line) for each source that started failing, changed its reason or recovered."""
    lines = []
    for (address, source), why in sorted(now.items()):
        was = before.get((address, source))
        if why is not None and why != was:
            lines.append((logging.WARNING, f"endpoint {address}: {source} failing: {why}"))
        elif why is None and was is not None:
            lines.append((logging.INFO, f"endpoint {address}: {source} recovered"))
    return lines


class FailureLog:
    """Reads the Router's endpoint status every INTERVAL_S and logs the transitions."""

    def __init__(self, status: Callable[[], list[EndpointStatus]]) -> None:
        self._status = status
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="datalayer-failures")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        last: dict[_Key, str | None] = {}
        while True:
            await asyncio.sleep(INTERVAL_S)
            now = failures(self._status())
            for level, line in transitions(last, now):
                log.log(level, "%s", line)
            last = now  # endpoints that left the pool leave the map with it
