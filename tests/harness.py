"""Test harness: a background event loop for in-process simulators, a proxy that holds chosen
requests until the test lets them go, endpoint files, and readings of a /metrics page.

Every server started here is stopped by its owner; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import uvloop
from aiohttp import ClientSession, web
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.datalayer.discovery import write_endpoints_file
from sluicegate.sim.config import SimConfig
from sluicegate.sim.server import SimServer


class LoopThread:
    """A uvloop event loop on a daemon thread; `run` executes a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 60.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel what is still running on the loop and wait for it to finish, then stop and close
        the loop: a task left to `loop.close()` is destroyed pending and its handlers log to
        streams pytest has already closed."""
        if self.loop.is_closed():
            return
        try:
            self.run(_cancel_all(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self.loop.close()

    def pending_tasks(self) -> list[asyncio.Task]:
        """Tasks still running on the loop (for the leak guard in conftest.py)."""
        async def tasks() -> list[asyncio.Task]:
            me = asyncio.current_task()
            return [t for t in asyncio.all_tasks() if t is not me and not t.done()]

        return self.run(tasks(), 10)


async def _cancel_all() -> None:
    me = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not me]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


class SimFleet:
    """Simulated vLLM servers on free ports, started and stopped on the loop thread."""

    def __init__(self, loop_thread: LoopThread) -> None:
        self._lt = loop_thread
        self.servers: list[SimServer] = []

    def start(self, *configs: SimConfig) -> list[SimServer]:
        async def go() -> list[SimServer]:
            out = []
            for cfg in configs:
                s = SimServer(cfg)
                await s.start()
                out.append(s)
            return out

        started = self._lt.run(go())
        self.servers += started
        return started

    def stop(self, server: SimServer) -> None:
        self._lt.run(server.stop())
        self.servers.remove(server)

    def stop_all(self) -> None:
        for s in list(self.servers):
            self.stop(s)


class HoldingProxy:
    """A reverse proxy on the test loop in front of one server (`upstream` = "host:port"): a
    request carrying the header `x-test-hold` waits at the proxy until `release()`, then goes on;
    every other request passes straight through. A test keeps a server's place busy for exactly
    as long as it needs (until its other requests are queued), not for a guessed time. With
    `hold_body`, a request whose body contains it is held too (for clients that send no header
    of the test's choosing, such as the EPP's own calls)."""

    HEADER = "x-test-hold"
    _HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}

    def __init__(self, loop_thread: LoopThread, upstream: str, hold_body: bytes | None = None) -> None:
        self._lt = loop_thread
        self._hold_body = hold_body
        self._upstream = f"http://{upstream}"
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None
        self._released: asyncio.Event | None = None
        self.held = 0  # requests waiting at the proxy now
        self.address = ""

    def start(self) -> "HoldingProxy":
        async def go() -> int:
            self._released = asyncio.Event()
            self._session = ClientSession(auto_decompress=False)
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            return self._runner.addresses[0][1]

        self.address = f"127.0.0.1:{self._lt.run(go())}"
        return self

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None and self._released is not None
        body = await request.read()
        if self.HEADER in request.headers or (self._hold_body is not None and self._hold_body in body):
            self.held += 1
            try:
                await self._released.wait()
            finally:
                self.held -= 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self._HOP_BY_HOP}
        async with self._session.request(request.method, self._upstream + request.path_qs,
                                         headers=headers, data=body) as up:
            # chunk by chunk, as the server sent them: a streamed response stays streamed
            response = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in self._HOP_BY_HOP})
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    def release(self) -> None:
        """Let every held request (and any later one) go on to the upstream."""
        assert self._released is not None
        self._lt.loop.call_soon_threadsafe(self._released.set)

    def stop(self) -> None:
        async def go() -> None:
            if self._released is not None:
                self._released.set()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if self._session is not None:
                await self._session.close()
                self._session = None

        self._lt.run(go())


def write_endpoints(path: Path, addresses: list[str]) -> Path:
    return write_endpoints_file(path, addresses, name_prefix="sim")


def http_request(url: str, path: str, body: bytes | dict | None = None, headers: dict[str, str] | None = None,
                 method: str | None = None, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request; (status, lower-cased headers, body)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs = {"content-type": "application/json", **(headers or {})}
        conn.request(method or ("POST" if data is not None else "GET"), path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)  # poll interval of this bounded wait
    raise AssertionError(f"{what} not reached after {timeout} s (last: {last!r})")


def scrape(port: int) -> dict[str, float]:
    """The /metrics page of 127.0.0.1:`port`: sample name + sorted labels → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def total(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = [f"{k}={v}" for k, v in labels.items()]
    return sum(v for k, v in metrics.items()
               if k.split("{", 1)[0] == name and all(w in k.split("{", 1)[1][:-1].split(",") for w in want))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_to_dial_early() -> int:
    """A free port below the kernel's ephemeral range, for an endpoint that clients dial before
    it is bound (ZMQ publishers dialling the EPP). Dialling a free port in the ephemeral range
    over and over can pick that same port as the local one and connect to itself, and then the
    port is taken when the EPP binds it (seen: EADDRINUSE in CI)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, max(10001, low))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in 10000-{low}")


class RedisServer:
    """A real redis-server on 127.0.0.1, without persistence, stopped by `stop`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.01)  # poll interval of this bounded wait
        raise RuntimeError("redis-server did not answer PING")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
