"""Hostname endpoints through the real Envoy and an EPP process pointed at a DNS server of ours:
every address of every hostname gets traffic, DNS changes move traffic while requests flow, and a
hostname that stops resolving leaves the pool (after its TTL) and comes back."""

from __future__ import annotations

import re
import time

import pytest

from sluicegate.sim.config import DEFAULT_MODEL, SimConfig
from sluicegate.sim.server import SimServer
from sluicegate.standalone import EnvoyOptions, EnvoyProcess, find_free_port
from sluicegate.standalone.epp_process import EppProcess
from tests.dns_server import DnsServer
from tests.harness import http_request

pytestmark = pytest.mark.envoy

CHAT = "/v1/chat/completions"
REFRESH_S = 0.5


class DnsStack:
    """Sims on 127.0.0.x (one shared port), a DNS server, an EPP resolving through it, Envoy."""

    def __init__(self, loop_thread, tmp_path, dns: DnsServer, hosts: dict[str, list[str]], spare: list[str]) -> None:
        self.loop_thread = loop_thread
        self.port = find_free_port()
        self.sims: dict[str, SimServer] = {}
        for ip in sorted({ip for ips in hosts.values() for ip in ips} | set(spare)):
            sim = SimServer(SimConfig(name=f"sim-{ip}", speedup=50))
            loop_thread.run(sim.start(ip, self.port))
            self.sims[ip] = sim
        for name, ips in hosts.items():
            dns.set(name, ips, ttl=1)
        endpoints = tmp_path / "endpoints.yaml"
        # Upstream's shape: the port as a string.
        endpoints.write_text("endpoints:\n" + "".join(
            f'- {{name: {name.split(".")[0]}, address: {name}, port: "{self.port}"}}\n' for name in hosts))
        self.epp = EppProcess(endpoints, "--ext-proc-impl", "rust", "--dns-server", dns.address,
                              "--dns-refresh-interval", str(REFRESH_S)).start()
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=self.epp.port,
                            epp_health_port=self.epp.health_port, epp_tls=False, concurrency=1)
        self.envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()

    def post(self, i: int) -> tuple[int, str]:
        body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}
        status, headers, raw = http_request(self.envoy.url, CHAT, body)
        assert status == 200, raw
        return status, headers["x-sim-endpoint"].removeprefix("sim-")

    def served_until(self, predicate, limit: int = 400) -> list[str]:
        """Send requests (all must succeed) until predicate(served so far) holds; bounded."""
        served: list[str] = []
        for i in range(limit):
            served.append(self.post(i)[1])
            if predicate(served):
                return served
            time.sleep(0.02)  # pacing: requests until the predicate holds (bounded)
        raise AssertionError(f"not reached after {limit} requests; served: {sorted(set(served))}")

    def metrics(self) -> str:
        return http_request(f"http://127.0.0.1:{self.epp.metrics_port}", "/metrics")[2].decode()

    def endpoints(self) -> set[str]:
        """The pool as the EPP sees it now (its per-endpoint metric family)."""
        return set(re.findall(r'sluicegate_endpoint_in_flight_requests\{[^}]*model_server_endpoint="([^"]+)"',
                              self.metrics()))

    def wait_endpoints(self, expected: set[str], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.endpoints() != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"EPP endpoints {sorted(self.endpoints())}, expected {sorted(expected)}")
            time.sleep(0.05)  # poll interval of this bounded wait

    def stop(self) -> None:
        self.envoy.stop_blocking()
        self.epp.stop()
        for sim in self.sims.values():
            self.loop_thread.run(sim.stop())


@pytest.fixture
def dns():
    with DnsServer() as server:
        yield server


