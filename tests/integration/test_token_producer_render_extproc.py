"""token-producer through the model server's render API (`vllm.url`), over real ext_proc gRPC:
the render call of one request runs before its scheduling cycle and off the ext_proc threads,
so a slow render answer holds up that request only; a render endpoint that is gone leaves
requests routed without a prefix match, counted on /metrics."""

from __future__ import annotations

import json
import threading

import pytest
import yaml

from sluicegate.scheduling import Router
from sluicegate.sim.config import SimConfig
from sluicegate.sim.toy_tokenizers import byte_level_chatml
from tests.harness import free_port, wait_until

from .extproc_client import exchange, header_set, request_body, request_headers
from .test_flowcontrol_extproc import InProcessEpp
from .test_precise_prefix_epp import CHAT, _body

DESTINATION = "x-gateway-destination-endpoint"
HOLD = b"hold this prompt at the render endpoint"


def _config(render: str, flow_control: bool = False) -> str:
    gate = ("featureGates: [flowControl]\nflowControl: {saturationDetector: {pluginRef: concurrency-detector}}\n"
            if flow_control else "")
    detector = "- {type: concurrency-detector, parameters: {maxConcurrency: 100}}\n" if flow_control else ""
    return f"""{gate}
plugins:
{detector}
- {{type: token-producer, parameters: {{modelName: "meta-llama/Llama-3.1-8B-Instruct", vllm: {{url: "http://{render}"}}}}}}
- {{type: precise-prefix-cache-producer, parameters: {{
    tokenProcessorConfig: {{blockSize: 16}}, kvEventsConfig: {{zmqEndpoint: "tcp://127.0.0.1:{free_port()}"}}}}}}
- {{type: prefix-cache-scorer}}
- {{type: max-score-picker}}
schedulingProfiles: [{{name: p, plugins: [{{pluginRef: prefix-cache-scorer}}, {{pluginRef: max-score-picker}}]}}]
"""


def _epp(loop_thread, sims, tmp_path, render: str | None, holding_proxy=None, flow_control: bool = False):
    tokenizer = byte_level_chatml(tmp_path / "tok")
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50.0, tokenizer=str(tokenizer)) for i in range(2)))
    path = tmp_path / "endpoints.yaml"
    path.write_text(yaml.safe_dump({"endpoints": [
        {"name": s.name, "address": s.address.split(":")[0], "port": int(s.address.split(":")[1])}
        for s in servers]}))
    proxy = holding_proxy(servers[0].address, HOLD) if holding_proxy else None
    return InProcessEpp(loop_thread, path, _config(render or proxy.address, flow_control)), servers, proxy


def _routed(port: int, text: str, timeout: float = 10.0) -> str:
    answers = exchange(port, [request_headers(CHAT), request_body(_body(text), True)], timeout=timeout)
    return header_set(answers[0].request_headers.response)[DESTINATION]


@pytest.mark.parametrize("flow_control", [False, True])
def test_a_held_render_call_does_not_hold_up_other_requests(loop_thread, sims, tmp_path, holding_proxy,
                                                            flow_control):
    in_process, servers, proxy = _epp(loop_thread, sims, tmp_path, None, holding_proxy, flow_control)
    epp = in_process.epp
    assert (epp.flow is not None) == flow_control
    addresses = {s.address for s in servers}
    held: list[str] = []
    try:
        # One request's render call waits at the render endpoint until the test lets it go.
        first = threading.Thread(target=lambda: held.append(_routed(epp.port, HOLD.decode() * 20, timeout=30)))
        first.start()
        wait_until(lambda: proxy.held == 1, timeout=10, what="the render call of the first request is held")
        # Meanwhile other requests are tokenized and routed (the ext_proc server has one thread).
        for i in range(5):
            assert _routed(epp.port, f"another prompt {i} " * 40, timeout=5) in addresses
        assert proxy.held == 1 and not held
        proxy.release()
        first.join(30)
        assert not first.is_alive() and held[0] in addresses
        stats = epp.router.kv_event_stats()
        assert stats["tokenize_failures"] == 0 and stats["lookups"] == 6
    finally:
        in_process.stop()


def test_a_render_endpoint_that_is_gone_leaves_requests_routed_and_counted(loop_thread, sims, tmp_path):
    in_process, servers, _ = _epp(loop_thread, sims, tmp_path, f"127.0.0.1:{free_port()}")
    epp = in_process.epp
    try:
        for i in range(3):
            assert _routed(epp.port, f"a prompt nobody can render {i} " * 30) in {s.address for s in servers}
        assert epp.router.kv_event_stats()["tokenize_failures"] == 3
    finally:
        in_process.stop()


def _router(config: str, servers) -> Router:
    router = Router(json.dumps(yaml.safe_load(config)))
    router.set_endpoints([(s.name, s.address, {}) for s in servers])
    return router


def test_the_python_router_tokenizes_before_the_cycle_in_the_ext_proc_order(sims, tmp_path):
    """Router.tokenize makes the render call, route(tokens=) keys the request by its ids without
    a second call; a render endpoint that is gone leaves an error the route counts, and routes."""
    tokenizer = byte_level_chatml(tmp_path / "tok")
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50.0, tokenizer=str(tokenizer)) for i in range(2)))
    router = _router(_config(servers[0].address), servers)
    body = _body("a prompt tokenized before its cycle " * 20)
    tokens = router.tokenize(CHAT, body)
    assert tokens is not None and tokens.error is None and len(tokens) > 100
    assert router.route(CHAT, body, tokens=tokens).primary in {s.address for s in servers}
    stats = router.kv_event_stats()
    assert stats["lookups"] == 1 and stats["lookup_blocks"] == len(tokens) // 16
    assert stats["tokenize_failures"] == 0

    gone = _router(_config(f"127.0.0.1:{free_port()}"), servers)
    failed = gone.tokenize(CHAT, body)
    assert failed is not None and failed.error and len(failed) == 0
    assert gone.route(CHAT, body, tokens=failed).primary in {s.address for s in servers}
    assert gone.kv_event_stats()["tokenize_failures"] == 1


def test_the_python_router_tokenizes_in_the_cycle_when_the_tokenizer_is_local(tmp_path):
    tokenizer = byte_level_chatml(tmp_path / "tok")
    config = _config("unused:1").replace(
        'modelName: "meta-llama/Llama-3.1-8B-Instruct", vllm: {url: "http://unused:1"}',
        f'local: {{path: "{tokenizer}"}}')
    assert "local" in config
    assert Router(json.dumps(yaml.safe_load(config))).tokenize(CHAT, _body("in-process")) is None
