"""A model-server stand-in that answers in microseconds, so the benches measure Envoy and the EPP.

Raw HTTP/1.1 keep-alive on a uvloop Protocol (no framework): canned OpenAI chat answers, a
vLLM-format /metrics the EPP scrapes, and an echo of the destination header it was routed by.
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
    data = b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


_TOKEN_EVENT = _event({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": MODEL,
                       "choices": [{"index": 0, "delta": {"content": "tok"}, "finish_reason": None}]})


def stream_parts(req: _Request) -> list[bytes] | None:
    """The pieces of a streamed answer (head, one per token, usage + end), None if not streamed."""
    if req.path != CHAT_PATH or b'"stream":true' not in req.body.replace(b" ", b""):
        return None
    tokens = max(1, int(json.loads(req.body).get("max_tokens") or 1))
    head = [b"HTTP/1.1 200 OK", b"content-type: text/event-stream", b"transfer-encoding: chunked"]
    destination = req.headers.get(b"x-gateway-destination-endpoint")
    if destination is not None:
        head.append(ECHO_HEADER.encode() + b": " + destination)
    usage = _event({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": MODEL, "choices": [],
                    "usage": {"prompt_tokens": 4, "completion_tokens": tokens, "total_tokens": tokens + 4}})
    done = b"data: [DONE]\n\n"
    end = usage + b"%x\r\n%s\r\n" % (len(done), done) + b"0\r\n\r\n"
    return [b"\r\n".join(head) + b"\r\n\r\n", *([_TOKEN_EVENT] * tokens), end]


def answer(req: _Request) -> bytes:
    destination = req.headers.get(b"x-gateway-destination-endpoint")
    if req.path == CHAT_PATH and req.method == b"POST":
        if b'"messages"' not in req.body:
            return _response(b"400 Bad Request", b"application/json", _BAD_BODY, destination)
        return _response(b"200 OK", b"application/json", _CHAT_BODY, destination)
    if req.path == b"/metrics":
        return _response(b"200 OK", b"text/plain; version=0.0.4", _METRICS_BODY, None)
    if req.path == MODELS_PATH:
        return _response(b"200 OK", b"application/json", _MODELS_BODY, destination)
    return _response(b"404 Not Found", b"application/json", _NOT_FOUND_BODY, destination)


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Delayed ACKs against Nagle stall small responses by 40 ms (ENVOY_NOTES.md).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buf += data
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
