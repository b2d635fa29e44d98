"""Flow control on the EPP's request path, driven through real gRPC by a client that speaks
ext_proc as Envoy does: requests wait in their flow, go by priority, expire, give up for want
of endpoints, and leave their queue when the client goes away. The EPP runs in-process on a
uvloop thread so each test can read the controller's counters."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

from sluicegate.app import Epp, EppOptions
from sluicegate.sim.config import SimConfig
from tests.harness import write_endpoints

from .extproc_client import (exchange, header_set, request_body, request_headers, response_body, response_headers,
                             streamed_body)

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}]})


def config(*, ttl: str = "30s", no_endpoint_ttl: str | None = None, max_concurrency: int = 1) -> str:
    no_ep = f"\n  noEndpointRequestTTL: {no_endpoint_ttl}" if no_endpoint_ttl else ""
    return f"""
featureGates: [flowControl]
plugins:
- type: concurrency-detector
  parameters: {{maxConcurrency: {max_concurrency}}}
flowControl:
  defaultRequestTTL: {ttl}{no_ep}
  saturationDetector: {{pluginRef: concurrency-detector}}
objectives:
- {{name: premium, priority: 10}}
- {{name: batch, priority: -5}}
"""


class InProcessEpp:
    """`Epp` on the test loop thread: real gRPC on a free port, stopped by `stop`."""

    def __init__(self, loop_thread, endpoints_file: Path, config_text: str) -> None:
        self._lt = loop_thread
        opts = EppOptions(grpc_host="127.0.0.1", grpc_port=0, grpc_health_port=0, config_text=config_text,
                          endpoints_file=str(endpoints_file), secure_serving=False, drain_timeout_s=0,
                          metrics_port=None)

        async def start() -> Epp:
            epp = Epp(opts)
            await epp.start()
            return epp

        self.epp = loop_thread.run(start())
        self.channel: grpc.Channel | None = grpc.insecure_channel(f"127.0.0.1:{self.epp.port}")
        self.stub = pb_grpc.ExternalProcessorStub(self.channel)

    def stats(self) -> dict:
        flow = self.epp.flow or self.epp.shedder
        assert flow is not None
        return self._lt.run(_call(flow.stats))

    def wait_stats(self, **want: int) -> dict:
        deadline = time.monotonic() + 10
        while True:
            s = self.stats()
            if all(s[k] == v for k, v in want.items()):
                return s
            assert time.monotonic() < deadline, f"stats {s} never reached {want}"
            time.sleep(0.005)  # poll interval of this bounded wait

    def stop(self, drain_timeout: float = 0.0) -> None:
        if self.channel is not None:
            channel, self.channel = self.channel, None
            self._lt.run(self.epp.stop(drain_timeout))
            channel.close()


async def _call(fn):
    return fn()


class Call:
    """One ext_proc stream whose messages the test sends one at a time; answers are collected
    on a reader thread."""

    def __init__(self, stub, headers: dict[str, str] | None = None, subset: list[str] | None = None) -> None:
        self._requests: queue.Queue = queue.Queue()
        self.answers: queue.Queue = queue.Queue()
        self._call = stub.Process(iter(self._requests.get, None), timeout=30)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._requests.put(request_headers(CHAT, headers, subset=subset))
        self._requests.put(request_body(BODY.encode(), True))

    def _read(self) -> None:
        try:
            for answer in self._call:
                self.answers.put(answer)
        except grpc.RpcError:
            pass
        finally:
            self.answers.put(None)

    def first_answer(self, timeout: float = 10.0):
        return self.answers.get(timeout=timeout)

    def routed(self, timeout: float = 0.0) -> str | None:
        """The destination the EPP answered with, or None when no answer came within `timeout`."""
        try:
            answer = self.answers.get(timeout=timeout) if timeout else self.answers.get_nowait()
        except queue.Empty:
            return None
        assert answer.WhichOneof("response") == "request_headers", answer
        return header_set(answer.request_headers.response)["x-gateway-destination-endpoint"]

    def finish(self) -> None:
        """The upstream answered and the response ended: the EPP releases the request's place."""
        self._requests.put(response_headers())
        self._requests.put(response_body(b'{"ok": true}', True))
        self._requests.put(None)
        self._reader.join(10)

    def cancel(self) -> None:
        self._call.cancel()
        self._reader.join(10)


def assert_one_outcome_each(s: dict) -> None:
    assert s["submitted"] == s["dispatched"] + s["rejected"] + s["expired"] + s["cancelled"] + s["queued_requests"]


def immediate(answer) -> tuple[int, str]:
    imm = answer.immediate_response
    reasons = {h.header.key: h.header.raw_value.decode() for h in imm.headers.set_headers}
    return imm.status.code, reasons.get("x-llm-d-request-dropped-reason", "")


