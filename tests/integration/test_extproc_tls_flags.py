"""Upstream's TLS flags on a running EPP: --tls-cipher-suites limits the TLS 1.2 suites the
ext_proc port accepts (gRPC reads them before it starts, so `sluicegate run` sets them first)."""

from __future__ import annotations

import socket
import ssl

import pytest

from sluicegate.standalone.epp_process import EppProcess
from tests.harness import write_endpoints


def handshake(port: int, cipher: str) -> str | None:
    """The suite a TLS 1.2 client offering only `cipher` gets, or None when refused."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the EPP's self-signed certificate
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(cipher)
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as conn:
            return conn.cipher()[0]
    except (ssl.SSLError, ConnectionError):
        return None


@pytest.mark.parametrize("ext_proc_impl", ["python", "auto"])
def test_cipher_suites_limit_what_tls_12_clients_get(tmp_path, ext_proc_impl):
    endpoints = write_endpoints(tmp_path / "endpoints.json", ["127.0.0.1:1"])
    epp = EppProcess(endpoints, "--secure-serving=true", "--tls-cipher-suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                     f"--ext-proc-impl={ext_proc_impl}")
    epp.args.remove("--secure-serving=false")
    epp.start()
    try:
        assert handshake(epp.port, "ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"
        assert handshake(epp.port, "ECDHE-ECDSA-AES256-GCM-SHA384") is None
    finally:
        epp.stop()
