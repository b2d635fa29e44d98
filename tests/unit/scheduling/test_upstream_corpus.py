"""The corpus of configs we wrote in upstream's current shapes (tests/data/configs/upstream: the
charts' defaults, deploy/config examples, plugin READMEs, well-known and conformance configs):
each passes `sluicegate check-config`, and the scheduler it configures routes a request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluicegate.cli import main
from sluicegate.scheduling import Endpoint, Request, Scheduler
from sluicegate.scheduling.config import load_config

CORPUS = Path(__file__).parents[2] / "data" / "configs" / "upstream"
CONFIGS = sorted(p.name for p in CORPUS.glob("*.yaml"))
ROLES = ("encode", "prefill", "decode", "prefill-decode")
POOL = [Endpoint(f"{role}-0", f"10.0.0.{i + 1}:8000",
                 {"llm-d.ai/role": role, "accelerator": "h100", "zone": "a"})
        for i, role in enumerate(ROLES)]
ADDRESSES = {e.address for e in POOL}
DECODE = {"10.0.0.3:8000", "10.0.0.4:8000"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello " * 50}]}


def test_the_corpus_is_large_enough():
    assert len(CONFIGS) >= 40, CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
def test_config_passes_check_config(name, capsys):
    assert main(["check-config", str(CORPUS / name)]) == 0, capsys.readouterr().err


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def request_for(parsers: tuple[str, ...], headers: dict[str, str]) -> Request:
    """A chat request, or for a config that reads only gRPC the call its parser claims."""
    if parsers == ("vllmgrpc-parser",):
        # GenerateRequest { text (3): "hello" }
        return Request(grpc_frame(b"\x1a\x05hello"), path="/vllm.grpc.engine.VllmEngine/Generate", headers=headers)
    if parsers == ("vertexai-parser",):
        chat = json.dumps(CHAT).encode()
        http_body = b"\x12" + bytes([len(chat) & 0x7F | 0x80, len(chat) >> 7]) + chat  # data (2)
        message = b"\x12" + bytes([len(http_body) & 0x7F | 0x80, len(http_body) >> 7]) + http_body  # http_body (2)
        return Request(grpc_frame(message), path="/google.cloud.aiplatform.v1beta1.PredictionService/ChatCompletions",
                       headers=headers)
    return Request(CHAT, headers=headers)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_starts_and_routes_a_request(name):
    s = Scheduler(load_config(path=str(CORPUS / name)))
    s.set_endpoints(POOL)
    for e in POOL:
        s.update_metrics(e.address, "vllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0.1\n")
    # The conformance filter keeps only the endpoint the test names.
    headers = {"test-epp-endpoint-selection": "10.0.0.3:8000"}
    result = s.schedule(request_for(s.config.parsers, headers))
    picked = result.primary.rsplit(":", 1)[0] + ":8000"  # data-parallel names the primary port
    assert picked in ADDRESSES, (name, result)
    if any(p.filters and "decode-filter" in p.filters for p in s.config.profiles[-1:]):
        assert picked in DECODE, (name, result)


REFUSED = Path(__file__).parents[2] / "data" / "configs" / "upstream-refused"


@pytest.mark.parametrize("name", sorted(p.name for p in REFUSED.glob("*.yaml")))
def test_upstream_examples_needing_what_is_not_here_are_refused_by_name(name, capsys):
    path = REFUSED / name
    kind = path.read_text().splitlines()[0].removeprefix("# refused: ")
    assert main(["check-config", str(path)]) != 0
    err = capsys.readouterr().err
    assert str(path) in err and kind in err, err
