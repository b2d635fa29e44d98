"""Every metric family upstream's EPP registers (tests/data/upstream_metric_families.txt) is
exposed here with upstream's name, type and label names, after traffic of every kind; the ones
not served yet are listed apart, and our own families stay under sluicegate_*."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.errors import NoEndpointsError
from sluicegate.flowcontrol import FlowController
from sluicegate.metrics import build_registry
from sluicegate.metrics.flowcontrol import FlowControlCollector
from sluicegate.scheduling import Router
from tests.unit.flowcontrol.test_flowcontrol import run, settle

SPEC = Path(__file__).parents[2] / "data" / "upstream_metric_families.txt"


def upstream_families() -> tuple[dict[str, tuple[str, frozenset[str]]], set[str]]:
    served: dict[str, tuple[str, frozenset[str]]] = {}
    missing: set[str] = set()
    in_missing = False
    for line in SPEC.read_text().splitlines():
        if line.startswith("# not served"):
            in_missing = True
        if not line or line.startswith("#"):
            continue
        name, kind, labels = line.split()
        if in_missing:
            missing.add(name)
        else:
            served[name] = (kind, frozenset() if labels == "-" else frozenset(labels.split(",")))
    return served, missing


SERVED, MISSING = upstream_families()
# Families upstream shows only once an error of their kind happened; here they are declared
# (HELP/TYPE) and carry no sample, so their label names cannot be read back.
NO_SAMPLES = {"llm_d_epp_datalayer_extract_errors_total", "llm_d_inference_scheduler_datalayer_extract_errors_total"}


@pytest.fixture(scope="module")
def exposition() -> dict:
    """One registry (request, pool, flow-control collectors) after mixed traffic: streamed and
    unary requests with usage, errors, a failed scheduling attempt, queued and cancelled requests."""
    router = Router()
    router.set_endpoints([("ep-a", "10.0.0.1:8000", {}), ("ep-b", "10.0.0.2:8000", {})])
    router.ingest_metrics("10.0.0.1:8000", b"vllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.2\n")
    stats = router.request_stats()
    for streaming in (False, True):
        stats.started("m", "m", "tenant", 0)
        stats.finished("m", "m", "tenant", 0, True, request_bytes=120, response_bytes=900, input_tokens=20,
                       output_tokens=11, cached_tokens=16, duration_s=0.5, ttft_s=0.1, streaming=streaming)
    stats.finished("m", "m", "tenant", 0, False, error_code="BadRequest")
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    router.route("/v1/chat/completions", body)
    with pytest.raises(NoEndpointsError):
        router.route("/v1/chat/completions", body, subset=["10.9.9.9:1"])

    async def queue_some(fc: FlowController) -> None:
        holder = await fc.acquire()
        waiting = [asyncio.create_task(fc.acquire("tenant", p, 100)) for p in (0, 3)]
        await settle(fc, 2)
        waiting[0].cancel()
        holder.release()
        (await waiting[1]).release()
        await asyncio.gather(waiting[0], return_exceptions=True)

    fc = FlowController(max_concurrency=1)
    flow = FlowControlCollector("pool-a", fc, router.status)
    try:
        run(queue_some(fc))
        text = generate_latest(build_registry(router, "pool-a", extra=lambda: [flow])).decode()
    finally:
        fc.close()
    return {f.name + ("_total" if f.type == "counter" else ""): f for f in text_string_to_metric_families(text)}


@pytest.mark.parametrize("name", sorted(SERVED))
def test_upstream_family_is_exposed_with_upstreams_type_and_labels(exposition, name):
    kind, labels = SERVED[name]
    assert name in exposition, f"{name} is not exposed"
    family = exposition[name]
    assert family.type == kind
    if name in NO_SAMPLES:
        return
    assert family.samples, f"{name} has no samples after the traffic"
    for s in family.samples:
        assert set(s.labels) - {"le"} == labels, (s.name, s.labels)


def test_families_not_upstreams_are_sluicegates_own(exposition):
    ours = {n for n in exposition if n.startswith(("llm_d_", "inference_"))}
    assert ours <= set(SERVED), sorted(ours - set(SERVED))
    assert not ours & MISSING


def test_values_follow_the_traffic(exposition):
    def value(family: str, sample: str, **labels) -> float:
        return sum(s.value for s in exposition[family].samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("llm_d_epp_request_total", "llm_d_epp_request_total", fairness_id="tenant") == 3
    assert value("inference_objective_request_error_total", "inference_objective_request_error_total",
                 error_code="BadRequest") == 1
    # (0.5 - 0.1) / (11 - 1) for the streamed one only
    assert value("llm_d_epp_request_streaming_tpot_seconds", "llm_d_epp_request_streaming_tpot_seconds_count") == 1
    assert value("llm_d_epp_request_streaming_tpot_seconds",
                 "llm_d_epp_request_streaming_tpot_seconds_sum") == pytest.approx(0.04)
    assert value("inference_objective_prompt_cached_tokens", "inference_objective_prompt_cached_tokens_sum") == 32
    assert value("inference_extension_scheduler_attempts_total", "inference_extension_scheduler_attempts_total",
                 status="failure") == 1
    outcomes = {(s.labels["outcome"], s.labels["priority"]): s.value
                for s in exposition["llm_d_epp_flow_control_requests_total"].samples}
    assert outcomes == {("Dispatched", "0"): 1, ("Dispatched", "3"): 1, ("EvictedContextCancelled", "0"): 1}
    assert value("llm_d_epp_flow_control_stale_endpoints", "llm_d_epp_flow_control_stale_endpoints") == 1
    assert [s.labels["stage"] for s in exposition["llm_d_epp_flow_control_pool_saturation"].samples] == ["effective"]
