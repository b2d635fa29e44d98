"""The flow-control parts of an EndpointPickerConfig, parsed strictly into frozen settings.

Upstream's shape: the `flowControl` feature gate turns it on; `flowControl:` holds capacities,
TTLs and priority bands; policies and the saturation detector are plugins listed under
`plugins:` and referenced by name (`fairnessPolicyRef`, `orderingPolicyRef`,
`usageLimitPolicyPluginRef`, `saturationDetector.pluginRef`). sluicegate adds
`flowControl.noEndpointRequestTTL` and a static top-level `objectives:` list (name → priority).
`to_json()` is what the Rust flow controller takes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

FEATURE_GATE = "flowControl"
DEFAULT_FLOW = "default-flow"
FAIRNESS = ("global-strict-fairness-policy", "round-robin-fairness-policy", "program-aware-fairness")
PROGRAM_AWARE = "program-aware-fairness"
ORDERING = ("fcfs-ordering-policy", "edf-ordering-policy", "slo-deadline-ordering-policy")
DETECTORS = ("utilization-detector", "concurrency-detector")
USAGE_LIMITS = ("static-usage-limit-policy", "priority-holdback-policy", "soft-reflective-ceiling-policy")
# In-flight eviction's victim filter and order. Upstream wires exactly these two whenever
# `enableEviction` is on; listing them under `plugins:` (no parameters) changes nothing, as there.
EVICTION = ("sheddable-eviction-filter", "priority-then-time-eviction-order-policy")
# Flow-control plugin types → their parameters. Detectors are also scheduling filters (their
# `headroom` only acts there): a profile naming one gets it from the Rust scheduler.
PLUGIN_PARAMETERS: dict[str, set[str]] = {
    **{t: set() for t in FAIRNESS + ORDERING + EVICTION},
    PROGRAM_AWARE: {"strategy", "lasWeightService", "lasWeightHeadWait", "lasHalfLifeSeconds", "evictionTtlSeconds",
                    "evictionSweepSeconds"},
    "utilization-detector": {"queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold", "headroom"},
    "concurrency-detector": {"maxConcurrency", "maxTokenConcurrency", "concurrencyMode", "headroom",
                             "inFlightLoadProducerName"},
    "static-usage-limit-policy": {"threshold"},
    "priority-holdback-policy": {"shape", "domain", "minCeiling", "maxCeiling"},
    "soft-reflective-ceiling-policy": set(),
}
PLUGIN_TYPES = frozenset(PLUGIN_PARAMETERS)

_FLOW_FIELDS = {"maxBytes", "maxRequests", "defaultRequestTTL", "noEndpointRequestTTL", "defaultPriorityBand",
                "defaultNegativePriorityBand", "priorityBands", "usageLimitPolicyPluginRef", "saturationDetector",
                "enableEviction"}
_BAND_FIELDS = {"priority", "maxBytes", "maxRequests", "fairnessPolicyRef", "orderingPolicyRef"}
_LEGACY_DETECTOR_FIELDS = {"queueDepthThreshold", "kvCacheUtilThreshold", "metricsStalenessThreshold"}
_BAND_MAX_REQUESTS = 5000
_BAND_MAX_BYTES = 1_000_000_000
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_QUANTITY_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
                   "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


@dataclass(frozen=True)
class Band:
    priority: int = 0
    max_requests: int = _BAND_MAX_REQUESTS
    max_bytes: int = _BAND_MAX_BYTES
    fairness_policy: str = FAIRNESS[0]
    ordering_policy: str = ORDERING[0]

    def to_dict(self) -> dict[str, Any]:
        return {"priority": self.priority, "maxRequests": self.max_requests, "maxBytes": self.max_bytes,
                "fairnessPolicy": self.fairness_policy, "orderingPolicy": self.ordering_policy}


@dataclass(frozen=True)
class FlowControlSettings:
    enabled: bool = False
    max_requests: int = 0  # global; 0 = no limit
    max_bytes: int = 0
    default_request_ttl_ms: int = 60_000  # 0 = no TTL
    no_endpoint_request_ttl_ms: int | None = None  # None = the request TTL
    default_band: Band = Band()
    default_negative_band: Band | None = None
    bands: tuple[Band, ...] = ()
    usage_limit: dict[str, Any] = field(default_factory=lambda: {"type": "static-usage-limit-policy", "ceiling": 1.0})
    detector: dict[str, Any] = field(default_factory=lambda: {"type": "utilization-detector"})
    # program-aware-fairness's parameters (one instance per controller); None when no band uses it.
    program_aware: dict[str, Any] | None = None
    # flowControl.enableEviction: revoke dispatched sheddable requests for waiting higher-priority ones.
    enable_eviction: bool = False
    # InferenceObjective name → priority (static mode); absent or unknown → 0.
    objectives: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "maxRequests": self.max_requests, "maxBytes": self.max_bytes,
            "defaultRequestTtlMs": self.default_request_ttl_ms,
            "defaultPriorityBand": self.default_band.to_dict(),
            "priorityBands": [b.to_dict() for b in self.bands],
            "usageLimitPolicy": self.usage_limit, "saturationDetector": self.detector,
        }
        if self.default_negative_band is not None:
            doc["defaultNegativePriorityBand"] = self.default_negative_band.to_dict()
        if self.no_endpoint_request_ttl_ms is not None:
            doc["noEndpointRequestTtlMs"] = self.no_endpoint_request_ttl_ms
        if self.program_aware is not None:
            doc["programAware"] = self.program_aware
        if self.enable_eviction:
            doc["enableEviction"] = True
        return json.dumps(doc)


def parse_flow_control(doc: dict[str, Any], source: str = "config") -> FlowControlSettings:
    """`doc` is the whole EndpointPickerConfig mapping; reads featureGates, plugins (the
    flow-control types only), flowControl, saturationDetector and objectives."""
    plugins = _flow_plugins(doc.get("plugins"), source)
    where = f"{source}: flowControl"
    fc = _mapping(doc.get("flowControl"), where)
    _no_unknown(fc, _FLOW_FIELDS, where)
    eviction = fc.get("enableEviction", False)
    if not isinstance(eviction, bool):
        raise ConfigError(f"{where}.enableEviction: {eviction!r} is not a boolean")
    no_ep = fc.get("noEndpointRequestTTL")
    negative = fc.get("defaultNegativePriorityBand")
    program_aware = _program_aware(fc, plugins, where)
    return FlowControlSettings(
        program_aware=program_aware,
        enable_eviction=eviction,
        enabled=_gate_on(doc.get("featureGates"), source),
        max_requests=_quantity(fc, "maxRequests", where),
        max_bytes=_quantity(fc, "maxBytes", where),
        default_request_ttl_ms=_duration_ms(fc.get("defaultRequestTTL", "60s"), f"{where}.defaultRequestTTL"),
        no_endpoint_request_ttl_ms=None if no_ep is None else _duration_ms(no_ep, f"{where}.noEndpointRequestTTL"),
        default_band=_band(fc.get("defaultPriorityBand"), f"{where}.defaultPriorityBand", plugins, template=True),
        default_negative_band=None if negative is None else _band(
            negative, f"{where}.defaultNegativePriorityBand", plugins, template=True),
        bands=_bands(fc.get("priorityBands"), f"{where}.priorityBands", plugins),
        usage_limit=_usage_limit(fc.get("usageLimitPolicyPluginRef"), f"{where}.usageLimitPolicyPluginRef", plugins),
        detector=_detector(fc.get("saturationDetector"), doc.get("saturationDetector"), source, plugins),
        objectives=_objectives(doc.get("objectives"), f"{source}: objectives"),
    )


# helpers: shapes and scalars


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    return value


def _no_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}'")


def _gate_on(raw: Any, source: str) -> bool:
    """Gates are "name", "name=true" or "name=false" as upstream; the last mention wins."""
    on = False
    for gate in raw or []:
        if not isinstance(gate, str):
            raise ConfigError(f"{source}: featureGates: {gate!r} is not a name")
        name, _, value = gate.partition("=")
        if name.strip() == FEATURE_GATE:
            if value.strip().lower() not in ("", "true", "false"):
                raise ConfigError(f"{source}: featureGates: {gate!r} must be '{FEATURE_GATE}[=true|false]'")
            on = value.strip().lower() != "false"
    return on


def _quantity(m: dict, key: str, where: str, default: int = 0) -> int:
    """A Kubernetes quantity ("1Gi", "500M", "1k", 100) as a non-negative integer."""
    v = m.get(key)
    if v is None:
        return default
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    match = _QUANTITY.match(v.strip()) if isinstance(v, str) else None
    if match is None:
        raise ConfigError(f"{where}.{key}: {v!r} is not a quantity like 1000, '1k', '500M' or '1Gi'")
    return int(float(match.group(1)) * _QUANTITY_UNITS[match.group(2)])


def _duration_ms(value: Any, where: str) -> int:
    """A Go duration ("60s", "1m30s", "500ms", "0s") or a number of seconds; ≥ 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return round(value * 1000)
    text = value.strip() if isinstance(value, str) else ""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"{where}: {value!r} is not a duration like '60s', '1m30s' or '500ms'")
    ms = sum(float(n) * _DURATION_MS[u] for n, u in parts)
    return max(1, round(ms)) if ms > 0 else 0


