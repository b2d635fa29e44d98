"""The EPP started with the argument lists upstream's charts render (tests/data/upstream_chart_args)
comes up, answers the chart's probes (gRPC health `inference-extension` on the health port) and
routes through the real Envoy; `--health-checking` adds health on the ext_proc port; the log,
debug and stream-metric flags shape what the one (Rust) request path writes and counts."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import http_request, write_endpoints

pytestmark = pytest.mark.envoy

CHART_ARGS = Path(__file__).parents[1] / "data" / "upstream_chart_args"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# What a test changes in the chart's list (appended, so it wins): ports picked free, loopback.
FREE_PORTS = ["--grpc-host=127.0.0.1", "--grpc-port=0", "--grpc-health-port=0", "--metrics-port=0"]


def chart_epp(name: str, tmp_path: Path, sim_address: str, *overrides: str) -> EppProcess:
    """`sluicegate run` with the chart's `args` verbatim, its config file in a temporary folder."""
    endpoints = write_endpoints(tmp_path / "endpoints.json", [sim_address])
    config = tmp_path / "default-plugins.yaml"
    config.write_text((CHART_ARGS / "default-plugins.yaml").read_text().replace("ENDPOINTS_FILE", str(endpoints)))
    args = [str(config) if a == "/config/default-plugins.yaml" else a
            for a in yaml.safe_load((CHART_ARGS / name).read_text())["args"]]
    epp = EppProcess(endpoints)
    epp.args = [sys.executable, "-m", "sluicegate", "run", *args, *FREE_PORTS, "--drain-timeout=0s", *overrides]
    return epp.start()


def health(port: int, service: str) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def routes_through_envoy(epp: EppProcess, tls: bool) -> None:
    opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                        epp_health_port=epp.health_port, epp_tls=tls, concurrency=1)
    envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
    try:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        status, _, text = http_request(envoy.url, "/v1/chat/completions", body)
        assert status == 200, text
    finally:
        envoy.stop_blocking()


def test_the_gateway_charts_arguments_start_the_epp_and_it_routes_over_tls(sims, tmp_path):
    sim = sims.start(SimConfig(name="sim-0", speedup=50))[0]
    epp = chart_epp("gateway.yaml", tmp_path, sim.address)
    try:
        assert health(epp.health_port, "inference-extension") == "SERVING"  # the chart's probes
        routes_through_envoy(epp, tls=True)  # --secure-serving defaults to true, as upstream
        # --enable-pprof defaults to true: thread stacks on the metrics port
        with urllib.request.urlopen(f"http://127.0.0.1:{epp.metrics_port}/debug/pprof/goroutine", timeout=5) as r:
            assert "thread MainThread" in r.read().decode()
    finally:
        epp.stop()


def stream_families_once_closed(metrics_port: int) -> dict:
    """/metrics' families once no ext_proc stream is open (Envoy may close its stream just
    after the client has the response); bounded."""
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        if families["llm_d_epp_extproc_streams_inflight"].samples[0].value == 0 or time.monotonic() > deadline:
            return families
        time.sleep(0.05)  # poll interval of this bounded wait


def test_every_upstream_flag_at_once_and_health_on_the_ext_proc_port(sims, tmp_path):
    sim = sims.start(SimConfig(name="sim-0", speedup=50))[0]
    epp = chart_epp("every-flag.yaml", tmp_path, sim.address, "--secure-serving=false")
    try:
        # --health-checking=true: the ext_proc port answers health too
        assert health(epp.port, "envoy.service.ext_proc.v3.ExternalProcessor") == "SERVING"
        assert health(epp.health_port, "inference-extension") == "SERVING"
        routes_through_envoy(epp, tls=False)
        # --enable-grpc-stream-metrics=true: Envoy's one stream, counted once by the Rust server.
        # Envoy resets the stream when its filter is done (Canceled, as upstream's handler sees
        # its context cancelled) or half-closes it (OK).
        families = stream_families_once_closed(epp.metrics_port)
        ended = {s.labels["code"]: s.value for s in families["llm_d_epp_extproc_streams"].samples
                 if s.name.endswith("_total")}
        assert sum(ended.values()) == 1 and set(ended) <= {"OK", "Canceled"}
        assert families["llm_d_epp_extproc_streams_inflight"].samples[0].value == 0
        durations = {s.name: s.value for s in families["llm_d_epp_extproc_stream_duration_seconds"].samples
                     if s.name.endswith("_count")}
        assert durations == {"llm_d_epp_extproc_stream_duration_seconds_count": 1}
    finally:
        epp.stop()
    # --zap-encoder json, --zap-time-encoding=rfc3339, --zap-log-level=debug: every line of the
    # process (Python's and the Rust server's) is one JSON object stamped to the second, and the
    # Rust path's per-request `routed` line is there with Envoy's request id
    lines = [json.loads(line) for line in epp.log_path.read_text().splitlines()]
    assert lines and all(line["ts"].endswith("Z") and "." not in line["ts"] for line in lines)
    routed = [line for line in lines if line["msg"] == "routed"]
    assert len(routed) == 1 and routed[0]["level"] == "debug" and routed[0]["request_id"]
    assert routed[0]["endpoints"] == sim.address
    assert not any("not honoured" in line["msg"] for line in lines)
