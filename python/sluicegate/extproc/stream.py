"""One ext_proc stream = one HTTP request: buffer the request body, route it once, echo the rest.

`RequestStream.handle` turns each ProcessingRequest into the answers to send, so the gRPC layer
stays a loop; every path through it ends with the request's in-flight count released.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

from .. import errors
from ..scheduling import find_usage, replace_model_in_chunk
from . import messages, protocol

if TYPE_CHECKING:
    from ..flowcontrol import FlowController, Ticket

log = logging.getLogger(__name__)

FULL_DUPLEX = ProcessingMode.FULL_DUPLEX_STREAMED
BUFFERED = ProcessingMode.BUFFERED
STREAMED = ProcessingMode.STREAMED
NO_BODY = ProcessingMode.NONE


class Decision(Protocol):
    endpoints: str
    primary: str
    model: str | None
    target_model: str | None
    body: bytes | None


class Picker(Protocol):
    def route(
        self, path: str, body: bytes, model_rewrite: str | None, subset: Sequence[str] | None
    ) -> Decision: ...

    def release(self, address: str) -> None: ...


class Stats(Protocol):
    def started(self, model: str, target_model: str, fairness_id: str, priority: int) -> None: ...

    def finished(self, model: str, target_model: str, fairness_id: str, priority: int, was_started: bool,
                 **outcome) -> None: ...


# HTTP status of a failed request -> upstream's error_code label.
_ERROR_CODES = {400: "BadRequest", 404: "BadRequest", 413: "BadRequest", 429: "ResourceExhausted",
                500: "Internal", 503: "ServiceUnavailable"}
_TAIL_BYTES = 2048  # enough for the usage object at the end of a response
# Default cap on a buffered request body (as the gRPC message cap): above it the request gets 413
# as soon as the body crosses it, and what was buffered is dropped.
MAX_BODY_BYTES = 64 * 1024 * 1024


def _header(h) -> str:
    # Envoy fills raw_value (bytes) since 1.27; older proxies fill value.
    return h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value


def _slo_seconds(value: str) -> float | None:
    """`x-llm-d-slo-ttft-ms`: the TTFT objective ordering slo-deadline flows; ignored when malformed."""
    try:
        ms = float(value)
    except ValueError:
        return None
    return ms / 1000 if 0 < ms < 1e12 else None


def _subset_hint(req: pb.ProcessingRequest) -> list[str] | None:
    """Candidates named by the proxy; None = whole pool, [] = named but empty (→ 503)."""
    md = req.metadata_context.filter_metadata
    if protocol.SUBSET_NAMESPACE not in md:
        return None
    fields = md[protocol.SUBSET_NAMESPACE].fields
    if protocol.SUBSET_KEY not in fields:
        return None
    value = fields[protocol.SUBSET_KEY]
    if value.HasField("list_value"):
        return [v.string_value for v in value.list_value.values if v.string_value]
    if value.string_value:
        return [s.strip() for s in value.string_value.split(",") if s.strip()]
    return []


class RequestStream:
    __slots__ = (
        "_picker", "_skip_response", "_req_mode", "_resp_mode", "_path", "_rewrite", "_subset",
        "_body", "_chunks", "_decision", "_released", "finished", "served", "objective", "fairness_id",
        "priority", "request_id", "_stats", "_recorded", "_t0", "_ttft", "_req_bytes", "_resp_bytes", "_tail",
        "_flow", "_ticket", "_slo_ttft", "admission", "_max_body",
    )

    def __init__(self, picker: Picker, skip_response: bool = False, stats: Stats | None = None,
                 flow: FlowController | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._picker = picker
        self._max_body = max_body_bytes
        self._flow = flow
        self._ticket: Ticket | None = None
        self._slo_ttft: float | None = None
        # Set while flow control holds the request: (body, answer given the decision); the gRPC
        # layer then awaits `admit()` before reading the next message.
        self.admission: tuple[bytes, Callable[[Decision], list[pb.ProcessingResponse]]] | None = None
        self._stats = stats
        self._recorded = stats is None
        self._t0 = time.monotonic()
        self._ttft: float | None = None
        self._req_bytes = 0
        self._resp_bytes = 0
        self._tail = b""
        self.priority = 0
        self.request_id = ""
        self._skip_response = skip_response
        self._req_mode = FULL_DUPLEX
        self._resp_mode = FULL_DUPLEX
        self._path = "/"
        self._rewrite: str | None = None
        self._subset: list[str] | None = None
        self._body = bytearray()
        self._chunks = 0
        self._decision: Decision | None = None
        self._released = False
        self.finished = False  # the gRPC layer closes the stream (OK) once this is set
        self.served = ""
        self.objective = ""
        self.fairness_id = protocol.DEFAULT_FAIRNESS_ID

    def handle(self, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        kind = req.WhichOneof("request")
        try:
            if kind == "request_headers":
                return self._on_request_headers(req)
            if kind == "request_body":
                return self._on_request_body(req.request_body)
            if kind == "request_trailers":
                return self._on_request_trailers()
            if kind == "response_headers":
                return self._on_response_headers(req)
            if kind == "response_body":
                return self._on_response_body(req.response_body)
            if kind == "response_trailers":
                self._complete()
                return [messages.EMPTY_RESPONSE_TRAILERS]
            raise errors.BadRequestError(f"unexpected ext_proc message '{kind}'")
        except Exception as e:
            return self._failed(e)

    async def admit(self) -> list[pb.ProcessingResponse]:
        """Flow control: wait for the request's turn (it is routed at dispatch), then answer.
        Cancelling (client gone) removes it from its queue."""
        assert self._flow is not None and self.admission is not None
        body, answer = self.admission
        self.admission = None
        self.priority = self._flow.priority_of(self.objective)
        try:
            self._ticket = await self._flow.acquire(
                self.fairness_id, self.priority, len(body), None, self._slo_ttft, path=self._path, body=body,
                model_rewrite=self._rewrite, subset=self._subset)
            return answer(self._decided(self._ticket.decision))
        except Exception as e:
            return self._failed(e)

    def close(self) -> None:
        """The stream ended (normally, by error, or by client disconnect)."""
        self._complete()
        self._body = bytearray()

    # request phase

    def _on_request_headers(self, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        if req.HasField("protocol_config"):
            self._req_mode = req.protocol_config.request_body_mode
            self._resp_mode = req.protocol_config.response_body_mode
        headers = req.request_headers
        for h in headers.headers.headers:
            key = h.key
            if key == ":path":
                self._path = _header(h)
            elif key in protocol.MODEL_REWRITE_HEADERS:
                self._rewrite = _header(h) or None
            elif key in protocol.OBJECTIVE_HEADERS:
                self.objective = _header(h)
            elif key in protocol.FAIRNESS_HEADERS:
                self.fairness_id = _header(h) or protocol.DEFAULT_FAIRNESS_ID
            elif key == "x-request-id":
                self.request_id = _header(h)
            elif key in protocol.SLO_TTFT_HEADERS:
                self._slo_ttft = _slo_seconds(_header(h))
        self._subset = _subset_hint(req)
        if headers.end_of_stream or self._req_mode == NO_BODY:
            return self._decide(b"", lambda d: self._after_request([messages.routed_headers(d.endpoints, None)]))
        if self._req_mode == FULL_DUPLEX:
            return []  # the answer waits for the whole body
        return [messages.EMPTY_REQUEST_HEADERS]

    def _on_request_body(self, body: pb.HttpBody) -> list[pb.ProcessingResponse]:
        self._req_bytes += len(body.body)
        if self._req_bytes > self._max_body and self._decision is None:
            self._body = bytearray()
            raise errors.PayloadTooLargeError(
                f"request body exceeds the limit of {self._max_body} bytes (--max-request-body-bytes)")
        self._body += body.body
        self._chunks += 1
        if not body.end_of_stream:
            return []  # STREAMED chunks are answered together once the decision is made
        return self._answer_request(end_of_stream=True)

    def _on_request_trailers(self) -> list[pb.ProcessingResponse]:
        out = self._answer_request(end_of_stream=False) if self._decision is None else []
        if self.admission is not None:  # flow control holds the answer: the trailers' follows it
            body, answer = self.admission
            self.admission = (body, lambda d: self._with_trailers(answer(d)))
            return out
        return self._with_trailers(out)

    def _with_trailers(self, out: list[pb.ProcessingResponse]) -> list[pb.ProcessingResponse]:
        if not self.finished:
            out.append(messages.EMPTY_REQUEST_TRAILERS)
        return out

    def _answer_request(self, end_of_stream: bool) -> list[pb.ProcessingResponse]:
        body = bytes(self._body)
        self._body = bytearray()
        return self._decide(body, lambda d: self._routed_request(d, body, end_of_stream))

    def _routed_request(self, decision: Decision, body: bytes, end_of_stream: bool) -> list[pb.ProcessingResponse]:
        if decision.body is not None:
            body = decision.body
        if self._req_mode == FULL_DUPLEX:
            out = [messages.routed_headers(decision.endpoints, len(body))]
            out += messages.streamed_chunks(body, end_of_stream, request=True)
        else:
            # STREAMED sent earlier chunks unanswered: answer each; a rewritten body replaces them all.
            held = messages.CLEARED_REQUEST_BODY if decision.body is not None else messages.EMPTY_REQUEST_BODY
            out = [held] * (self._chunks - 1) + [messages.routed_body(decision.endpoints, decision.body)]
        return self._after_request(out)

    def _decide(self, body: bytes, answer: Callable[[Decision], list[pb.ProcessingResponse]]
                ) -> list[pb.ProcessingResponse]:
        """Route now and answer; with flow control on, leave both to `admit`."""
        if self._decision is not None or self._ticket is not None or self._released:
            # Out of order (a body after the trailers, or after the request ended): routing again
            # would leak the first pick or start a request nothing ends.
            raise errors.BadRequestError("ext_proc: the request was routed already; message out of order")
        flow = self._flow
        if flow is None:
            return answer(self._route(body))
        if not flow.queueing:  # flowControl gate off: upstream's legacy admission, then route
            self.priority = flow.shed(self.objective)
            return answer(self._route(body))
        self.admission = (body, answer)
        return []

    def _route(self, body: bytes) -> Decision:
        return self._decided(self._picker.route(self._path, body, self._rewrite, self._subset))

    def _decided(self, decision: Decision) -> Decision:
        self._decision = decision
        if self._stats is not None:
            self._stats.started(*self._labels())
        if log.isEnabledFor(logging.DEBUG):
            log.debug("routed", extra={"request_id": self.request_id, "model": decision.model,
                                       "endpoints": decision.endpoints, "fairness_id": self.fairness_id})
        return decision

    def _after_request(self, out: list[pb.ProcessingResponse]) -> list[pb.ProcessingResponse]:
        # Full duplex ignores mode_override: the only way to skip the response phase is to close.
        if self._skip_response and self._decision is not None and self._decision.target_model is None:
            self.finished = True
            self._complete()
        return out

    # response phase

    def _on_response_headers(self, req: pb.ProcessingRequest) -> list[pb.ProcessingResponse]:
        md = req.metadata_context.filter_metadata
        if protocol.DESTINATION_NAMESPACE in md:
            served = md[protocol.DESTINATION_NAMESPACE].fields.get(protocol.SERVED_ENDPOINT)
            if served is not None:
                self.served = served.string_value
        if req.response_headers.end_of_stream:
            self._complete()
        if self._rewriting_back():
            return [messages.response_headers_without_length()]
        return [messages.EMPTY_RESPONSE_HEADERS]

    def _on_response_body(self, body: pb.HttpBody) -> list[pb.ProcessingResponse]:
        chunk = body.body
        if not self._recorded:
            self._observe_response(chunk)
        if body.end_of_stream:
            self._complete()
        if self._rewriting_back():
            d = self._decision
            chunk = replace_model_in_chunk(chunk, d.target_model, d.model)  # type: ignore[union-attr]
            if self._resp_mode != FULL_DUPLEX:
                return [messages.replaced_response_body(chunk)]
        elif self._resp_mode != FULL_DUPLEX:
            return [messages.EMPTY_RESPONSE_BODY]
        return messages.streamed_chunks(chunk, body.end_of_stream, request=False)

    def _rewriting_back(self) -> bool:
        d = self._decision
        return d is not None and d.target_model is not None and d.model is not None and d.target_model != d.model

    # outcomes

    def _complete(self, error_code: str | None = None) -> None:
        if not self._released:
            self._released = True  # ended: nothing routes after this
            if self._ticket is not None:
                self._ticket.release()  # also frees its flow-control place
            elif self._decision is not None:
                self._picker.release(self._decision.primary)
        if not self._recorded:
            self._record(error_code)

    def _failed(self, e: Exception) -> list[pb.ProcessingResponse]:
        if isinstance(e, errors.SluicegateError):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rejected", extra={"request_id": self.request_id, "status": e.status, "error": str(e)})
            return self._fail(e.status, str(e), e.reason)
        # a bug must not hang the request: answer 500
        log.exception("ext_proc stream failed", extra={"request_id": self.request_id})
        return self._fail(500, f"internal error: {type(e).__name__}", "")

    def _fail(self, status: int, message: str, reason: str) -> list[pb.ProcessingResponse]:
        self.finished = True
        self._complete(_ERROR_CODES.get(status, str(status)))
        return [messages.immediate(status, message, reason)]

    # metrics: one call into Rust when the request starts running and one when it ends

    def _labels(self) -> tuple[str, str, str, int]:
        d = self._decision
        model = (d.model or "") if d is not None else ""
        target = (d.target_model or model) if d is not None else ""
        return model, target, self.fairness_id, self.priority

    def _observe_response(self, chunk: bytes) -> None:
        if self._ttft is None:
            self._ttft = time.monotonic() - self._t0
        self._resp_bytes += len(chunk)
        self._tail = (self._tail + chunk)[-_TAIL_BYTES:]

    def _record(self, error_code: str | None) -> None:
        self._recorded = True
        usage = find_usage(self._tail) if self._tail else None
        saw_response = self._ttft is not None
        self._stats.finished(  # type: ignore[union-attr]
            *self._labels(), self._decision is not None,
            error_code=error_code,
            request_bytes=self._req_bytes,
            response_bytes=self._resp_bytes if saw_response else None,
            input_tokens=usage[0] if usage else None,
            output_tokens=usage[1] if usage else None,
            cached_tokens=usage[2] if usage and usage[2] else None,
            duration_s=time.monotonic() - self._t0 if saw_response else None,
            ttft_s=self._ttft,
            streaming=bool(self._decision is not None and self._decision.stream),
        )