@pytest.fixture
def pool(sims):
    (server,) = sims.start(SimConfig(name="sim-0", speedup=50))
    return server.address


@pytest.fixture
def start_epp(loop_thread, tmp_path):
    made: list[InProcessEpp] = []

    def start(config_text: str, addresses: list[str]) -> InProcessEpp:
        epp = InProcessEpp(loop_thread, write_endpoints(tmp_path / "endpoints.json", addresses), config_text)
        made.append(epp)
        return epp

    yield start
    for epp in made:
        epp.stop()


def test_a_saturated_pool_holds_requests_and_releases_them_by_priority(start_epp, pool):
    epp = start_epp(config(), [pool])
    holder = Call(epp.stub)
    assert holder.routed(timeout=10) == pool
    arrivals = ["batch", "", "premium", "batch", "premium", ""]
    waiting = []
    for i, objective in enumerate(arrivals):
        waiting.append(Call(epp.stub, {"x-llm-d-inference-objective": objective} if objective else None))
        epp.wait_stats(queued_requests=i + 1)  # arrival order is the order sent
    assert all(c.routed(timeout=0.05) is None for c in waiting), "nothing passes the one busy place"
    served, current = [], holder
    for _ in arrivals:
        current.finish()
        deadline = time.monotonic() + 10
        nxt = None
        while nxt is None and time.monotonic() < deadline:
            nxt = next((c for c in waiting if c not in served and c.routed(timeout=0.001)), None)
        assert nxt is not None, "the freed place went to nobody"
        served.append(nxt)
        current = nxt
    current.finish()
    order = [arrivals[waiting.index(c)] for c in served]
    assert order == ["premium", "premium", "", "", "batch", "batch"]
    assert [waiting.index(c) for c in served] == [2, 4, 1, 5, 0, 3], "arrival order within a priority"
    s = epp.wait_stats(in_flight=0)
    assert s["dispatched"] == 7
    assert_one_outcome_each(s)


def test_with_no_endpoints_a_request_waits_until_one_is_written_to_the_endpoints_file(start_epp, pool, tmp_path):
    epp = start_epp(config(), [])
    call = Call(epp.stub)
    epp.wait_stats(queued_requests=1)
    assert call.routed(timeout=0.3) is None
    write_endpoints(tmp_path / "endpoints.json", [pool])
    assert call.routed(timeout=10) == pool
    call.finish()
    assert_one_outcome_each(epp.wait_stats(in_flight=0, dispatched=1))


def test_with_no_endpoints_a_request_gets_503_after_the_no_endpoint_ttl(start_epp):
    epp = start_epp(config(no_endpoint_ttl="300ms"), [])
    t0 = time.monotonic()
    status, reason = immediate(Call(epp.stub).first_answer())
    assert (status, reason) == (503, "rejected-no-endpoints")
    # It waited the no-endpoint TTL; no upper wall-clock bound (the reason and the count below
    # say it was that TTL and not the 30 s request TTL).
    assert 0.25 <= time.monotonic() - t0
    assert_one_outcome_each(epp.wait_stats(expired_no_endpoints=1))


def test_a_request_waiting_past_its_ttl_gets_429_ttl_expired(start_epp, pool):
    epp = start_epp(config(ttl="300ms"), [pool])
    holder = Call(epp.stub)
    assert holder.routed(timeout=10) == pool
    status, reason = immediate(Call(epp.stub).first_answer())
    assert (status, reason) == (429, "rejected-ttl-expired")
    holder.finish()
    assert_one_outcome_each(epp.wait_stats(expired_ttl=1, in_flight=0))


def test_a_client_going_away_takes_its_request_out_of_the_queue(start_epp, pool):
    epp = start_epp(config(), [pool])
    holder = Call(epp.stub)
    assert holder.routed(timeout=10) == pool
    gone = Call(epp.stub, {"x-llm-d-inference-fairness-id": "tenant-a"})
    epp.wait_stats(queued_requests=1)
    gone.cancel()
    epp.wait_stats(cancelled=1, queued_requests=0)
    holder.finish()
    after = Call(epp.stub)
    assert after.routed(timeout=10) == pool, "the cancelled request took no place"
    after.finish()
    s = epp.wait_stats(in_flight=0)
    assert (s["dispatched"], s["cancelled"]) == (2, 1)
    assert_one_outcome_each(s)


def test_shutting_down_answers_every_waiting_request_503_shutting_down(start_epp, pool):
    epp = start_epp(config(), [pool])
    holder = Call(epp.stub)
    assert holder.routed(timeout=10) == pool
    waiting = [Call(epp.stub) for _ in range(3)]
    s = epp.wait_stats(queued_requests=3)
    epp.stop(drain_timeout=1.0)  # the queue is emptied first; the drain lets the answers out
    for call in waiting:
        assert immediate(call.first_answer()) == (503, "rejected-shutting-down")
    assert s["submitted"] == 4


