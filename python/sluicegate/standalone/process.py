"""Runs one real Envoy process from EnvoyOptions: start, wait until ready, stop, never leak it.

The child gets SIGKILL if our process dies (PR_SET_PDEATHSIG), and a weakref finalizer (also
run at interpreter exit) kills it if stop() was never reached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

import yaml

from sluicegate.standalone.binary import envoy_binary_path
from sluicegate.standalone.children import kill, spawn
from sluicegate.standalone.bootstrap import EPP_CLUSTER, envoy_bootstrap
from sluicegate.standalone.options import EnvoyOptions
from sluicegate.standalone.ports import find_free_port

_POLL_S = 0.05


_BIND_ATTEMPTS = 3


class _PortTaken(RuntimeError):
    """A port picked free was taken by another process before Envoy bound it."""


class EnvoyStartError(RuntimeError):
    """Envoy exited or did not become ready in time; the message carries its log tail."""




def _resolve_ports(opts: EnvoyOptions) -> EnvoyOptions:
    changes = {
        name: find_free_port() for name in ("listen_port", "admin_port") if getattr(opts, name) == 0
    }
    return dataclasses.replace(opts, **changes) if changes else opts


def admin_get(admin_port: int, path: str, timeout_s: float = 2.0) -> tuple[int, str]:
    """GET an Envoy admin path on 127.0.0.1; (status, body), or (0, reason) if unreachable."""
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except OSError as exc:
        return 0, str(exc)
    finally:
        conn.close()


def _is_epp_cluster(name: str) -> bool:
    return name == EPP_CLUSTER or name.startswith(f"{EPP_CLUSTER}-")


def _epp_health(clusters_text: str) -> bool | None:
    """The EPP hosts' health from admin /clusters text (every pool's EPP in the AI Gateway
    shape: `epp-<pool>`), None if Envoy has no verdict yet."""
    verdicts = [line.rsplit("::", 1)[1] == "healthy" for line in clusters_text.splitlines()
                if _is_epp_cluster(line.split("::", 1)[0]) and "::health_flags::" in line]
    return all(verdicts) if verdicts else None


class EnvoyProcess:
    """One Envoy for `options`; ports given as 0 are replaced by free ones (see `.options`)."""

    def __init__(
        self,
        options: EnvoyOptions,
        *,
        workdir: Path | None = None,
        log_level: str = "warning",
        ready_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        wait_epp_healthy: bool = False,
    ) -> None:
        self._requested = options
        self.options = _resolve_ports(options)
        self._given_workdir = workdir
        self._workdir: Path | None = None
        self._log_level = log_level
        self._ready_timeout_s = ready_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._wait_epp_healthy = wait_epp_healthy
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        host = self.options.listen_address
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return f"http://{host}:{self.options.listen_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.options.admin_port}"

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "envoy.log" if self._workdir is not None else None

    # -- launching ---------------------------------------------------------------------------

    def _launch(self) -> None:
        if self._proc is not None:
            raise RuntimeError("EnvoyProcess already started")
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._given_workdir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="sluicegate-envoy-"))
        config_path = self._workdir / "envoy.yaml"
        config_path.write_text(yaml.safe_dump(envoy_bootstrap(self.options), sort_keys=False))
        argv = [
            str(envoy_binary_path()),
            "-c", str(config_path),
            "--disable-hot-restart",
            "--concurrency", str(self.options.concurrency),
            "-l", self._log_level,
            "--log-path", str(self.log_path),
        ]
        with open(self._workdir / "envoy.out", "ab") as out:
            self._proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self._finalizer = weakref.finalize(self, kill, self._proc)

    def _log_tail(self, lines: int = 20) -> str:
        assert self._workdir is not None
        text = ""
        for name in ("envoy.log", "envoy.out"):
            path = self._workdir / name
            if path.exists():
                text += path.read_text(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def _check_ready(self) -> bool:
        """True once Envoy is ready (and the EPP healthy if asked); raises if Envoy died."""
        assert self._proc is not None
        code = self._proc.poll()
        if code is not None:
            tail = self._log_tail()
            if "Address already in use" in tail and any(f":{port}" in tail for port in self._picked_ports()):
                raise _PortTaken(tail)
            raise EnvoyStartError(f"envoy exited with {code}:\n{tail}")
        status, _ = admin_get(self.options.admin_port, "/ready", timeout_s=1.0)
        if status != 200:
            return False
        if not self._wait_epp_healthy:
            return True
        status, body = admin_get(self.options.admin_port, "/clusters", timeout_s=1.0)
        return status == 200 and _epp_health(body) is True

    def _not_ready_error(self) -> EnvoyStartError:
        what = "ready with a healthy EPP" if self._wait_epp_healthy else "ready"
        return EnvoyStartError(
            f"envoy not {what} after {self._ready_timeout_s:g} s:\n{self._log_tail()}"
        )

    # -- async API ---------------------------------------------------------------------------

    async def start(self) -> EnvoyProcess:
        for attempt in range(_BIND_ATTEMPTS):
            self._launch()
            try:
                deadline = time.monotonic() + self._ready_timeout_s
                while not await asyncio.to_thread(self._check_ready):
                    if time.monotonic() > deadline:
                        raise self._not_ready_error()
                    await asyncio.sleep(_POLL_S)
                return self
            except _PortTaken as e:
                self._repick(attempt, e)
            except BaseException:
                self._reap()  # a failed start is not worth a graceful drain
                raise
        raise AssertionError("unreachable")

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after stop_timeout_s; returns Envoy's exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + self._stop_timeout_s
            while self._proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(_POLL_S)
        return self._reap()

    async def epp_healthy(self) -> bool | None:
        """Envoy's current view of the EPP (active gRPC health check), None before a verdict."""
        status, body = await asyncio.to_thread(admin_get, self.options.admin_port, "/clusters")
        return _epp_health(body) if status == 200 else None

    async def __aenter__(self) -> EnvoyProcess:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    # -- blocking API (sync fixtures, CLI) ---------------------------------------------------

    def start_blocking(self) -> EnvoyProcess:
        for attempt in range(_BIND_ATTEMPTS):
            self._launch()
            try:
                deadline = time.monotonic() + self._ready_timeout_s
                while not self._check_ready():
                    if time.monotonic() > deadline:
                        raise self._not_ready_error()
                    time.sleep(_POLL_S)
                return self
            except _PortTaken as e:
                self._repick(attempt, e)
            except BaseException:
                self._reap()
                raise
        raise AssertionError("unreachable")

    def _picked_ports(self) -> list[int]:
        return [getattr(self.options, name) for name in ("listen_port", "admin_port")
                if getattr(self._requested, name) == 0]

    def _repick(self, attempt: int, taken: _PortTaken) -> None:
        """Between picking a free port and Envoy binding it, another process took it: pick again."""
        self._reap()
        self._proc = None
        if attempt + 1 >= _BIND_ATTEMPTS:
            raise EnvoyStartError(f"envoy could not bind free ports in {_BIND_ATTEMPTS} tries:\n{taken}")
        self.options = _resolve_ports(self._requested)

    def stop_blocking(self) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                pass
        return self._reap()

    def __enter__(self) -> EnvoyProcess:
        return self.start_blocking()

    def __exit__(self, *exc: Any) -> None:
        self.stop_blocking()

    def _reap(self) -> int | None:
        assert self._proc is not None
        kill(self._proc)
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._given_workdir is None and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        return self._proc.returncode
