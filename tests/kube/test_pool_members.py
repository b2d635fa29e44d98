"""Non-Pod pool members on a real kube-apiserver, through the real Envoy and the EPP process:
a pool whose selector matches a Service's EndpointSlices routes to their ready addresses; an
ExternalName Service is resolved by DNS (a server of ours); the pool's models form an allow-list."""

from __future__ import annotations

import json
import socket

import pytest
from kubernetes import client

from sluicegate.sim.config import DEFAULT_MODEL, SimConfig
from sluicegate.sim.server import SimServer
from sluicegate.standalone import EnvoyOptions, EnvoyProcess, find_free_port
from tests.dns_server import DnsServer
from tests.harness import http_request
from tests.kube.epp import KubeEpp
from tests.kube.objects import wait_until

pytestmark = [pytest.mark.kube, pytest.mark.envoy]

CHAT = "/v1/chat/completions"
SVC = {"app": "models-svc"}


def chat(model: str, i: int = 0) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}


def host_ip() -> str:
    """This machine's IPv4 address off loopback: the API server refuses loopback in EndpointSlices."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.254", 9))  # no packet is sent; this only picks the outgoing address
            ip = s.getsockname()[0]
        except OSError:
            ip = ""
    if not ip or ip.startswith("127."):
        pytest.skip("no non-loopback IPv4 address on this machine")
    return ip


def endpoint_slice(name: str, ip: str, ports: list[int], ready: bool | None) -> dict:
    """What the EndpointSlice controller writes for a Service (its labels, its service-name)."""
    ep: dict = {"addresses": [ip]}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {**SVC, "kubernetes.io/service-name": "models"}},
            "addressType": "IPv4", "ports": [{"name": f"p{p}", "port": p, "protocol": "TCP"} for p in ports],
            "endpoints": [ep]}


class Stack:
    """Sims at the given ip:port addresses, a pool selecting SVC on their ports, the EPP, Envoy."""

    def __init__(self, loop_thread, kube, control_plane, addresses: list[tuple[str, int]], *epp_args: str) -> None:
        self.loop_thread, self.kube = loop_thread, kube
        self.sims = {}
        for ip, port in addresses:
            self.sims[(ip, port)] = SimServer(SimConfig(name=f"sim-{ip}:{port}", speedup=50))
            loop_thread.run(self.sims[(ip, port)].start(ip, port))
        kube.create_pool("pool", SVC, sorted({port for _, port in addresses}))
        self.discovery = client.DiscoveryV1Api(kube.api)
        self.epp = KubeEpp(control_plane.apiserver.kubeconfig, kube.ns, *epp_args).start()
        self.envoy = None
        try:
            opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=self.epp.port,
                                epp_health_port=self.epp.health_port, epp_tls=False, concurrency=1)
            self.envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        except BaseException:
            self.stop()
            raise

    def post(self, model: str, i: int = 0):
        return http_request(self.envoy.url, CHAT, chat(model, i))

    def served(self, n: int, model: str = DEFAULT_MODEL) -> set[str]:
        """Who served n requests; a failed one shows as `status-<code>` (before the EPP saw a change)."""
        out = set()
        for i in range(n):
            status, headers, _ = self.post(model, i)
            out.add(headers["x-sim-endpoint"].removeprefix("sim-") if status == 200 else f"status-{status}")
        return out

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop_blocking()
        self.epp.stop()
        for sim in self.sims.values():
            self.loop_thread.run(sim.stop())


@pytest.fixture
def make_stack(loop_thread, kube, control_plane):
    made: list[Stack] = []

    def make(addresses: list[tuple[str, int]], *epp_args: str) -> Stack:
        made.append(Stack(loop_thread, kube, control_plane, addresses, *epp_args))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_a_pool_selecting_a_services_endpointslices_routes_to_its_ready_addresses(make_stack, kube):
    ip = host_ip()
    p1, p2, p3 = (find_free_port() for _ in range(3))
    stack = make_stack([(ip, p1), (ip, p2), (ip, p3)])
    # One slice with ready unset (the API's "ready") on two ports, one not ready on the third.
    stack.discovery.create_namespaced_endpoint_slice(kube.ns, endpoint_slice("models-a", ip, [p1, p2], None))
    not_ready = endpoint_slice("models-b", ip, [p3], False)
    stack.discovery.create_namespaced_endpoint_slice(kube.ns, not_ready)
    wait_until(lambda: stack.served(12) == {f"{ip}:{p1}", f"{ip}:{p2}"}, timeout=20, interval=0.1,
               what="the ready slice's addresses served")
    not_ready["endpoints"][0]["conditions"]["ready"] = True
    stack.discovery.replace_namespaced_endpoint_slice("models-b", kube.ns, not_ready)
    stack.discovery.replace_namespaced_endpoint_slice("models-a", kube.ns, endpoint_slice("models-a", ip, [p1, p2], False))
    wait_until(lambda: stack.served(12) == {f"{ip}:{p3}"}, timeout=20, interval=0.1,
               what="slice readiness changes followed")


@pytest.fixture
def dns():
    with DnsServer() as server:
        yield server


def test_an_externalname_service_is_resolved_by_dns_and_routed_to(dns, make_stack, kube):
    dns.set("models.example.test", ["127.0.0.2", "127.0.0.3"], ttl=1)
    port = find_free_port()
    stack = make_stack([("127.0.0.2", port), ("127.0.0.3", port)], "--dns-server", dns.address,
                       "--dns-refresh-interval", "0.5")
    kube.core.create_namespaced_service(kube.ns, {
        "metadata": {"name": "external-models", "labels": SVC},
        "spec": {"type": "ExternalName", "externalName": "models.example.test"}})
    wait_until(lambda: stack.served(12) == {f"127.0.0.2:{port}", f"127.0.0.3:{port}"}, timeout=20, interval=0.1,
               what="both addresses of the ExternalName served")
    dns.set("models.example.test", ["127.0.0.3"], ttl=1)
    wait_until(lambda: stack.served(12) == {f"127.0.0.3:{port}"}, timeout=20, interval=0.1,
               what="DNS change followed")


def test_the_pools_served_models_are_an_allow_list(make_stack, kube):
    ip, port = host_ip(), find_free_port()
    stack = make_stack([(ip, port)], "--model-allow-list", DEFAULT_MODEL)
    stack.discovery.create_namespaced_endpoint_slice(kube.ns, endpoint_slice("models-a", ip, [port], True))
    wait_until(lambda: stack.post(DEFAULT_MODEL)[0] == 200, timeout=20, interval=0.1, what="listed model served")
    status, headers, body = stack.post("other")
    assert status == 404, body
    message = json.loads(body)["error"]["message"]
    assert "'other'" in message and "'pool'" in message
    # An InferenceModelRewrite bound to the pool adds the models it matches and targets.
    kube.create_rewrite("alias", "pool", [{"matches": [{"model": {"type": "Exact", "value": "other"}}],
                                           "targets": [{"modelRewrite": DEFAULT_MODEL}]}])
    wait_until(lambda: stack.post("other")[0] == 200, timeout=20, interval=0.1, what="rewrite-bound model served")
