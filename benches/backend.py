"""A model-server stand-in that answers in microseconds, so the benches measure Envoy and the EPP.

Raw HTTP/1.1 keep-alive on a uvloop Protocol (no framework), and cleartext HTTP/2 (h2c with prior
knowledge, told apart by its connection preface, through the `h2` state machine) on the same port:
canned OpenAI chat answers, a vLLM-format /metrics the EPP scrapes, and an echo of the destination
header it was routed by. HTTP/2 lets one proxy connection carry thousands of held streams (Envoy's
`upstream_http2`), where HTTP/1.1 needs a socket each on both sides of the proxy.
A `"stream": true` chat gets `max_tokens` SSE events (chunked) and a usage event, paced by the
request header `x-bench-token-interval-ms` (default: all at once) so load benches can hold streams.
Run as a separate process (`python benches/backend.py`) so it never competes for the client's GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket

CHAT_PATH = b"/v1/chat/completions"
MODELS_PATH = b"/v1/models"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# The destination header Envoy routed by, echoed so a bench can check the EPP really picked.
ECHO_HEADER = "x-bench-destination"
INTERVAL_HEADER = "x-bench-token-interval-ms"
READY_PREFIX = "bench-backend ready "

_CHAT_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
}).encode()
_MODELS_BODY = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]}).encode()
# An idle vLLM: the EPP needs waiting/running/KV usage to call the endpoint fresh.
_METRICS_BODY = (
    "# TYPE vllm:num_requests_running gauge\n"
    f'vllm:num_requests_running{{model_name="{MODEL}"}} 0.0\n'
    "# TYPE vllm:num_requests_waiting gauge\n"
    f'vllm:num_requests_waiting{{model_name="{MODEL}"}} 0.0\n'
    "# TYPE vllm:kv_cache_usage_perc gauge\n"
    f'vllm:kv_cache_usage_perc{{model_name="{MODEL}"}} 0.0\n'
    "# TYPE vllm:cache_config_info gauge\n"
    'vllm:cache_config_info{block_size="16",num_gpu_blocks="4096",enable_prefix_caching="True"} 1.0\n'
).encode()
_NOT_FOUND_BODY = b'{"error":{"message":"not found"}}'
_BAD_BODY = b'{"error":{"message":"chat body did not arrive"}}'


def _response(status: bytes, content_type: bytes, body: bytes, destination: bytes | None) -> bytes:
    head = [b"HTTP/1.1 " + status, b"content-type: " + content_type,
            b"content-length: " + str(len(body)).encode()]
    if destination is not None:
        head.append(ECHO_HEADER.encode() + b": " + destination)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _Request:
    __slots__ = ("method", "path", "headers", "body")

    def __init__(self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body


def _chunked_body(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, end offset) of a complete chunked body from `start`, None while incomplete."""
    parts, pos = [], start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)  # no trailers expected; skip any
            return (b"".join(parts), end + 4) if end >= 0 else None
        chunk_start = eol + 2
        if len(buf) < chunk_start + size + 2:
            return None
        parts.append(bytes(buf[chunk_start:chunk_start + size]))
        pos = chunk_start + size + 2


