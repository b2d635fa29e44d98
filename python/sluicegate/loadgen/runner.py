"""The open-loop driver: Poisson arrivals at a fixed rate, each sent at its own time whatever
the responses are doing, bounded by the run's duration, in-flight cap and client timeouts."""

from __future__ import annotations

import asyncio
import random

import aiohttp

from sluicegate.loadgen.client import RequestResult, send
from sluicegate.loadgen.report import LoadReport, build_report
from sluicegate.loadgen.workloads import WORKLOADS
from sluicegate.sim.config import DEFAULT_MODEL


async def run_load(url: str, workload: str, rate: float, duration_s: float, seed: int = 0,
                   headers: dict[str, str] | None = None, max_in_flight: int = 512, *,
                   model: str = DEFAULT_MODEL, request_timeout_s: float = 60.0) -> LoadReport:
    """Send `workload` to `url` (a base such as "http://127.0.0.1:8080"; the workload adds the
    /v1/... path) at `rate` requests/s for `duration_s`, then wait for the requests in flight
    (each bounded by `request_timeout_s`) and report."""
    _validate(url, workload, rate, duration_s, max_in_flight, request_timeout_s)
    bodies = WORKLOADS[workload](seed, model)
    arrivals = random.Random(f"arrivals|{seed}")
    results: list[RequestResult] = []
    in_flight: set[asyncio.Task[RequestResult]] = set()
    dropped = 0

    def finished(task: asyncio.Task[RequestResult]) -> None:
        in_flight.discard(task)
        if task.cancelled():
            results.append(RequestResult(0, request_timeout_s, error="cancelled"))
        else:
            results.append(task.result())

    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=request_timeout_s)
    connector = aiohttp.TCPConnector(limit=max_in_flight)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = loop.time()
        offset = arrivals.expovariate(rate)
        while offset < duration_s:
            delay = start + offset - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            request = next(bodies)
            if len(in_flight) >= max_in_flight:
                dropped += 1
            else:
                task = asyncio.create_task(send(session, url.rstrip("/"), request, headers))
                in_flight.add(task)
                task.add_done_callback(finished)
            offset += arrivals.expovariate(rate)
        await _drain(in_flight, request_timeout_s)
        elapsed = loop.time() - start
    return build_report(workload, rate, elapsed, results, dropped)


async def _drain(in_flight: set[asyncio.Task[RequestResult]], timeout_s: float) -> None:
    """Wait for open requests; their own timeouts end them, the grace here is a backstop."""
    if not in_flight:
        return
    _, pending = await asyncio.wait(set(in_flight), timeout=timeout_s + 5.0)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)


def _validate(url: str, workload: str, rate: float, duration_s: float, max_in_flight: int,
              request_timeout_s: float) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url={url!r}: must start with http:// or https://")
    if workload not in WORKLOADS:
        raise ValueError(f"workload={workload!r}: must be one of {sorted(WORKLOADS)}")
    for name, value in (("rate", rate), ("duration_s", duration_s),
                        ("request_timeout_s", request_timeout_s)):
        if not value > 0:
            raise ValueError(f"{name}={value!r}: must be > 0")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight={max_in_flight!r}: must be >= 1")
