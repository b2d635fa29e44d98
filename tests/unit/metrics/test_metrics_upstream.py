"""Every metric family upstream's EPP registers (tests/data/upstream_metric_families.txt) is
exposed here with upstream's name, type and label names, after traffic of every kind, and our own
families stay under sluicegate_*. The ext_proc stream families need the server: the integration
scrape (tests/integration/test_metrics_scrape.py) covers them."""

from __future__ import annotations

import asyncio
import json
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


def upstream_families() -> tuple[dict[str, tuple[str, frozenset[str]]], dict[str, list[float]]]:
    """name → (type, label names), and histogram name → its bucket bounds, as upstream has them."""
    served: dict[str, tuple[str, frozenset[str]]] = {}
    buckets: dict[str, list[float]] = {}
    for line in SPEC.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, kind, labels, *bounds = line.split()
        served[name] = (kind, frozenset() if labels == "-" else frozenset(labels.split(",")))
        if kind == "histogram":
            buckets[name] = [float(b) for b in bounds[0].split(",")]
    return served, buckets


SERVED, BUCKETS = upstream_families()
STREAM_FAMILIES = {n for n in SERVED if n.startswith("llm_d_epp_extproc_")}
# Families upstream shows only once something of their kind happened; here they are declared
# (HELP/TYPE) and carry no sample, so their label names cannot be read back: extract errors, a
# plugin's undeclared data access (impossible for sluicegate's typed Rust plugins), and the
# all-bands capacity rollup when no global capacity is configured.
NO_SAMPLES = {"llm_d_epp_datalayer_extract_errors_total", "llm_d_inference_scheduler_datalayer_extract_errors_total",
              "llm_d_epp_plugin_data_scope_violations_total"}
GLOBAL_CAPACITY = {"llm_d_epp_flow_control_global_capacity_utilization_requests",
                   "llm_d_epp_flow_control_global_capacity_utilization_bytes"}


@pytest.fixture(scope="module")
def exposition() -> dict:
    """One registry (request, pool, flow-control collectors) after mixed traffic: streamed and
    unary requests with usage, errors, a failed scheduling attempt, queued and cancelled requests."""
    router = Router()
    router.set_endpoints([("ep-a", "10.0.0.1:8000", {}), ("ep-b", "10.0.0.2:8000", {})])
    router.set_rewrites(json.dumps({"exact": {"m-canary": {"source": "ns/canary", "targets": [
        {"model": "m-v2", "weight": 1}]}}}))
    router.ingest_metrics("10.0.0.1:8000", b"vllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.2\n")
    stats = router.request_stats()
    for streaming in (False, True):
        stats.started("m", "m", "tenant", 0)
        stats.finished("m", "m", "tenant", 0, True, request_bytes=120, response_bytes=900, input_tokens=20,
                       output_tokens=11, cached_tokens=16, duration_s=0.5, ttft_s=0.1, streaming=streaming)
    stats.finished("m", "m", "tenant", 0, False, error_code="BadRequest")
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    router.route("/v1/chat/completions", body)
    router.route("/v1/chat/completions", b'{"model":"m-canary","messages":[{"role":"user","content":"hi"}]}')
    with pytest.raises(NoEndpointsError):
        router.route("/v1/chat/completions", body, subset=["10.9.9.9:1"])

    async def queue_some(fc: FlowController) -> str:
        holder = await fc.acquire()
        waiting = [asyncio.create_task(fc.acquire("tenant", p, 100)) for p in (0, 3)]
        await settle(fc, 2)
        held = generate_latest(build_registry(router, "pool-a", extra=lambda: [flow])).decode()
        waiting[0].cancel()
        holder.release()
        (await waiting[1]).release()
        await asyncio.gather(waiting[0], return_exceptions=True)
        return held

    fc = FlowController(max_concurrency=1)
    flow = FlowControlCollector("pool-a", fc, router.status)
    try:
        held = run(queue_some(fc))
        text = generate_latest(build_registry(router, "pool-a", extra=lambda: [flow])).decode()
    finally:
        fc.close()
    parsed = {f.name + ("_total" if f.type == "counter" else ""): f for f in text_string_to_metric_families(text)}
    parsed["held"] = {f.name: f for f in text_string_to_metric_families(held)}
    return parsed


