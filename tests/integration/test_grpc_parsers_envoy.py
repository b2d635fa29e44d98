"""gRPC inference through the real Envoy: a gRPC client → Envoy (HTTP/2, ext_proc full duplex) →
the EPP reading the protobuf body (vllmgrpc-parser, vertexai-parser) → gRPC model servers of ours.

The messages come from proto/ (compiled here with grpcio-tools); the servers report what reached
them, so the path, metadata and message must arrive intact where the EPP sent them.
"""

from __future__ import annotations

import json
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import scrape, total, wait_until, write_endpoints

pytestmark = pytest.mark.envoy

PROTO = Path(__file__).parents[2] / "proto"
GENERATE = "/vllm.grpc.engine.VllmEngine/Generate"
CHAT = "/google.cloud.aiplatform.v1beta1.PredictionService/ChatCompletions"
DESTINATION = "x-gateway-destination-endpoint"


def _load():
    # googleapis' own google.api.HttpBody (shipped in xds-protos) is registered first, so ours
    # resolves to it rather than adding a second definition of that file to the pool.
    import google.api.httpbody_pb2  # noqa: F401

    sys.path.insert(0, str(PROTO))
    try:
        vllm = grpc.protos_and_services("vllm/vllm_engine.proto")
        vertex = grpc.protos_and_services("vertexai/prediction_service.proto")
        from google.api import httpbody_pb2
    finally:
        sys.path.remove(str(PROTO))
    return vllm, vertex, httpbody_pb2


(VLLM, VLLM_SERVICES), (VERTEX, VERTEX_SERVICES), HTTPBODY = _load()


class ModelServer:
    """One gRPC server serving both APIs on 127.0.0.1; records each call it received."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, dict[str, str], object]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        VLLM_SERVICES.add_VllmEngineServicer_to_server(_Vllm(self), self.server)
        VERTEX_SERVICES.add_PredictionServiceServicer_to_server(_Vertex(self), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self.server.start()

    def record(self, method: str, context, request) -> None:
        metadata = {k: v for k, v in context.invocation_metadata()}
        with self._lock:
            self.calls.append((method, metadata, request))
        context.send_initial_metadata((("x-served-by", self.name),))

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)


class _Vllm(VLLM_SERVICES.VllmEngineServicer):
    def __init__(self, owner: ModelServer) -> None:
        self.owner = owner

    def Generate(self, request, context):
        self.owner.record("Generate", context, request)
        for i in range(3):
            yield VLLM.GenerateResponse(chunk=VLLM.GenerateStreamChunk(token_ids=[i]))
        yield VLLM.GenerateResponse(complete=VLLM.GenerateComplete(
            output_ids=[0, 1, 2], finish_reason="stop", prompt_tokens=11, completion_tokens=3, cached_tokens=0))

    def Embed(self, request, context):
        self.owner.record("Embed", context, request)
        return VLLM.EmbedResponse(embedding=[0.5, 0.25], prompt_tokens=len(request.tokenized.input_ids),
                                  embedding_dim=2)


class _Vertex(VERTEX_SERVICES.PredictionServiceServicer):
    def __init__(self, owner: ModelServer) -> None:
        self.owner = owner

    def ChatCompletions(self, request, context):
        self.owner.record("ChatCompletions", context, request)
        model = json.loads(request.http_body.data)["model"]
        for event in ({"model": model, "choices": [{"delta": {"content": "hi"}}], "usage": None},
                      {"model": model, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}}):
            data = f"data: {json.dumps(event)}\n\n".encode()
            yield HTTPBODY.HttpBody(content_type="text/event-stream", data=data)


EPP_CONFIG = """\
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: vllmgrpc-parser}
- {type: vertexai-parser}
- {type: prefix-cache-scorer}
- {type: max-score-picker}
requestHandler:
  parsers: [{pluginRef: vllmgrpc-parser}, {pluginRef: vertexai-parser}]
