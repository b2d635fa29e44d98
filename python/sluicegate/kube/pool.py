"""InferencePool + Pods → endpoints, as the upstream EPP's datastore derives them.

A pod is an endpoint only while it is Ready, has an IP and is not being deleted; each pool
targetPort is one endpoint (`podIP:port`, named `<pod>-rank-<i>`), narrowed by the pod's
`llm-d.ai/active-ports` annotation. Pod labels travel with the endpoint to filters and the data layer.

Beyond upstream (the Envoy AI Gateway's non-Pod backends), the selector also picks Services'
EndpointSlices (their ready addresses, on the slice ports that are pool target ports) and
ExternalName Services (their DNS name on each target port, resolved by datalayer.hostnames).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..datalayer.discovery import Endpoint
from ..errors import ConfigError

ACTIVE_PORTS = "llm-d.ai/active-ports"
# An InferencePool annotation listing the models the pool serves (comma-separated): turns the
# model allow-list on for that pool, as the Envoy AI Gateway binds models to pools.
SERVED_MODELS = "sluicegate.io/served-models"
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


@dataclass(frozen=True)
class PoolModels:
    """The models bound to the pool: listed on it (`explicit`, which turns the allow-list on)
    and named by its InferenceModelRewrites (the models they match and the ones they target)."""

    models: frozenset[str]
    explicit: bool


def pool_models(pool: dict | None, rewrites: list[dict], pool_name: str) -> PoolModels:
    ann = ((pool or {}).get("metadata") or {}).get("annotations") or {}
    listed = ann.get(SERVED_MODELS)
    models = {m.strip() for m in (listed or "").split(",") if m.strip()}
    for obj in rewrites:
        spec = obj.get("spec") or {}
        refs = [spec.get("poolRef") or {}, *(spec.get("poolRefs") or [])]
        if not any(isinstance(r, dict) and r.get("name") == pool_name for r in refs):
            continue
        for rule in spec.get("rules") or []:
            models |= {str(t["modelRewrite"]) for t in rule.get("targets") or [] if t.get("modelRewrite")}
            models |= {v for m in rule.get("matches") or [] if (v := ((m or {}).get("model") or {}).get("value"))}
    return PoolModels(frozenset(models), listed is not None)


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


def pool_endpoints(spec: PoolSpec | None, pods: list[dict], slices: list[dict] = (),
                   services: list[dict] = (), spec_hostnames: bool = False) -> list[Endpoint]:
    """Endpoints in a stable order: pods (by name, then port rank), then EndpointSlice addresses,
    then ExternalName Services. An address two sources give is listed once (the first).
    `spec_hostnames`: pod endpoints carry their Pod's spec.hostname (for a topology-extractor)."""
    if spec is None:
        return []
    out: list[Endpoint] = []
    others: tuple[Endpoint, ...] = ()
    if spec.selector:  # an empty selector means every pod (upstream), not every Service in the namespace
        others = (*_slice_endpoints(spec, slices), *_external_name_endpoints(spec, services))
    seen: set[str] = set()  # two pods can briefly share an IP (reuse after deletion): first wins
    for ep in (*_pod_endpoints(spec, pods, spec_hostnames), *others):
        if ep.hostport not in seen:
            seen.add(ep.hostport)
            out.append(ep)
    return out


def _endpoint(md: dict, name: str, address: str, port: int, labels: dict[str, str], rank: int,
              spec_hostname: str | None = None, pod: str | None = None, node_address: str | None = None) -> Endpoint:
    return Endpoint(name=name, address=address, port=port, namespace=md.get("namespace") or "default",
                    labels=dict(labels), spec_hostname=spec_hostname, pod=pod, node_address=node_address, rank=rank)


def _pod_endpoints(spec: PoolSpec, pods: list[dict], spec_hostnames: bool) -> list[Endpoint]:
    out: list[Endpoint] = []
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        md = pod["metadata"]
        labels = md.get("labels") or {}
        if not selector_matches(spec.selector, labels) or not pod_ready(pod):
            continue
        ip = pod["status"]["podIP"]
        active = set(active_ports(pod, spec.target_ports))
        # Read from the same Pod object as its readiness: a deleted or unready Pod has no
        # endpoint, so its hostname goes with it, and a recreated Pod brings its own.
        hostname = ((pod.get("spec") or {}).get("hostname") or None) if spec_hostnames else None
        node = pod["status"].get("hostIP") or None
        out += [_endpoint(md, f"{md['name']}-rank-{rank}", ip, port, labels, rank, hostname, md["name"], node)
                for rank, port in enumerate(spec.target_ports) if port in active]
    return out


def _slice_endpoints(spec: PoolSpec, slices: list[dict]) -> list[Endpoint]:
    """Ready addresses of matching EndpointSlices (ready unset counts as ready, as the API says)."""
    out: list[Endpoint] = []
    for sl in sorted(slices, key=lambda s: s["metadata"]["name"]):
        md = sl["metadata"]
        labels = md.get("labels") or {}
        if not selector_matches(spec.selector, labels) or sl.get("addressType") == "FQDN":
            continue
        # No ports on a slice means every port (API semantics): then every target port.
        slice_ports = {p.get("port") for p in sl.get("ports") or [] if p.get("port")}
        ranks = [(r, port) for r, port in enumerate(spec.target_ports) if not slice_ports or port in slice_ports]
        service = labels.get("kubernetes.io/service-name", md["name"])
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            out += [_endpoint(md, f"{service}-{address}-rank-{rank}", address, port, labels, rank)
                    for address in ep.get("addresses") or [] for rank, port in ranks]
    return out


def _external_name_endpoints(spec: PoolSpec, services: list[dict]) -> list[Endpoint]:
    """Matching ExternalName Services: their DNS name on every target port."""
    out: list[Endpoint] = []
    for svc in sorted(services, key=lambda s: s["metadata"]["name"]):
        md, svc_spec = svc["metadata"], svc.get("spec") or {}
        name = svc_spec.get("externalName")
        if svc_spec.get("type") != "ExternalName" or not name:
            continue
        if not selector_matches(spec.selector, md.get("labels") or {}):
            continue
        out += [_endpoint(md, f"{md['name']}-rank-{rank}", name.lower().rstrip("."), port, md.get("labels") or {},
                          rank)
                for rank, port in enumerate(spec.target_ports)]
    return out
