"""In-flight eviction on the EPP's request path, driven through real gRPC by a client speaking
ext_proc as Envoy does: which running request is revoked (sheddable only, lowest priority, then
the most recently dispatched), that a response already streaming is cut with the 429 `evicted`
answer, and that the revoked stream's end lets the waiting request run."""

from __future__ import annotations

import time

from .extproc_client import response_body, response_headers
from .test_flowcontrol_extproc import Call, immediate, pool, start_epp  # noqa: F401 (fixtures)

CONFIG = """
featureGates: [flowControl]
plugins:
- type: concurrency-detector
  parameters: {maxConcurrency: 3}
- type: sheddable-eviction-filter
- type: priority-then-time-eviction-order-policy
flowControl:
  enableEviction: true
  defaultRequestTTL: 30s
  saturationDetector: {pluginRef: concurrency-detector}
objectives:
- {name: premium, priority: 10}
- {name: batch, priority: -5}
- {name: bulk, priority: -1}
"""


def objective(name: str) -> dict[str, str]:
    return {"x-llm-d-inference-objective": name}


def next_answer(call: Call, kind: str):
    """The next answer of `kind`, skipping the others (a routed request's body answer)."""
    while True:
        answer = call.answers.get(timeout=10)
        assert answer is not None, f"the stream closed before a {kind} answer"
        if answer.WhichOneof("response") == kind:
            return answer


def answered_now(call: Call) -> list[str]:
    """The kinds of the answers a stream has so far."""
    kinds = []
    while not call.answers.empty():
        answer = call.answers.get_nowait()
        kinds.append(answer.WhichOneof("response") if answer is not None else "closed")
    return kinds


def test_the_newest_lowest_priority_running_request_is_revoked_even_mid_response(start_epp, pool):  # noqa: F811
    epp = start_epp(CONFIG, [pool])
    # Three places, three running requests: bulk (-1), then two batch (-5); the newest batch
    # has its response streaming already.
    bulk = Call(epp.stub, objective("bulk"))
    assert bulk.routed(timeout=10) == pool
    old_batch = Call(epp.stub, objective("batch"))
    assert old_batch.routed(timeout=10) == pool
    new_batch = Call(epp.stub, objective("batch"))
    assert new_batch.routed(timeout=10) == pool
    new_batch._requests.put(response_headers())
    next_answer(new_batch, "response_headers")
    new_batch._requests.put(response_body(b'data: {"choices": []}\n\n', False))
    next_answer(new_batch, "response_body")
    # A premium request waits on the full pool: the newest batch request is revoked.
    premium = Call(epp.stub, objective("premium"))
    answer = next_answer(new_batch, "immediate_response")
    assert immediate(answer) == (429, "evicted")
    assert b"request evicted by flow control" in answer.immediate_response.body
    assert new_batch.answers.get(timeout=10) is None, "the revoked stream is closed"
    # Its end freed the place: the premium request runs; nothing else was revoked.
    assert premium.routed(timeout=10) == pool
    assert "immediate_response" not in answered_now(bulk) + answered_now(old_batch)
    stats = epp.stats()
    assert stats["eviction"]["confirmed"] == 1 and stats["eviction"]["issued"] == [(10, 1)]
    # A second premium request: the older batch request goes next, then bulk (-1).
    premium2 = Call(epp.stub, objective("premium"))
    assert immediate(next_answer(old_batch, "immediate_response")) == (429, "evicted")
    assert premium2.routed(timeout=10) == pool
    premium3 = Call(epp.stub, objective("premium"))
    assert immediate(next_answer(bulk, "immediate_response")) == (429, "evicted")
    assert premium3.routed(timeout=10) == pool
    # Only premium requests run now: a fourth waits, as nothing sheddable is left to revoke.
    premium4 = Call(epp.stub, objective("premium"))
    epp.wait_stats(queued_requests=1)
    premium.finish()
    assert premium4.routed(timeout=10) == pool
    for c in (premium2, premium3, premium4):
        c.finish()
    s = epp.wait_stats(in_flight=0)
    assert s["eviction"]["confirmed"] == 3 and s["eviction"]["timed_out"] == 0
    assert s["eviction"]["tracked"] == 0


def test_a_waiting_request_of_the_same_or_lower_priority_revokes_nothing(start_epp, pool):  # noqa: F811
    epp = start_epp(CONFIG.replace("maxConcurrency: 3", "maxConcurrency: 1"), [pool])
    running = Call(epp.stub, objective("bulk"))
    assert running.routed(timeout=10) == pool
    same = Call(epp.stub, objective("bulk"))
    lower = Call(epp.stub, objective("batch"))
    epp.wait_stats(queued_requests=2)
    time.sleep(0.3)  # room for a (wrong) revocation before the running request finishes
    assert "immediate_response" not in answered_now(running)
    running.finish()
    assert same.routed(timeout=10) == pool
    same.finish()
    assert lower.routed(timeout=10) == pool
    lower.finish()
    assert epp.wait_stats(in_flight=0)["eviction"]["issued"] == []
