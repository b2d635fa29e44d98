"""`sluicegate run` with a precise-prefix-cache-producer: the EPP subscribes to each simulator's
KV-event publisher (port from the endpoint's label) and routes, over real ext_proc gRPC, a prompt
to the simulator whose KV cache holds it — a cache warmed behind the EPP's back."""

from __future__ import annotations

import json
import time

import yaml

from sluicegate.scheduling.kv_events import PORT_LABEL
from sluicegate.sim.config import SimConfig
from tests.harness import http_request

from .extproc_client import exchange, header_set, request_body, request_headers
from .test_flowcontrol_extproc import InProcessEpp

CHAT = "/v1/chat/completions"
CONFIG = """
plugins:
- {type: precise-prefix-cache-producer, parameters: {blockSize: 16}}
- {type: prefix-cache-scorer}
- {type: max-score-picker}
schedulingProfiles: [{name: p, plugins: [{pluginRef: prefix-cache-scorer}, {pluginRef: max-score-picker}]}]
"""


def _body(text: str) -> bytes:
    return json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 2,
                       "messages": [{"role": "user", "content": text}]}).encode()


def test_the_epp_routes_to_the_simulator_whose_kv_events_report_the_prompt(loop_thread, sims, tmp_path):
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50.0, kv_events_endpoint="tcp://127.0.0.1:*")
                           for i in range(3)))
    endpoints = [{"name": s.name, "address": s.address.split(":")[0], "port": int(s.address.split(":")[1]),
                  "labels": {PORT_LABEL: s.kv_events_address.rsplit(":", 1)[1]}} for s in servers]
    path = tmp_path / "endpoints.yaml"
    path.write_text(yaml.safe_dump({"endpoints": endpoints}))
    in_process = InProcessEpp(loop_thread, path, CONFIG)
    epp = in_process.epp
    try:
        target = servers[1]
        stats = epp.router.kv_event_stats
        # ZMQ subscribers join asynchronously: publish until the EPP has taken in a batch.
        deadline = time.monotonic() + 20
        i = 0
        while stats()["batches"] == 0:
            assert time.monotonic() < deadline, "the EPP never received a KV-event batch"
            status, _, _ = http_request(f"http://{target.address}", CHAT, _body(f"warm-up {i} " * 30))
            assert status == 200
            i += 1
            time.sleep(0.02)  # pacing of the bounded warm-up loop
        prompt = _body("the one prompt the middle simulator holds " * 60)
        assert http_request(f"http://{target.address}", CHAT, prompt)[0] == 200
        deadline = time.monotonic() + 10
        while True:
            answers = exchange(epp.port, [request_headers(CHAT), request_body(prompt, True)])
            routed = header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"]
            if routed == target.address:
                break
            assert time.monotonic() < deadline, f"routed to {routed}, never to {target.address}"
            time.sleep(0.05)  # poll interval of this bounded wait
        for _ in range(5):  # and it stays there: the index, not chance, decides
            answers = exchange(epp.port, [request_headers(CHAT), request_body(prompt, True)])
            assert header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"] == target.address
    finally:
        in_process.stop()
