"""Envoy speaks TLS to the EPP by default (`--secure-serving`, a self-signed certificate, not
verified, as upstream): a request routed through the real Envoy over TLS, for each ext_proc
server."""

from __future__ import annotations

import json

import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import http_request, write_endpoints

pytestmark = pytest.mark.envoy

CHAT = {"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_a_request_is_routed_over_tls_to_the_epp(sims, tmp_path):
    fleet = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50) for i in range(2)))
    endpoints = write_endpoints(tmp_path / "endpoints.json", [s.address for s in fleet])
    with EppProcess(endpoints, "--secure-serving=true") as epp:
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=True, concurrency=1,
                            failure_mode_allow=False)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        try:
            status, headers, body = http_request(envoy.url, "/v1/chat/completions", CHAT)
        finally:
            envoy.stop_blocking()
    assert status == 200, body
    assert headers["x-sim-received-destination"] == headers["x-sim-endpoint-address"]
    assert json.loads(body)["choices"]
