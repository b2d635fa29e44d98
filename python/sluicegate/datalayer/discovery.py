"""Static endpoint discovery: a YAML or JSON file in the upstream file-discovery shape
(`endpoints: [{name, namespace, address, port, labels}]`), re-read when it changes.

`port` is upstream's string (`"8000"`) or an integer; `address` is an IP (v4 or v6) or, as in
upstream's multicluster-file-discovery, a DNS name that `datalayer.hostnames` resolves."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..errors import ConfigError

log = logging.getLogger(__name__)

ENGINE_LABEL = "llm-d.ai/engine-type"
# RFC 1123 subdomain, as Kubernetes validates hostnames (lower case, at most 253 characters).
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*\.?")


def hostport(address: str, port: int) -> str:
    """`ip:port` as the wire carries it: IPv6 literals in brackets (`[::1]:8000`)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Endpoint:
    name: str
    address: str  # an IP, or a DNS name until datalayer.hostnames resolves it
    port: int
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    # Kubernetes mode with a topology-extractor: the Pod's spec.hostname (its fallback when the
    # hostname label is absent, as upstream's Pod k8s-notification-source feeds it).
    spec_hostname: str | None = None
    # Kubernetes mode: the Pod's metadata.name (the `pod` label of its DCGM samples; the endpoint
    # name adds the rank) and status.hostIP (a DaemonSet DCGM exporter, `useNodeAddress`).
    pod: str | None = None
    node_address: str | None = None
    # Kubernetes mode: the port's index in the pool's targetPorts (a data-parallel rank), which
    # offsets the KV-event ports a precise producer dials, as upstream's GetRankIndex.
    rank: int = 0

    @property
    def pod_facts(self) -> tuple[str | None, str | None, str | None] | None:
        """(pod name, spec.hostname, node address) for `Router.set_endpoints`; None without a Pod."""
        facts = (self.pod, self.spec_hostname, self.node_address)
        return facts if any(facts) else None

    @property
    def hostport(self) -> str:
        return hostport(self.address, self.port)

    @property
    def is_hostname(self) -> bool:
        return not is_ip(self.address)


def parse_address(value: object, where: str) -> str:
    """An IP literal (IPv6 with or without brackets) or an RFC 1123 DNS name, normalised."""
    if isinstance(value, str):
        text = value.strip()
        bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        if is_ip(bare):
            return str(ipaddress.ip_address(bare))
        if len(text) <= 253 and _DNS_NAME.fullmatch(text.lower()):
            return text.lower().rstrip(".")
    raise ConfigError(f"{where}.address: {value!r} is not an IP address or a DNS name")


def parse_port(value: object, where: str) -> int:
    """Upstream writes the port as a string ("8000"); an integer is accepted too."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ConfigError(f"{where}.port: {value!r} is not a port number (1-65535, integer or string)")
    return value


def parse_endpoints(doc: object, source: str) -> list[Endpoint]:
    """Validate a decoded document; errors name the source, the entry and the field."""
    if not isinstance(doc, dict) or not isinstance(doc.get("endpoints"), list):
        raise ConfigError(f"{source}: expected a mapping with an 'endpoints' list")
    out: list[Endpoint] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc["endpoints"]):
        where = f"{source}: endpoints[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
        unknown = set(raw) - {"name", "namespace", "address", "port", "labels"}
        if unknown:
            raise ConfigError(f"{where}: unknown field '{sorted(unknown)[0]}'")
        address = parse_address(raw.get("address"), where)
        port = parse_port(raw.get("port"), where)
        labels = raw.get("labels") or {}
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise ConfigError(f"{where}.labels: expected a mapping of strings")
        name = raw.get("name") or hostport(address, port)
        ep = Endpoint(name=str(name), address=address, port=port, namespace=str(raw.get("namespace") or "default"), labels=labels)
        if ep.hostport in seen:
            raise ConfigError(f"{where}: duplicate endpoint {ep.hostport}")
        seen.add(ep.hostport)
        out.append(ep)
    return out


def load_endpoints_file(path: str | Path) -> list[Endpoint]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read endpoints file: {e.strerror}") from None
    try:
        doc = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    return parse_endpoints(doc, str(p))


class FileDiscovery:
    """Feeds `on_change` with the file's endpoints at start and whenever the file changes.
    A bad edit is logged and the last good endpoint set is kept."""

    def __init__(self, path: str | Path, on_change: Callable[[list[Endpoint]], None], watch: bool = True,
                 interval: float = 1.0) -> None:
        self._path = Path(path)
        self._on_change = on_change
        self._watch = watch
        self._interval = interval
        self._stamp: tuple[int, int] | None = None
        self._task: asyncio.Task | None = None

    def load(self) -> list[Endpoint]:
        """Read once (raises ConfigError: a bad file at start-up is fatal)."""
        self._stamp = self._file_stamp()
        endpoints = load_endpoints_file(self._path)
        self._on_change(endpoints)
        return endpoints

    def start(self) -> None:
        self.load()
        if self._watch:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="file-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def check(self) -> None:
        """Re-read the file now if it changed. Whoever just changed it (the activator's scale
        commands) calls this: until the next poll the EPP would route to the endpoints it no
        longer lists, e.g. a stopped server whose address the next one reuses."""
        stamp = self._file_stamp()
        if stamp == self._stamp or stamp is None:
            return
        self._stamp = stamp
        try:
            self._on_change(load_endpoints_file(self._path))
        except ConfigError as e:
            log.error("keeping the previous endpoints: %s", e)

    async def _poll(self) -> None:
        # mtime polling at 1 s: no extra dependency, and a file of endpoints changes rarely.
        while True:
            await asyncio.sleep(self._interval)
            self.check()


def write_endpoints_file(path: str | Path, addresses: list[str], name_prefix: str = "endpoint") -> Path:
    """Write `ip:port` addresses as an endpoints file (JSON), for the demo, tests and benches."""
    eps = []
    for i, entry in enumerate(addresses):
        host, port = entry.rsplit(":", 1)
        eps.append({"name": f"{name_prefix}-{i}", "address": host.strip("[]"), "port": int(port)})
    p = Path(path)
    p.write_text(json.dumps({"endpoints": eps}))
    return p
