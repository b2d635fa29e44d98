"""Runs the EPP (`sluicegate run`) as a child process: start, wait for its ready line, stop.

Used by `sluicegate demo`, the integration tests and the load benches, so the EPP they talk to
is the same program a user runs, in its own process with its own GIL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

from sluicegate.standalone.children import kill, spawn, wait_for_line

_READY = re.compile(rb"sluicegate ready grpc=(\d+) health=(\d+)(?: metrics=(\d+))?")


class EppStartError(RuntimeError):
    """The EPP exited or printed no ready line in time; the message carries its log tail."""


class EppProcess:
    """`sluicegate run --secure-serving=false ...` on 127.0.0.1; port 0 = let it pick."""

    def __init__(
        self,
        endpoints_file: str | Path,
        *extra_args: str,
        grpc_port: int = 0,
        health_port: int = 0,
        metrics_port: int = 0,
        ready_timeout_s: float = 30.0,
        log_path: Path | None = None,
    ) -> None:
        self.args = [
            sys.executable, "-m", "sluicegate", "run",
            "--grpc-host", "127.0.0.1",
            "--grpc-port", str(grpc_port),
            "--grpc-health-port", str(health_port),
            "--metrics-port", str(metrics_port),
            "--secure-serving=false",
            "--drain-timeout", "0",
            "--endpoints-file", str(endpoints_file),
            *extra_args,
        ]
        self._ready_timeout_s = ready_timeout_s
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="sluicegate-epp-", suffix=".log")[1])
        self.port = grpc_port
        self.health_port = health_port
        self.metrics_port = metrics_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "EppProcess":
        if self._proc is not None:
            raise RuntimeError("EppProcess already started")
        log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = spawn(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env)
        log.close()
        self._finalizer = weakref.finalize(self, kill, self._proc)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        m = wait_for_line(self._proc, _READY, self._ready_timeout_s)
        if m:
            self.port, self.health_port = int(m.group(1)), int(m.group(2))
            self.metrics_port = int(m.group(3) or 0)
            return
        raise EppStartError(f"EPP did not become ready (exit={self._proc.poll()}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._finalizer is not None:
            self._finalizer.detach()
        self._proc = None
        return proc.returncode

    def kill(self) -> None:
        """A crash, not a shutdown: no drain, no goodbye."""
        if self._proc is not None:
            self._proc.kill()
            self.stop()

    def __enter__(self) -> "EppProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
