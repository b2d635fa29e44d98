"""Flow-control families: queue size and bytes per flow, saturation, outcomes, read from a real
FlowController holding real requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.flowcontrol import FlowController
from sluicegate.metrics.flowcontrol import FlowControlCollector
from tests.unit.flowcontrol.test_flowcontrol import run, settle
from tests.unit.metrics.test_metrics import exposed_families

PINNED_FLOW = frozenset(
    Path(__file__).parents[2].joinpath("data", "metric_families_flowcontrol.txt").read_text().split())


def scrape(collector: FlowControlCollector) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def _counts(families: dict, family: str, suffix: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for s in families[family].samples:
        if s.name.endswith(suffix):
            key = (s.labels["outcome"], s.labels["priority"])
            out[key] = out.get(key, 0) + s.value
    return out


def test_held_requests_show_per_flow_and_outcomes_add_up():
    async def go():
        fc = FlowController(max_concurrency=1)
        collector = FlowControlCollector("pool-a", fc, lambda: [])
        try:
            holder = await fc.acquire()
            waiting = [asyncio.create_task(fc.acquire("t", p, 100)) for p in (0, 0, 5)]
            await settle(fc, 3)
            f = scrape(collector)
            assert exposed_families(f) == PINNED_FLOW
            sizes = {s.labels["priority"]: s.value for s in f["llm_d_epp_flow_control_queue_size"].samples}
            assert sizes == {"0": 2, "5": 1}
            assert {s.labels["priority"]: s.value for s in f["llm_d_epp_flow_control_queue_bytes"].samples} \
                == {"0": 200, "5": 100}
            assert f["llm_d_epp_flow_control_pool_saturation"].samples[0].value == 1.0
            waiting[0].cancel()
            holder.release()
            for t in (waiting[2], waiting[1]):  # priority 5 goes first; one place at a time
                (await t).release()
            await asyncio.gather(waiting[0], return_exceptions=True)
            await settle(fc, 0)
            f = scrape(collector)
            outcomes = {s.labels["outcome"]: s.value for s in f["sluicegate_flow_control_requests"].samples}
            enqueued = f["sluicegate_flow_control_enqueued"].samples[0].value
            assert outcomes["cancelled"] == 1 and outcomes["dispatched"] == 3
            assert enqueued == sum(outcomes.values())
            durations = _counts(f, "llm_d_epp_flow_control_request_queue_duration_seconds", "_count")
            # every request that left flow control, the holder (dispatched at once, flow default-flow) too
            assert durations == {("Dispatched", "5"): 1, ("Dispatched", "0"): 2, ("EvictedContextCancelled", "0"): 1}
            # one outcome per request: the outcome counter agrees with the histogram, and the
            # inference_extension_* twin with the llm_d_epp_* family
            assert _counts(f, "llm_d_epp_flow_control_requests", "_total") == durations
            assert _counts(f, "inference_extension_flow_control_request_queue_duration_seconds", "_count") == durations
        finally:
            fc.close()

    run(go())
