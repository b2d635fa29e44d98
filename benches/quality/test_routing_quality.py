"""Routing quality on 8 simulated vLLM servers: each workload at ~70% of the fleet's measured
capacity, every policy on a fresh fleet with the same seeded arrivals and requests. The numbers
(and the issue's targets, met or not) are reported, not asserted; the run fails only if requests
fail or a policy's result is missing."""

from __future__ import annotations

import pytest
import uvloop

from benches.quality.driver import WORKLOADS, capacity, run_policy
from benches.quality.fleet import FleetShape
from benches.quality.policies import policies

LOAD = 0.7
SEED = 0


async def _compare(workload: str, shape: FleetShape, calibrate_s: float, run_s: float) -> list[dict]:
    rate = LOAD * await capacity(workload, shape, calibrate_s, SEED)
    return [(await run_policy(workload, p, shape, rate, run_s, SEED)).summary() for p in policies(workload, SEED)]


@pytest.mark.parametrize("workload", WORKLOADS)
def test_routing_quality(benchmark, workload, quality_size, quality_rows):
    shape = FleetShape()
    rows = benchmark.pedantic(
        lambda: uvloop.run(_compare(workload, shape, quality_size.calibrate_s, quality_size.run_s)),
        rounds=1, iterations=1)
    quality_rows[workload] = rows
    benchmark.extra_info["rows"] = rows
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0, row
