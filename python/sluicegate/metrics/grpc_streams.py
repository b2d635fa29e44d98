"""--enable-grpc-stream-metrics on the Python ext_proc server: a server interceptor counts each
Process stream (open now, how long it stayed open, how it ended by gRPC code, spelled as Go's
codes.Code.String() so upstream's queries match). Health and other methods are not counted."""

from __future__ import annotations

import asyncio
import time
from typing import Iterator

import grpc
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

PROCESS_METHOD = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600)
# grpc.StatusCode -> Go's spelling (CamelCase; "Canceled" with one l).
GO_CODE = {c: "".join(w.capitalize() for w in c.name.split("_")) for c in grpc.StatusCode}
GO_CODE.update({grpc.StatusCode.OK: "OK", grpc.StatusCode.CANCELLED: "Canceled"})


class StreamMetrics(Collector):
    def __init__(self) -> None:
        self.inflight = Gauge("llm_d_epp_extproc_streams_inflight", "Number of ext_proc gRPC streams currently open.",
                              registry=None)
        self.duration = Histogram("llm_d_epp_extproc_stream_duration_seconds",
                                  "Duration an ext_proc gRPC stream stays open, in seconds.", buckets=BUCKETS,
                                  registry=None)
        self.total = Counter("llm_d_epp_extproc_streams", "Total ext_proc gRPC streams completed, by gRPC status code.",
                             ["code"], registry=None)

    def collect(self) -> Iterator[Metric]:
        for m in (self.inflight, self.duration, self.total):
            yield from m.collect()

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _Interceptor(self)


class _Interceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: StreamMetrics) -> None:
        self._m = metrics

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.stream_stream is None or handler_call_details.method != PROCESS_METHOD:
            return handler
        inner, m = handler.stream_stream, self._m

        async def counted(request_iterator, context):
            m.inflight.inc()
            start = time.monotonic()
            code = grpc.StatusCode.OK
            try:
                async for response in inner(request_iterator, context):
                    yield response
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                if code is grpc.StatusCode.OK and context.code() not in (None, grpc.StatusCode.OK):
                    code = context.code()
                m.inflight.dec()
                m.duration.observe(time.monotonic() - start)
                m.total.labels(GO_CODE.get(code, "Unknown")).inc()

        return grpc.stream_stream_rpc_method_handler(counted, request_deserializer=handler.request_deserializer,
                                                     response_serializer=handler.response_serializer)