def take_request(buf: bytearray) -> _Request | None:
    """Remove and return the first complete request in `buf`, None while it is incomplete."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = bytes(buf[:head_end]).split(b"\r\n")
    method, path, _version = lines[0].split(b" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body_start = head_end + 4
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        found = _chunked_body(buf, body_start)
        if found is None:
            return None
        body, end = found
    else:
        end = body_start + int(headers.get(b"content-length", b"0"))
        if len(buf) < end:
            return None
        body = bytes(buf[body_start:end])
    del buf[:end]
    return _Request(method, path, headers, body)


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_TOKEN_EVENT = _event({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": MODEL,
                       "choices": [{"index": 0, "delta": {"content": "tok"}, "finish_reason": None}]})
_DONE_EVENT = b"data: [DONE]\n\n"


def stream_events(req: _Request) -> list[bytes] | None:
    """The SSE body of a streamed answer, one piece per token then usage + [DONE]; None if the
    request is not a streamed chat."""
    if req.path != CHAT_PATH or b'"stream":true' not in req.body.replace(b" ", b""):
        return None
    tokens = max(1, int(json.loads(req.body).get("max_tokens") or 1))
    usage = _event({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": MODEL, "choices": [],
                    "usage": {"prompt_tokens": 4, "completion_tokens": tokens, "total_tokens": tokens + 4}})
    return [*([_TOKEN_EVENT] * tokens), usage + _DONE_EVENT]


def stream_parts(req: _Request) -> list[bytes] | None:
    """HTTP/1.1 pieces of a streamed answer (head, one per token, usage + end), None if not streamed."""
    events = stream_events(req)
    if events is None:
        return None
    head = [b"HTTP/1.1 200 OK", b"content-type: text/event-stream", b"transfer-encoding: chunked"]
    destination = req.headers.get(b"x-gateway-destination-endpoint")
    if destination is not None:
        head.append(ECHO_HEADER.encode() + b": " + destination)
    *tokens, last = (_chunk(e) for e in events)
    return [b"\r\n".join(head) + b"\r\n\r\n", *tokens, last + _chunk(b"")]


def reply(req: _Request) -> tuple[bytes, bytes, bytes, bytes | None]:
    """(status line, content type, body, destination to echo) of a request not streamed."""
    destination = req.headers.get(b"x-gateway-destination-endpoint")
    if req.path == CHAT_PATH and req.method == b"POST":
        if b'"messages"' not in req.body:
            return b"400 Bad Request", b"application/json", _BAD_BODY, destination
        return b"200 OK", b"application/json", _CHAT_BODY, destination
    if req.path == b"/metrics":
        return b"200 OK", b"text/plain; version=0.0.4", _METRICS_BODY, None
    if req.path == MODELS_PATH:
        return b"200 OK", b"application/json", _MODELS_BODY, destination
    return b"404 Not Found", b"application/json", _NOT_FOUND_BODY, destination


def answer(req: _Request) -> bytes:
    return _response(*reply(req))


_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._h2: _H2 | None = None
        self._protocol_known = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Delayed ACKs against Nagle stall small responses by 40 ms (ENVOY_NOTES.md).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._h2 is not None:
            self._h2.closed()

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        if self._h2 is not None:
            self._h2.received(data)
            return
        self._buf += data
        if not self._protocol_known:
            # h2c with prior knowledge starts with the preface; anything else is HTTP/1.1.
            if _H2_PREFACE.startswith(bytes(self._buf[:len(_H2_PREFACE)])) and len(self._buf) < len(_H2_PREFACE):
                return  # too short to tell yet
            self._protocol_known = True
            if self._buf.startswith(_H2_PREFACE):
                self._h2 = _H2(self._transport)
                self._h2.received(bytes(self._buf))
                self._buf.clear()
                return
        try:
            while (req := take_request(self._buf)) is not None:
                parts = stream_parts(req)
                interval = float(req.headers.get(INTERVAL_HEADER.encode(), b"0")) / 1000
                if parts is not None and interval > 0:
                    self._pace(parts, interval)
                    return  # the client sends its next request after this answer ends
                self._transport.write(b"".join(parts) if parts is not None else answer(req))
                if req.headers.get(b"connection", b"").lower() == b"close":
                    self._transport.close()
                    return
        except ValueError:  # malformed framing: nothing sensible to answer on this connection
            self._transport.close()

    def _pace(self, parts: list[bytes], interval: float) -> None:
        loop = asyncio.get_running_loop()
        transport = self._transport
        assert transport is not None
        transport.write(parts[0])

        def next_part(i: int) -> None:
            if transport.is_closing():
                return
            transport.write(parts[i])
            if i + 1 < len(parts):
                loop.call_later(interval, next_part, i + 1)

        loop.call_later(interval, next_part, 1)


# Streams one HTTP/2 connection may carry at once: enough for every held stream of the soak on a
# single proxy connection.
H2_MAX_STREAMS = 100_000


class _H2:
    """One h2c connection: requests as HTTP/2 streams, answered as over HTTP/1.1 (same bodies,
    same pacing), with flow control both ways so thousands of streams share the connection."""

    def __init__(self, transport: asyncio.Transport) -> None:
        import h2.config
        import h2.connection
        import h2.settings

        self._transport = transport
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        self._conn.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: H2_MAX_STREAMS})
        self._conn.initiate_connection()
        self._requests: dict[int, tuple[dict[bytes, bytes], bytearray]] = {}
        self._unsent: dict[int, list[tuple[bytes, bool]]] = {}  # waiting for flow-control window
        self._open: set[int] = set()  # streams being answered
        self._flush()

    def received(self, data: bytes) -> None:
        import h2.events
        import h2.exceptions

        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()  # the GOAWAY the state machine queued
            self._transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._requests[ev.stream_id] = (dict(ev.headers), bytearray())
                if ev.stream_ended is not None:
                    self._answer(ev.stream_id)
            elif isinstance(ev, h2.events.DataReceived):
                if ev.stream_id in self._requests:
                    self._requests[ev.stream_id][1].extend(ev.data)
                self._conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if ev.stream_ended is not None:
                    self._answer(ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self._requests:
                self._answer(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self._forget(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated):
                for stream_id in list(self._unsent) if ev.stream_id == 0 else [ev.stream_id]:
                    self._send_unsent(stream_id)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self._transport.close()
        self._flush()

    def closed(self) -> None:
        self._open.clear()
        self._unsent.clear()
        self._requests.clear()

    def _forget(self, stream_id: int) -> None:
        self._requests.pop(stream_id, None)
        self._unsent.pop(stream_id, None)
        self._open.discard(stream_id)

    def _answer(self, stream_id: int) -> None:
        found = self._requests.pop(stream_id, None)
        if found is None:
            return
        headers, body = found
        req = _Request(headers.get(b":method", b""), headers.get(b":path", b""), headers, bytes(body))
        self._open.add(stream_id)
        events = stream_events(req)
        if events is None:
            status, content_type, data, destination = reply(req)
            echo = [(ECHO_HEADER.encode(), destination)] if destination is not None else []
            self._conn.send_headers(stream_id, [(b":status", status[:3]), (b"content-type", content_type),
                                                (b"content-length", str(len(data)).encode()), *echo])
            self._send(stream_id, data, end=True)
            return
        destination = headers.get(b"x-gateway-destination-endpoint")
        echo = [(ECHO_HEADER.encode(), destination)] if destination is not None else []
        self._conn.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"text/event-stream"), *echo])
        interval = float(headers.get(INTERVAL_HEADER.encode(), b"0")) / 1000
        if interval <= 0:
            self._send(stream_id, b"".join(events), end=True)
            return
        loop = asyncio.get_running_loop()

        def next_event(i: int) -> None:
            if stream_id not in self._open or self._transport.is_closing():
                return
            self._send(stream_id, events[i], end=i + 1 == len(events))
            self._flush()
            if i + 1 < len(events):
                loop.call_later(interval, next_event, i + 1)

        loop.call_later(interval, next_event, 0)

    def _send(self, stream_id: int, data: bytes, end: bool) -> None:
        self._unsent.setdefault(stream_id, []).append((data, end))
        self._send_unsent(stream_id)

    def _send_unsent(self, stream_id: int) -> None:
        import h2.exceptions

        queue = self._unsent.get(stream_id, [])
        try:
            while queue:
                data, end = queue[0]
                room = min(self._conn.local_flow_control_window(stream_id), self._conn.max_outbound_frame_size)
                if room <= 0 and data:
                    return  # the rest once the peer opens its window (WindowUpdated)
                piece, rest = data[:room], data[room:]
                self._conn.send_data(stream_id, piece, end_stream=end and not rest)
                if rest:
                    queue[0] = (rest, end)
                else:
                    queue.pop(0)
                    if end:
                        self._forget(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._forget(stream_id)  # reset by the peer meanwhile: nothing more to send
            return
        self._unsent.pop(stream_id, None)

    def _flush(self) -> None:
        out = self._conn.data_to_send()
        if out and not self._transport.is_closing():
            self._transport.write(out)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Connection, host, port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"{READY_PREFIX}{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await stop.wait()


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
