"""The `dataLayer` part of an EndpointPickerConfig: discovery (file-discovery) and the sources
with their extractors. As upstream, a metrics source and the core extractor are injected unless
`injectDefaults: false` or a metrics source is wired already; a listed plugin named like the
default type is the one injected. Every reference must name a listed plugin of a fitting type, and
a listed data-layer plugin that nothing wires is an error rather than a plugin that never runs.
A k8s-notification-source watches Pods in Kubernetes mode for topology-extractor's spec.hostname
fallback (the one reader of its events here); under file discovery it is refused, as it cannot bind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..flowcontrol.config import _duration_ms

# multicluster-file-discovery is upstream's variant whose addresses may be hostnames; here both
# accept hostnames (resolved by datalayer.hostnames).
log = logging.getLogger(__name__)

DISCOVERY = {"file-discovery": {"path", "watchFile"}, "multicluster-file-discovery": {"path", "watchFile"}}
METRICS_SOURCE = "metrics-data-source"
METRICS_EXTRACTOR = "core-metrics-extractor"
DCGM_SOURCE = "dcgm-data-source"
DCGM_EXTRACTOR = "dcgm-extractor"
# A cluster-scoped EPP's endpoints are other clusters: their EPPs' published pool averages.
MC_SOURCE = "multicluster-metrics-data-source"
MC_EXTRACTOR = "multicluster-metrics-extractor"
MC_METRICS = {"kvCacheUtilizationMetric": "llm_d_epp_average_kv_cache_utilization",
              "queueSizeMetric": "llm_d_epp_average_queue_size"}
MODELS_SOURCE = "models-data-source"
MODELS_EXTRACTOR = "models-data-extractor"
K8S_SOURCE = "k8s-notification-source"
TOPOLOGY_EXTRACTOR = "topology-extractor"
POD_GVK = ("", "v1", "Pod")
# Source type -> its parameters, and the extractor types it can feed.
SOURCES = {
    METRICS_SOURCE: {"scheme", "path", "insecureSkipVerify", "caCertPath", "clientCertPath", "clientKeyPath",
                     "interval"},
    # Endpoint add/remove events: built into the Router (plugins forget endpoints that leave).
    "endpoint-notification-source": set(),
    # The NVIDIA DCGM exporter next to each endpoint (GPU utilization).
    DCGM_SOURCE: {"scheme", "path", "port", "insecureSkipVerify", "useNodeAddress", "interval"},
    MC_SOURCE: {"scheme", "path", "insecureSkipVerify", "caCertPath", "clientCertPath", "clientKeyPath", "interval"},
    # Each endpoint's OpenAI model list (its models and LoRA adapters).
    MODELS_SOURCE: {"scheme", "path", "insecureSkipVerify", "caCertPath", "clientCertPath", "clientKeyPath",
                    "interval"},
    # One Kubernetes kind's object events (Kubernetes mode only).
    K8S_SOURCE: {"group", "version", "kind"},
}
EXTRACTORS = {METRICS_EXTRACTOR: {"engineLabelKey", "defaultEngine", "engineConfigs"}, DCGM_EXTRACTOR: set(),
              MC_EXTRACTOR: set(MC_METRICS), MODELS_EXTRACTOR: set()}
FEEDS = {METRICS_SOURCE: {METRICS_EXTRACTOR}, DCGM_SOURCE: {DCGM_EXTRACTOR}, MC_SOURCE: {MC_EXTRACTOR},
         MODELS_SOURCE: {MODELS_EXTRACTOR},
         # The precise and multimodal producers forget a removed endpoint's state (the Router tells
         # them); the topology extractor reads the labels of the endpoint set as it changes.
         "endpoint-notification-source": {"mm-embeddings-cache-producer", "precise-prefix-cache-producer",
                                          TOPOLOGY_EXTRACTOR},
         # Pod events: topology-extractor's spec.hostname fallback (it binds to a Pod source by
         # itself, as upstream's registers one; listing it here is the same binding).
         K8S_SOURCE: {TOPOLOGY_EXTRACTOR}}
# Scheduling plugins that may be wired as extractors (they live in the Rust registry).
SCHEDULING_EXTRACTORS = {"mm-embeddings-cache-producer", "precise-prefix-cache-producer", TOPOLOGY_EXTRACTOR}
ENGINES = ("vllm", "sglang", "trtllm-serve")
DATA_TYPES = frozenset(DISCOVERY) | frozenset(SOURCES) | frozenset(EXTRACTORS)
_FIELDS = {"injectDefaults", "sources", "discovery", "peerDiscovery", "crossReplicaSyncerPluginRef",
           "crossReplicaSyncInterval"}
_REFUSED_FIELDS = {"peerDiscovery", "crossReplicaSyncerPluginRef", "crossReplicaSyncInterval"}


@dataclass(frozen=True)
class DataPlugin:
    name: str
    type: str
    parameters: dict[str, Any]
    where: str


@dataclass(frozen=True)
class DataLayer:
    endpoints_file: str | None = None
    watch_file: bool = True
    # What the Rust Router reads: scrapeMetrics, metricsIntervalMs, engineLabelKey, defaultEngine.
    router: tuple[tuple[str, Any], ...] = ()
    # (source name, type, extractor names) as wired, for check-config.
    sources: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    # Kubernetes mode reads each Pod's spec.hostname for a topology-extractor (upstream's Pod
    # notification source, listed or the default one).
    pod_hostnames: bool = False
    # Listed k8s-notification-sources as (name, config field): refused without Kubernetes mode.
    k8s_sources: tuple[tuple[str, str], ...] = ()
    # The config field of a dcgm-data-source's `useNodeAddress: true`: node addresses come from
    # Pods, so it is refused without Kubernetes mode.
    node_addresses: str | None = None


def data_plugin(kind: str, name: str, params: Any, where: str) -> DataPlugin:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.parameters: expected a mapping")
    allowed = {**DISCOVERY, **SOURCES, **EXTRACTORS}[kind]
    _no_unknown(params, allowed, f"{where}.parameters")
    return DataPlugin(name=name, type=kind, parameters=params, where=where)


def parse_data_layer(raw: Any, plugins: dict[str, DataPlugin], source: str,
                     scheduling: dict[str, str] | None = None) -> DataLayer:
    """`scheduling` maps the other listed plugins' names to their types."""
    where = f"{source}: dataLayer"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _no_unknown(raw, _FIELDS, where)
    for key in sorted(_REFUSED_FIELDS & set(raw)):
        raise ConfigError(f"{where}.{key}: not supported (replicas share state through Redis, not peers)")
    endpoints_file, watch = _discovery(raw.get("discovery"), plugins, where)
    inject = raw.get("injectDefaults", True)
    if not isinstance(inject, bool):
        raise ConfigError(f"{where}.injectDefaults: {inject!r} is not true/false")
    scheduling = scheduling or {}
    wired = _sources(raw.get("sources"), plugins, scheduling, f"{where}.sources")
    k8s = _notification_sources(wired, plugins, scheduling, f"{where}.sources")
    if k8s and endpoints_file is not None:
        name, at = k8s[0]
        raise ConfigError(f"{at}: k8s-notification-source {name!r} watches the Kubernetes API and does not bind "
                          f"under file discovery (dataLayer.discovery); remove it from dataLayer.sources")
    if inject and not any(plugins[s].type == METRICS_SOURCE for s, _ in wired):
        wired.append((METRICS_SOURCE, [METRICS_EXTRACTOR]))
    used = {s for s, _ in wired} | {e for _, es in wired for e in es if e in plugins}
    if endpoints_file is not None:
        used.add(raw["discovery"]["pluginRef"])
    for p in plugins.values():
        if p.name not in used:
            raise ConfigError(f"{p.where}: {p.type} {p.name!r} is listed but not wired in dataLayer "
                              f"(sources or discovery), so it would never run")
    node_addresses = next((f"{p.where}.parameters.useNodeAddress" for p in plugins.values()
                           if p.type == DCGM_SOURCE and p.parameters.get("useNodeAddress") is True), None)
    if node_addresses and endpoints_file is not None:
        raise ConfigError(no_node_addresses(node_addresses))
    return DataLayer(endpoints_file=endpoints_file, watch_file=watch,
                     router=tuple(_router_settings(wired, plugins).items()),
                     sources=tuple((s, _type(s, plugins), tuple(es)) for s, es in wired),
                     pod_hostnames=TOPOLOGY_EXTRACTOR in scheduling.values(), k8s_sources=tuple(k8s),
                     node_addresses=node_addresses)


