"""Fault knobs of the simulator, as one aiohttp middleware: completions that never answer
(`hang_rate`) and a /metrics endpoint that serves garbage or never answers (`metrics_fault`).
A server that dies mid-stream is a real process kill; one that answers 500 is `fail_rate`."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from sluicegate.sim.config import SimConfig

# Long enough to outlive any test's timeouts; the handler is cancelled when the server stops.
_FOREVER_S = 3600.0
GARBAGE_METRICS = (b"<html><body>502 Bad Gateway</body></html>\n\x00\xff\xfe garbage {{{\n"
                   b"vllm:num_requests_waiting{unterminated=\"\n")


def middlewares(config: SimConfig) -> list:
    if not (config.hang_rate or config.metrics_fault):
        return []
    rng = random.Random(f"hang|{config.seed}")

    @web.middleware
    async def faults(request: web.Request, handler):
        if request.path == "/metrics" and config.metrics_fault:
            if config.metrics_fault == "hang":
                await asyncio.sleep(_FOREVER_S)
            return web.Response(body=GARBAGE_METRICS, content_type="text/plain")
        if request.method == "POST" and config.hang_rate and rng.random() < config.hang_rate:
            await request.read()
            await asyncio.sleep(_FOREVER_S)
        return await handler(request)

    return [faults]
