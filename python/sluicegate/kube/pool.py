"""InferencePool + Pods → endpoints, as the upstream EPP's datastore derives them.

A pod is an endpoint only while it is Ready, has an IP and is not being deleted; each pool
targetPort is one endpoint (`podIP:port`, named `<pod>-rank-<i>`), narrowed by the pod's
`llm-d.ai/active-ports` annotation. Pod labels travel with the endpoint to filters and the data layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..datalayer.discovery import Endpoint
from ..errors import ConfigError

ACTIVE_PORTS = "llm-d.ai/active-ports"
LEGACY_ACTIVE_PORTS = "inference.networking.k8s.io/active-ports"
V1_GROUP = "inference.networking.k8s.io"
LEGACY_GROUP = "inference.networking.x-k8s.io"


@dataclass(frozen=True)
class PoolSpec:
    """What the EPP needs from an InferencePool (either API group) or from the no-CRD flags."""

    selector: dict[str, str]
    target_ports: tuple[int, ...]
    app_protocol: str = "http"


def pool_spec(obj: dict) -> PoolSpec:
    """Read an InferencePool of the v1 group (selector.matchLabels, targetPorts[].number) or the
    legacy x-k8s.io group (flat selector map, targetPortNumber)."""
    spec = obj.get("spec") or {}
    name = (obj.get("metadata") or {}).get("name", "?")
    raw_sel = spec.get("selector") or {}
    if "targetPorts" in spec:
        selector = raw_sel.get("matchLabels") or {}
        ports = tuple(int(p["number"]) for p in spec.get("targetPorts") or [] if "number" in p)
    else:
        selector = {k: v for k, v in raw_sel.items() if isinstance(v, str)}
        ports = (int(spec["targetPortNumber"]),) if spec.get("targetPortNumber") else ()
    if not ports:
        raise ConfigError(f"InferencePool {name}: spec.targetPorts is empty")
    return PoolSpec(selector=dict(selector), target_ports=ports, app_protocol=str(spec.get("appProtocol") or "http"))


def parse_selector(text: str, flag: str = "--endpoint-selector") -> dict[str, str]:
    """`k=v,k2=v2` (equality only, as a pool's matchLabels)."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.lstrip("=").strip()
        if not sep or not key:
            raise ConfigError(f"{flag}: {part!r} is not key=value")
        out[key] = value
    if not out:
        raise ConfigError(f"{flag}: empty selector")
    return out


def parse_ports(text: str, flag: str = "--endpoint-target-ports") -> tuple[int, ...]:
    ports: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise ConfigError(f"{flag}: {part!r} is not a port number")
        if int(part) in ports:
            raise ConfigError(f"{flag}: port {part} is listed twice")
        ports.append(int(part))
    if not 1 <= len(ports) <= 8:
        raise ConfigError(f"{flag}: expected 1 to 8 ports, got {len(ports)}")
    return tuple(ports)


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    # As a Kubernetes label selector built from a set: an empty one selects every pod (as upstream).
    return all(labels.get(k) == v for k, v in selector.items())


def pod_ready(pod: dict) -> bool:
    md, status = pod.get("metadata") or {}, pod.get("status") or {}
    if md.get("deletionTimestamp") or not status.get("podIP"):
        return False
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def active_ports(pod: dict, target_ports: tuple[int, ...]) -> list[int]:
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(ACTIVE_PORTS, ann.get(LEGACY_ACTIVE_PORTS))
    if raw is None:
        return list(target_ports)
    declared = {int(p) for p in (s.strip() for s in raw.split(",")) if p.isdigit()}
    return [p for p in target_ports if p in declared]


def pool_endpoints(spec: PoolSpec | None, pods: list[dict]) -> list[Endpoint]:
    """Endpoints in a stable order (pod name, then port rank)."""
    if spec is None:
        return []
    out: list[Endpoint] = []
    seen: set[str] = set()  # two pods can briefly share an IP (reuse after deletion): first wins
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        md = pod["metadata"]
        labels = md.get("labels") or {}
        if not selector_matches(spec.selector, labels) or not pod_ready(pod):
            continue
        ip = pod["status"]["podIP"]
        active = set(active_ports(pod, spec.target_ports))
        for rank, port in enumerate(spec.target_ports):
            if port in active and f"{ip}:{port}" not in seen:
                seen.add(f"{ip}:{port}")
                out.append(Endpoint(name=f"{md['name']}-rank-{rank}", address=ip, port=port,
                                    namespace=md.get("namespace") or "default", labels=dict(labels)))
    return out
