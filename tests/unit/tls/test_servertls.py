"""ext_proc TLS under upstream's flags: --enable-cert-reload serves a replaced certificate to
new connections without a restart; --tls-min-version=VersionTLS13 and unknown cipher suites are
refused by name."""

from __future__ import annotations

import os

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sluicegate.errors import ConfigError
from sluicegate.servertls import check_policy, server_credentials
from tests.unit.metrics.test_metrics_access import _cert, _write


def _check(port: int, ca_pem: bytes) -> bool:
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    with grpc.secure_channel(f"localhost:{port}", creds) as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            return True
        except grpc.RpcError:
            return False


def test_a_replaced_certificate_is_served_to_new_connections(tmp_path, loop_thread):
    ca1, ca2 = _cert("ca-one", None, ca=True), _cert("ca-two", None, ca=True)
    _write(tmp_path, "tls", *_cert("localhost", ca1))
    pem = {n: c[0].public_bytes(serialization.Encoding.PEM) for n, c in (("one", ca1), ("two", ca2))}

    async def start():
        server = grpc.aio.server()
        health = health_async.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(str(tmp_path), reload=True))
        await server.start()
        return server, port

    server, port = loop_thread.run(start())
    try:
        assert _check(port, pem["one"]) and not _check(port, pem["two"])
        _write(tmp_path, "tls", *_cert("localhost", ca2))
        for name in ("tls.crt", "tls.key"):
            os.utime(tmp_path / name, ns=(1, 1))  # a distinct mtime even within one clock tick
        assert _check(port, pem["two"]) and not _check(port, pem["one"])
    finally:
        loop_thread.run(server.stop(None))


def test_policies_neither_server_can_keep_are_refused_by_flag():
    with pytest.raises(ConfigError, match="--tls-min-version=VersionTLS13"):
        check_policy("VersionTLS13", ())
    with pytest.raises(ConfigError, match="--tls-cipher-suites: unknown cipher suite 'TLS_FAST'"):
        check_policy(None, ("TLS_FAST",))
    check_policy("VersionTLS12", ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"))
