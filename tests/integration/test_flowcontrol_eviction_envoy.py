"""In-flight eviction end to end (flowControl.enableEviction): client → real Envoy → the EPP
process → a holding proxy → simulated vLLM. A running sheddable request is revoked for a
higher-priority one waiting on the saturated pool: its client gets 429 with
`x-llm-d-request-dropped-reason: evicted` and the waiting request runs."""

from __future__ import annotations

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
- type: sheddable-eviction-filter
- type: priority-then-time-eviction-order-policy
flowControl:
  enableEviction: true
  defaultRequestTTL: 60s
  saturationDetector: {pluginRef: concurrency-detector}
objectives:
- {name: premium, priority: 10}
- {name: batch, priority: -5}
"""


def chat(max_tokens: int) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens}


@pytest.fixture
def stack(sims, tmp_path, holding_proxy):
    """→ (Envoy URL, EPP process, holding proxy in front of one simulator); all stopped after."""
    procs: list = []
    (server,) = sims.start(SimConfig(name="sim-0", speedup=10))
    proxy = holding_proxy(server.address)
    config = tmp_path / "epp.yaml"
    config.write_text(CONFIG)
    epp = EppProcess(write_endpoints(tmp_path / "endpoints.json", [proxy.address]),
                     "--config-file", str(config)).start()
    procs.append(epp)
    opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                        epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
    envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
    procs.append(envoy)
    yield envoy.url, epp, proxy
    proxy.release()
    for p in reversed(procs):
        p.stop_blocking() if isinstance(p, EnvoyProcess) else p.stop()


def send(url: str, objective: str | None, results: dict, name: str, hold: bool = False) -> threading.Thread:
    headers = {"x-llm-d-inference-objective": objective} if objective else {}
    if hold:
        headers[HoldingProxy.HEADER] = "1"

    def go() -> None:
        results[name] = http_request(url, CHAT, chat(8), headers, timeout=60)

    t = threading.Thread(target=go)
    t.start()
    return t


def test_a_running_sheddable_request_is_evicted_for_a_waiting_higher_priority_one(stack):
    url, epp, proxy = stack
    results: dict = {}
    batch = send(url, "batch", results, "batch", hold=True)
    wait_until(lambda: proxy.held == 1, what="the sheddable request running at the server")
    premium = send(url, "premium", results, "premium")
    batch.join(30)
    premium.join(30)
    status, headers, body = results["batch"]
    assert status == 429, body
    assert headers["x-llm-d-request-dropped-reason"] == "evicted"
    assert b"request evicted by flow control" in body
    status, headers, body = results["premium"]
    assert status == 200, body
    assert headers["x-sim-endpoint"] == "sim-0"
    m = wait_until(lambda: (lambda m: m if total(m, "llm_d_epp_flow_control_revocations_total",
                                                 outcome="confirmed") == 1 else None)(scrape(epp.metrics_port)),
                   what="the revocation confirmed")
    assert total(m, "llm_d_epp_flow_control_revocations_issued_total", priority="10") == 1
    assert total(m, "llm_d_epp_flow_control_revocations_issued_total") == 1
    assert total(m, "llm_d_epp_flow_control_revocations_total", outcome="timed_out") == 0
    assert total(m, "llm_d_epp_flow_control_revocation_confirmation_seconds_count") == 1
    assert total(m, "llm_d_epp_request_error_total", error_code="ResourceExhausted") == 1


def test_a_running_request_that_is_not_sheddable_is_never_evicted(stack):
    url, epp, proxy = stack
    results: dict = {}
    holder = send(url, None, results, "holder", hold=True)  # priority 0
    wait_until(lambda: proxy.held == 1, what="the priority-0 request running at the server")
    premium = send(url, "premium", results, "premium")
    wait_until(lambda: total(scrape(epp.metrics_port), "llm_d_epp_flow_control_queue_size") == 1,
               what="the premium request waiting in the EPP")
    time.sleep(0.3)  # room for a (wrong) revocation decision before the holder is let go
    assert "holder" not in results, results.get("holder")
    proxy.release()
    holder.join(30)
    premium.join(30)
    assert results["holder"][0] == 200, results["holder"]
    assert results["premium"][0] == 200, results["premium"]
    assert total(scrape(epp.metrics_port), "llm_d_epp_flow_control_revocations_issued_total") == 0
