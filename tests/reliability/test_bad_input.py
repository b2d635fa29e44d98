"""Bad input never hurts the EPP: ext_proc messages in any order and of any kind each end in
exactly one outcome with nothing left in flight; bodies over the limit get 413 before they are
whole; broken bodies and header floods through the real Envoy get a clear 4xx, and the next
request is served."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time

import grpc
import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluicegate.extproc.server import EppServer
from sluicegate.scheduling import Router
from sluicegate.sim.config import SimConfig
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import scrape, total, wait_until, write_endpoints
from tests.integration.extproc_client import (exchange, request_body, request_headers, request_trailers,
                                              response_body, response_headers)

from .stack import CHAT, MODEL, SOAK, Stack, chat

A, B = "10.0.0.1:8000", "10.0.0.2:8000"
GOOD = json.dumps(chat()).encode()
MODES = [mode_pb.ProcessingMode.FULL_DUPLEX_STREAMED, mode_pb.ProcessingMode.BUFFERED,
         mode_pb.ProcessingMode.STREAMED, mode_pb.ProcessingMode.NONE]
BODIES = [GOOD, b"", b"{oops", b'{"model": 1}', GOOD[:10], b"\xff\xfe", b'{"model":"m","model":"n"}']


def _router() -> Router:
    r = Router("{}")
    r.set_endpoints([("a", A, {}), ("b", B, {})])
    for addr in (A, B):
        r.ingest_metrics(addr, b"vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n"
                               b"vllm:kv_cache_usage_perc 0.1\n")
    return r


ROUTER = _router()
STATS = ROUTER.request_stats()

message = st.one_of(
    st.builds(lambda p, m, eos: request_headers(p, end_of_stream=eos, mode=m),
              st.sampled_from([CHAT, "/v1/models", "/v1/completions"]), st.sampled_from(MODES), st.booleans()),
    st.builds(request_body, st.sampled_from(BODIES), st.booleans()),
    st.just(request_trailers()),
    st.builds(response_headers, st.booleans()),
    st.builds(response_body, st.sampled_from([b"data: {}\n\n", b"", b'{"usage":{"prompt_tokens":3}}']),
              st.booleans()),
    st.just(pb.ProcessingRequest(response_trailers=pb.HttpTrailers())),
    st.just(pb.ProcessingRequest()),  # no kind at all
)


def _requests_recorded() -> int:
    return sum(s.requests for s in STATS.snapshot())


def _running() -> tuple[int, int]:
    return sum(s.running for s in STATS.snapshot()), sum(e.in_flight for e in ROUTER.status())


_SERVERS: dict[int, EppServer] = {}


def _server(max_body: int) -> EppServer:
    """One ext_proc server per body limit on the shared Router, kept for the module."""
    if max_body not in _SERVERS:
        server = EppServer(ROUTER, host="127.0.0.1", port=0, health_port=0, secure=False, max_body_bytes=max_body)
        asyncio.run(server.start())
        _SERVERS[max_body] = server
    return _SERVERS[max_body]


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    for server in _SERVERS.values():
        asyncio.run(server.stop(0))
    _SERVERS.clear()


@settings(max_examples=5_000 if SOAK else 200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message, max_size=12), st.sampled_from([1, 64, 200]))
def test_any_message_sequence_ends_in_one_outcome_with_nothing_in_flight(messages, max_body):
    # Through the real server: whatever the proxy sends, the stream ends with one outcome recorded.
    before, running = _requests_recorded(), _running()
    try:
        answers = exchange(_server(max_body).port, messages)
    except grpc.RpcError as e:  # a message the server cannot take ends the stream with a status
        answers = []
        assert e.code() != grpc.StatusCode.UNKNOWN, e
    assert sum(1 for a in answers if a.WhichOneof("response") == "immediate_response") <= 1
    assert all(a.WhichOneof("response") for a in answers)
    wait_until(lambda: _requests_recorded() == before + 1 and _running() == running, timeout=5,
               what="one outcome recorded, nothing left in flight")


@pytest.fixture
def epp(sims, tmp_path):
    servers = sims.start(SimConfig(name="sim-0", speedup=50))
    path = write_endpoints(tmp_path / "endpoints.json", [s.address for s in servers])
    with EppProcess(path, "--max-request-body-bytes", "4096") as proc:
        yield proc


ODD_STREAMS = {
    "body before headers": [request_body(GOOD, True), request_headers(CHAT)],
    "response before request": [response_headers(), response_body(b"x", True)],
    "headers twice": [request_headers(CHAT), request_headers(CHAT), request_body(GOOD, True)],
    "empty message": [pb.ProcessingRequest()],
    "nothing at all": [],
    "trailers only": [request_trailers()],
    "body over the limit": [request_headers(CHAT), request_body(b" " * 3000, False), request_body(b" " * 3000, False)],
    "cut after headers": [request_headers(CHAT)],
    "cut mid-body": [request_headers(CHAT), request_body(GOOD[:20], False)],
}


def test_odd_streams_over_real_grpc_end_and_leave_nothing_running(epp):
    for name, msgs in ODD_STREAMS.items():
        try:
            exchange(epp.port, msgs, timeout=5)
        except Exception as e:  # the EPP may refuse a stream with a gRPC error; it must not hang
            assert "DEADLINE_EXCEEDED" not in str(e), name
    wait_until(lambda: total(scrape(epp.metrics_port), "llm_d_epp_request_running") == 0, 5,
               what="no request running")
    out = exchange(epp.port, [request_headers(CHAT), request_body(GOOD, True)])
    assert out[0].WhichOneof("response") == "request_headers"  # still routing


@pytest.fixture
def stack(sims, tmp_path):
    made: list[Stack] = []

    def make(**envoy_opts) -> Stack:
        servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50) for i in range(2)))
        s = Stack(tmp_path, [x.address for x in servers],
                  ("--max-request-body-bytes", str(64 * 1024)), **envoy_opts)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def _send_until_answered(url: str, total_bytes: int, chunk: int = 32 * 1024) -> tuple[bytes, int]:
    """POST a chunked body of `total_bytes`, reading between chunks: (response head, bytes sent
    when the answer came)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sent = 0
    try:
        sock.sendall(f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     "transfer-encoding: chunked\r\n\r\n".encode())
        data = b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"' + b"x" * total_bytes
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if select.select([sock], [], [], 0.05)[0]:
                return sock.recv(65536), sent
            if sent < len(data):
                piece = data[sent:sent + chunk]
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                except OSError:
                    break  # the proxy closed while we were sending: the answer is waiting
                sent += len(piece)
        return sock.recv(65536), sent
    finally:
        sock.close()


