"""A real control plane for the kube tests: etcd + kube-apiserver on free 127.0.0.1 ports.

Binaries come from `make kube-bins` (built from tests/kube/go.mod, cached per Kubernetes version).
Auth is a static admin token (group system:masters) plus a service-account signing key generated
for the run; serving certificates are the apiserver's own self-signed ones. The test session plays
kubelet: it creates Pods and writes their IP and Ready condition through the status subresource.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client, config

from sluicegate.standalone.children import spawn
from sluicegate.standalone.ports import find_free_port

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "charts" / "sluicegate" / "crds"


def kube_version() -> str:
    m = re.search(r"k8s\.io/kubernetes (v[\d.]+)", (REPO / "tests" / "kube" / "go.mod").read_text())
    assert m, "tests/kube/go.mod names no k8s.io/kubernetes version"
    return m.group(1)


def bin_dir() -> Path:
    return Path(os.environ.get("SLUICEGATE_KUBE_BINS") or Path.home() / ".cache" / "sluicegate" / f"kube-{kube_version()}")


def ensure_bins() -> Path:
    """`make kube-bins` is a no-op when the binaries are cached; otherwise it builds them (minutes)."""
    d = bin_dir()
    if not (d / ".built").exists():
        subprocess.run(["make", "-s", "kube-bins"], cwd=REPO, check=True, timeout=3600)
    return d


class _Proc:
    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv, self.log_path = argv, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = spawn(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self, timeout: float = 15.0) -> None:
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class ControlPlane:
    def __init__(self, workdir: Path, bins: Path) -> None:
        self.workdir, self.bins = workdir, bins
        self.token = secrets.token_hex(16)
        self.etcd_port, self.peer_port = find_free_port(), find_free_port()
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self._etcd = _Proc([
            str(bins / "etcd"), "--name", "test", "--data-dir", str(workdir / "etcd"),
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
            "--initial-cluster", f"test=http://127.0.0.1:{self.peer_port}",
            "--unsafe-no-fsync", "--log-level", "warn",
        ], workdir / "etcd.log")
        self._write_auth()
        self.apiservers: list[ApiServer] = []

    def _write_auth(self) -> None:
        (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (self.workdir / "sa.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
        (self.workdir / "sa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def start(self, timeout: float = 90.0) -> "ControlPlane":
        self._etcd.start()
        _wait(lambda: _http_ok(f"{self.etcd_url}/health"), timeout, "etcd", self._etcd)
        self.apiservers.append(ApiServer(self, "apiserver").start(timeout))
        return self

    @property
    def apiserver(self) -> "ApiServer":
        return self.apiservers[0]

    def add_apiserver(self, timeout: float = 90.0) -> "ApiServer":
        """A second apiserver on the same etcd (writes while the first is down)."""
        s = ApiServer(self, f"apiserver-{len(self.apiservers)}").start(timeout)
        self.apiservers.append(s)
        return s

    def compact(self) -> int:
        """Compact etcd's history up to now, so older resourceVersions answer 410 Gone."""
        status = json.loads(_post(f"{self.etcd_url}/v3/kv/range", {"key": "AA=="}))
        rev = int(status["header"]["revision"])
        _post(f"{self.etcd_url}/v3/kv/compaction", {"revision": rev, "physical": True})
        return rev

    def stop(self) -> None:
        for s in reversed(self.apiservers):
            s.stop()
        self._etcd.stop()


class ApiServer:
    def __init__(self, cp: ControlPlane, name: str) -> None:
        self.cp = cp
        self.port = find_free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        w = cp.workdir
        self.kubeconfig = w / f"{name}.kubeconfig"
        self._proc = _Proc([
            str(cp.bins / "kube-apiserver"),
            "--etcd-servers", cp.etcd_url, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(self.port), "--cert-dir", str(w / f"{name}-certs"),
            "--token-auth-file", str(w / "tokens.csv"), "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(w / "sa.pub"),
            "--service-account-signing-key-file", str(w / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/24",
            # No controller-manager runs: nothing would create the default ServiceAccount pods need.
            "--disable-admission-plugins", "ServiceAccount",
            "--enable-priority-and-fairness=false", "--profiling=false", "--endpoint-reconciler-type", "none",
        ], w / f"{name}.log")
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": self.url, "certificate-authority": str(w / f"{name}-certs" / "apiserver.crt")}}],
            "users": [{"name": "admin", "user": {"token": cp.token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        }))

    def start(self, timeout: float = 90.0) -> "ApiServer":
        self._proc.start()
        _wait(lambda: _http_ok(f"{self.url}/readyz", self.cp.token), timeout, "kube-apiserver", self._proc)
        return self

    def stop(self) -> None:
        # Open watches hold a graceful shutdown for its whole timeout; after 3 s it is a crash.
        self._proc.stop(timeout=3.0)

    def restart(self, timeout: float = 90.0) -> None:
        self.stop()
        self.start(timeout)

    def client(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _ssl_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _http_ok(url: str, token: str | None = None) -> bool:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2, context=_ssl_context() if url.startswith("https") else None) as r:
            return r.status == 200
    except OSError:
        return False


def _post(url: str, body: dict) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def _wait(ready, timeout: float, what: str, proc: _Proc) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not proc.alive():
            raise RuntimeError(f"{what} exited:\n{proc.tail()}")
        time.sleep(0.2)  # poll interval of this bounded wait
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s:\n{proc.tail()}")
