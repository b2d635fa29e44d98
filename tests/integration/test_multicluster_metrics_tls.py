"""multicluster-metrics-data-source over https, upstream's default scheme: two "clusters" are TLS
servers on 127.0.0.1 publishing pool averages, with a CA, server and client certificates made for
the test. The Router reads them only when the certificate checks out (caCertPath), or when told not
to check (insecureSkipVerify), and presents its client certificate where the server demands one."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sluicegate.errors import ConfigError
from sluicegate.scheduling import Router
from sluicegate.scheduling.config import load_config
from tests.harness import wait_until

CHAT = "/v1/chat/completions"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
AVERAGES = ("# TYPE llm_d_epp_average_kv_cache_utilization gauge\nllm_d_epp_average_kv_cache_utilization {kv}\n"
            "# TYPE llm_d_epp_average_queue_size gauge\nllm_d_epp_average_queue_size {queue}\n")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    """A CA and the certificates it signs, as PEM files in `dir`."""

    def __init__(self, dir: Path, name: str) -> None:
        self.dir = dir
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(hours=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca_path = self._write(f"{name}-ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def issue(self, cn: str, server: bool) -> tuple[str, str]:
        """(cert path, key path); a server certificate names 127.0.0.1 as an IP SAN."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1)))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                            critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return (self._write(f"{cn}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{cn}-key.pem", key_pem))


class Cluster:
    """One cluster's EPP metrics as an https server; counts the GETs it answered and the
    handshakes that failed."""

    def __init__(self, pki: Pki, name: str, kv: float, queue: int, client_ca: str | None = None) -> None:
        self.gets = 0
        self.failed_handshakes = 0
        body = AVERAGES.format(kv=kv, queue=queue).encode()
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                cluster.gets += 1
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*pki.issue(name, server=True))
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(client_ca)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        accept = self.server.get_request

        def get_request():  # the handshake runs here, in the server thread
            try:
                return accept()
            except ssl.SSLError:
                self.failed_handshakes += 1
                raise

        self.server.get_request = get_request
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


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


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path, "clusters")


@pytest.fixture
def clusters(pki):
    made: list[Cluster] = []

    def make(**kw) -> tuple[Cluster, Cluster]:
        pair = (Cluster(pki, "busy", 0.9, 4, **kw), Cluster(pki, "idle", 0.1, 0, **kw))
        made.extend(pair)
        return pair

    yield make
    for c in made:
        c.stop()


def routed(params: str, busy: Cluster, idle: Cluster) -> set[str]:
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
