"""ext_proc TLS as upstream's flags ask for it on the Python (grpc.aio) server: certificates from
--cert-path re-read on change (--enable-cert-reload; gRPC asks before each handshake), TLS 1.2
cipher suites by their Go names (--tls-cipher-suites, handed to gRPC's BoringSSL by OpenSSL name).
What neither server can do is refused here with the flag's name, never silently dropped."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc

from .errors import ConfigError
from .extproc import tls

log = logging.getLogger(__name__)

# Go crypto/tls names of the TLS 1.2 suites → OpenSSL/BoringSSL names.
GO_TO_OPENSSL = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
# TLS 1.3 suites: Go takes the names but cannot restrict them; neither can we.
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"


def check_policy(min_version: str | None, cipher_suites: tuple[str, ...]) -> None:
    if min_version == "VersionTLS13":
        raise ConfigError("--tls-min-version=VersionTLS13: neither ext_proc server can refuse TLS 1.2 "
                          "(both negotiate TLS 1.2 and 1.3); use VersionTLS12 or leave it unset")
    for name in cipher_suites:
        if name not in GO_TO_OPENSSL and name not in TLS13_SUITES:
            raise ConfigError(f"--tls-cipher-suites: unknown cipher suite {name!r}")


def apply_cipher_suites(cipher_suites: tuple[str, ...]) -> None:
    """gRPC reads its cipher list from the environment when it first builds TLS credentials."""
    names = [GO_TO_OPENSSL[n] for n in cipher_suites if n in GO_TO_OPENSSL]
    if any(n in TLS13_SUITES for n in cipher_suites):
        log.info("--tls-cipher-suites: TLS 1.3 suites are fixed by the TLS library; listed ones are always on")
    if names:
        # TLS 1.3 suites stay on (BoringSSL fixes them); the TLS 1.2 list is what was asked.
        os.environ[CIPHER_ENV] = ":".join(dict.fromkeys(names))


def server_credentials(cert_path: str | None, reload: bool) -> grpc.ServerCredentials:
    """Static credentials, or with --enable-cert-reload and --cert-path, credentials whose key and
    certificate are re-read whenever tls.crt or tls.key changes (checked before each handshake)."""
    if not (reload and cert_path):
        return tls.server_credentials(cert_path)
    folder = Path(cert_path)
    stamp = _stamp(folder)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        nonlocal stamp
        now = _stamp(folder)
        if now == stamp:
            return None
        try:
            config = grpc.ssl_server_certificate_configuration([tls.key_and_cert(cert_path)])
        except OSError as e:  # half-written secret update: keep serving the old pair
            log.warning("--enable-cert-reload: cannot read %s yet: %s", folder, e)
            return None
        stamp = now
        log.info("--enable-cert-reload: serving the new certificate from %s", folder)
        return config

    initial = grpc.ssl_server_certificate_configuration([tls.key_and_cert(cert_path)])
    return grpc.dynamic_ssl_server_credentials(initial, fetch)


def _stamp(folder: Path) -> tuple[float, ...]:
    # Kubernetes swaps a mounted secret by relinking ..data; mtimes of the resolved files change.
    try:
        return tuple(os.stat(folder / n).st_mtime_ns for n in ("tls.crt", "tls.key"))
    except OSError:
        return ()
