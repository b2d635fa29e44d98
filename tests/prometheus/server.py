"""A real Prometheus server for the optimizer's collector tests, on a free 127.0.0.1 port,
scraping the targets it is given every second. The binary comes from `make prometheus-bin`
(built from tests/prometheus/go.mod through the Go module proxy, cached per version)."""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from sluicegate.standalone.children import spawn
from sluicegate.standalone.ports import find_free_port

REPO = Path(__file__).resolve().parents[2]


def prometheus_version() -> str:
    m = re.search(r"github\.com/prometheus/prometheus (v[\d.]+)",
                  (REPO / "tests" / "prometheus" / "go.mod").read_text())
    assert m, "tests/prometheus/go.mod names no github.com/prometheus/prometheus version"
    return m.group(1)


def ensure_binary() -> Path:
    """`make prometheus-bin` is a no-op when the binary is cached; otherwise it builds it."""
    d = Path(os.environ.get("SLUICEGATE_PROMETHEUS_BIN") or
             Path.home() / ".cache" / "sluicegate" / f"prometheus-{prometheus_version()}")
    if not (d / ".built").exists():
        subprocess.run(["make", "-s", "prometheus-bin"], cwd=REPO, check=True, timeout=3600)
    return d / "prometheus"


class PrometheusServer:
    """`targets` maps a job name to (host:port list, labels every series of the job gets)."""

    def __init__(self, workdir: Path, targets: dict[str, tuple[list[str], dict[str, str]]]
                 ) -> None:
        self.workdir = workdir
        self.port = find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "scrape_configs": [{"job_name": job, "static_configs": [
                      {"targets": hosts, "labels": labels}]}
                      for job, (hosts, labels) in targets.items()]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> PrometheusServer:
        log = open(self.workdir / "prometheus.log", "ab")
        self._proc = spawn([
            str(ensure_binary()), f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--storage.tsdb.path={self.workdir / 'data'}", "--log.level=warn",
        ], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("prometheus did not become ready: " + self.log_tail())
            time.sleep(0.2)  # poll interval of this bounded wait
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, n: int = 20) -> str:
        path = self.workdir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop(self) -> None:
        p, self._proc = self._proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
