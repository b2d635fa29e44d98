"""A cluster-scoped EPP (multicluster-metrics-data-source + -extractor, multicluster scorers) in
front of two "clusters": a second real EPP process of ours (idle pool behind it) and a local
HTTP server publishing a busy pool's averages in the same exposition format. Over real ext_proc
gRPC, requests go to the cluster whose EPP reports the emptier pool."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from sluicegate.sim.config import SimConfig
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import scrape, total, wait_until, write_endpoints

from .extproc_client import exchange, header_set, request_body, request_headers
from .test_flowcontrol_extproc import InProcessEpp

CHAT = "/v1/chat/completions"
BODY = b'{"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "hi"}]}'
CONFIG = """
plugins:
- {type: multicluster-metrics-data-source, name: metrics-source, parameters: {scheme: http, interval: 20ms}}
- {type: multicluster-metrics-extractor, name: metrics-extractor}
- {type: multicluster-kv-cache-utilization-scorer, name: kv-cache}
- {type: multicluster-queue-scorer, name: queue}
- {type: max-score-picker}
dataLayer:
  injectDefaults: false
  sources:
  - pluginRef: metrics-source
    extractors: [{pluginRef: metrics-extractor}]
schedulingProfiles:
- name: default
  plugins: [{pluginRef: kv-cache}, {pluginRef: queue}, {pluginRef: max-score-picker}]
"""
BUSY = ("# TYPE llm_d_epp_average_kv_cache_utilization gauge\n"
        "llm_d_epp_average_kv_cache_utilization{name=\"busy\"} 0.85\n"
        "# TYPE llm_d_epp_average_queue_size gauge\n"
        "llm_d_epp_average_queue_size{name=\"busy\"} 4\n")


class _Busy(BaseHTTPRequestHandler):
    polls = 0  # GETs answered: the EPP applies one answer before it asks again

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).polls += 1
        body = BUSY.encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_requests_go_to_the_cluster_whose_epp_reports_the_emptier_pool(loop_thread, sims, tmp_path):
    (server,) = sims.start(SimConfig(name="sim-0", speedup=50))
    peer = EppProcess(write_endpoints(tmp_path / "peer.json", [server.address]),
                      "--refresh-metrics-interval", "0.02").start()
    busy = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    serving = threading.Thread(target=busy.serve_forever, daemon=True)
    serving.start()
    in_process = None
    try:
        # The peer publishes its pool's averages once it has scraped its model server.
        wait_until(lambda: "llm_d_epp_average_queue_size" in {k.split("{")[0] for k in scrape(peer.metrics_port)},
                   what="the peer EPP publishing its pool averages")
        assert total(scrape(peer.metrics_port), "llm_d_epp_average_kv_cache_utilization") < 0.85
        clusters = [{"name": "cluster-peer", "address": "127.0.0.1", "port": peer.metrics_port},
                    {"name": "cluster-busy", "address": "127.0.0.1", "port": busy.server_address[1]}]
        path = tmp_path / "clusters.yaml"
        path.write_text(yaml.safe_dump({"endpoints": clusters}))
        in_process = InProcessEpp(loop_thread, path, CONFIG)
        epp = in_process.epp
        peer_address = f"127.0.0.1:{peer.metrics_port}"
        # Until both clusters are read the two score alike and the picker draws; once the busy one
        # is read (its second poll means the first was applied), a pick of the peer can only come
        # from the peer's averages, and a poll that fails or lacks them keeps them.
        wait_until(lambda: _Busy.polls >= 2, what="the EPP reading the busy cluster's averages")
        deadline = time.monotonic() + 15
        while True:
            answers = exchange(epp.port, [request_headers(CHAT), request_body(BODY, True)])
            routed = header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"]
            if routed == peer_address:
                break
            assert time.monotonic() < deadline, f"routed to {routed}, never to the idle peer {peer_address}"
            time.sleep(0.05)  # poll interval of this bounded wait
        for _ in range(5):  # and it stays there: the published averages, not chance, decide
            answers = exchange(epp.port, [request_headers(CHAT), request_body(BODY, True)])
            assert header_set(answers[0].request_headers.response)["x-gateway-destination-endpoint"] == peer_address
    finally:
        if in_process is not None:
            in_process.stop()
        busy.shutdown()
        busy.server_close()
        serving.join(5)
        peer.stop()
