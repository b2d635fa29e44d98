"""HTTP on --metrics-port: /metrics (Prometheus text), /healthz (alive), /readyz (can route),
and with --enable-pprof the /debug/pprof/ views.

With a token file, /metrics wants `Authorization: Bearer <token>` (the token is re-read when the
file changes, so a rotated Secret needs no restart); with an `authorize` callable (upstream's
--metrics-endpoint-auth in Kubernetes mode) the API server judges the token. Health stays open
for kubelet probes. --metrics-cert-dir serves HTTPS; --metrics-client-ca-file requires client
certificates it signed.
"""

from __future__ import annotations

import hmac
import os
import ssl
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@dataclass(frozen=True)
class MetricsAccess:
    """Who may read /metrics (and /debug/pprof/) and over what transport."""

    token_file: str | None = None
    authorize: Callable[[str], Awaitable[bool]] | None = None  # bearer token -> allowed
    cert_dir: str | None = None  # tls.crt + tls.key: HTTPS
    client_ca_file: str | None = None  # require client certificates signed by this CA
    pprof: bool = False

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.cert_dir is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # as upstream's metrics server
        ctx.load_cert_chain(os.path.join(self.cert_dir, "tls.crt"), os.path.join(self.cert_dir, "tls.key"))
        if self.client_ca_file is not None:
            ctx.load_verify_locations(self.client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, ready: Callable[[], bool], host: str, port: int,
                 token_file: str | None = None, access: MetricsAccess | None = None) -> None:
        self._access = access or MetricsAccess(token_file=token_file)
        token_file = self._access.token_file
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
        if self._access.pprof:
            from . import profiling

            profiling.add_routes(app)
            app.middlewares.append(self._guard_pprof)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self.port, ssl_context=self._access.ssl_context())
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

    async def _authorized(self, request: web.Request) -> bool:
        if self._token_file is None and self._access.authorize is None:
            return True
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            return False
        token = given[7:].strip()
        if self._token_file is not None and not hmac.compare_digest(token.encode(), self._read_token()):
            return False
        return self._access.authorize is None or await self._access.authorize(token)

    @web.middleware
    async def _guard_pprof(self, request: web.Request, handler) -> web.StreamResponse:
        if request.path.startswith("/debug/pprof/") and not await self._authorized(request):
            return _unauthorized()
        return await handler(request)

    async def _metrics(self, request: web.Request) -> web.Response:
        if not await self._authorized(request):
            return _unauthorized()
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _readyz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok") if self._ready() else web.Response(status=503, text="not ready")


def _unauthorized() -> web.Response:
    return web.Response(status=401, text="missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