def no_node_addresses(field: str) -> str:
    """Why a DCGM DaemonSet cannot be polled under file discovery."""
    return (f"{field}: node addresses come from each Pod's status.hostIP, which file discovery does not "
            f"have; run the DCGM exporter as a sidecar (useNodeAddress: false) or use Kubernetes mode")


def _notification_sources(wired: list[tuple[str, list[str]]], plugins: dict[str, DataPlugin],
                          scheduling: dict[str, str], where: str) -> list[tuple[str, str]]:
    """The wired k8s-notification-sources as (name, field). Each must watch what something here
    reads: core v1 Pods, for a listed topology-extractor."""
    out: list[tuple[str, str]] = []
    for i, (name, _) in enumerate(wired):
        src = plugins.get(name)
        if src is None or src.type != K8S_SOURCE:
            continue
        at = f"{src.where}.parameters"
        gvk = []
        for key in ("group", "version", "kind"):
            value = src.parameters.get(key, "")
            if not isinstance(value, str):
                raise ConfigError(f"{at}.{key}: {value!r} is not a string")
            if key != "group" and not value:
                raise ConfigError(f"{at}.{key}: required (k8s-notification-source watches one group/version/kind)")
            gvk.append(value)
        if tuple(gvk) != POD_GVK:
            group, version, kind = gvk
            raise ConfigError(f"{at}.kind: {'/'.join(filter(None, (group, version)))} {kind!r}: no extractor here "
                              f"reads its events (topology-extractor reads core v1 Pod events)")
        if TOPOLOGY_EXTRACTOR not in scheduling.values():
            raise ConfigError(f"{src.where}: {K8S_SOURCE} {name!r} watches Pods, but their only reader here is a "
                              f"{TOPOLOGY_EXTRACTOR} (spec.hostname fallback) and none is listed, so its events "
                              f"would go nowhere")
        out.append((name, f"{where}[{i}].pluginRef"))
    return out