@pytest.mark.parametrize("name", sorted(set(SERVED) - STREAM_FAMILIES))
def test_upstream_family_is_exposed_with_upstreams_type_and_labels(exposition, name):
    kind, labels = SERVED[name]
    assert name in exposition, f"{name} is not exposed"
    family = exposition[name]
    assert family.type == kind
    if name in NO_SAMPLES | GLOBAL_CAPACITY:
        return
    assert family.samples, f"{name} has no samples after the traffic"
    for s in family.samples:
        assert set(s.labels) - {"le"} == labels, (s.name, s.labels)
    if kind == "histogram":
        assert bucket_bounds(family) == BUCKETS[name]


def bucket_bounds(family) -> list[float]:
    """The finite `le` bounds of a histogram family's first series, in order."""
    bounds: list[float] = []
    for s in family.samples:
        if s.name.endswith("_bucket") and s.labels["le"] != "+Inf":
            if bounds and float(s.labels["le"]) <= bounds[-1]:
                break  # the next series starts
            bounds.append(float(s.labels["le"]))
    return bounds


def test_families_not_upstreams_are_sluicegates_own(exposition):
    ours = {n for n in exposition if n.startswith(("llm_d_", "inference_"))}
    assert ours <= set(SERVED), sorted(ours - set(SERVED))


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


def test_new_families_follow_the_traffic(exposition):
    def samples(family: str, sample: str, source=exposition) -> list:
        return [s for s in source[family].samples if s.name == sample]

    # the held scrape: two requests queued, one per band, labelled with their flow (the Python
    # FlowController is asked without a body, so no model), then the flows stay at 0
    held = exposition["held"]
    queued = {(s.labels["fairness_id"], s.labels["priority"]): s.value
              for s in samples("llm_d_epp_flow_control_queue_size", "llm_d_epp_flow_control_queue_size", held)}
    assert queued == {("tenant", "0"): 1, ("tenant", "3"): 1}
    queued_bytes = {s.labels["priority"]: s.value for s in samples(
        "inference_extension_flow_control_queue_bytes", "inference_extension_flow_control_queue_bytes", held)}
    assert queued_bytes == {"0": 100, "3": 100}
    after = {(s.labels["fairness_id"], s.labels["priority"]): s.value for s in samples(
        "llm_d_epp_flow_control_queue_size", "llm_d_epp_flow_control_queue_size")}
    assert after == {("tenant", "0"): 0, ("tenant", "3"): 0}
    # both queued requests went through an enqueue into their queue
    enqueues = {(s.labels["priority"], s.labels["outcome"]): s.value for s in samples(
        "llm_d_epp_flow_control_request_enqueue_duration_seconds",
        "llm_d_epp_flow_control_request_enqueue_duration_seconds_count")}
    assert enqueues == {("0", "NotYetFinalized"): 1, ("3", "NotYetFinalized"): 1}
    cycles = samples("llm_d_epp_flow_control_dispatch_cycle_duration_seconds",
                     "llm_d_epp_flow_control_dispatch_cycle_duration_seconds_count")
    assert cycles[0].value >= 1
    # a band holding one of its default 5000 requests was 0.02 % full; none is now
    util = samples("llm_d_epp_flow_control_capacity_utilization_requests",
                   "llm_d_epp_flow_control_capacity_utilization_requests", held)
    assert {s.labels["priority"] for s in util} == {"0", "3"} and all(s.value > 0 for s in util)
    assert all(s.value == 0 for s in samples("llm_d_epp_flow_control_capacity_utilization_requests",
                                            "llm_d_epp_flow_control_capacity_utilization_requests"))
    # the routed requests ran every plugin of the default profile once each (and failed before
    # any on the subset hint naming no endpoint)
    plugins = samples("llm_d_epp_plugin_duration_seconds", "llm_d_epp_plugin_duration_seconds_count")
    assert {s.labels["extension_point"] for s in plugins} >= {"RequestParsing", "Scorer", "Picker"}
    pickers = [s for s in plugins if s.labels["extension_point"] == "Picker"]
    assert sum(s.value for s in pickers) >= 2
    rewrites = {(s.labels["model_rewrite_name"], s.labels["model_name"], s.labels["target_model"]): s.value
                for s in samples("inference_extension_model_rewrite_decisions_total",
                                 "inference_extension_model_rewrite_decisions_total")}
    assert rewrites == {("canary", "m-canary", "m-v2"): 1}
    revocations = {s.labels["outcome"]: s.value for s in samples(
        "llm_d_epp_flow_control_revocations_total", "llm_d_epp_flow_control_revocations_total")}
    assert revocations == {"confirmed": 0, "timed_out": 0}  # sluicegate never revokes a dispatched request
