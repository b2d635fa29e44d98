"""The Python flow-control façade's admit round trip (enqueue → Rust dispatch thread → batched
wake of the loop → release) against the same contract built on asyncio.PriorityQueue with a
dispatcher task, in the same session on the same uvloop loop. pytest-benchmark prints each
group's rows with their ratio to the fastest; `extra_info` carries µs per admitted request.

    .venv/bin/pytest benches/test_flowcontrol_admit.py --benchmark-only
"""

from __future__ import annotations

import asyncio
import itertools
import resource

import pytest
import uvloop

from sluicegate._core import FlowController as CoreController
from sluicegate.flowcontrol import Band, FlowControlSettings, FlowController

BATCH = 1000  # concurrent admits per round
SEQUENTIAL = 200  # one-at-a-time admits per round
ROUNDS = 30


class PriorityQueueAdmitter:
    """Baseline: admit by priority through an asyncio.PriorityQueue and a dispatcher task that
    resolves each waiter's future while a place is free — the façade's contract in pure asyncio."""

    def __init__(self, max_concurrency: int) -> None:
        self._queue: asyncio.PriorityQueue = asyncio.PriorityQueue()
        self._seq = itertools.count()
        self._free = max_concurrency
        self._room = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def _dispatch(self) -> None:
        while True:
            _, _, fut = await self._queue.get()
            while self._free == 0:
                self._room.clear()
                await self._room.wait()
            if not fut.cancelled():
                self._free -= 1
                fut.set_result(None)

    async def acquire(self, priority: int = 0) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((-priority, next(self._seq), fut))
        await fut

    def release(self) -> None:
        self._free += 1
        self._room.set()

    def close(self) -> None:
        self._task.cancel()


class FacadeAdmitter:
    def __init__(self, max_concurrency: int) -> None:
        self._fc = FlowController(max_concurrency=max_concurrency)

    async def acquire(self, priority: int = 0):
        return await self._fc.acquire(priority=priority)

    def release(self, ticket) -> None:
        ticket.release()

    def close(self) -> None:
        self._fc.close()


async def one(admitter, priority: int) -> None:
    ticket = await admitter.acquire(priority)
    await asyncio.sleep(0)  # hold the place across a loop turn, as a real request would
    if isinstance(admitter, FacadeAdmitter):
        admitter.release(ticket)
    else:
        admitter.release()


async def concurrent_round(admitter) -> None:
    await asyncio.gather(*(one(admitter, i % 3) for i in range(BATCH)))


async def sequential_round(admitter) -> None:
    for i in range(SEQUENTIAL):
        await one(admitter, i % 3)


@pytest.fixture(scope="module")
def loop():
    lp = uvloop.new_event_loop()
    yield lp
    lp.close()


def make(kind: str, loop, limit: int) -> FacadeAdmitter | PriorityQueueAdmitter:
    async def build():
        return (FacadeAdmitter if kind == "facade" else PriorityQueueAdmitter)(max_concurrency=limit)

    return loop.run_until_complete(build())


@pytest.mark.parametrize("kind", ["facade", "priorityqueue-baseline"])
@pytest.mark.parametrize("shape, per_round, body, limit", [
    # Unsaturated: the façade dispatches in the caller's thread (nothing waits, room left).
    ("concurrent-1000", BATCH, concurrent_round, 1_000_000),
    ("sequential", SEQUENTIAL, sequential_round, 1_000_000),
    # 10 places for 1000 at once: nearly every admit queues and is woken by the dispatcher.
    ("concurrent-1000-limit-10", BATCH, concurrent_round, 10),
])
def test_admit_round_trip(benchmark, loop, kind, shape, per_round, body, limit):
    benchmark.group = f"flowcontrol admit, {shape}"
    admitter = make(kind, loop, limit)
    try:
        loop.run_until_complete(body(admitter))  # warm-up: thread started, loop reader attached
        benchmark.pedantic(lambda: loop.run_until_complete(body(admitter)), rounds=ROUNDS, iterations=1)
    finally:
        admitter.close()
    benchmark.extra_info["us_per_admit_mean"] = round(benchmark.stats.stats.mean / per_round * 1e6, 2)
    benchmark.extra_info["us_per_admit_min"] = round(benchmark.stats.stats.min / per_round * 1e6, 2)


def test_queued_requests_memory(benchmark, loop):
    """RSS growth of 100k requests waiting behind one busy place: in the Rust queues alone
    (the compiled controller, no waiters), then through the façade with a waiting task each."""
    n = 100_000
    wide = FlowControlSettings(default_band=Band(max_requests=n + 1, max_bytes=10**12),
                               detector={"type": "concurrency-detector", "maxConcurrency": 1})

    def rss_kib() -> int:  # current resident set, so the two measurements do not share a peak
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() // 1024

    def core_only() -> int:
        core = CoreController(wide.to_json())
        core.enqueue("holder")
        before = rss_kib()
        queued = [core.enqueue(f"tenant-{i % 100}", 0, 1000) for i in range(n)]
        grown = rss_kib() - before
        core.shutdown()
        del queued
        return grown

    async def with_waiters() -> int:
        fc = FlowController(wide)
        holder = await fc.acquire()
        before = rss_kib()
        tasks = [asyncio.ensure_future(fc.acquire(flow=f"tenant-{i % 100}", size=1000)) for i in range(n)]
        while fc.stats()["queued_requests"] < n:
            await asyncio.sleep(0.01)
        grown = rss_kib() - before
        fc.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        holder.release()
        return grown

    core_kib = benchmark.pedantic(core_only, rounds=1, iterations=1)
    waiters_kib = loop.run_until_complete(with_waiters())
    benchmark.extra_info["rss_growth_mib_100k_queued_core"] = round(core_kib / 1024, 1)
    benchmark.extra_info["rss_growth_mib_100k_queued_with_asyncio_waiters"] = round(waiters_kib / 1024, 1)
    print(f"\n100k queued: +{core_kib / 1024:.1f} MiB in the Rust controller, "
          f"+{waiters_kib / 1024:.1f} MiB through the façade with a waiting asyncio task each")
