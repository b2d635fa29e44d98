"""HTTP on --metrics-port: /metrics (Prometheus text), /healthz (alive), /readyz (can route).

With a token file, /metrics wants `Authorization: Bearer <token>` (the token is re-read when the
file changes, so a rotated Secret needs no restart); health stays open for kubelet probes.
"""

from __future__ import annotations

import hmac
import os
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool], host: str, port: int,
                 token_file: str | None = None) -> None:
        self._registry = registry
        self._ready = ready
        self._host = host
        self._token_file = token_file
        self._token: tuple[float, bytes] | None = None
        self._runner: web.AppRunner | None = None
        self.port = port
        if token_file is not None:
            self._read_token()  # fail at start-up, not at the first scrape

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _read_token(self) -> bytes:
        assert self._token_file is not None
        mtime = os.stat(self._token_file).st_mtime
        if self._token is None or self._token[0] != mtime:
            with open(self._token_file, "rb") as f:
                token = f.read().strip()
            if not token:
                raise ValueError(f"--metrics-token-file {self._token_file}: file is empty")
            self._token = (mtime, token)
        return self._token[1]

    def _authorized(self, request: web.Request) -> bool:
        if self._token_file is None:
            return True
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            return False
        return hmac.compare_digest(given[7:].strip().encode(), self._read_token())

    async def _metrics(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.Response(status=401, text="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok") if self._ready() else web.Response(status=503, text="not ready")
