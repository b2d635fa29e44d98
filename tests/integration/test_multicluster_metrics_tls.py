"""multicluster-metrics-data-source over https, upstream's default scheme: two "clusters" are TLS
servers on 127.0.0.1 publishing pool averages, with a CA, server and client certificates made for
the test. The Router reads them only when the certificate checks out (caCertPath), or when told not
to check (insecureSkipVerify), and presents its client certificate where the server demands one."""

from __future__ import annotations

import json

import pytest

from sluicegate.errors import ConfigError
from sluicegate.scheduling import Router
from sluicegate.scheduling.config import load_config
from tests.harness import wait_until
from tests.tls_servers import Pki, TlsServer

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
AVERAGES = ("# TYPE llm_d_epp_average_kv_cache_utilization gauge\nllm_d_epp_average_kv_cache_utilization {kv}\n"
            "# TYPE llm_d_epp_average_queue_size gauge\nllm_d_epp_average_queue_size {queue}\n")


def config(params: str) -> str:
    return f"""
plugins:
- {{type: multicluster-metrics-data-source, name: source, parameters: {{interval: 20ms{params}}}}}
- {{type: multicluster-metrics-extractor, name: extractor}}
- {{type: multicluster-kv-cache-utilization-scorer, name: kv-cache}}
- {{type: max-score-picker}}
dataLayer:
  injectDefaults: false
  sources: [{{pluginRef: source, extractors: [{{pluginRef: extractor}}]}}]
schedulingProfiles:
- {{name: default, plugins: [{{pluginRef: kv-cache}}, {{pluginRef: max-score-picker}}]}}
"""


def cluster(pki: Pki, name: str, kv: float, queue: int, client_ca: str | None = None) -> TlsServer:
    """One cluster's EPP publishing its pool averages over https."""
    return TlsServer(pki, name, {"/metrics": AVERAGES.format(kv=kv, queue=queue).encode()}, client_ca)


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path, "clusters")


@pytest.fixture
def clusters(pki):
    made: list[TlsServer] = []

    def make(**kw) -> tuple[TlsServer, TlsServer]:
        pair = (cluster(pki, "busy", 0.9, 4, **kw), cluster(pki, "idle", 0.1, 0, **kw))
        made.extend(pair)
        return pair

    yield make
    for c in made:
        c.stop()


def routed(params: str, busy: TlsServer, idle: TlsServer) -> set[str]:
    """Where ten picks go once both clusters were polled twice (the first answer applied)."""
    router = Router(load_config(text=config(params)).router_json())
    router.set_endpoints([("busy", busy.address, {}), ("idle", idle.address, {})])
    router.start_scraper()
    try:
        wait_until(lambda: busy.gets >= 2 and idle.gets >= 2, timeout=15, what="both clusters polled")
        return {router.explain(CHAT, BODY)[0].primary for _ in range(10)}
    finally:
        router.stop_scraper()


def test_https_verified_against_the_ca_reads_each_clusters_averages(pki, clusters):
    busy, idle = clusters()
    assert routed(f", caCertPath: {pki.ca_path}", busy, idle) == {idle.address}


def test_insecure_skip_verify_reads_a_server_no_ca_vouches_for(pki, clusters, tmp_path):
    busy, idle = clusters()
    assert routed(", scheme: https, insecureSkipVerify: true", busy, idle) == {idle.address}


def test_a_certificate_from_another_ca_is_not_read(pki, clusters, tmp_path):
    busy, idle = clusters()
    other = Pki(tmp_path, "other")
    router = Router(load_config(text=config(f", caCertPath: {other.ca_path}")).router_json())
    router.set_endpoints([("busy", busy.address, {}), ("idle", idle.address, {})])
    router.start_scraper()
    try:
        wait_until(lambda: busy.failed_handshakes >= 2 and idle.failed_handshakes >= 2, timeout=15,
                   what="the Router trying both clusters")
        assert busy.gets == idle.gets == 0  # nothing was asked over a connection it could not verify
    finally:
        router.stop_scraper()


def test_a_client_certificate_is_presented_where_the_server_demands_one(pki, clusters):
    busy, idle = clusters(client_ca=pki.ca_path)
    cert, key = pki.issue("router", server=False)
    assert routed(f", caCertPath: {pki.ca_path}, clientCertPath: {cert}, clientKeyPath: {key}", busy, idle) \
        == {idle.address}


@pytest.mark.parametrize("params, names", [
    (", caCertPath: /nonexistent/ca.pem", "caCertPath: '/nonexistent/ca.pem'"),
    (", clientCertPath: /x.pem", "parameters.clientKeyPath: required with clientCertPath"),
    (", scheme: ftp", "parameters.scheme: 'ftp'"),
])
def test_tls_errors_name_the_field(params, names):
    with pytest.raises(ConfigError, match=names):
        load_config(text=config(params))
