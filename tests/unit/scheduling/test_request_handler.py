"""requestHandler.parsers and the deprecated top-level parser: references checked, and the
configured parsers decide which request paths are read, passed through or refused."""

from __future__ import annotations

import json
import re

import pytest

from sluicegate.errors import BadRequestError, ConfigError
from sluicegate.scheduling import Endpoint, Request, Scheduler
from sluicegate.scheduling.config import load_config

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def scheduler(text: str) -> Scheduler:
    s = Scheduler(load_config(text=text))
    s.set_endpoints([Endpoint("pod-0", "10.0.0.1:8000")])
    return s


def test_no_parsers_configured_gives_upstreams_defaults():
    assert load_config().parsers == ("openai-parser", "anthropic-parser", "vllmhttp-parser", "passthrough-parser")


def test_an_explicit_parser_list_refuses_paths_it_does_not_claim():
    s = scheduler("plugins: [{type: openai-parser}]\nrequestHandler: {parsers: [{pluginRef: openai-parser}]}")
    assert s.config.parsers == ("openai-parser",)
    assert s.schedule(Request(CHAT)).primary == "10.0.0.1:8000"
    with pytest.raises(BadRequestError, match="no parser registered matching path suffix for: /v1/messages"):
        s.schedule(Request(CHAT, path="/v1/messages"))


def test_passthrough_parser_routes_bodies_it_never_reads():
    s = scheduler("plugins: [{name: pt, type: passthrough-parser}, {type: active-request-scorer}]\n"
                  "requestHandler: {parsers: [{pluginRef: pt}]}")
    assert s.schedule(Request(b"\x00\x01 binary", path="/v1/anything")).primary == "10.0.0.1:8000"


def test_vllm_generate_is_read_by_the_vllmhttp_parser():
    s = scheduler("plugins: [{type: vllmhttp-parser}, {type: openai-parser}]\n"
                  "requestHandler: {parsers: [{pluginRef: vllmhttp-parser}, {pluginRef: openai-parser}]}")
    r = s.schedule(Request({"model": "m", "token_ids": [1, 2, 3]}, path="/inference/v1/generate"))
    assert r.model == "m"
    with pytest.raises(BadRequestError, match="token_ids"):
        s.schedule(Request({"model": "m"}, path="/inference/v1/generate"))


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


GRPC_PARSERS = ("plugins: [{type: vllmgrpc-parser}, {type: vertexai-parser}]\n"
                "requestHandler: {parsers: [{pluginRef: vllmgrpc-parser}, {pluginRef: vertexai-parser}]}")
GENERATE = "/vllm.grpc.engine.VllmEngine/Generate"


def test_grpc_bodies_are_decoded_and_never_rewritten():
    s = scheduler(GRPC_PARSERS)
    # GenerateRequest: text (3) "hi", stream (5) true
    body = grpc_frame(b"\x1a\x02hi\x28\x01")
    r = s.schedule(Request(body, path=GENERATE, model_rewrite="lora-1"))
    assert r.primary == "10.0.0.1:8000"
    assert (r.model, r.target_model, r.body) == (None, None, None)
    chat = json.dumps(CHAT).encode()
    # ChatCompletionsRequest: endpoint (1), http_body (2) { data (2): the OpenAI JSON }
    http_body = b"\x12" + bytes([len(chat)]) + chat
    vertex = grpc_frame(b"\x0a\x01e\x12" + bytes([len(http_body)]) + http_body)
    r = s.schedule(Request(vertex, path="/google.cloud.aiplatform.v1beta1.PredictionService/ChatCompletions"))
    assert r.model == "m"


@pytest.mark.parametrize("body, names", [
    (b'{"model": "m"}', "invalid gRPC frame: compressed-flag byte is 123, not 0 or 1"),
    (b"\x00\x00", "invalid gRPC frame: expected a 5-byte header, got 2 bytes"),
    (grpc_frame(b"\x1a\x09hi"), "GenerateRequest is not valid protobuf"),
    (grpc_frame(b"\x0a\x02id"), "GenerateRequest has no input"),
    (b"\x01\x00\x00\x00\x00", "compressed gRPC messages are not supported"),
])
def test_a_grpc_body_that_does_not_decode_is_a_bad_request_naming_why(body, names):
    s = scheduler(GRPC_PARSERS)
    with pytest.raises(BadRequestError, match=re.escape(names)):
        s.schedule(Request(body, path=GENERATE))


def test_the_deprecated_top_level_parser_is_one_parser():
    cfg = load_config(text="plugins: [{type: anthropic-parser}]\nparser: {pluginRef: anthropic-parser}")
    assert cfg.parsers == ("anthropic-parser",)
    assert json.loads(cfg.router_json())["parsers"] == ["anthropic-parser"]


@pytest.mark.parametrize("text, names", [
    ("requestHandler: {parsers: [{pluginRef: openai-parser}]}", "requestHandler.parsers[0].pluginRef: 'openai-parser'"),
    ("plugins: [{type: openai-parser}]\nrequestHandler: {parsers: [{pluginRef: nope}]}", "'nope'"),
    ("plugins: [{type: openai-parser}]\nrequestHandler: {parsers: [{pluginRef: openai-parser, weight: 1}]}",
     "unknown field 'weight'"),
    ("plugins: [{type: openai-parser}]\nrequestHandler: {parsrs: []}", "unknown field 'parsrs'"),
    ("plugins: [{type: openai-parser, parameters: {strict: true}}]", "openai-parser takes no parameters"),
    ("plugins: [{type: vllmgrpc-parser, parameters: {x: 1}}]", "vllmgrpc-parser takes no parameters"),
    ("plugins: [{type: openai-parser}]\nparser: {pluginRef: openai-parser}\n"
     "requestHandler: {parsers: [{pluginRef: openai-parser}]}", "not both"),
])
def test_parser_errors_name_the_file_field_and_value(text, names):
    with pytest.raises(ConfigError, match=re.escape(names)) as e:
        load_config(text=text)
    assert str(e.value).startswith("--config-text: ")