LEGACY = """
saturationDetector: {queueDepthThreshold: 5}
objectives:
- {name: batch, priority: -1}
"""


def test_without_the_gate_sheddable_requests_are_shed_with_429_while_the_pool_is_saturated(start_epp, tmp_path):
    # No server answers at this address: its metrics never arrive, so it counts as saturated.
    epp = start_epp(LEGACY, ["127.0.0.1:1"])
    status, reason = immediate(Call(epp.stub, {"x-llm-d-inference-objective": "batch"}).first_answer())
    assert (status, reason) == (429, "rejected-saturated")
    standard = Call(epp.stub)
    assert standard.routed(timeout=10) == "127.0.0.1:1", "only sheddable requests are shed"
    standard.finish()
    assert epp.stats()["submitted"] == 0, "nothing queues with the gate off"


def test_without_the_gate_sheddable_requests_pass_while_the_pool_has_room(start_epp, pool):
    epp = start_epp(LEGACY, [pool])
    deadline = time.monotonic() + 10
    while epp.stats()["saturation"] >= 1.0:  # until the first scrape of the idle simulator
        assert time.monotonic() < deadline, "the simulator's metrics never arrived"
        time.sleep(0.02)  # poll interval of this bounded wait
    call = Call(epp.stub, {"x-llm-d-inference-objective": "batch"})
    assert call.routed(timeout=10) == pool
    call.finish()


def test_a_subset_naming_no_endpoint_waits_and_is_served_when_one_is_written_to_the_endpoints_file(
        sims, start_epp, tmp_path):
    first, second = (s.address for s in sims.start(SimConfig(name="sim-a", speedup=50),
                                                   SimConfig(name="sim-b", speedup=50)))
    epp = start_epp(config(max_concurrency=4), [first])
    call = Call(epp.stub, subset=[second])
    epp.wait_stats(queued_requests=1)
    assert call.routed(timeout=0.3) is None, "waits like a request for an empty pool (no 503)"
    other = Call(epp.stub, subset=[first])
    assert other.routed(timeout=10) == first, "the waiting request holds nobody up"
    other.finish()
    write_endpoints(tmp_path / "endpoints.json", [first, second])
    assert call.routed(timeout=10) == second
    call.finish()
    assert_one_outcome_each(epp.wait_stats(in_flight=0, dispatched=2))


def test_a_subset_naming_no_endpoint_gets_503_with_the_reason_after_its_ttl(start_epp, pool):
    epp = start_epp(config(no_endpoint_ttl="1s", max_concurrency=4), [pool])
    t0 = time.monotonic()
    call = Call(epp.stub, subset=["10.9.9.9:8000"])
    answer = call.first_answer(timeout=10)
    took = time.monotonic() - t0
    assert immediate(answer) == (503, "rejected-no-endpoints")
    assert took >= 0.9, took
    s = epp.wait_stats(queued_requests=0)
    assert s["expired_no_endpoints"] == 1
    assert_one_outcome_each(s)


STATIC_REWRITES = """
rewrites:
- name: llama-canary
  rules:
  - matches: [{model: {value: meta-llama/Llama-3.1-8B-Instruct}}]
    targets: [{modelRewrite: llama-canary, weight: 1}]
- name: later-exact
  rules:
  - matches: [{model: {value: meta-llama/Llama-3.1-8B-Instruct}}]
    targets: [{modelRewrite: never-picked}]
- name: everything-else
  rules:
  - targets: [{modelRewrite: fallback}]
"""


@pytest.mark.parametrize("model, sent_as", [("meta-llama/Llama-3.1-8B-Instruct", "llama-canary"),
                                            ("some-other-model", "fallback")])
def test_static_rewrites_in_the_config_rewrite_the_request_through_flow_control(start_epp, pool, model, sent_as):
    """The config's `rewrites:` table: exact beats match-all, the first (oldest) entry wins, and the
    response names the model the client asked for again."""
    epp = start_epp(config(max_concurrency=100) + STATIC_REWRITES, [pool])
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    resp_chunk = b'{"id":"1","model":"' + sent_as.encode() + b'","choices":[]}'
    out = exchange(epp.epp.port, [request_headers(CHAT, {"x-llm-d-inference-objective": "premium"}),
                                  request_body(body, True), response_headers(), response_body(resp_chunk, True)])
    sent, _ = streamed_body(out)
    assert json.loads(sent)["model"] == sent_as
    back, eos = streamed_body(out, "response_body")
    assert eos and json.loads(back)["model"] == model
    assert epp.wait_stats(dispatched=1, queued_requests=0)
