"""The EPP container's `args` from upstream's charts (tests/data/upstream_chart_args), verbatim,
in Kubernetes mode against a real API server: the gateway chart's InferencePool mode and the
standalone chart's endpoint-selector mode come up, answer the chart's probe (gRPC health
`inference-extension`) and route through the real Envoy to the pool's pods."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import http_request
from tests.integration.test_upstream_chart_args import CHART_ARGS, FREE_PORTS, MODEL, health
from tests.unit.cli.test_run_flags import chart_args

pytestmark = [pytest.mark.kube, pytest.mark.envoy]

# The chart's default-plugins.yaml scheduling part (the pool comes from the API server).
PLUGINS = (CHART_ARGS / "default-plugins.yaml").read_text().split("- type: file-discovery")[0]


@pytest.mark.parametrize("chart, tls", [("gateway.yaml", True), ("standalone.yaml", False)])
def test_chart_arguments_serve_a_pool_from_the_api_server(kube, control_plane, sims, tmp_path, monkeypatch, chart,
                                                         tls):
    sim = sims.start(SimConfig(name="sim-0", speedup=50))[0]
    port = sim.address.rsplit(":", 1)[1]
    kube.create_pool("qwen", {"app": "vllm"}, [int(port)])
    kube.ready_pod("vllm-0", {"app": "vllm"}, "127.0.0.1")
    config = tmp_path / "default-plugins.yaml"
    config.write_text(PLUGINS)
    # What a cluster fills in: the release namespace (also the NAMESPACE env the chart sets from
    # the pod's metadata), the mounted config, the model servers' port.
    monkeypatch.setenv("NAMESPACE", kube.ns)
    rendered = {"llm": kube.ns, "/config/default-plugins.yaml": str(config), "8000": port}
    args = [rendered.get(a, a) for a in chart_args(chart)]
    epp = EppProcess("-")
    epp.args = [sys.executable, "-m", "sluicegate", "run", *args, *FREE_PORTS, "--drain-timeout=0s",
                f"--kubeconfig={control_plane.apiserver.kubeconfig}"]
    epp.start()
    envoy = None
    try:
        assert health(epp.health_port, "inference-extension") == "SERVING"
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=tls, concurrency=1)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        status, _, text = http_request(envoy.url, "/v1/chat/completions", body)
        assert status == 200, text
        # --metrics-endpoint-auth is on unless the chart turns it off: no token, no metrics
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{epp.metrics_port}/metrics", timeout=5)
            code = 200
        except urllib.error.HTTPError as e:
            code = e.code
        assert code == 401
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        epp.stop()