@pytest.fixture
def make_stack(loop_thread, tmp_path, dns):
    made: list[DnsStack] = []

    def make(hosts: dict[str, list[str]], spare: list[str] = ()) -> DnsStack:
        made.append(DnsStack(loop_thread, tmp_path, dns, hosts, list(spare)))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_two_hostnames_one_with_two_addresses_route_to_all_three(make_stack):
    stack = make_stack({"two.test": ["127.0.0.2", "127.0.0.3"], "one.test": ["127.0.0.4"]})
    served = stack.served_until(lambda s: set(s) == {"127.0.0.2", "127.0.0.3", "127.0.0.4"})
    assert set(served) <= {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    text = stack.metrics()
    assert 'sluicegate_dns_hostname_addresses{hostname="two.test"} 2.0' in text
    assert 'sluicegate_dns_hostname_addresses{hostname="one.test"} 1.0' in text


def test_a_changed_dns_answer_moves_traffic_without_errors(make_stack, dns):
    stack = make_stack({"two.test": ["127.0.0.2", "127.0.0.3"], "one.test": ["127.0.0.4"]}, spare=["127.0.0.5"])
    stack.served_until(lambda s: {"127.0.0.2", "127.0.0.3"} <= set(s))
    dns.set("two.test", ["127.0.0.5"], ttl=1)
    changed = time.monotonic()
    stack.wait_endpoints({f"127.0.0.4:{stack.port}", f"127.0.0.5:{stack.port}"})
    swapped_after = time.monotonic() - changed
    stack.served_until(lambda s: "127.0.0.5" in s)  # every request on the way returned 200
    after = stack.served_until(lambda s: len(s) == 30)
    assert set(after) <= {"127.0.0.4", "127.0.0.5"}, after
    print(f"the EPP's endpoints followed the DNS change in {swapped_after:.2f} s (refresh {REFRESH_S} s)")


def test_a_hostname_that_stops_resolving_leaves_and_comes_back(make_stack, dns):
    stack = make_stack({"two.test": ["127.0.0.2", "127.0.0.3"], "one.test": ["127.0.0.4"]})
    port = stack.port
    stack.served_until(lambda s: "127.0.0.4" in s)
    dns.set("one.test", [])  # NXDOMAIN from now on
    stack.wait_endpoints({f"127.0.0.2:{port}", f"127.0.0.3:{port}"})
    assert "127.0.0.4" not in stack.served_until(lambda s: len(s) == 20)
    assert 'sluicegate_dns_hostname_unresolved{hostname="one.test"} 1.0' in stack.metrics()
    dns.set("one.test", ["127.0.0.4"], ttl=1)
    stack.wait_endpoints({f"127.0.0.{i}:{port}" for i in (2, 3, 4)})
    stack.served_until(lambda s: "127.0.0.4" in s)
    text = stack.metrics()
    assert 'sluicegate_dns_hostname_unresolved{hostname="one.test"} 0.0' in text
    failures = [line for line in text.splitlines() if line.startswith('sluicegate_dns_resolution_failures_total{hostname="one.test"}')]
    assert failures and float(failures[0].split()[-1]) >= 1, failures


def test_an_aaaa_answer_is_routed_as_a_bracketed_ipv6_endpoint(make_stack):
    stack = make_stack({"six.test": ["::1"]})
    assert stack.served_until(lambda s: len(s) == 5) == ["::1"] * 5
    assert stack.endpoints() == {f"[::1]:{stack.port}"}


def test_an_upstream_file_discovery_config_and_endpoints_file_start_and_route(sims, tmp_path):
    """Upstream's shapes unchanged: string ports, a `file-discovery` plugin named by
    dataLayer.discovery.pluginRef, no --endpoints-file."""
    servers = sims.start(*(SimConfig(name=f"sim-{i}", speedup=50) for i in range(2)))
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text("endpoints:\n" + "".join(
        f'  - name: vllm-{i}\n    address: "{s.address.rsplit(":", 1)[0]}"\n    port: "{s.address.rsplit(":", 1)[1]}"\n'
        for i, s in enumerate(servers)))
    config = ("apiVersion: llm-d.ai/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n"
              f"- type: file-discovery\n  name: file-discovery\n  parameters:\n    path: {endpoints}\n    watchFile: true\n"
              "dataLayer:\n  discovery:\n    pluginRef: file-discovery\n")
    epp = EppProcess("-", "--config-text", config)
    i = epp.args.index("--endpoints-file")
    del epp.args[i:i + 2]
    epp.start()
    envoy = None
    try:
        opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=epp.port,
                            epp_health_port=epp.health_port, epp_tls=False, concurrency=1)
        envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        served = set()
        for i in range(12):
            body = {"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}
            status, headers, raw = http_request(envoy.url, CHAT, body)
            assert status == 200, raw
            served.add(headers["x-sim-endpoint"])
        assert served <= {"sim-0", "sim-1"} and served
    finally:
        if envoy is not None:
            envoy.stop_blocking()
        epp.stop()
