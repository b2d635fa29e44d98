"""Flow control end to end: client → real Envoy → the EPP process (flowControl gate on) →
simulated vLLM. The pool is saturated by the simulator's own pace, or empty until the
endpoints file names a server."""

from __future__ import annotations

import json
import threading
import time

import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import HoldingProxy, http_request, scrape, total, wait_until, write_endpoints

pytestmark = pytest.mark.envoy

CHAT = "/v1/chat/completions"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CONFIG = """
featureGates: [flowControl]
plugins:
- type: concurrency-detector
  parameters: {maxConcurrency: 1}
flowControl:
  defaultRequestTTL: 60s
  saturationDetector: {pluginRef: concurrency-detector}
objectives:
- {name: premium, priority: 10}
- {name: batch, priority: -5}
"""


def chat(max_tokens: int) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens}


@pytest.fixture
def stack(sims, tmp_path):
    """(start(addresses) → (Envoy URL, EPP process), endpoints file); everything started is stopped."""
    yield from _stack(tmp_path, CONFIG)


def _stack(tmp_path, config_text: str):
    procs: list = []
    endpoints = tmp_path / "endpoints.json"
    config = tmp_path / "epp.yaml"
    config.write_text(config_text)

    def start(addresses: list[str]) -> tuple[str, EppProcess]:
        epp = EppProcess(write_endpoints(endpoints, addresses), "--config-file", str(config)).start()
        procs.append(epp)
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        procs.append(envoy)
        return envoy.url, epp

    yield start, endpoints
    for p in reversed(procs):
        p.stop_blocking() if isinstance(p, EnvoyProcess) else p.stop()


def test_a_saturated_pool_serves_the_waiting_high_priority_requests_first(stack, sims, holding_proxy):
    # One place (maxConcurrency 1), taken by a holder the proxy in front of the server keeps until
    # every other request waits in the EPP; then they go, as the place frees, premium before
    # batch, each in arrival order.
    (server,) = sims.start(SimConfig(name="sim-0", speedup=10))
    proxy = holding_proxy(server.address)
    start, _ = stack
    url, epp = start([proxy.address])
    done: list[tuple[str, int]] = []
    lock = threading.Lock()

    def send(name: str, objective: str | None, hold: bool = False) -> None:
        headers = {"x-llm-d-inference-objective": objective} if objective else {}
        if hold:
            headers[HoldingProxy.HEADER] = "1"
        status, _, body = http_request(url, CHAT, chat(8), headers, timeout=60)
        with lock:
            done.append((name, status))

    threads = [threading.Thread(target=send, args=("holder", None, True))]
    threads += [threading.Thread(target=send, args=(f"batch-{i}", "batch")) for i in range(3)]
    threads += [threading.Thread(target=send, args=(f"premium-{i}", "premium")) for i in range(3)]
    threads[0].start()
    wait_until(lambda: proxy.held == 1, what="the holder at the server")
    for i, t in enumerate(threads[1:]):  # arrival order is the order sent: each waits before the next
        t.start()
        wait_until(lambda: total(scrape(epp.metrics_port), "llm_d_epp_flow_control_queue_size") == i + 1,
                   what=f"request {i + 1} queued in the EPP")
    proxy.release()
    for t in threads:
        t.join(60)
    assert all(status == 200 for _, status in done), done
    assert [name for name, _ in done] == ["holder", "premium-0", "premium-1", "premium-2",
                                          "batch-0", "batch-1", "batch-2"]


def test_an_empty_pool_holds_the_request_until_the_endpoints_file_names_a_server(stack, sims, tmp_path):
    (server,) = sims.start(SimConfig(name="sim-0", speedup=50))
    start, endpoints = stack
    url, epp = start([])
    result: list = []
    t = threading.Thread(target=lambda: result.append(http_request(url, CHAT, chat(4), timeout=30)))
    t.start()
    wait_until(lambda: total(scrape(epp.metrics_port), "llm_d_epp_flow_control_queue_size") == 1,
               what="the request waiting in the EPP")
    assert not result, "answered while the pool was empty"
    write_endpoints(endpoints, [server.address])
    t.join(30)
    status, headers, body = result[0]
    assert status == 200, body
    assert headers["x-sim-endpoint"] == "sim-0"


def _answered_lines(epp: EppProcess, timeout: float = 5.0) -> list[dict]:
    """The EPP's log lines for requests it answered itself (JSON, its default format)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [json.loads(line) for line in epp.log_path.read_text(errors="replace").splitlines()
                 if line.startswith("{")]
        found = [line for line in lines if line.get("msg") == "request answered by the endpoint picker"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # poll interval of this bounded wait


@pytest.fixture
def short_ttl_stack(tmp_path):
    yield from _stack(tmp_path, CONFIG.replace("defaultRequestTTL: 60s", "defaultRequestTTL: 1s"))


def test_a_request_the_epp_rejects_through_envoy_is_logged_at_default_verbosity_with_id_and_reason(
        short_ttl_stack):
    # Empty pool, 1 s TTL: the request waits, then the EPP answers 503 rejected-no-endpoints
    # itself. The EPP runs at its default verbosity (warnings); that answer is one line naming
    # the request by the id Envoy gave it, with the status and the reason.
    start, _ = short_ttl_stack
    url, epp = start([])
    status, headers, body = http_request(url, CHAT, chat(4), {"x-request-id": "req-ttl-503"}, timeout=30)
    assert status == 503, body
    assert headers["x-llm-d-request-dropped-reason"] == "rejected-no-endpoints"
    lines = _answered_lines(epp)
    assert [(line["level"], line["request_id"], line["status"], line["reason"]) for line in lines] == [
        ("warn", "req-ttl-503", 503, "rejected-no-endpoints")], epp.log_tail()
