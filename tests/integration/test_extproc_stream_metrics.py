"""--enable-grpc-stream-metrics on the Rust ext_proc server, through a real gRPC client: each
Process stream is in flight while open, then counted once by the code the client saw (spelled as
Go's codes.Code.String()) and observed in upstream's duration buckets; the collector gives the
families upstream's names, type, buckets and labels."""

from __future__ import annotations

import queue
import time

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate._core.extproc import GRPC_CODE_NAMES, ExtProcServer
from sluicegate.metrics.grpc_streams import StreamMetrics
from sluicegate.scheduling import Router

from .extproc_client import exchange, request_body, request_headers

UPSTREAM_BUCKETS = ["0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "30.0", "60.0",
                    "120.0", "300.0", "600.0", "+Inf"]


@pytest.fixture
def server():
    router = Router()
    router.set_endpoints([("a", "10.0.0.1:8000", {})])
    s = ExtProcServer(router, "127.0.0.1", 0, 0, stream_metrics=True, max_recv_msg_bytes=4096)
    s.start()
    yield s
    s.stop()


def families(server: ExtProcServer) -> dict:
    registry = CollectorRegistry()
    registry.register(StreamMetrics(server.stream_metrics))
    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def ended(server: ExtProcServer) -> dict[str, int]:
    return dict(server.stream_metrics()[3])


def test_completed_streams_are_counted_ok_in_upstreams_families(server):
    for _ in range(2):
        exchange(server.port, [request_headers("/v1/models", end_of_stream=True, method="GET")])
    got = families(server)
    assert got["llm_d_epp_extproc_streams"].type == "counter"
    assert [(s.name, s.labels, s.value) for s in got["llm_d_epp_extproc_streams"].samples
            if s.name.endswith("_total")] == [("llm_d_epp_extproc_streams_total", {"code": "OK"}, 2)]
    assert got["llm_d_epp_extproc_streams_inflight"].type == "gauge"
    assert got["llm_d_epp_extproc_streams_inflight"].samples[0].value == 0
    duration = got["llm_d_epp_extproc_stream_duration_seconds"]
    assert duration.type == "histogram"
    buckets = [s for s in duration.samples if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets] == UPSTREAM_BUCKETS
    assert buckets[-1].value == 2
    assert {s.name: s.value for s in duration.samples if s.name.endswith("_count")} == {
        "llm_d_epp_extproc_stream_duration_seconds_count": 2}


def test_a_stream_ended_by_an_error_is_counted_by_the_code_the_client_saw(server):
    with pytest.raises(grpc.RpcError) as error:
        exchange(server.port, [request_headers("/v1/chat/completions"), request_body(b"x" * 8192, True)])
    code = error.value.code()
    assert code is not grpc.StatusCode.OK
    assert ended(server) == {GRPC_CODE_NAMES[code.value[0]]: 1}


def test_an_open_stream_is_in_flight_until_the_client_goes(server):
    outbox: queue.Queue = queue.Queue()
    outbox.put(request_headers("/v1/models", end_of_stream=True, method="GET"))
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    call = pb_grpc.ExternalProcessorStub(channel).Process(iter(outbox.get, None), timeout=10)
    try:
        next(call)  # the routing answer: the stream is open, waiting for the response phase
        assert server.stream_metrics()[0] == 1
    finally:
        call.cancel()
        outbox.put(None)  # ends the request iterator grpc reads on its own thread
        channel.close()
    deadline = time.monotonic() + 5
    while server.stream_metrics()[0] and time.monotonic() < deadline:
        time.sleep(0.02)  # poll interval of this bounded wait
    inflight, buckets, _, codes = server.stream_metrics()
    assert inflight == 0 and buckets[-1] == 1
    assert sum(n for _, n in codes) == 1


def test_without_the_flag_nothing_is_counted_or_exposed():
    s = ExtProcServer(Router(), "127.0.0.1", 0, 0)
    try:
        assert s.stream_metrics() is None
        registry = CollectorRegistry()
        registry.register(StreamMetrics(s.stream_metrics))
        assert b"extproc" not in generate_latest(registry)
    finally:
        s.stop()
