"""The metrics port under upstream's flags: HTTPS from --metrics-cert-dir, client certificates
with --metrics-client-ca-file, an authorizer for --metrics-endpoint-auth, and the
--enable-pprof views (behind the same guard as /metrics)."""

from __future__ import annotations

import datetime
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sluicegate.metrics import MetricsServer, build_registry
from sluicegate.metrics.profiling import collapsed_samples
from sluicegate.metrics.server import MetricsAccess
from sluicegate.scheduling import Router


def _cert(subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None, ca: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer[0].subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def _write(folder: Path, stem: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    crt, k = folder / f"{stem}.crt", folder / f"{stem}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return crt, k


@pytest.fixture
def pki(tmp_path):
    ca = _cert("test-ca", None, ca=True)
    _write(tmp_path, "ca", *ca)
    _write(tmp_path, "tls", *_cert("localhost", ca))
    _write(tmp_path, "client", *_cert("prometheus", ca))
    return tmp_path


def _get(port: int, path: str, ctx: ssl.SSLContext | None = None, token: str | None = None) -> int:
    scheme = "https" if ctx else "http"
    req = urllib.request.Request(f"{scheme}://localhost:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _serve(loop_thread, access: MetricsAccess) -> MetricsServer:
    server = MetricsServer(build_registry(Router(), "p"), lambda: True, "127.0.0.1", 0, access=access)
    loop_thread.run(server.start())
    return server


def test_cert_dir_serves_https_and_a_client_ca_requires_client_certificates(pki, loop_thread):
    server = _serve(loop_thread, MetricsAccess(cert_dir=str(pki), client_ca_file=str(pki / "ca.crt")))
    try:
        trusting = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
            _get(server.port, "/metrics", trusting)  # no client certificate
        trusting.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        assert _get(server.port, "/metrics", trusting) == 200
    finally:
        loop_thread.run(server.stop())


def test_authorizer_guards_metrics_and_pprof_but_not_health(loop_thread):
    async def authorize(token: str) -> bool:
        return token == "allowed"

    server = _serve(loop_thread, MetricsAccess(authorize=authorize, pprof=True))
    try:
        for path in ("/metrics", "/debug/pprof/goroutine"):
            assert _get(server.port, path) == 401
            assert _get(server.port, path, token="denied") == 401
            assert _get(server.port, path, token="allowed") == 200
        assert _get(server.port, "/healthz") == 200
        assert _get(server.port, "/debug/pprof/profile?seconds=99", token="allowed") == 400
    finally:
        loop_thread.run(server.stop())


def test_pprof_is_off_unless_asked(loop_thread):
    server = _serve(loop_thread, MetricsAccess())
    try:
        assert _get(server.port, "/debug/pprof/") == 404
    finally:
        loop_thread.run(server.stop())


def test_cpu_profile_samples_the_busy_thread():
    import threading

    stop = threading.Event()

    def spin_here():
        while not stop.is_set():
            sum(range(1000))

    t = threading.Thread(target=spin_here, name="busy")
    t.start()
    try:
        samples = collapsed_samples(0.2, interval=0.005)
    finally:
        stop.set()
        t.join()
    assert sum(n for stack, n in samples.items() if "spin_here" in stack) > 0
