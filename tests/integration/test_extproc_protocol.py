"""The EPP speaks ext_proc exactly as Envoy expects: driven here by a real gRPC client sending
the messages Envoy sends, against the real EPP process and real simulated model servers."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import write_endpoints

from .extproc_client import (BUFFERED, exchange, gone_mid_body, header_set, request_body, request_headers,
                             request_trailers, response_body, response_headers, streamed_body)

CHAT = "/v1/chat/completions"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def chat_body(model: str = MODEL, content: str = "hello") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": content}]}).encode()


@pytest.fixture
def pool(sims, tmp_path):
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50) for i in range(3)))
    return [s.address for s in servers]


@pytest.fixture
def epp(pool, tmp_path):
    with EppProcess(write_endpoints(tmp_path / "endpoints.json", pool)) as proc:
        yield proc


def kinds(responses) -> list[str]:
    return [r.WhichOneof("response") for r in responses]


def test_full_duplex_request_is_routed_and_its_body_echoed_in_chunks(epp, pool):
    body = chat_body(content="x" * 150_000)
    out = exchange(epp.port, [request_headers(CHAT), request_body(body[:70_000], False),
                              request_body(body[70_000:], True)])
    assert kinds(out)[0] == "request_headers"
    common = out[0].request_headers.response
    headers = header_set(common)
    assert headers["x-gateway-destination-endpoint"] in pool
    assert headers["content-length"] == str(len(body))
    assert common.clear_route_cache
    md = out[0].dynamic_metadata.fields["envoy.lb"].struct_value.fields
    assert md["x-gateway-destination-endpoint"].string_value == headers["x-gateway-destination-endpoint"]
    echoed, eos = streamed_body(out)
    assert echoed == body and eos
    chunks = [r.request_body.response.body_mutation.streamed_response.body for r in out[1:]]
    assert max(len(c) for c in chunks) <= 62_000 and len(chunks) == 3


def test_header_only_request_is_routed_at_once(epp, pool):
    out = exchange(epp.port, [request_headers("/v1/models", end_of_stream=True, method="GET")])
    assert header_set(out[0].request_headers.response)["x-gateway-destination-endpoint"] in pool


def test_subset_hint_restricts_the_candidates(epp, pool):
    for _ in range(10):
        out = exchange(epp.port, [request_headers(CHAT, subset=[pool[1]]), request_body(chat_body(), True)])
        assert header_set(out[0].request_headers.response)["x-gateway-destination-endpoint"] == pool[1]


@pytest.mark.parametrize("subset", [[], ["10.9.9.9:8000"]])
def test_empty_or_unmatched_subset_is_503_with_a_reason(epp, subset):
    out = exchange(epp.port, [request_headers(CHAT, subset=subset), request_body(chat_body(), True)])
    assert kinds(out) == ["immediate_response"]
    imm = out[0].immediate_response
    assert imm.status.code == 503
    reasons = {h.header.key: h.header.raw_value for h in imm.headers.set_headers}
    assert reasons["x-llm-d-request-dropped-reason"] == b"rejected-no-endpoints"


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "JSON"),
        (b"[1, 2]", "object"),
        (json.dumps({"model": 7, "messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
        (json.dumps({"model": MODEL}).encode(), "messages"),
        (b"", "body"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
)
def test_bad_body_is_a_400_that_names_the_problem_and_the_epp_keeps_serving(epp, pool, body, words):
    out = exchange(epp.port, [request_headers(CHAT), request_body(body, True)])
    assert kinds(out) == ["immediate_response"]
    imm = out[0].immediate_response
    assert imm.status.code == 400
    message = json.loads(imm.body)["error"]["message"]
    assert words.lower() in message.lower(), message
    ok = exchange(epp.port, [request_headers(CHAT), request_body(chat_body(), True)])
    assert kinds(ok)[0] == "request_headers"


def test_model_rewrite_changes_the_body_and_is_undone_in_the_response(epp):
    rewrite = {"x-llm-d-model-name-rewrite": "lora-3"}
    resp_chunk = b'data: {"id":"1","model": "lora-3","choices":[]}\n\n'
    out = exchange(epp.port, [request_headers(CHAT, rewrite), request_body(chat_body(), True),
                              response_headers(), response_body(resp_chunk, True)])
    sent, _ = streamed_body(out)
    assert json.loads(sent)["model"] == "lora-3"
    assert header_set(out[0].request_headers.response)["content-length"] == str(len(sent))
    resp_headers = next(r for r in out if r.WhichOneof("response") == "response_headers")
    assert "content-length" in resp_headers.response_headers.response.header_mutation.remove_headers
    back, eos = streamed_body(out, "response_body")
    assert eos and b'"model":"' + MODEL.encode() + b'"' in back.replace(b'": "', b'":"')


def test_alias_rewrite_header_is_honoured(epp):
    out = exchange(epp.port, [request_headers(CHAT, {"x-gateway-model-name-rewrite": "lora-1"}),
                              request_body(chat_body(), True)])
    assert json.loads(streamed_body(out)[0])["model"] == "lora-1"


def test_buffered_mode_routes_on_the_body_answer_with_a_correct_length(epp, pool):
    out = exchange(epp.port, [request_headers(CHAT, {"x-llm-d-model-name-rewrite": "lora-2"}, mode=BUFFERED),
                              request_body(chat_body(), True)])
    assert kinds(out) == ["request_headers", "request_body"]
    common = out[1].request_body.response
    headers = header_set(common)
    assert headers["x-gateway-destination-endpoint"] in pool
    new_body = common.body_mutation.body
    assert json.loads(new_body)["model"] == "lora-2"
    assert headers["content-length"] == str(len(new_body))


def test_response_chunks_are_echoed_as_they_come(epp):
    chunks = [b"data: {\"a\":1}\n\n", b"data: [DONE]\n\n"]
    out = exchange(epp.port, [request_headers(CHAT), request_body(chat_body(), True), response_headers(),
                              response_body(chunks[0], False), response_body(chunks[1], True)])
    assert kinds(out)[-3:] == ["response_headers", "response_body", "response_body"]
    assert streamed_body(out, "response_body") == (b"".join(chunks), True)


def test_trailers_are_answered_after_the_body(epp):
    out = exchange(epp.port, [request_headers(CHAT), request_body(chat_body(), False), request_trailers()])
    assert kinds(out) == ["request_headers", "request_body", "request_trailers"]
    body, eos = streamed_body(out)
    assert json.loads(body)["model"] == MODEL and not eos


def test_skip_response_processing_closes_the_stream_after_routing(pool, tmp_path):
    path = write_endpoints(tmp_path / "endpoints.json", pool)
    with EppProcess(path, "--skip-response-processing") as epp:
        out = exchange(epp.port, [request_headers(CHAT), request_body(chat_body(), True),
                                  response_headers(), response_body(b"x", True)])
    assert kinds(out) == ["request_headers", "request_body"]


def test_a_client_that_goes_away_mid_body_leaves_the_epp_serving(epp):
    assert gone_mid_body(epp.port, CHAT).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    ok = exchange(epp.port, [request_headers(CHAT), request_body(chat_body(), True)])
    assert kinds(ok)[0] == "request_headers"


def _log_has(proc: EppProcess, *needles: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proc.log_path.read_text(errors="replace")
        if any(all(n in line for n in needles) for line in text.splitlines()):
            return True
        time.sleep(0.05)  # poll interval of this bounded wait
    return False


def test_an_error_answered_to_envoy_is_logged_at_default_verbosity_with_the_request_id(epp):
    out = exchange(epp.port, [request_headers(CHAT, {"x-request-id": "req-7f3a"}, subset=[]),
                              request_body(chat_body(), True)])
    assert out[0].immediate_response.status.code == 503
    assert _log_has(epp, "req-7f3a", "503", "subset hint is empty"), epp.log_tail()


def test_with_vv_each_routed_request_is_logged_with_its_request_id(pool, tmp_path):
    with EppProcess(write_endpoints(tmp_path / "endpoints.json", pool), "-vv") as proc:
        exchange(proc.port, [request_headers(CHAT, {"x-request-id": "req-routed-1"}), request_body(chat_body(), True)])
        assert _log_has(proc, "req-routed-1", "routed"), proc.log_tail()
