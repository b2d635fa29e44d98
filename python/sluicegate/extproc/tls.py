"""Server credentials for --secure-serving: a certificate from --cert-path, else a fresh
self-signed one (as upstream does), so proxies can speak TLS to the EPP without set-up."""

from __future__ import annotations

import datetime
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(common_name: str = "sluicegate-epp") -> tuple[bytes, bytes]:
    """PEM (key, certificate) valid for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name), x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def key_and_cert(cert_path: str | None) -> tuple[bytes, bytes]:
    """PEM (key, certificate): --cert-path names a folder with tls.crt and tls.key (the
    Kubernetes secret layout); without it, a fresh self-signed pair."""
    if cert_path:
        folder = Path(cert_path)
        return (folder / "tls.key").read_bytes(), (folder / "tls.crt").read_bytes()
    return self_signed()


def server_credentials(cert_path: str | None) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([key_and_cert(cert_path)])
