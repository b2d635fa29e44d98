"""The real upstream EPP (llm-d-router, Go, `make upstream-epp-bin`) routing the quality bench's
workloads beside sluicegate, same fleet shape, same seeded arrivals and requests, same run.
Opt-in (SLUICEGATE_QUALITY_UPSTREAM=1): the binary takes minutes to build and is not part of
`make test`. Reported, not asserted, as the rest of the bench; the run fails only if requests
fail."""

from __future__ import annotations

import os

import pytest
import uvloop

from benches.quality.driver import WORKLOADS, capacity, run_policy
from benches.quality.fleet import FleetShape
from benches.quality.policies import Policy, in_flight_policies, policies
from benches.quality.test_precise_eviction import inference_sim_evicting_shape
from benches.quality.test_routing_quality import (LOAD, SEED, _fixed_rate, inference_sim_missing, inference_sim_shape,
                                                  vllm_style_shape, write_trace)
from benches.quality.upstream_go import ScrapedQueuePolicy, missing_reason, upstream_policies

pytestmark = [pytest.mark.timeout(3600),
              pytest.mark.skipif(missing_reason() is not None, reason=f"upstream-go rows: {missing_reason()}")]

# Per workload, the sluicegate rows run beside upstream's (SLUICEGATE_QUALITY_POLICIES=a,b overrides).
ROWS = {"shared_prefix": ("round-robin", "sluicegate", "sluicegate-upstream-scorer", "upstream-go"),
        "varied": ("least-queue", "sluicegate", "upstream-go"),
        "lora": ("round-robin", "sluicegate", "upstream-go"),
        "burst": ("round-robin", "sluicegate", "sluicegate-inflight-never", "upstream-go"),
        "shared_prefix_vllm": ("round-robin", "sluicegate", "sluicegate-upstream-scorer", "upstream-go",
                               "sluicegate+precise", "sluicegate+precise-render", "upstream-go+precise"),
        "shared_prefix_isim": ("round-robin", "sluicegate", "upstream-go", "sluicegate+precise-render",
                               "upstream-go+precise")}
ROWS["shared_prefix_isim_evicting"] = ROWS["shared_prefix_isim"]


def _rows(key: str, workload: str, shape: FleetShape) -> list[Policy]:
    names = os.environ.get("SLUICEGATE_QUALITY_POLICIES", "")
    wanted = names.split(",") if names else ROWS[key]
    every = {p.name: p for p in [*policies(workload, SEED, shape if shape.token_level else None),
                                 *in_flight_policies(), *upstream_policies(shape), ScrapedQueuePolicy()]}
    return [every[n] for n in wanted if n in every]


def _compare(key: str, workload: str, shape: FleetShape, benchmark, quality_size, quality_rows) -> None:
    async def compare() -> list[dict]:
        rate = _fixed_rate() or LOAD * await capacity(workload, shape, quality_size.calibrate_s, SEED)
        rows = []
        for p in _rows(key, workload, shape):
            result = await run_policy(workload, p, shape, rate, quality_size.run_s, SEED)
            rows.append(result.summary())
            write_trace(f"{key}_upstream", result, getattr(p, "index_stats", None))
        return rows

    rows = benchmark.pedantic(lambda: uvloop.run(compare()), rounds=1, iterations=1)
    quality_rows[f"{key}_upstream"] = rows
    benchmark.extra_info["rows"] = rows
    assert any(r["policy"] == "upstream-go" for r in rows) or os.environ.get("SLUICEGATE_QUALITY_POLICIES")
    for row in rows:
        assert row["requests"] > 0 and row["errors"] == 0, row


@pytest.mark.parametrize("workload", WORKLOADS)
def test_upstream_go_beside_sluicegate(benchmark, workload, quality_size, quality_rows):
    _compare(workload, workload, FleetShape(), benchmark, quality_size, quality_rows)


def test_upstream_go_precise_with_vllm_style_events(benchmark, quality_size, quality_rows, tmp_path):
    """Against vLLM-style servers (see test_precise_routing_with_vllm_style_events): upstream's
    precise pipeline binds the ZMQ endpoint the servers dial and tokenizes through the first
    server's render API; its lookups hit only if the servers' block hashes match upstream's."""
    _compare("shared_prefix_vllm", "shared_prefix", vllm_style_shape(tmp_path), benchmark, quality_size,
             quality_rows)


@pytest.mark.skipif(inference_sim_missing() is not None, reason=str(inference_sim_missing()))
def test_upstream_go_with_inference_sim(benchmark, quality_size, quality_rows):
    """Against llm-d's own simulator (see test_routing_with_inference_sim): both EPPs'
    approximate defaults and precise modes, each tokenizing through the first server's render
    API, same arrivals, same run."""
    _compare("shared_prefix_isim", "shared_prefix", inference_sim_shape(), benchmark, quality_size, quality_rows)


@pytest.mark.skipif(inference_sim_missing() is not None, reason=str(inference_sim_missing()))
def test_upstream_go_with_inference_sim_under_eviction(benchmark, quality_size, quality_rows):
    """The same, on servers whose caches evict (see
    test_precise_routing_with_inference_sim_under_eviction)."""
    _compare("shared_prefix_isim_evicting", "shared_prefix", inference_sim_evicting_shape(), benchmark,
             quality_size, quality_rows)
