"""Builds the ext_proc messages Envoy sends, for tests that speak the protocol directly."""

from __future__ import annotations

import threading
from typing import Iterable, Iterator

import grpc
from envoy.config.core.v3.base_pb2 import HeaderMap, HeaderValue
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as mode_pb
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from google.protobuf.struct_pb2 import Struct

FULL_DUPLEX = mode_pb.ProcessingMode.FULL_DUPLEX_STREAMED
BUFFERED = mode_pb.ProcessingMode.BUFFERED


def request_headers(path: str, headers: dict[str, str] | None = None, *, end_of_stream: bool = False,
                    mode: int = FULL_DUPLEX, subset: list[str] | None = None, method: str = "POST") -> pb.ProcessingRequest:
    hv = [HeaderValue(key=":path", raw_value=path.encode()), HeaderValue(key=":method", raw_value=method.encode())]
    hv += [HeaderValue(key=k, raw_value=v.encode()) for k, v in (headers or {}).items()]
    req = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=HeaderMap(headers=hv), end_of_stream=end_of_stream),
        protocol_config=pb.ProtocolConfiguration(request_body_mode=mode, response_body_mode=mode),
    )
    if subset is not None:
        s = Struct()
        s.get_or_create_list("x-gateway-destination-endpoint-subset").extend(subset)
        req.metadata_context.filter_metadata["envoy.lb.subset_hint"].CopyFrom(s)
    return req


def request_body(data: bytes, end_of_stream: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=end_of_stream))


def request_trailers() -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_trailers=pb.HttpTrailers())


def response_headers(end_of_stream: bool = False, served: str | None = None) -> pb.ProcessingRequest:
    req = pb.ProcessingRequest(response_headers=pb.HttpHeaders(
        headers=HeaderMap(headers=[HeaderValue(key=":status", raw_value=b"200"),
                                   HeaderValue(key="content-length", raw_value=b"10")]),
        end_of_stream=end_of_stream))
    if served:
        s = Struct()
        s["x-gateway-destination-endpoint-served"] = served
        req.metadata_context.filter_metadata["envoy.lb"].CopyFrom(s)
    return req


def response_body(data: bytes, end_of_stream: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=end_of_stream))


def exchange(port: int, messages: Iterable[pb.ProcessingRequest], timeout: float = 10.0) -> list[pb.ProcessingResponse]:
    """One ext_proc stream: send every message, return every answer until the EPP closes it."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)
        return list(stub.Process(iter(messages), timeout=timeout))


def gone_mid_body(port: int, path: str, deadline_s: float = 0.3) -> grpc.RpcError:
    """A client that sends the headers and half a body, then nothing, and gives up at its
    deadline: the stream stays open, body unfinished, until the deadline has cancelled it (an
    event, not a sleep racing the deadline). Returns the error the client got."""
    gave_up = threading.Event()

    def half_sent() -> Iterator[pb.ProcessingRequest]:
        yield request_headers(path)
        yield request_body(b'{"model": "m", ', False)
        gave_up.wait(30)  # until the client has given up (bounded)

    try:
        exchange(port, half_sent(), timeout=deadline_s)
    except grpc.RpcError as e:
        return e
    finally:
        gave_up.set()
    raise AssertionError("the half-sent stream was answered before its deadline")


def header_set(common: pb.CommonResponse) -> dict[str, str]:
    return {h.header.key: (h.header.raw_value.decode() or h.header.value) for h in common.header_mutation.set_headers}


def streamed_body(responses: list[pb.ProcessingResponse], phase: str = "request_body") -> tuple[bytes, bool]:
    """Reassemble streamed_response chunks of one phase; (body, saw end_of_stream)."""
    data, eos = b"", False
    for r in responses:
        if r.WhichOneof("response") == phase:
            sr = getattr(r, phase).response.body_mutation.streamed_response
            data += sr.body
            eos = eos or sr.end_of_stream
    return data, eos