@pytest.mark.envoy
@pytest.mark.parametrize("mode", ["full_duplex", "buffered"])
def test_a_body_over_the_limit_is_a_413_before_it_is_whole(stack, mode):
    # full duplex: the EPP's --max-request-body-bytes (64 KiB here); buffered: Envoy's buffer limit.
    s = stack(processing_mode=mode, buffer_limit_bytes=256 * 1024)
    head, sent = _send_until_answered(s.url, 16 * 1024 * 1024)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert sent < 4 * 1024 * 1024, f"the whole body was taken before answering ({sent} bytes)"
    assert s.post(chat())[0] == 200
    wait_until(lambda: total(s.metrics(), "llm_d_epp_request_running") == 0, 5, what="nothing running")


MSGS = b'"messages":[{"role":"user","content":"hi"}]'
BAD_BODIES = {
    "invalid utf-8": (b'{"model":"m\xff",' + MSGS + b"}", "UTF-8"),
    "deep nesting": (b'{"model":"m","messages":' + b"[" * 20_000 + b"]" * 20_000 + b"}", "messages"),
    # In a field the EPP does not read: forwarded (serde skips it without a depth limit, and
    # without recursing), refused by the model server.
    "deep nesting elsewhere": (b'{"model":"m","x":' + b'{"a":' * 10_000 + b"1" + b"}" * 10_000 + b"," + MSGS + b"}",
                               "JSON"),
    "NaN": (b'{"model":"m",' + MSGS + b',"max_tokens":NaN}', "JSON"),
    "huge number": (b'{"model":"m",' + MSGS + b',"max_tokens":1e999999}', "max_tokens"),
    "duplicate model": (b'{"model":"m",' + MSGS + b',"model":"other"}', "duplicate field 'model'"),
    "model not a string": (b'{"model":["m"],' + MSGS + b"}", "model"),
}


@pytest.mark.envoy
def test_broken_bodies_are_a_4xx_naming_the_problem_and_the_next_request_is_served(stack):
    s = stack()
    for name, (body, words) in BAD_BODIES.items():
        status, headers, text = s.post(body)
        assert status == 400, (name, status, text[:200])
        assert words in json.loads(text)["error"]["message"], (name, text[:300])
    assert s.post(chat())[0] == 200
    m = s.metrics()
    assert total(m, "llm_d_epp_request_running") == 0
    # all but the one the model server refused were refused by the EPP
    assert total(m, "llm_d_epp_request_error_total", error_code="BadRequest") == len(BAD_BODIES) - 1


@pytest.mark.envoy
def test_a_header_flood_is_refused_by_the_proxy_and_the_epp_keeps_serving(stack):
    s = stack()
    assert s.post(chat())[0] == 200
    outcomes = []
    for flood in ({f"x-flood-{i}": "v" for i in range(300)},  # over Envoy's 100 headers
                  {f"x-flood-{i}": "v" * 1000 for i in range(64)}):  # over its 60 KiB of headers
        try:
            outcomes.append(s.post(chat(), flood)[0])
        except ConnectionError:
            outcomes.append("closed")  # Envoy resets the connection instead of answering 431
    print(f"\nheader floods: {outcomes}")
    assert set(outcomes) <= {431, "closed"}, outcomes
    # Envoy may already have opened the ext_proc stream: the EPP sees it end unrouted.
    wait_until(lambda: total(s.metrics(), "llm_d_epp_request_running") == 0, 5, what="nothing running")
    many = {f"x-many-{i}": "v" * 100 for i in range(80)}  # under both limits: routed
    assert s.post(chat(), many)[0] == 200
