"""Free TCP ports on 127.0.0.1 for Envoy, the EPP and test backends picked at run time."""

from __future__ import annotations

import socket


def find_free_port() -> int:
    """A port nothing listens on right now (the OS picks it; another process may race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
