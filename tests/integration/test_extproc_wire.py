"""The ext_proc server message for message, through a real gRPC client: every answer it encodes
must decode with the generated xds-protos classes without unknown fields (so its hand-written
field numbers are the real ones) and equal the expected answer recorded in
tests/data/extproc_wire_expected.json (bodies above 1 KiB compared by digest)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf import unknown_fields
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluicegate import _core
from sluicegate.errors import ConfigError
from sluicegate.extproc import tls
from sluicegate.extproc.server import EppServer
from sluicegate.scheduling import Router

from .extproc_client import (BUFFERED, exchange, gone_mid_body, request_body, request_headers, request_trailers,
                             response_body, response_headers)

A, B = "10.0.0.1:8000", "10.0.0.2:8000"
CHAT = "/v1/chat/completions"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
STREAMED = 1


def chat_body(content: str = "hello", model: str = MODEL) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()


def with_string_subset(req: pb.ProcessingRequest, hint: str) -> pb.ProcessingRequest:
    req.metadata_context.filter_metadata["envoy.lb.subset_hint"]["x-gateway-destination-endpoint-subset"] = hint
    return req


def old_style_header(req: pb.ProcessingRequest, key: str, value: str) -> pb.ProcessingRequest:
    h = req.request_headers.headers.headers.add()
    h.key, h.value = key, value  # `value`, not `raw_value`: proxies before Envoy 1.27
    return req


BIG = chat_body("x" * 150_000)
REWRITE = {"x-llm-d-model-name-rewrite": "lora-3"}
SSE = b'data: {"id":"1","model": "lora-3","choices":[]}\n\n'

SCENARIOS = {
    "full-duplex-big-body": [request_headers(CHAT), request_body(BIG[:70_000], False), request_body(BIG[70_000:], True),
                             response_headers(served=A), response_body(b"data: 1\n\n", False),
                             response_body(b"data: [DONE]\n\n", True)],
    "header-only": [request_headers("/v1/models", end_of_stream=True, method="GET"), response_headers(end_of_stream=True)],
    "buffered-rewrite": [request_headers(CHAT, REWRITE, mode=BUFFERED), request_body(chat_body(), True),
                         response_headers(), response_body(b'{"model":"lora-3"}', True)],
    "buffered-plain": [request_headers(CHAT, mode=BUFFERED), request_body(chat_body(), True),
                       response_headers(), response_body(b"{}", True)],
    "streamed-rewrite": [request_headers(CHAT, {"x-gateway-model-name-rewrite": "lora-1"}, mode=STREAMED),
                         request_body(chat_body()[:10], False), request_body(chat_body()[10:], True)],
    "full-duplex-rewrite-back": [request_headers(CHAT, REWRITE), request_body(chat_body(), True), response_headers(),
                                 response_body(SSE, True)],
    "trailers": [request_headers(CHAT), request_body(chat_body(), False), request_trailers(),
                 response_headers(), response_body(b"ok", False),
                 pb.ProcessingRequest(response_trailers=pb.HttpTrailers())],
    "subset-list": [request_headers(CHAT, subset=[B]), request_body(chat_body(), True)],
    "subset-string": [with_string_subset(request_headers(CHAT), f" {B} ,"), request_body(chat_body(), True)],
    "subset-empty": [request_headers(CHAT, subset=[]), request_body(chat_body(), True)],
    "subset-unmatched": [request_headers(CHAT, subset=["10.9.9.9:1"]), request_body(chat_body(), True)],
    "bad-json": [request_headers(CHAT), request_body(b"{not json", True)],
    "model-a-number": [request_headers(CHAT), request_body(b'{"model": 7, "messages": []}', True)],
    "empty-body": [request_headers(CHAT), request_body(b"", True)],
    "invalid-utf8": [request_headers(CHAT), request_body(b"\xff\xfe{}", True)],
    "no-request-kind": [pb.ProcessingRequest()],
    "value-only-rewrite-header": [old_style_header(request_headers(CHAT), "x-llm-d-model-name-rewrite", "lora-9"),
                                  request_body(chat_body(), True)],
}


def assert_no_unknown_fields(msg: Message, where: str = "ProcessingResponse") -> None:
    assert len(unknown_fields.UnknownFieldSet(msg)) == 0, f"{where} has fields the real proto does not know"
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            items = value.values() if field.message_type.fields_by_name["value"].message_type else []
            for v in items:
                assert_no_unknown_fields(v, f"{where}.{field.name}[]")
        elif field.is_repeated:
            for v in value:
                assert_no_unknown_fields(v, f"{where}.{field.name}[]")
        else:
            assert_no_unknown_fields(value, f"{where}.{field.name}")


EXPECTED = json.loads((Path(__file__).parent.parent / "data" / "extproc_wire_expected.json").read_text())


def _digested(x):
    """Long strings (echoed bodies, base64) by digest, so the expected file stays small."""
    if isinstance(x, dict):
        return {k: _digested(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_digested(v) for v in x]
    if isinstance(x, str) and len(x) > 1024:
        return "sha256:" + hashlib.sha256(x.encode()).hexdigest()
    return x


def comparable(r: pb.ProcessingResponse) -> dict:
    """The answer as a dict; an error body as parsed JSON (spacing is not part of the contract)."""
    d = MessageToDict(r)
    if r.HasField("immediate_response"):
        d["immediateResponse"]["body"] = json.loads(r.immediate_response.body)
    return _digested(d)


def started(loop_thread, router: Router, skip_response: bool = False) -> EppServer:
    server = EppServer(router, host="127.0.0.1", port=0, health_port=0, secure=False, skip_response=skip_response)
    loop_thread.run(server.start())
    loop_thread.run(server.set_serving(True))
    return server


@pytest.fixture
def router() -> Router:
    r = Router()
    r.set_endpoints([(a, a, {}) for a in (A, B)])
    return r


@pytest.fixture
def server(loop_thread, router):
    s = started(loop_thread, router)
    yield s
    loop_thread.run(s.stop(0))


def in_flight(router: Router) -> int:
    return sum(s.in_flight for s in router.status())


def wait_released(router: Router, timeout_s: float = 2.0) -> int:
    deadline = time.monotonic() + timeout_s
    while in_flight(router) and time.monotonic() < deadline:
        time.sleep(0.01)  # poll interval of this bounded wait
    return in_flight(router)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_answers_decode_cleanly_and_equal_the_expected_ones(server, router, scenario):
    messages = SCENARIOS[scenario]
    if scenario in ("header-only", "full-duplex-big-body", "trailers", "buffered-rewrite", "buffered-plain",
                    "full-duplex-rewrite-back", "streamed-rewrite", "value-only-rewrite-header"):
        # One candidate, so the pick is known.
        messages = [with_subset_a(m) for m in messages]
    answers = exchange(server.port, messages)
    assert answers, "no answer"
    for r in answers:
        assert_no_unknown_fields(r)
    assert wait_released(router) == 0
    assert [comparable(r) for r in answers] == EXPECTED[scenario]


def with_subset_a(req: pb.ProcessingRequest) -> pb.ProcessingRequest:
    if req.HasField("request_headers"):
        copy = pb.ProcessingRequest()
        copy.CopyFrom(req)
        copy.metadata_context.filter_metadata["envoy.lb.subset_hint"].get_or_create_list(
            "x-gateway-destination-endpoint-subset").append(A)
        return copy
    return req


def test_skip_response_closes_after_routing(loop_thread, router):
    server = started(loop_thread, router, skip_response=True)
    try:
        messages = [request_headers(CHAT, subset=[A]), request_body(chat_body(), True), response_headers(),
                    response_body(b"x", True)]
        answers = exchange(server.port, messages)
    finally:
        loop_thread.run(server.stop(0))
    assert [r.WhichOneof("response") for r in answers] == ["request_headers", "request_body"]
    assert [comparable(r) for r in answers] == EXPECTED["skip-response"]
    assert wait_released(router) == 0


def test_a_client_gone_mid_body_is_released(server, router):
    gone_mid_body(server.port, CHAT)
    assert wait_released(router) == 0
    assert exchange(server.port, [request_headers(CHAT), request_body(chat_body(), True)])


def health_status(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_health_follows_set_serving_for_every_service_name(loop_thread, router):
    server = EppServer(router, host="127.0.0.1", port=0, health_port=0, secure=False)
    loop_thread.run(server.start())
    try:
        names = ("", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor", "inference-extension")
        assert {health_status(server.health_port, n) for n in names} == {health_pb2.HealthCheckResponse.NOT_SERVING}
        loop_thread.run(server.set_serving(True))
        assert {health_status(server.health_port, n) for n in names} == {health_pb2.HealthCheckResponse.SERVING}
    finally:
        loop_thread.run(server.stop(0))
    with pytest.raises(grpc.RpcError):
        health_status(server.health_port, "")


def test_tls_serving_with_a_self_signed_certificate(router):
    key, cert = tls.self_signed()
    server = _core.ExtProcServer(router, "127.0.0.1", 0, 0, tls_cert_pem=cert, tls_key_pem=key)
    server.start()
    try:
        with grpc.secure_channel(f"localhost:{server.port}", grpc.ssl_channel_credentials(cert)) as channel:
            out = list(pb_grpc.ExternalProcessorStub(channel).Process(
                iter([request_headers("/v1/models", end_of_stream=True, method="GET")]), timeout=10))
        assert out[0].request_headers.response.header_mutation.set_headers[0].header.raw_value in (A.encode(), B.encode())
    finally:
        server.stop()


def test_bad_arguments_are_refused_naming_the_field(router):
    with pytest.raises(ConfigError, match="tls_cert_pem"):
        _core.ExtProcServer(router, "127.0.0.1", 0, 0, tls_cert_pem=b"not pem", tls_key_pem=b"not pem")
    with pytest.raises(ValueError, match="tls_key_pem"):
        _core.ExtProcServer(router, "127.0.0.1", 0, 0, tls_cert_pem=b"x")
    with pytest.raises(ValueError, match="worker_threads"):
        _core.ExtProcServer(router, "127.0.0.1", 0, 0, worker_threads=0)
    first = _core.ExtProcServer(router, "127.0.0.1", 0, 0)
    try:
        with pytest.raises(OSError, match=str(first.port)):
            _core.ExtProcServer(router, "127.0.0.1", first.port, 0)
    finally:
        first.stop()


def test_start_twice_or_after_stop_is_a_runtime_error(router):
    server = _core.ExtProcServer(router, "127.0.0.1", 0, 0)
    server.start()
    with pytest.raises(RuntimeError, match="started already"):
        server.start()
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="stopped"):
        server.start()