dataLayer: {injectDefaults: false}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: prefix-cache-scorer}, {pluginRef: max-score-picker}]
"""


@pytest.fixture(scope="module", params=["full_duplex", "buffered"])
def stack(request, tmp_path_factory):
    """Three model servers, the EPP and Envoy in ext_proc full-duplex or buffered mode (the AI
    Gateway picks buffered per pool)."""
    tmp = tmp_path_factory.mktemp("grpc")
    servers = [ModelServer(f"m{i}") for i in range(3)]
    epp = envoy = None
    try:
        config = tmp / "epp.yaml"
        config.write_text(EPP_CONFIG)
        endpoints = write_endpoints(tmp / "endpoints.json", [s.address for s in servers])
        epp = EppProcess(endpoints, "--config-file", str(config)).start()
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1, upstream_http2=True,
                            processing_mode=request.param)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        channel = grpc.insecure_channel(f"127.0.0.1:{envoy.options.listen_port}")
        yield servers, epp, channel
        channel.close()
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        if epp is not None:
            epp.stop()
        for s in servers:
            s.stop()


def served_by(call) -> str:
    return dict(call.initial_metadata())["x-served-by"]


def last_call(servers, name: str):
    (server,) = [s for s in servers if s.name == name]
    return server, server.calls[-1]


def test_a_vllm_generate_call_arrives_intact_where_the_epp_sent_it(stack):
    servers, _, channel = stack
    stub = VLLM_SERVICES.VllmEngineStub(channel)
    request = VLLM.GenerateRequest(
        request_id="r-1", text="Once upon a time " * 40, stream=True,
        sampling_params=VLLM.SamplingParams(max_tokens=3, temperature=0.5, stop=["\n"]))
    call = stub.Generate(request, metadata=(("x-request-id", "grpc-1"), ("x-tenant", "t1")), timeout=10)
    answers = list(call)
    assert [a.WhichOneof("response") for a in answers] == ["chunk"] * 3 + ["complete"]
    assert call.code() == grpc.StatusCode.OK
    server, (method, metadata, received) = last_call(servers, served_by(call))
    assert method == "Generate"
    assert received == request
    assert metadata[DESTINATION] == server.address
    assert metadata["x-request-id"] == "grpc-1" and metadata["x-tenant"] == "t1"


def test_the_same_decoded_prompt_keeps_its_server_and_other_prompts_spread(stack):
    servers, _, channel = stack
    stub = VLLM_SERVICES.VllmEngineStub(channel)
    placed: dict[int, set[str]] = {}
    for prompt in range(8):
        # Token ids: the prompt the EPP hashes for prefix affinity is decoded from them.
        ids = [prompt * 1000 + i for i in range(256)]
        for tail in range(3):
            request = VLLM.GenerateRequest(tokenized=VLLM.TokenizedInput(input_ids=ids + [tail]))
            call = stub.Generate(request, timeout=10)
            list(call)
            placed.setdefault(prompt, set()).add(served_by(call))
    assert all(len(names) == 1 for names in placed.values()), placed
    # Ties among servers are broken at random: 8 new prompts on one server would be 3^-7 odds.
    assert len(set().union(*placed.values())) > 1, placed


def output_tokens(epp) -> float:
    return total(scrape(epp.metrics_port), "llm_d_epp_request_output_tokens_sum", model_name="gemma-3")


def test_a_vertex_chat_call_is_scheduled_by_its_json_and_its_usage_counted(stack):
    servers, epp, channel = stack
    chat = VERTEX_SERVICES.PredictionServiceStub(channel).ChatCompletions
    body = {"model": "gemma-3", "messages": [{"role": "user", "content": "hello"}], "stream": True}
    request = VERTEX.ChatCompletionsRequest(
        endpoint="projects/p/locations/us/endpoints/e1",
        http_body=HTTPBODY.HttpBody(content_type="application/json", data=json.dumps(body).encode()))
    before = output_tokens(epp)
    call = chat(request, timeout=10)
    events = [json.loads(b.data.decode()[6:]) for b in call]
    assert events[-1]["usage"]["completion_tokens"] == 2
    _, (method, _, received) = last_call(servers, served_by(call))
    assert (method, received) == ("ChatCompletions", request)
    # The EPP records the request when Envoy hands it the response's end, after the client has it.
    wait_until(lambda: output_tokens(epp) - before == 2, what="2 output tokens counted")


def test_vllm_usage_is_read_from_the_response_frames(stack):
    _, epp, channel = stack

    def input_tokens() -> float:
        return total(scrape(epp.metrics_port), "llm_d_epp_request_input_tokens_sum")

    before = input_tokens()
    list(VLLM_SERVICES.VllmEngineStub(channel).Generate(VLLM.GenerateRequest(text="count me"), timeout=10))
    wait_until(lambda: input_tokens() - before == 11, what="11 input tokens counted")


def test_a_body_that_is_not_the_message_is_refused_with_the_reason(stack):
    servers, _, channel = stack
    received = sum(len(s.calls) for s in servers)
    raw = channel.unary_unary(GENERATE, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as e:
        raw(b"\x1a\x09hi", timeout=10)  # text (field 3) announced 9 bytes long, 2 sent
    # The EPP answers 400 as upstream does (no grpc_status); Envoy's local reply to a gRPC
    # request maps it to INTERNAL with the JSON error as grpc-message.
    assert e.value.code() == grpc.StatusCode.INTERNAL
    error = json.loads(e.value.details())["error"]
    assert error["code"] == 400
    assert error["message"].startswith("GenerateRequest is not valid protobuf: "), error
    assert sum(len(s.calls) for s in servers) == received
    # The EPP keeps serving.
    list(VLLM_SERVICES.VllmEngineStub(channel).Generate(VLLM.GenerateRequest(text="after"), timeout=10))
