"""What the activator adds to every request while the pool has endpoints (the normal case): the
flow controller's admit round trip with an activator managing it against the bare `FlowController`,
same session, same uvloop loop, the two alternating batch by batch (which goes first alternates
too) so load on a shared machine hits both alike. The benchmark row times one pair; `extra_info`
carries µs per admitted request for each side and their ratio.

    .venv/bin/pytest benches/test_activator_overhead.py --benchmark-only -s
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
import uvloop

from sluicegate.activator.static import StaticActivatorSettings, static_activator
from sluicegate.flowcontrol import FlowController

BATCH = 1000
ROUNDS = 40


@pytest.fixture(scope="module")
def loop():
    lp = uvloop.new_event_loop()
    yield lp
    lp.close()


async def admit_batch(flow) -> float:
    async def one(i: int) -> None:
        ticket = await flow.acquire(priority=i % 3)
        ticket.release()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(BATCH)))
    return time.perf_counter() - t0


def test_admit_with_and_without_activator(benchmark, loop):
    benchmark.group = "admit round trip, pool with endpoints, 1000 concurrent"

    async def build():
        bare = FlowController(max_concurrency=1_000_000)
        act = static_activator("bench", FlowController(max_concurrency=1_000_000), None,
                               StaticActivatorSettings(("true",), None))
        act.endpoints_changed(1)
        act.start()
        await asyncio.sleep(0.01)  # one tick: the settings are read, the pool is managed
        assert act.managed is not None
        return bare, act

    bare, act = loop.run_until_complete(build())
    times: dict[str, list[float]] = {"bare": [], "activated": []}
    turn = [0]

    def pair() -> None:
        turn[0] += 1
        order = [("bare", bare), ("activated", act.flow)]
        for name, flow in order if turn[0] % 2 else reversed(order):
            times[name].append(loop.run_until_complete(admit_batch(flow)))

    try:
        pair()  # warm-up
        times = {"bare": [], "activated": []}
        benchmark.pedantic(pair, rounds=ROUNDS, iterations=1)
    finally:
        loop.run_until_complete(act.stop())
        act.flow.close()
        bare.close()
    us = {k: (min(v) / BATCH * 1e6, statistics.median(v) / BATCH * 1e6) for k, v in times.items()}
    for k, (lo, med) in us.items():
        benchmark.extra_info[f"us_per_admit_min_{k}"] = round(lo, 2)
        benchmark.extra_info[f"us_per_admit_median_{k}"] = round(med, 2)
    ratio = us["activated"][1] / us["bare"][1]
    benchmark.extra_info["median_ratio_activated_to_bare"] = round(ratio, 3)
    print(f"\nadmit µs/request min/median: bare {us['bare'][0]:.2f}/{us['bare'][1]:.2f}, "
          f"activated {us['activated'][0]:.2f}/{us['activated'][1]:.2f}; median ratio {ratio:.3f}")
