"""Load for the optimizer from the EPP's own accounting: requests through the real Envoy and
the EPP process to simulators, then EppLoadSource reads the EPP's /metrics and reports the
arrival rate and mean prompt/output tokens the traffic had."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from sluicegate.optimizer.observe import EppLoadSource
from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import http_request, write_endpoints

pytestmark = pytest.mark.envoy

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
N = 20
MAX_TOKENS = 12


def test_epp_metrics_give_rate_and_token_means(sims, tmp_path) -> None:
    fleet = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50) for i in range(2)))
    endpoints = write_endpoints(tmp_path / "endpoints.json", [s.address for s in fleet])
    epp = EppProcess(endpoints).start()
    envoy = None
    try:
        envoy = EnvoyProcess(EnvoyOptions(
            listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
            epp_health_port=epp.health_port, epp_tls=False, concurrency=1),
            wait_epp_healthy=True).start_blocking()
        source = EppLoadSource([f"http://127.0.0.1:{epp.metrics_port}/metrics"], window_s=600)
        before = time.monotonic()
        asyncio.run(source.sample(before))
        prompt_tokens = []
        for i in range(N):
            body = {"model": MODEL, "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": "word " * (20 + 10 * (i % 4))}]}
            status, _, text = http_request(envoy.url, "/v1/chat/completions", body)
            assert status == 200, text
            prompt_tokens.append(json.loads(text)["usage"]["prompt_tokens"])
        after = time.monotonic()
        asyncio.run(source.sample(after))
        (load,) = [x for x in source.loads() if x.model == MODEL]
        assert load.arrival_rps * (after - before) == pytest.approx(N)
        assert load.input_tokens == pytest.approx(sum(prompt_tokens) / N)
        assert load.output_tokens == MAX_TOKENS
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        epp.stop()
