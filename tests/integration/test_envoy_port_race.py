"""A port picked free can be taken before Envoy binds it (other tests, other processes): Envoy
is started again on newly picked ports instead of failing the caller."""

from __future__ import annotations

import socket

import pytest

from sluicegate.standalone import EnvoyOptions, EnvoyProcess, process
from sluicegate.standalone.ports import find_free_port

pytestmark = pytest.mark.envoy


def test_envoy_repicks_a_listen_port_taken_after_it_was_picked(monkeypatch):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    picks = iter([taken])  # the first pick is a port another process holds by the time Envoy binds

    def pick() -> int:
        return next(picks, None) or find_free_port()

    monkeypatch.setattr(process, "find_free_port", pick)
    opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", upstream_mode="round_robin",
                        endpoints=("127.0.0.1:9",), concurrency=1)
    envoy = EnvoyProcess(opts)
    try:
        envoy.start_blocking()
        assert envoy.options.listen_port != taken
    finally:
        envoy.stop_blocking()
        squatter.close()


def test_a_port_the_caller_chose_is_not_silently_changed():
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    opts = EnvoyOptions(listen_port=squatter.getsockname()[1], admin_port=0, listen_address="127.0.0.1",
                        upstream_mode="round_robin", endpoints=("127.0.0.1:9",), concurrency=1)
    envoy = EnvoyProcess(opts)
    try:
        with pytest.raises(process.EnvoyStartError, match="Address already in use"):
            envoy.start_blocking()
    finally:
        squatter.close()
