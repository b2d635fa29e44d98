"""What the reliability suites run and watch: model servers → EPP process → Envoy, each part
restartable on its own ports, plus readings from outside (the EPP's /metrics, its RSS and open
file descriptors from /proc) and the open-loop load driver of benches/load as a process.

Every process started here is stopped by `stop()`; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.bootstrap import EPP_CLUSTER, envoy_bootstrap
from sluicegate.standalone.epp_process import EppProcess
from tests.harness import http_request, scrape, write_endpoints

ROOT = Path(__file__).parents[2]
CHAT = "/v1/chat/completions"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
SOAK = os.environ.get("SLUICEGATE_SOAK", "") not in ("", "0", "false")


def chat(content: str = "hello", **extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


class Stack:
    """EPP + Envoy in front of `addresses`. `restart_epp`/`restart_envoy` bring a part back on
    the same ports, as a supervisor would; `stop` ends what is running."""

    def __init__(self, tmp_path: Path, addresses: list[str], epp_args: tuple[str, ...] = (),
                 **envoy_opts) -> None:
        self.addresses = addresses
        self.endpoints_file = write_endpoints(tmp_path / "endpoints.json", addresses)
        self._epp_args = epp_args
        self.epp: EppProcess | None = None
        self.envoy: EnvoyProcess | None = None
        try:
            self.epp = EppProcess(self.endpoints_file, *epp_args).start()
            if envoy_opts.get("upstream_mode") == "override_host":
                envoy_opts.setdefault("endpoints", tuple(addresses))
            opts = EnvoyOptions(listen_port=0, admin_port=0, listen_address="127.0.0.1", epp_port=self.epp.port,
                                epp_health_port=self.epp.health_port, epp_tls=False, concurrency=1, **envoy_opts)
            self.envoy = EnvoyProcess(opts, wait_epp_healthy=True).start_blocking()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        assert self.envoy is not None
        return self.envoy.url

    def post(self, body, headers: dict[str, str] | None = None, path: str = CHAT, timeout: float = 30.0):
        return http_request(self.url, path, body, headers, timeout=timeout)

    def restart_epp(self, kill: bool = False) -> None:
        """Stop (or crash) the EPP and start it again on the same ports."""
        assert self.epp is not None
        old = self.epp
        old.kill() if kill else old.stop()
        self.epp = None
        self.start_epp_like(old)

    def start_epp_like(self, old: EppProcess) -> None:
        deadline = time.monotonic() + 10
        while True:  # the old sockets may linger a moment
            try:
                self.epp = EppProcess(self.endpoints_file, *self._epp_args, grpc_port=old.port,
                                      health_port=old.health_port, metrics_port=old.metrics_port).start()
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # retry interval of this bounded retry, not synchronisation

    def restart_envoy(self, wait_epp_healthy: bool = True) -> None:
        """Stop Envoy and start it again on the same ports; back once it is ready (and, by
        default, once its health check has found the EPP healthy)."""
        assert self.envoy is not None
        opts = self.envoy.options
        self.envoy.stop_blocking()
        self.envoy = EnvoyProcess(replace(opts), wait_epp_healthy=wait_epp_healthy).start_blocking()

    def metrics(self) -> dict[str, float]:
        """The EPP's /metrics: sample name + sorted labels → value."""
        assert self.epp is not None
        return scrape(self.epp.metrics_port)

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop_blocking()
            self.envoy = None
        if self.epp is not None:
            self.epp.stop()
            self.epp = None


def epp_health_check_s() -> tuple[float, float]:
    """(interval, timeout) in seconds of the health check Envoy runs on the EPP, read from the
    bootstrap it is given: the time scale of everything Envoy learns about the EPP."""
    opts = EnvoyOptions(listen_port=1, admin_port=2, epp_port=3, epp_health_port=4, epp_tls=False)
    (check,) = next(c for c in envoy_bootstrap(opts)["static_resources"]["clusters"]
                    if c["name"] == EPP_CLUSTER)["health_checks"]
    return float(check["interval"].removesuffix("s")), float(check["timeout"].removesuffix("s"))


def process_usage(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open file descriptors) of a live process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Driver:
    """benches/load/driver.py as a process: open-loop load at `rate` for `duration_s`. Its output
    is read from the start on a thread: a result larger than the pipe buffer must not stall it."""

    def __init__(self, url: str, rate: float, duration_s: float, **workload) -> None:
        cfg = {"url": url, "rate": rate, "duration_s": duration_s, **workload}
        self._timeout = duration_s + 90
        self._proc = subprocess.Popen([sys.executable, "-m", "benches.load.driver", json.dumps(cfg)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self._out: tuple[str, str] = ("", "")
        self._timed_out = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            self._out = self._proc.communicate(timeout=self._timeout)
        except subprocess.TimeoutExpired:
            self._timed_out = True
            self._proc.kill()
            self._out = self._proc.communicate()

    def result(self) -> dict:
        self._reader.join(self._timeout + 10)
        out, err = self._out
        if self._timed_out:  # killed: its output is cut (seen as bad JSON under two CPU burners)
            raise RuntimeError(f"load driver did not finish within {self._timeout:.0f} s: {err[-2000:]}")
        if self._proc.returncode != 0:
            raise RuntimeError(f"load driver failed: {err[-2000:]}")
        res = json.loads(out.strip().splitlines()[-1])
        res["statuses"] = {int(k): v for k, v in res["statuses"].items()}
        return res
