"""The EPP's ext_proc server: the Rust one (tonic on its own tokio threads), configured, started,
drained and stopped from here. Each stream admits its request through flow control and routes it
in Rust, so no request and no ext_proc message touches Python. Health (grpc.health.v1) is
served on its own port and says NOT_SERVING until told otherwise (leader gating, shutdown)."""

from __future__ import annotations

import asyncio
import logging

from .._core.extproc import ExtProcServer, FlowGate, configure_logging
from .._core.scheduling import Router
from . import tls

log = logging.getLogger(__name__)


class EppServer:
    """ext_proc on `port`, gRPC health on `health_port`; both on `host`; routes with `router`,
    admitting through `gate` first when given (flow control, or legacy shedding)."""

    def __init__(
        self,
        router: Router,
        *,
        host: str = "0.0.0.0",
        port: int = 9002,
        health_port: int = 9003,
        secure: bool = True,
        cert_path: str | None = None,
        skip_response: bool = False,
        gate: FlowGate | None = None,
        worker_threads: int = 1,
        max_body_bytes: int | None = None,
        health_checking: bool = False,
        max_recv_msg_bytes: int | None = None,
        max_send_msg_bytes: int | None = None,
        cert_reload: bool = False,
        tls_min_version: str | None = None,
        tls_cipher_suites: tuple[str, ...] = (),
        stream_metrics: bool = False,
    ) -> None:
        # One tokio worker: on small machines a second one costs more in wake-ups than it adds
        # (benches/README.md); each stream is a few µs of work.
        _log_like_python()
        key, cert = tls.key_and_cert(cert_path) if secure else (None, None)
        self._server = ExtProcServer(
            router, host, port, health_port, tls_cert_pem=cert, tls_key_pem=key, skip_response=skip_response,
            worker_threads=worker_threads, max_body_bytes=max_body_bytes, gate=gate,
            health_checking=health_checking, max_recv_msg_bytes=max_recv_msg_bytes,
            max_send_msg_bytes=max_send_msg_bytes,
            # upstream reloads only a certificate from --cert-path; a self-signed one never changes
            tls_reload_dir=cert_path if secure and cert_reload and cert_path else None,
            tls_min_version=tls_min_version, tls_cipher_suites=list(tls_cipher_suites),
            stream_metrics=stream_metrics,
        )
        # --enable-grpc-stream-metrics: (open, [(code, ended)], duration histogram) or None
        self.stream_metrics = self._server.stream_metrics
        self.port = self._server.port
        self.health_port = self._server.health_port

    async def start(self) -> None:
        self._server.start()
        log.info("ext_proc on port %d, health on port %d", self.port, self.health_port)

    async def set_serving(self, serving: bool) -> None:
        self._server.set_serving(serving)

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """NOT_SERVING, then queued requests 503 rejected-shutting-down, then up to
        `drain_timeout` s for open streams, then stop."""
        await asyncio.to_thread(self._server.stop, drain_timeout)

    def stream_metrics(self) -> tuple[int, list[int], float, list[tuple[str, int]]] | None:
        """The --enable-grpc-stream-metrics counts (see `_core.ExtProcServer.stream_metrics`)."""
        return self._server.stream_metrics()


def _log_like_python() -> None:
    """Rust's lines at the root logger's level, in its encoder and time encoding (set once), so
    every line of the process has one format."""
    from ..logs import ConsoleFormatter, JsonFormatter

    root = logging.getLogger()
    formatter = next((h.formatter for h in root.handlers if h.formatter is not None), None)
    if isinstance(formatter, JsonFormatter):
        encoder = "console" if isinstance(formatter, ConsoleFormatter) else "json"
        configure_logging(root.getEffectiveLevel(), encoder, formatter.time_encoding)
    else:
        configure_logging(root.getEffectiveLevel(), "text" if root.handlers else "json")
