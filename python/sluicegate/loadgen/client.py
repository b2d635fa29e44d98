"""One streamed OpenAI request, timed from the client's side: time to the first SSE chunk that
carries generated text, end-to-end latency, output tokens, status and the serving endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp

from sluicegate.loadgen.workloads import WorkloadRequest

ENDPOINT_HEADER = "x-sim-endpoint"


@dataclass(frozen=True)
class RequestResult:
    status: int  # HTTP status; 0 when no response arrived (connection error, timeout)
    e2e_s: float
    ttft_s: float | None = None
    output_tokens: int = 0
    endpoint: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def send(session: aiohttp.ClientSession, base_url: str, request: WorkloadRequest,
               headers: dict[str, str] | None = None) -> RequestResult:
    started = time.perf_counter()
    try:
        merged = {**request.headers, **(headers or {})}
        async with session.post(base_url + request.path, json=request.body, headers=merged) as resp:
            endpoint = resp.headers.get(ENDPOINT_HEADER)
            if resp.status != 200:
                await resp.read()
                return RequestResult(resp.status, time.perf_counter() - started,
                                     endpoint=endpoint, error=f"HTTP {resp.status}")
            if not resp.headers.get("content-type", "").startswith("text/event-stream"):
                return await _read_whole(resp, started, endpoint)
            return await _read_stream(resp, started, endpoint)
    except asyncio.TimeoutError:
        return RequestResult(0, time.perf_counter() - started, error="timeout")
    except aiohttp.ClientError as exc:
        return RequestResult(0, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")


async def _read_whole(resp: aiohttp.ClientResponse, started: float, endpoint: str | None) -> RequestResult:
    """A non-streamed answer: its first byte is its last, so TTFT is the whole latency."""
    body = await resp.json(content_type=None)
    elapsed = time.perf_counter() - started
    tokens = (body.get("usage") or {}).get("completion_tokens", 0)
    return RequestResult(resp.status, elapsed, elapsed, tokens, endpoint)


async def _read_stream(resp: aiohttp.ClientResponse, started: float,
                       endpoint: str | None) -> RequestResult:
    ttft: float | None = None
    content_chunks = 0
    usage_tokens: int | None = None
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            tokens = usage_tokens if usage_tokens is not None else content_chunks
            return RequestResult(resp.status, time.perf_counter() - started, ttft, tokens, endpoint)
        event = json.loads(data)
        if "error" in event:
            return RequestResult(resp.status, time.perf_counter() - started, ttft, content_chunks,
                                 endpoint, error=f"stream error: {event['error']}")
        if event.get("usage"):
            usage_tokens = event["usage"].get("completion_tokens")
        if any(_has_text(choice) for choice in event.get("choices") or ()):
            content_chunks += 1
            if ttft is None:
                ttft = time.perf_counter() - started
    return RequestResult(resp.status, time.perf_counter() - started, ttft, content_chunks,
                         endpoint, error="stream ended without [DONE]")


def _has_text(choice: dict) -> bool:
    delta = choice.get("delta")
    return bool(delta.get("content") if isinstance(delta, dict) else choice.get("text"))
