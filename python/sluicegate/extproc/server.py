"""The gRPC side of the EPP: the ext_proc service and, on its own port, the health service.

Health reports SERVING only while the EPP can route (config loaded, endpoints known); on
shutdown it flips to NOT_SERVING first so proxies stop opening streams before the server goes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2, health_pb2_grpc

from . import protocol, tls
from .stream import MAX_BODY_BYTES, Picker, RequestStream, Stats

if TYPE_CHECKING:
    from ..flowcontrol import FlowController

log = logging.getLogger(__name__)

_GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


class ExternalProcessor(pb_grpc.ExternalProcessorServicer):
    def __init__(self, picker: Picker, skip_response: bool = False, stats: Stats | None = None,
                 flow: FlowController | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._picker = picker
        self._max_body = max_body_bytes
        self._skip_response = skip_response
        self._stats = stats
        self._flow = flow

    async def Process(self, request_iterator, context):  # noqa: N802 (gRPC method name)
        stream = RequestStream(self._picker, self._skip_response, self._stats, self._flow, self._max_body)
        try:
            async for req in request_iterator:
                for resp in stream.handle(req):
                    yield resp
                if stream.admission is not None:  # flow control holds it until its turn
                    for resp in await stream.admit():
                        yield resp
                if stream.finished:
                    return
        finally:
            stream.close()


class EppServer:
    """ext_proc on `port`, gRPC health on `health_port`; both on `host`."""

    def __init__(
        self,
        picker: Picker,
        *,
        host: str = "0.0.0.0",
        port: int = 9002,
        health_port: int = 9003,
        secure: bool = True,
        cert_path: str | None = None,
        skip_response: bool = False,
        stats: Stats | None = None,
        flow: FlowController | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        health_checking: bool = False,
        max_recv_msg_bytes: int | None = None,
        max_send_msg_bytes: int | None = None,
        credentials: grpc.ServerCredentials | None = None,
        interceptors: list[grpc.aio.ServerInterceptor] | None = None,
    ) -> None:
        # --grpc-max-recv-msg-size / --grpc-max-send-msg-size replace the 64 MiB defaults.
        limits = {"grpc.max_receive_message_length": max_recv_msg_bytes,
                  "grpc.max_send_message_length": max_send_msg_bytes}
        self._server = grpc.aio.server(options=[(k, limits.get(k) or v) for k, v in _GRPC_OPTIONS],
                                       interceptors=interceptors)
        processor = ExternalProcessor(picker, skip_response, stats, flow, max_body_bytes)
        pb_grpc.add_ExternalProcessorServicer_to_server(processor, self._server)
        address = f"{host}:{port}"
        if secure:
            self.port = self._server.add_secure_port(address, credentials or tls.server_credentials(cert_path))
        else:
            self.port = self._server.add_insecure_port(address)
        self._health = health_async.HealthServicer()
        self._health_server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._health_server)
        if health_checking:  # upstream's --health-checking: the same health on the ext_proc port
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self.health_port = self._health_server.add_insecure_port(f"{host}:{health_port}")

    async def start(self) -> None:
        await self.set_serving(False)
        await self._server.start()
        await self._health_server.start()
        log.info("ext_proc on port %d, health on port %d", self.port, self.health_port)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in protocol.HEALTH_SERVICES:
            await self._health.set(service, status)

    async def stop(self, drain_timeout: float = 0.0) -> None:
        """Report NOT_SERVING, let open streams finish for up to `drain_timeout` s, then stop."""
        await self.set_serving(False)
        if drain_timeout > 0:
            await asyncio.sleep(min(drain_timeout, 1.0))  # proxies see the health flip first
        await self._server.stop(grace=drain_timeout)
        await self._health_server.stop(grace=None)