def _type(name: str, plugins: dict[str, DataPlugin]) -> str:
    return plugins[name].type if name in plugins else name


def _sources(raw: Any, plugins: dict[str, DataPlugin], scheduling: dict[str, str],
             where: str) -> list[tuple[str, list[str]]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of {{pluginRef, extractors}}")
    out: list[tuple[str, list[str]]] = []
    for i, s in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(s, dict):
            raise ConfigError(f"{at}: expected a mapping")
        _no_unknown(s, {"pluginRef", "extractors"}, at)
        name = s.get("pluginRef")
        src = plugins.get(name)
        if src is None or src.type not in SOURCES:
            raise ConfigError(f"{at}.pluginRef: {name!r} names no data source plugin "
                              f"(types: {', '.join(SOURCES)})")
        if any(name == seen for seen, _ in out):
            raise ConfigError(f"{at}.pluginRef: source {name!r} is wired twice")
        extractors = s.get("extractors") or []
        if not isinstance(extractors, list):
            raise ConfigError(f"{at}.extractors: expected a list of {{pluginRef}}")
        names = []
        for j, e in enumerate(extractors):
            eat = f"{at}.extractors[{j}]"
            if not isinstance(e, dict):
                raise ConfigError(f"{eat}: expected a mapping")
            _no_unknown(e, {"pluginRef"}, eat)
            ref = e.get("pluginRef")
            ext = plugins.get(ref)
            kind = ext.type if ext is not None else scheduling.get(ref)
            if kind not in EXTRACTORS and kind not in SCHEDULING_EXTRACTORS:
                raise ConfigError(f"{eat}.pluginRef: {ref!r} names no extractor plugin")
            if kind not in FEEDS[src.type]:
                raise ConfigError(f"{eat}.pluginRef: {kind} {ref!r} cannot read {src.type} {name!r}")
            names.append(ref)
        out.append((name, names))
    for kind in (METRICS_SOURCE, DCGM_SOURCE, MC_SOURCE, MODELS_SOURCE):
        if sum(plugins[s].type == kind for s, _ in out) > 1:
            raise ConfigError(f"{where}: one {kind} is supported (one scraper per pool)")
    if sum(plugins[s].type == K8S_SOURCE for s, _ in out) > 1:
        raise ConfigError(f"{where}: one {K8S_SOURCE} is supported (core v1 Pod is the one kind read here, and "
                          f"upstream refuses two sources of one kind)")
    return out


def _router_settings(wired: list[tuple[str, list[str]]], plugins: dict[str, DataPlugin]) -> dict:
    return {**_metrics_settings(wired, plugins), **_gpu_settings(wired, plugins), **_pool_settings(wired, plugins),
            **_models_settings(wired, plugins)}


def _http_source(wired: list[tuple[str, list[str]]], plugins: dict[str, DataPlugin], kind: str, extractor: str,
                 what: str, default_path: str, default_scheme: str,
                 default_skip: bool) -> tuple[DataPlugin, DataPlugin, dict] | None:
    """The one `kind` source wired to an `extractor`: (source, extractor, its path, timing and, over
    https, TLS settings), or None when the config has none."""
    for name, extractors in wired:
        src = plugins.get(name)
        if src is None or src.type != kind:
            continue
        if not extractors:
            raise ConfigError(f"{src.where}: {kind} {name!r} feeds no {extractor}, so what it polls is never read")
        at = f"{src.where}.parameters"
        p = src.parameters
        tls, timing = _scheme_and_timing(p, at, what, default_scheme, default_skip)
        path = p.get("path", default_path)
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{at}.path: {path!r} is not an absolute URL path")
        return src, plugins[extractors[0]], {"path": path, **timing, **({"tls": tls} if tls is not None else {})}
    return None


def _scheme_and_timing(p: dict[str, Any], where: str, what: str, default_scheme: str,
                       default_skip: bool) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(TLS settings or None for http, {intervalMs} when set) of an HTTP source; certificate files
    under plain http are refused rather than ignored."""
    tls = _tls(p, where, default_scheme, default_skip)
    if tls is None:
        for key in ("caCertPath", "clientCertPath", "clientKeyPath"):
            if key in p:
                raise ConfigError(f"{where}.{key}: TLS to {what} is not supported (scheme is http)")
    return tls, _plain_http({**p, "scheme": "http"} if tls is not None else p, where, what)


def _tls(p: dict[str, Any], where: str, default_scheme: str, default_skip: bool) -> dict[str, Any] | None:
    """scheme http (None) or https with upstream's TLS options as the Rust poller reads them
    (upstream reads caCertPath only when verifying: insecureSkipVerify false)."""
    scheme = p.get("scheme", default_scheme)
    if scheme not in ("http", "https"):
        raise ConfigError(f"{where}.scheme: {scheme!r} is not http or https")
    if scheme == "http":
        return None
    out: dict[str, Any] = {}
    skip = p.get("insecureSkipVerify", default_skip)
    if not isinstance(skip, bool):
        raise ConfigError(f"{where}.insecureSkipVerify: {skip!r} is not true/false")
    out["insecureSkipVerify"] = skip
    for key in ("caCertPath", "clientCertPath", "clientKeyPath"):
        if key in p:
            if not isinstance(p[key], str) or not p[key]:
                raise ConfigError(f"{where}.{key}: {p[key]!r} is not a file path")
            out[key] = p[key]
    if skip and "caCertPath" in out:
        # Accepted as upstream accepts it, but never silently: the file is not what secures this.
        log.warning("%s.caCertPath: not read while insecureSkipVerify is true (upstream's default for "
                    "this source); set insecureSkipVerify: false to verify the servers against it", where)
    if ("clientCertPath" in out) != ("clientKeyPath" in out):
        missing = "clientKeyPath" if "clientCertPath" in out else "clientCertPath"
        raise ConfigError(f"{where}.{missing}: required with {'clientCertPath' if missing == 'clientKeyPath' else 'clientKeyPath'} (mTLS needs both)")
    return out


def _pool_settings(wired: list[tuple[str, list[str]]], plugins: dict[str, DataPlugin]) -> dict:
    """A multicluster-metrics-data-source feeding a multicluster-metrics-extractor: the Router polls
    each (cluster) endpoint's /metrics for the pool averages its EPP publishes."""
    # Upstream defaults to https here (a cross-cluster trust boundary), verifying the peer.
    found = _http_source(wired, plugins, MC_SOURCE, MC_EXTRACTOR, "peer clusters", "/metrics", default_scheme="https",
                         default_skip=False)
    if found is None:
        return {}
    _, ext, settings = found
    for key, default in MC_METRICS.items():
        spec = ext.parameters.get(key) or default
        if not isinstance(spec, str):
            raise ConfigError(f"{ext.where}.parameters.{key}: {spec!r} is not a metric spec like "
                              f"'{default}' or '{default}{{name=\"pool\"}}'")
        settings[key] = spec
    return {"poolMetrics": settings}


def _models_settings(wired: list[tuple[str, list[str]]], plugins: dict[str, DataPlugin]) -> dict:
    """A models-data-source feeding a models-data-extractor: the Router polls each endpoint's list."""
    # Upstream: http by default; over https the server is not verified unless insecureSkipVerify: false.
    found = _http_source(wired, plugins, MODELS_SOURCE, MODELS_EXTRACTOR, "model servers", "/v1/models",
                         default_scheme="http", default_skip=True)
    return {} if found is None else {"modelsSource": found[2]}


def _gpu_settings(wired: list[tuple[str, list[str]]], plugins: dict[str, DataPlugin]) -> dict:
    """A dcgm-data-source feeding a dcgm-extractor: the Router polls the exporter next to each
    endpoint (a sidecar, at the endpoint's IP) or on its node (a DaemonSet, `useNodeAddress`)."""
    # Upstream: http by default; over https the exporter is not verified unless insecureSkipVerify: false.
    found = _http_source(wired, plugins, DCGM_SOURCE, DCGM_EXTRACTOR, "DCGM exporters", "/metrics",
                         default_scheme="http", default_skip=True)
    if found is None:
        return {}
    src, _, settings = found
    at = f"{src.where}.parameters"
    port = src.parameters.get("port", 9400)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{at}.port: {port!r} is not a port number")
    node = src.parameters.get("useNodeAddress", False)
    if not isinstance(node, bool):
        raise ConfigError(f"{at}.useNodeAddress: {node!r} is not true/false")
    return {"gpuTelemetry": {"port": port, "useNodeAddress": node, **settings}}


def _metrics_settings(wired: list[tuple[str, list[str]]], plugins: dict[str, DataPlugin]) -> dict:
    metrics = next(((s, es) for s, es in wired if _type(s, plugins) == METRICS_SOURCE), None)
    extractor = next((e for e in (metrics[1] if metrics else []) if _type(e, plugins) == METRICS_EXTRACTOR), None)
    if metrics is None or extractor is None:
        return {"scrapeMetrics": False}  # nothing is scraped, or nothing reads what is scraped
    out: dict[str, Any] = {"scrapeMetrics": True}
    src = plugins.get(metrics[0])
    if src is not None:
        out.update(_metrics_source(src.parameters, f"{src.where}.parameters"))
    ext = plugins.get(extractor)
    if ext is not None:
        out.update(_metrics_extractor(ext.parameters, f"{ext.where}.parameters"))
    return out


def _plain_http(p: dict[str, Any], where: str, what: str) -> dict[str, Any]:
    """An HTTP source's scheme, TLS and interval parameters: plain http only; {intervalMs} when set."""
    scheme = p.get("scheme", "http")
    if scheme != "http":
        raise ConfigError(f"{where}.scheme: {scheme!r} is not supported ({what} are scraped over plain http)")
    if not isinstance(p.get("insecureSkipVerify", True), bool):
        raise ConfigError(f"{where}.insecureSkipVerify: {p['insecureSkipVerify']!r} is not true/false")
    if "interval" in p:
        ms = _duration_ms(p["interval"], f"{where}.interval")
        if ms <= 0:
            raise ConfigError(f"{where}.interval: {p['interval']!r} must be above zero")
        return {"intervalMs": ms}
    return {}


def _metrics_source(p: dict[str, Any], where: str) -> dict[str, Any]:
    # Upstream: http by default; over https the server is not verified unless insecureSkipVerify: false.
    tls, timing = _scheme_and_timing(p, where, "model servers", "http", True)
    path = p.get("path", "/metrics")
    if path != "/metrics":
        raise ConfigError(f"{where}.path: {path!r} is not supported (endpoints are scraped at /metrics)")
    return {**({"metricsIntervalMs": timing["intervalMs"]} if timing else {}),
            **({"metricsTls": tls} if tls is not None else {})}


def _metrics_extractor(p: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if p.get("engineConfigs"):
        raise ConfigError(f"{where}.engineConfigs: custom engine metric specs are not supported "
                          f"(built in: {', '.join(ENGINES)})")
    if "defaultEngine" in p:
        if p["defaultEngine"] not in ENGINES:
            raise ConfigError(f"{where}.defaultEngine: {p['defaultEngine']!r} is not one of {', '.join(ENGINES)}")
        out["defaultEngine"] = p["defaultEngine"]
    if "engineLabelKey" in p:
        key = p["engineLabelKey"]
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}.engineLabelKey: {key!r} is not a label key")
        out["engineLabelKey"] = key
    return out


def _discovery(raw: Any, plugins: dict[str, DataPlugin], where: str) -> tuple[str | None, bool]:
    if raw is None:
        return None, True
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}.discovery: expected a mapping")
    _no_unknown(raw, {"pluginRef"}, f"{where}.discovery")
    plugin = plugins.get(raw.get("pluginRef"))
    if plugin is None or plugin.type not in DISCOVERY:
        raise ConfigError(f"{where}.discovery.pluginRef: {raw.get('pluginRef')!r} is not a file-discovery plugin")
    path = plugin.parameters.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{plugin.where}.parameters.path: required")
    watch = plugin.parameters.get("watchFile", True)
    if not isinstance(watch, bool):
        raise ConfigError(f"{plugin.where}.parameters.watchFile: {watch!r} is not true/false")
    return path, watch


def _no_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field {unknown[0]!r}")
