"""Builders for the ext_proc ProcessingResponse messages the EPP sends back to the proxy."""

from __future__ import annotations

import json

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct

from . import protocol

ProcessingResponse = pb.ProcessingResponse

# Answers that carry no change are the same every time: build them once.
EMPTY_REQUEST_HEADERS = pb.ProcessingResponse(request_headers=pb.HeadersResponse())
EMPTY_RESPONSE_HEADERS = pb.ProcessingResponse(response_headers=pb.HeadersResponse())
EMPTY_REQUEST_BODY = pb.ProcessingResponse(request_body=pb.BodyResponse())
EMPTY_RESPONSE_BODY = pb.ProcessingResponse(response_body=pb.BodyResponse())
CLEARED_REQUEST_BODY = pb.ProcessingResponse(
    request_body=pb.BodyResponse(response=pb.CommonResponse(body_mutation=pb.BodyMutation(clear_body=True)))
)
EMPTY_REQUEST_TRAILERS = pb.ProcessingResponse(request_trailers=pb.TrailersResponse())
EMPTY_RESPONSE_TRAILERS = pb.ProcessingResponse(response_trailers=pb.TrailersResponse())


def _set(key: str, value: str) -> HeaderValueOption:
    return HeaderValueOption(
        header=HeaderValue(key=key, raw_value=value.encode()),
        append_action=HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def destination_mutation(endpoints: str, content_length: int | None) -> pb.CommonResponse:
    """Request-phase answer that routes to `endpoints` ("ip:port[,ip:port...]")."""
    headers = [_set(protocol.DESTINATION_ENDPOINT, endpoints)]
    if content_length is not None:
        headers.append(_set("content-length", str(content_length)))
    return pb.CommonResponse(
        header_mutation=pb.HeaderMutation(set_headers=headers),
        clear_route_cache=True,
    )


def destination_metadata(endpoints: str) -> Struct:
    md = Struct()
    md.get_or_create_struct(protocol.DESTINATION_NAMESPACE)[protocol.DESTINATION_ENDPOINT] = endpoints
    return md


def routed_headers(endpoints: str, content_length: int | None) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=destination_mutation(endpoints, content_length)),
        dynamic_metadata=destination_metadata(endpoints),
    )


def routed_body(endpoints: str, body: bytes | None) -> pb.ProcessingResponse:
    """BUFFERED/STREAMED modes: the decision rides on the body answer (headers are held until then)."""
    common = destination_mutation(endpoints, None if body is None else len(body))
    if body is not None:
        common.body_mutation.body = body
    return pb.ProcessingResponse(
        request_body=pb.BodyResponse(response=common),
        dynamic_metadata=destination_metadata(endpoints),
    )


def streamed_chunks(body: bytes, end_of_stream: bool, request: bool) -> list[pb.ProcessingResponse]:
    """Full duplex: the body goes back to the proxy as streamed_response chunks."""
    out = []
    size = protocol.BODY_CHUNK_BYTES
    view = memoryview(body)
    last = max(len(body) - 1, 0) // size
    for i in range(last + 1):
        chunk = pb.StreamedBodyResponse(
            body=bytes(view[i * size : (i + 1) * size]), end_of_stream=end_of_stream and i == last
        )
        resp = pb.BodyResponse(response=pb.CommonResponse(body_mutation=pb.BodyMutation(streamed_response=chunk)))
        out.append(pb.ProcessingResponse(request_body=resp) if request else pb.ProcessingResponse(response_body=resp))
    return out


def replaced_response_body(body: bytes) -> pb.ProcessingResponse:
    """BUFFERED response mode: the whole body replaced (model name rewritten back)."""
    common = pb.CommonResponse(body_mutation=pb.BodyMutation(body=body))
    common.header_mutation.set_headers.append(_set("content-length", str(len(body))))
    return pb.ProcessingResponse(response_body=pb.BodyResponse(response=common))


def response_headers_without_length() -> pb.ProcessingResponse:
    """The body will change size when the model is rewritten back: let the proxy re-frame it."""
    return pb.ProcessingResponse(
        response_headers=pb.HeadersResponse(
            response=pb.CommonResponse(header_mutation=pb.HeaderMutation(remove_headers=["content-length"]))
        )
    )


def immediate(status: int, message: str, reason: str = "") -> pb.ProcessingResponse:
    """An error answered by the proxy on the EPP's behalf, with an OpenAI-style JSON body."""
    body = json.dumps({"error": {"message": message, "type": _ERROR_TYPES.get(status, "error"), "code": status}})
    headers = pb.HeaderMutation(set_headers=[_set("content-type", "application/json")])
    if reason:
        headers.set_headers.append(_set(protocol.DROPPED_REASON, reason))
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=HttpStatus(code=status), headers=headers, body=body.encode(), details=reason or "sluicegate"
        )
    )


_ERROR_TYPES = {400: "BadRequestError", 429: "TooManyRequests", 503: "ServiceUnavailable", 500: "InternalError"}