# plugins and references


def _flow_plugins(raw: Any, source: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Flow-control plugins by name → (type, parameters); other plugin types are not ours."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    if not isinstance(raw, list):
        return out  # scheduling/config.py reports a malformed plugins list
    for i, p in enumerate(raw):
        if not isinstance(p, dict) or p.get("type") not in PLUGIN_TYPES:
            continue
        kind = p["type"]
        name = p.get("name") or kind
        where = f"{source}: plugins[{i}] ({name})"
        _no_unknown(p, {"name", "type", "parameters"}, where)
        params = _mapping(p.get("parameters"), f"{where}.parameters")
        _no_unknown(params, PLUGIN_PARAMETERS[kind], f"{where}.parameters")
        if name in out:
            raise ConfigError(f"{where}: plugin name {name!r} is used twice")
        out[name] = (kind, params)
    return out


def _resolve(ref: Any, kinds: tuple[str, ...], plugins: dict, where: str) -> tuple[str, dict[str, Any]]:
    """A reference names a listed plugin, or a type used with its defaults (as upstream does)."""
    if ref in plugins:
        kind, params = plugins[ref]
        if kind not in kinds:
            raise ConfigError(f"{where}: plugin {ref!r} is a {kind}, not one of {', '.join(kinds)}")
        return kind, params
    if ref in kinds:
        return ref, {}
    raise ConfigError(f"{where}: {ref!r} names no plugin of type {', '.join(kinds)}")


def _band(raw: Any, where: str, plugins: dict, template: bool = False) -> Band:
    m = _mapping(raw, where)
    _no_unknown(m, _BAND_FIELDS - ({"priority"} if template else set()), where)
    priority = m.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ConfigError(f"{where}.priority: {priority!r} is not an integer")
    fairness, _ = _resolve(m.get("fairnessPolicyRef", FAIRNESS[0]), FAIRNESS, plugins, f"{where}.fairnessPolicyRef")
    ordering, _ = _resolve(m.get("orderingPolicyRef", ORDERING[0]), ORDERING, plugins, f"{where}.orderingPolicyRef")
    # Upstream: a band's limits are always bounded; 0 or omitted means the system default.
    return Band(priority=priority,
                max_requests=_quantity(m, "maxRequests", where) or _BAND_MAX_REQUESTS,
                max_bytes=_quantity(m, "maxBytes", where) or _BAND_MAX_BYTES,
                fairness_policy=fairness, ordering_policy=ordering)


def _bands(raw: Any, where: str, plugins: dict) -> tuple[Band, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list")
    bands = tuple(_band(b, f"{where}[{i}]", plugins) for i, b in enumerate(raw))
    seen: set[int] = set()
    for i, b in enumerate(bands):
        if b.priority in seen:
            raise ConfigError(f"{where}[{i}].priority: {b.priority} is listed twice")
        seen.add(b.priority)
    return bands


def _usage_limit(ref: Any, where: str, plugins: dict) -> dict[str, Any]:
    kind, params = _resolve(ref or USAGE_LIMITS[0], USAGE_LIMITS, plugins, where)
    w = f"{where} ({kind}).parameters"
    if kind == "static-usage-limit-policy":
        return {"type": kind, "ceiling": _fraction(params, "threshold", 1.0, w, low_open=False, high=None)}
    if kind == "soft-reflective-ceiling-policy":
        return {"type": kind}
    # priority-holdback-policy, upstream's shape: ceilings from maxCeiling (highest band) down to
    # minCeiling (lowest), evenly by rank or proportionally to the priority value.
    if "minCeiling" not in params:
        raise ConfigError(f"{w}.minCeiling: required (the ceiling of the lowest priority, in [0.0, 1.0))")
    shape = params.get("shape", "linear")
    if shape != "linear":
        raise ConfigError(f"{w}.shape: {shape!r} is not supported (only 'linear', as upstream)")
    domain = params.get("domain", "rank")
    if domain not in ("rank", "value"):
        raise ConfigError(f"{w}.domain: {domain!r} must be 'rank' or 'value'")
    low = _fraction(params, "minCeiling", 0.0, w, low_open=False, high_open=True)
    high = _fraction(params, "maxCeiling", 1.0, w)
    if low >= high:
        raise ConfigError(f"{w}.minCeiling: {low} must be below maxCeiling ({high})")
    return {"type": kind, "minCeiling": low, "maxCeiling": high, "domain": domain}


def _fraction(m: dict, key: str, default: float, where: str, *, low_open: bool = True,
              high: float | None = 1.0, high_open: bool = False) -> float:
    """A number in (0, 1] by default; `low_open=False` admits 0, `high=None` lifts the top."""
    v = m.get(key, default)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok:
        ok = (v > 0 if low_open else v >= 0) and (high is None or (v < high if high_open else v <= high))
    if not ok:
        lo, hi = "(0.0" if low_open else "[0.0", "" if high is None else (f"{high})" if high_open else f"{high}]")
        raise ConfigError(f"{where}.{key}: {v!r} must be a number in {lo}, {hi or 'inf)'}")
    return float(v)


def _detector(flow_ref: Any, legacy: Any, source: str, plugins: dict) -> dict[str, Any]:
    """flowControl.saturationDetector.pluginRef wins over the deprecated top-level block, which
    may also carry the old inline utilization thresholds."""
    if flow_ref is not None:
        where = f"{source}: flowControl.saturationDetector"
        m = _mapping(flow_ref, where)
        _no_unknown(m, {"pluginRef"}, where)
    else:
        where = f"{source}: saturationDetector"
        m = _mapping(legacy, where)
        _no_unknown(m, {"pluginRef"} | _LEGACY_DETECTOR_FIELDS, where)
        if "pluginRef" in m and len(m) > 1:
            raise ConfigError(f"{where}: give pluginRef or inline thresholds, not both")
        if "pluginRef" not in m and m:
            return _detector_params("utilization-detector", m, where)
    kind, params = _resolve(m.get("pluginRef") or DETECTORS[0], DETECTORS, plugins, f"{where}.pluginRef")
    return _detector_params(kind, params, f"{where} ({kind})")


def _detector_params(kind: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    """Upstream's defaults and bounds; `headroom` (≥ 0) only widens the filter role."""
    _fraction(params, "headroom", 0.0, where, low_open=False, high=None)
    if kind == "concurrency-detector":
        mode = params.get("concurrencyMode", "requests")
        if mode not in ("requests", "tokens", "hybrid"):
            raise ConfigError(f"{where}.concurrencyMode: {mode!r} must be 'requests', 'tokens' or 'hybrid'")
        if mode != "requests":
            raise ConfigError(f"{where}.concurrencyMode: {mode!r} is not supported yet: in-flight tokens are not "
                              "counted per request here (use 'requests')")
        if params.get("inFlightLoadProducerName"):
            raise ConfigError(f"{where}.inFlightLoadProducerName: the concurrency detector counts the requests "
                              "flow control dispatched itself; it reads no producer")
        for key, default in (("maxConcurrency", 100), ("maxTokenConcurrency", 1_000_000)):
            n = params.get(key, default)
            if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
                raise ConfigError(f"{where}.{key}: {n!r} is not a positive integer")
        return {"type": kind, "maxConcurrency": params.get("maxConcurrency", 100)}
    depth = params.get("queueDepthThreshold", 5)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth <= 0:
        raise ConfigError(f"{where}.queueDepthThreshold: {depth!r} is not a positive integer")
    staleness = _duration_ms(params.get("metricsStalenessThreshold", "200ms"), f"{where}.metricsStalenessThreshold")
    if staleness <= 0:
        raise ConfigError(f"{where}.metricsStalenessThreshold: must be > 0")
    return {"type": kind, "queueDepthThreshold": float(depth),
            "kvCacheUtilThreshold": _fraction(params, "kvCacheUtilThreshold", 0.8, where),
            "metricsStalenessMs": staleness}


def _program_aware(fc: dict, plugins: dict, where: str) -> dict[str, Any] | None:
    """The parameters of the program-aware-fairness plugin the bands name (one per config: its
    programs' service is shared by every band using it, as upstream's instance is)."""
    refs: set[str] = set()
    templates = [("defaultPriorityBand", fc.get("defaultPriorityBand")),
                 ("defaultNegativePriorityBand", fc.get("defaultNegativePriorityBand"))]
    bands = fc.get("priorityBands") if isinstance(fc.get("priorityBands"), list) else []
    for field_name, band in templates + [(f"priorityBands[{i}]", b) for i, b in enumerate(bands)]:
        ref = band.get("fairnessPolicyRef") if isinstance(band, dict) else None
        if ref == PROGRAM_AWARE or (ref in plugins and plugins[ref][0] == PROGRAM_AWARE):
            refs.add(ref)
    if not refs:
        return None
    if len(refs) > 1:
        raise ConfigError(f"{where}: bands name {len(refs)} program-aware-fairness plugins "
                          f"({', '.join(sorted(refs))}); one is supported")
    (ref,) = refs
    params = dict(plugins[ref][1]) if ref in plugins else {}
    w = f"{where}: plugin {ref!r} (program-aware-fairness).parameters"
    strategy = params.get("strategy", "las")
    if strategy not in ("las", ""):
        raise ConfigError(f"{w}.strategy: {strategy!r} is not supported (only 'las', as upstream)")
    for key in ("lasWeightService", "lasWeightHeadWait", "lasHalfLifeSeconds", "evictionTtlSeconds"):
        if key in params:
            _fraction(params, key, 0.0, w, low_open=False, high=None)
    if "evictionSweepSeconds" in params:
        _fraction(params, "evictionSweepSeconds", 300.0, w, high=None)
    return {k: (float(v) if k != "strategy" else v) for k, v in params.items()}


def _objectives(raw: Any, where: str) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of {{name, priority}}")
    out: dict[str, int] = {}
    for i, o in enumerate(raw):
        w = f"{where}[{i}]"
        m = _mapping(o, w)
        _no_unknown(m, {"name", "priority"}, w)
        name, priority = m.get("name"), m.get("priority", 0)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{w}.name: required")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ConfigError(f"{w}.priority: {priority!r} is not an integer")
        if name in out:
            raise ConfigError(f"{w}.name: {name!r} is listed twice")
        out[name] = priority
    return out
