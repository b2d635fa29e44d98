"""Flow-control and admission plugins on the EPP's request path, through real gRPC by a client
speaking ext_proc as Envoy does: probabilistic-admitter sheds a sheddable request the pool is
too full for (HTTP 500, as upstream answers an admitter's refusal) and admits critical ones,
both with flow control queueing and with the gate off; priority-holdback holds a low band while
a high one still goes; program-aware-fairness serves the program with less attained service
(tokens from the responses' usage) ahead of an older request of a heavier one."""

from __future__ import annotations

import json
import socket

from .extproc_client import response_body, response_headers
from .test_flowcontrol_extproc import Call, immediate, pool, start_epp  # noqa: F401  (fixtures)


def unused_address() -> str:
    """An address nothing listens on: its metrics never arrive, so it counts as full."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


ADMITTER = """
plugins:
- type: probabilistic-admitter
- type: concurrency-detector
  parameters: {maxConcurrency: 100}
- type: random-picker
flowControl:
  saturationDetector: {pluginRef: concurrency-detector}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: random-picker}]
objectives:
- {name: critical, priority: 1}
- {name: batch, priority: -1}
"""


def check_admitter(epp, address: str) -> None:
    # Never scraped: saturation 1.0, so p = min(1 · 300, 1) = 1 for sheddable requests.
    shed = Call(epp.stub, {"x-llm-d-inference-objective": "batch"})
    answer = shed.first_answer()
    assert answer.WhichOneof("response") == "immediate_response", answer
    status, _ = immediate(answer)
    assert status == 500
    assert b"probabilistic-admitter: rejected" in answer.immediate_response.body
    shed.cancel()
    for objective in ("critical", ""):
        call = Call(epp.stub, {"x-llm-d-inference-objective": objective} if objective else None)
        assert call.routed(timeout=10) == address, objective
        call.finish()


def test_probabilistic_admitter_sheds_sheddable_requests_with_flow_control_on(start_epp):  # noqa: F811
    address = unused_address()
    epp = start_epp("featureGates: [flowControl]\n" + ADMITTER, [address])
    check_admitter(epp, address)
    s = epp.wait_stats(in_flight=0)
    assert s["dispatched"] == 3, "the shed request was dispatched by flow control, then refused"


def test_probabilistic_admitter_sheds_with_the_gate_off(start_epp):  # noqa: F811
    address = unused_address()
    check_admitter(start_epp(ADMITTER, [address]), address)


def gated(max_concurrency: int, policy: str, flow_control: str) -> str:
    """Flow control on, saturation by in-flight requests, one policy plugin and its reference."""
    return f"""
featureGates: [flowControl]
plugins:
- type: concurrency-detector
  parameters: {{maxConcurrency: {max_concurrency}}}
- {policy}
flowControl:
  saturationDetector: {{pluginRef: concurrency-detector}}
  {flow_control}
objectives:
- {{name: critical, priority: 1}}
- {{name: batch, priority: -1}}
"""


HOLDBACK = gated(2, "{type: priority-holdback-policy, parameters: {minCeiling: 0.5}}",
                 "usageLimitPolicyPluginRef: priority-holdback-policy\n  priorityBands: [{priority: 1}, {priority: -1}]")


def test_priority_holdback_holds_the_low_band_at_its_ceiling(start_epp, pool):  # noqa: F811
    epp = start_epp(HOLDBACK, [pool])
    first = Call(epp.stub, {"x-llm-d-inference-objective": "batch"})
    assert first.routed(timeout=10) == pool  # saturation 0 < 0.5
    # 1 of 2 in flight: saturation 0.5 reaches the low band's ceiling (0.5), not the high one's (1.0).
    low = Call(epp.stub, {"x-llm-d-inference-objective": "batch"})
    epp.wait_stats(queued_requests=1)
    high = Call(epp.stub, {"x-llm-d-inference-objective": "critical"})
    assert high.routed(timeout=10) == pool
    assert low.routed(timeout=0.05) is None, "the low band waits at its ceiling"
    first.finish()
    high.finish()
    assert low.routed(timeout=10) == pool
    low.finish()
    epp.wait_stats(in_flight=0, dispatched=3)


PROGRAM_AWARE = gated(
    1, "{type: program-aware-fairness, parameters: {lasWeightService: 1.0, lasWeightHeadWait: 0.0}}",
    "defaultPriorityBand: {fairnessPolicyRef: program-aware-fairness}")


def flow(name: str) -> dict[str, str]:
    return {"x-llm-d-inference-fairness-id": name}


def finish_with_usage(call: Call, prompt: int, completion: int) -> None:
    usage = {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
    call._requests.put(response_headers())
    call._requests.put(response_body(json.dumps(usage).encode(), True))
    call._requests.put(None)
    call._reader.join(10)


def test_program_aware_fairness_serves_the_program_with_less_service_first(start_epp, pool):  # noqa: F811
    epp = start_epp(PROGRAM_AWARE, [pool])
    heavy = Call(epp.stub, flow("heavy"))
    assert heavy.routed(timeout=10) == pool
    finish_with_usage(heavy, 5000, 3000)  # heavy's service: 5000 + 2·3000 tokens
    epp.wait_stats(in_flight=0)
    holder = Call(epp.stub, flow("other"))
    assert holder.routed(timeout=10) == pool
    older = Call(epp.stub, flow("heavy"))
    epp.wait_stats(queued_requests=1)
    light = Call(epp.stub, flow("light"))
    epp.wait_stats(queued_requests=2)
    holder.finish()
    assert light.routed(timeout=10) == pool, "the program with less service goes first"
    assert older.routed(timeout=0.05) is None
    light.finish()
    assert older.routed(timeout=10) == pool
    older.finish()
    epp.wait_stats(in_flight=0, dispatched=4)
