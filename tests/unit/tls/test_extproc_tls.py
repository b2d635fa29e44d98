"""TLS on the Rust ext_proc server under upstream's flags: --enable-cert-reload serves a replaced
certificate to new connections without a restart (grpcio clients trusting one CA or the other);
--tls-min-version and --tls-cipher-suites bound what a handshake may agree on (Python's ssl
module as the client); what rustls cannot serve is refused by name."""

from __future__ import annotations

import os
import socket
import ssl

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluicegate import _core
from sluicegate.errors import ConfigError
from sluicegate.scheduling import Router
from tests.unit.metrics.test_metrics_access import _cert, _write

ECDSA_128 = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def ca(tmp_path):
    """The CA that signed the serving pair written to tmp_path/tls.{crt,key}."""
    ca = _cert("ca-one", None, ca=True)
    _write(tmp_path, "tls", *_cert("localhost", ca))
    return ca


def _server(folder, **policy) -> _core.ExtProcServer:
    server = _core.ExtProcServer(Router(), "127.0.0.1", 0, 0, tls_cert_pem=(folder / "tls.crt").read_bytes(),
                                 tls_key_pem=(folder / "tls.key").read_bytes(), health_checking=True, **policy)
    server.start()
    server.set_serving(True)
    return server


def _serving_for(port: int, ca_pem: bytes) -> bool:
    """A new gRPC connection trusting only `ca_pem` gets SERVING from health on the ext_proc port."""
    with grpc.secure_channel(f"localhost:{port}", grpc.ssl_channel_credentials(root_certificates=ca_pem)) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _handshake(port: int, ca_pem: bytes, **context) -> tuple[str, str]:
    """(TLS version, cipher) a Python ssl client agrees on with the server; raises ssl.SSLError."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.set_alpn_protocols(["h2"])
    for name, value in context.items():
        setattr(ctx, name, value) if name != "ciphers" else ctx.set_ciphers(value)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            return tls.version(), tls.cipher()[0]


def test_a_replaced_certificate_is_served_to_new_connections(tmp_path, ca):
    other = _cert("ca-two", None, ca=True)
    server = _server(tmp_path, tls_reload_dir=str(tmp_path))
    try:
        assert _serving_for(server.port, _pem(ca[0])) and not _serving_for(server.port, _pem(other[0]))
        _write(tmp_path, "tls", *_cert("localhost", other))
        for name in ("tls.crt", "tls.key"):
            os.utime(tmp_path / name, ns=(1, 1))  # a distinct mtime even within one clock tick
        assert _serving_for(server.port, _pem(other[0])) and not _serving_for(server.port, _pem(ca[0]))
    finally:
        server.stop()


def test_without_reload_the_first_certificate_stays(tmp_path, ca):
    other = _cert("ca-two", None, ca=True)
    server = _server(tmp_path)
    try:
        _write(tmp_path, "tls", *_cert("localhost", other))
        os.utime(tmp_path / "tls.crt", ns=(1, 1))
        assert _serving_for(server.port, _pem(ca[0]))
    finally:
        server.stop()


def test_a_half_written_update_keeps_the_previous_certificate(tmp_path, ca):
    server = _server(tmp_path, tls_reload_dir=str(tmp_path))
    try:
        (tmp_path / "tls.crt").write_bytes(_pem(_cert("localhost", ca)[0]))  # new cert, old key: no match
        os.utime(tmp_path / "tls.crt", ns=(1, 1))
        assert _serving_for(server.port, _pem(ca[0]))
    finally:
        server.stop()


def test_min_version_tls13_refuses_a_tls12_client(tmp_path, ca):
    server = _server(tmp_path, tls_min_version="VersionTLS13")
    try:
        assert _handshake(server.port, _pem(ca[0]))[0] == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            _handshake(server.port, _pem(ca[0]), maximum_version=ssl.TLSVersion.TLSv1_2)
    finally:
        server.stop()


def test_cipher_suites_bound_tls12_and_leave_tls13_alone(tmp_path, ca):
    server = _server(tmp_path, tls_cipher_suites=[ECDSA_128])
    pem = _pem(ca[0])
    tls12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}
    try:
        assert _handshake(server.port, pem, **tls12) == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises(ssl.SSLError):
            _handshake(server.port, pem, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384", **tls12)
        assert _handshake(server.port, pem)[0] == "TLSv1.3"
    finally:
        server.stop()


def test_policies_rustls_cannot_keep_are_refused_by_flag(tmp_path, ca):
    with pytest.raises(ConfigError, match="--tls-cipher-suites: TLS_RSA_WITH_AES_128_CBC_SHA is not served"):
        _server(tmp_path, tls_cipher_suites=["TLS_RSA_WITH_AES_128_CBC_SHA"])
    with pytest.raises(ConfigError, match="--tls-cipher-suites: unknown cipher suite \"TLS_FAST\""):
        _server(tmp_path, tls_cipher_suites=["TLS_FAST"])
    with pytest.raises(ConfigError, match="--tls-min-version: unknown TLS version \"VersionTLS14\""):
        _server(tmp_path, tls_min_version="VersionTLS14")
