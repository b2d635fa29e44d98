"""End to end in Kubernetes mode: client → real Envoy → the EPP (`sluicegate run --pool-name`)
→ simulated model servers that the API server knows as Pods (IP 127.0.0.1, one port each through
`llm-d.ai/active-ports`, Ready set through the status subresource)."""

from __future__ import annotations

import json

import pytest

from sluicegate.sim.config import SimConfig
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from tests.harness import http_request
from tests.kube.epp import KubeEpp
from tests.kube.objects import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
APP = {"app": "sim"}


def chat(model: str, content: str = "hello") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4}


FLOW_CONTROL = ("--config-text", "featureGates: [flowControl]\n")


@pytest.fixture
def stack(kube, control_plane, sims, request):
    epp_args = getattr(request, "param", ())
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50, loras=("chat-v1",)) for i in range(3)))
    ports = [int(s.address.rsplit(":", 1)[1]) for s in servers]
    kube.create_pool("pool", APP, ports)
    for i, port in enumerate(ports):
        kube.ready_pod(f"sim-{i}", {**APP, "llm-d.ai/engine-type": "vllm"}, "127.0.0.1",
                       annotations={"llm-d.ai/active-ports": str(port)})
    epp = KubeEpp(control_plane.apiserver.kubeconfig, kube.ns, *epp_args).start()
    envoy = None
    try:
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        yield kube, envoy, servers
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        epp.stop()


def served_by(envoy, n: int, model: str) -> list[str]:
    out = []
    for i in range(n):
        status, headers, body = http_request(envoy.url, CHAT, chat(model, f"q{i}"))
        assert status == 200, body
        out.append(headers["x-sim-endpoint"])
    return out


def test_requests_reach_only_ready_pods_and_follow_pod_changes(stack):
    kube, envoy, servers = stack
    model = servers[0].config.model
    assert set(served_by(envoy, 15, model)) <= {"sim-0", "sim-1", "sim-2"}
    kube.set_pod_status("sim-0", "127.0.0.1", ready=False)
    kube.start_deleting_pod("sim-1")
    # The EPP sees the change by watch; once it has, every request lands on sim-2.
    wait_until(lambda: set(served_by(envoy, 6, model)) == {"sim-2"}, timeout=15, interval=0.1,
               what="only sim-2 left")
    assert set(served_by(envoy, 10, model)) == {"sim-2"}


@pytest.mark.parametrize("stack", [(), FLOW_CONTROL], ids=["direct", "flow-control"], indirect=True)
def test_model_rewrite_object_changes_the_model_sent_upstream(stack):
    kube, envoy, servers = stack
    kube.create_rewrite("alias", "pool", [{"matches": [{"model": {"type": "Exact", "value": "chat"}}],
                                           "targets": [{"modelRewrite": "chat-v1"}]}])

    def received() -> tuple[str, str] | None:
        status, headers, body = http_request(envoy.url, CHAT, chat("chat"))
        if status != 200 or "x-sim-received-model" not in headers:
            return None
        return headers["x-sim-received-model"], json.loads(body)["model"]

    upstream, answered = wait_until(received, timeout=15, interval=0.1, what="rewrite applied")
    assert (upstream, answered) == ("chat-v1", "chat")  # the client sees the model it asked for
