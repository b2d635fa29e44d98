"""The ext_proc server compiled in (tonic on its own tokio threads), with the same interface as
`EppServer`: each stream runs the request state machine and calls the Router directly, so no
Python and no GIL are on the request path. It serves health on its own port like `EppServer`."""

from __future__ import annotations

import asyncio
import logging

from .._core import ExtProcServer, RequestStats, Router
from . import tls

log = logging.getLogger(__name__)


class NativeEppServer:
    """ext_proc on `port`, gRPC health on `health_port`; both on `host`; routes with `router`."""

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
        stats: RequestStats | None = None,
        worker_threads: int = 1,
        max_body_bytes: int | None = None,
        health_checking: bool = False,
        max_recv_msg_bytes: int | None = None,
        max_send_msg_bytes: int | None = None,
        stream_metrics: bool = False,
    ) -> None:
        # `stats` is taken for EppServer's signature: request metrics are recorded from Rust into
        # the Router's own RequestStats (`router.request_stats()`, what the app passes).
        # One tokio worker: on small machines a second one costs more in wake-ups than it adds
        # (benches/README.md); each stream is a few µs of work.
        key, cert = tls.key_and_cert(cert_path) if secure else (None, None)
        self._server = ExtProcServer(
            router, host, port, health_port, tls_cert_pem=cert, tls_key_pem=key, skip_response=skip_response,
            worker_threads=worker_threads, max_body_bytes=max_body_bytes, health_checking=health_checking,
            max_recv_msg_bytes=max_recv_msg_bytes, max_send_msg_bytes=max_send_msg_bytes,
            stream_metrics=stream_metrics,
        )
        # --enable-grpc-stream-metrics: (open, [(code, ended)], duration histogram) or None
        self.stream_metrics = self._server.stream_metrics
        self.port = self._server.port
        self.health_port = self._server.health_port

    async def start(self) -> None:
        # Health says NOT_SERVING from construction until set_serving(True).
        self._server.start()
        log.info("ext_proc (native) on port %d, health on port %d", self.port, self.health_port)

    async def set_serving(self, serving: bool) -> None:
        self._server.set_serving(serving)

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Report NOT_SERVING, let open streams finish for up to `drain_timeout` s, then stop."""
        await asyncio.to_thread(self._server.stop, drain_timeout)
