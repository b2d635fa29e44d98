"""What the activator adds to every request while the pool has endpoints (the normal case): the
flow controller's admit round trip through `ActivatedFlow` against the bare `FlowController`,
same session, same uvloop loop, alternating. `extra_info` carries µs per admitted request.

    .venv/bin/pytest benches/test_activator_overhead.py --benchmark-only
"""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from sluicegate.activator.static import StaticActivatorSettings, static_activator
from sluicegate.flowcontrol import FlowController

BATCH = 1000
ROUNDS = 30


@pytest.fixture(scope="module")
def loop():
    lp = uvloop.new_event_loop()
    yield lp
    lp.close()


async def admit_batch(flow) -> None:
    async def one(i: int) -> None:
        ticket = await flow.acquire(priority=i % 3)
        ticket.release()

    await asyncio.gather(*(one(i) for i in range(BATCH)))


@pytest.mark.parametrize("kind", ["bare-baseline", "activated"])
def test_admit_with_and_without_activator(benchmark, loop, kind):
    benchmark.group = "admit round trip, pool with endpoints, 1000 concurrent"

    async def build():
        fc = FlowController(max_concurrency=1_000_000)
        if kind == "bare-baseline":
            return fc, None
        act = static_activator("bench", fc, None, StaticActivatorSettings(("true",), None))
        act.endpoints_changed(1)
        act.start()
        await asyncio.sleep(0.01)  # one tick: the settings are read, the pool is managed
        assert act.managed is not None
        return act.flow, act

    flow, act = loop.run_until_complete(build())
    try:
        loop.run_until_complete(admit_batch(flow))  # warm-up
        benchmark.pedantic(lambda: loop.run_until_complete(admit_batch(flow)), rounds=ROUNDS, iterations=1)
    finally:
        if act is not None:
            loop.run_until_complete(act.stop())
        flow.close()
    benchmark.extra_info["us_per_admit_mean"] = round(benchmark.stats.stats.mean / BATCH * 1e6, 2)
    benchmark.extra_info["us_per_admit_min"] = round(benchmark.stats.stats.min / BATCH * 1e6, 2)
