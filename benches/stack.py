"""The request paths the latency bench compares, and the processes that make each one up.

A path is client → [Envoy → [ext_proc: the EPP]] → backend; every process runs on 127.0.0.1 on
free ports, in its own process, and is stopped by whoever started it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benches.backend import READY_PREFIX
from sluicegate.datalayer.discovery import write_endpoints_file
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess
from sluicegate.standalone.children import kill, spawn, wait_for_line

_BACKEND_SCRIPT = Path(__file__).with_name("backend.py")
_READY = re.compile(re.escape(READY_PREFIX.encode()) + rb"(\S+)\n")


@dataclass(frozen=True)
class PathConfig:
    """One way through to the backend; `baseline` names the path its added latency is over."""

    name: str
    description: str
    through_envoy: bool
    epp_args: tuple[str, ...] | None = None  # None: no ext_proc filter, no EPP process
    processing_mode: str = "full_duplex"
    method: str = "POST"
    baseline: str | None = None
    config_text: str | None = None  # the EPP's EndpointPickerConfig, when not the default
    headers: tuple[tuple[str, str], ...] = ()  # request headers beyond content-type

    @property
    def with_epp(self) -> bool:
        return self.epp_args is not None


RUST = ()  # the one request path: tonic, the state machine and flow control in Rust
# The production shape: flow control on (never saturating here) with objectives, as Helm deploys it.
PRODUCTION_CONFIG = """
featureGates: [flowControl]
plugins:
- type: concurrency-detector
  parameters: {maxConcurrency: 100000}
flowControl:
  saturationDetector: {pluginRef: concurrency-detector}
objectives:
- {name: premium, priority: 10}
- {name: batch, priority: -5}
"""

# Baselines come before the paths measured against them: the table is read top-down.
PATHS: tuple[PathConfig, ...] = (
    PathConfig("direct", "client → backend, no proxy", through_envoy=False),
    PathConfig("envoy", "Envoy, no ext_proc, round-robin cluster", through_envoy=True,
               baseline="direct"),
    PathConfig("epp-rust-full-duplex", "Envoy + EPP, FULL_DUPLEX_STREAMED (upstream config)",
               through_envoy=True, epp_args=RUST, baseline="envoy"),
    PathConfig("epp-rust-skip-response", "Envoy + EPP --skip-response-processing",
               through_envoy=True, epp_args=(*RUST, "--skip-response-processing"), baseline="envoy"),
    PathConfig("epp-rust-buffered", "Envoy + EPP, BUFFERED bodies", through_envoy=True,
               epp_args=RUST, processing_mode="buffered", baseline="envoy"),
    PathConfig("epp-production", "as epp-rust-full-duplex, flow control + objectives on",
               through_envoy=True, epp_args=(), baseline="epp-rust-full-duplex", config_text=PRODUCTION_CONFIG,
               headers=(("x-llm-d-inference-objective", "premium"), ("x-llm-d-inference-fairness-id", "tenant-a"))),
    PathConfig("envoy-get", "Envoy, no ext_proc, GET without body", through_envoy=True,
               method="GET", baseline="direct"),
    PathConfig("epp-rust-full-duplex-get", "Envoy + EPP full duplex, GET without body",
               through_envoy=True, epp_args=RUST, method="GET", baseline="envoy-get"),
)


class BackendProcess:
    """benches/backend.py in its own process; `address` is its ip:port once started."""

    def __init__(self, ready_timeout_s: float = 15.0) -> None:
        self._ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> BackendProcess:
        self._proc = spawn([sys.executable, str(_BACKEND_SCRIPT)], stdout=subprocess.PIPE,
                           stdin=subprocess.DEVNULL)
        try:
            self.address = self._ready_line()
        except BaseException:
            self.stop()
            raise
        return self

    def _ready_line(self) -> str:
        assert self._proc is not None
        m = wait_for_line(self._proc, _READY, self._ready_timeout_s)
        if m is None:
            raise RuntimeError(f"bench backend not ready (exit={self._proc.poll()})")
        return m.group(1).decode()

    def stop(self) -> None:
        if self._proc is None:
            return
        kill(self._proc)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._proc = None


def _write_endpoints(path: Path, address: str) -> Path:
    return write_endpoints_file(path, [address], name_prefix="bench-backend")


class PathStack:
    """The Envoy and EPP of one PathConfig in front of a running backend."""

    def __init__(self, config: PathConfig, backend: BackendProcess) -> None:
        self.config = config
        self.backend = backend
        self.epp: EppProcess | None = None
        self.envoy: EnvoyProcess | None = None
        self._workdir = Path(tempfile.mkdtemp(prefix=f"sluicegate-bench-{config.name}-"))

    def start(self) -> PathStack:
        try:
            if self.config.with_epp:
                endpoints = _write_endpoints(self._workdir / "endpoints.json", self.backend.address)
                args = tuple(self.config.epp_args or ())
                if self.config.config_text is not None:
                    config = self._workdir / "config.yaml"
                    config.write_text(self.config.config_text)
                    args = (*args, "--config-file", str(config))
                self.epp = EppProcess(endpoints, *args,
                                      log_path=self._workdir / "epp.log").start()
            if self.config.through_envoy:
                self.envoy = EnvoyProcess(self._envoy_options(),
                                          wait_epp_healthy=self.epp is not None).start_blocking()
        except BaseException:
            self.stop()
            raise
        return self

    def _envoy_options(self) -> EnvoyOptions:
        common = dict(listen_port=0, admin_port=0, listen_address="127.0.0.1", concurrency=1,
                      processing_mode=self.config.processing_mode)
        if self.epp is None:
            return EnvoyOptions(upstream_mode="round_robin", endpoints=(self.backend.address,),
                                **common)
        return EnvoyOptions(epp_port=self.epp.port, epp_health_port=self.epp.health_port,
                            epp_tls=False, **common)

    @property
    def url(self) -> str:
        return self.envoy.url if self.envoy is not None else f"http://{self.backend.address}"

    @property
    def pids(self) -> dict[str, int]:
        """The processes whose CPU a request costs, by role."""
        out = {"backend": self.backend.pid}
        if self.envoy is not None and self.envoy.pid is not None:
            out["envoy"] = self.envoy.pid
        if self.epp is not None and self.epp.pid is not None:
            out["epp"] = self.epp.pid
        return out

    def stop(self) -> None:
        if self.envoy is not None:
            self.envoy.stop_blocking()
            self.envoy = None
        if self.epp is not None:
            self.epp.stop()
            self.epp = None
        shutil.rmtree(self._workdir, ignore_errors=True)


class BaselineStacks:
    """The baseline paths, started on first use and kept for the session, so every path can
    alternate its requests with its baseline's and both see the same machine load."""

    def __init__(self, backend: BackendProcess) -> None:
        self._backend = backend
        self._stacks: dict[str, PathStack] = {}

    def get(self, name: str) -> PathStack:
        if name not in self._stacks:
            config = next((p for p in PATHS if p.name == name), None)
            if config is None:
                raise KeyError(f"baseline: no path named {name!r} in PATHS")
            self._stacks[name] = PathStack(config, self._backend).start()
        return self._stacks[name]

    def stop_all(self) -> None:
        for stack in self._stacks.values():
            stack.stop()
        self._stacks.clear()
