"""EndpointPickerConfig (the upstream EPP's config file) parsed once into a frozen EppConfig.

Strict like upstream: an unknown field, plugin type or parameter is an error naming the plugin
and the field. Plugin types the Rust scheduler does not implement yet are refused, not ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

API_VERSIONS = ("llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")
KIND = "EndpointPickerConfig"

# type -> allowed parameter names
SCORERS = {"queue-scorer": set(), "kv-cache-utilization-scorer": set(), "active-request-scorer": set()}
PICKERS = {"max-score-picker": {"maxNumOfEndpoints"}}
PROFILE_HANDLERS = {"single-profile-handler": set()}
DISCOVERY = {"file-discovery": {"path", "watchFile"}}
KNOWN_TYPES = {**SCORERS, **PICKERS, **PROFILE_HANDLERS, **DISCOVERY}

DEFAULT_WEIGHTS = {"queue-scorer": 2.0, "kv-cache-utilization-scorer": 2.0, "active-request-scorer": 1.0}
TOP_LEVEL = {"apiVersion", "kind", "plugins", "schedulingProfiles", "featureGates", "flowControl", "dataLayer",
             "requestHandler", "saturationDetector"}


@dataclass(frozen=True)
class Plugin:
    name: str
    type: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EppConfig:
    weights: dict[str, float]
    max_endpoints: int = 1
    endpoints_file: str | None = None
    watch_file: bool = True
    feature_gates: tuple[str, ...] = ()
    source: str = "<defaults>"

    def router_json(self, **data_layer: int) -> str:
        """The Rust Router's config; `data_layer` adds scrape/staleness settings from flags."""
        return json.dumps({"scorers": self.weights, "maxNumOfEndpoints": self.max_endpoints, **data_layer})

    def describe(self) -> str:
        scorers = ", ".join(f"{t}×{w:g}" for t, w in self.weights.items())
        return (f"profile 'default': scorers [{scorers}] → max-score-picker "
                f"(maxNumOfEndpoints={self.max_endpoints}); endpoints file: {self.endpoints_file or '-'}")


def load_config(*, path: str | None = None, text: str | None = None) -> EppConfig:
    """--config-file or --config-text; neither gives upstream-style defaults."""
    if path is not None and text is not None:
        raise ConfigError("give --config-file or --config-text, not both")
    if path is None and text is None:
        return EppConfig(weights=dict(DEFAULT_WEIGHTS))
    source = path or "--config-text"
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    return _parse(doc or {}, source)


def _parse(doc: Any, source: str) -> EppConfig:
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    _no_unknown(doc, TOP_LEVEL, source)
    if doc.get("apiVersion", API_VERSIONS[0]) not in API_VERSIONS:
        raise ConfigError(f"{source}: apiVersion {doc['apiVersion']!r} is not one of {', '.join(API_VERSIONS)}")
    if doc.get("kind", KIND) != KIND:
        raise ConfigError(f"{source}: kind {doc['kind']!r} is not {KIND}")
    plugins = _plugins(doc.get("plugins") or [], source)
    weights, max_endpoints = _profile(doc.get("schedulingProfiles"), plugins, source)
    endpoints_file, watch = _discovery(doc.get("dataLayer"), plugins, source)
    gates = doc.get("featureGates") or []
    if not isinstance(gates, list) or not all(isinstance(g, str) for g in gates):
        raise ConfigError(f"{source}: featureGates must be a list of names")
    return EppConfig(weights=weights, max_endpoints=max_endpoints, endpoints_file=endpoints_file,
                     watch_file=watch, feature_gates=tuple(gates), source=source)


def _no_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}'")


def _plugins(raw: Any, source: str) -> dict[str, Plugin]:
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: plugins must be a list")
    out: dict[str, Plugin] = {}
    for i, p in enumerate(raw):
        where = f"{source}: plugins[{i}]"
        if not isinstance(p, dict):
            raise ConfigError(f"{where}: expected a mapping")
        _no_unknown(p, {"name", "type", "parameters"}, where)
        ptype = p.get("type")
        if ptype not in KNOWN_TYPES:
            raise ConfigError(f"{where}: plugin type {ptype!r} is not supported (known: {', '.join(sorted(KNOWN_TYPES))})")
        name = p.get("name") or ptype
        params = p.get("parameters") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{where} ({name}): parameters must be a mapping")
        _no_unknown(params, KNOWN_TYPES[ptype], f"{where} ({name}).parameters")
        if name in out:
            raise ConfigError(f"{where}: duplicate plugin name {name!r}")
        out[name] = Plugin(name=name, type=ptype, parameters=params)
    return out


def _profile(raw: Any, plugins: dict[str, Plugin], source: str) -> tuple[dict[str, float], int]:
    if raw is None:
        scorers = [p for p in plugins.values() if p.type in SCORERS]
        weights = {p.type: 1.0 for p in scorers} or dict(DEFAULT_WEIGHTS)
        return weights, _max_endpoints([p for p in plugins.values() if p.type in PICKERS], source)
    if not isinstance(raw, list) or len(raw) != 1:
        raise ConfigError(f"{source}: schedulingProfiles: exactly one profile is supported by single-profile-handler")
    prof = raw[0]
    where = f"{source}: schedulingProfiles[0]"
    if not isinstance(prof, dict):
        raise ConfigError(f"{where}: expected a mapping")
    _no_unknown(prof, {"name", "plugins"}, where)
    weights: dict[str, float] = {}
    pickers: list[Plugin] = []
    for j, ref in enumerate(prof.get("plugins") or []):
        rwhere = f"{where}.plugins[{j}]"
        if not isinstance(ref, dict):
            raise ConfigError(f"{rwhere}: expected a mapping")
        _no_unknown(ref, {"pluginRef", "weight"}, rwhere)
        plugin = plugins.get(ref.get("pluginRef"))
        if plugin is None:
            raise ConfigError(f"{rwhere}.pluginRef: no plugin named {ref.get('pluginRef')!r}")
        if plugin.type in SCORERS:
            weight = ref.get("weight", 1)
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                raise ConfigError(f"{rwhere}.weight: {weight!r} is not a non-negative number")
            weights[plugin.type] = weights.get(plugin.type, 0.0) + float(weight)
        elif plugin.type in PICKERS:
            pickers.append(plugin)
        elif plugin.type not in PROFILE_HANDLERS:
            raise ConfigError(f"{rwhere}.pluginRef: {plugin.name!r} ({plugin.type}) cannot be used in a profile")
    return weights, _max_endpoints(pickers, source)


def _max_endpoints(pickers: list[Plugin], source: str) -> int:
    if len(pickers) > 1:
        raise ConfigError(f"{source}: a profile takes one picker, got {', '.join(p.name for p in pickers)}")
    if not pickers:
        return 1
    n = pickers[0].parameters.get("maxNumOfEndpoints", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"{source}: plugin {pickers[0].name!r} parameter maxNumOfEndpoints: {n!r} is not a positive integer")
    return n


def _discovery(raw: Any, plugins: dict[str, Plugin], source: str) -> tuple[str | None, bool]:
    if raw is None:
        return None, True
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: dataLayer must be a mapping")
    _no_unknown(raw, {"discovery", "sources"}, f"{source}: dataLayer")
    disc = raw.get("discovery")
    if disc is None:
        return None, True
    if not isinstance(disc, dict):
        raise ConfigError(f"{source}: dataLayer.discovery must be a mapping")
    _no_unknown(disc, {"pluginRef"}, f"{source}: dataLayer.discovery")
    plugin = plugins.get(disc.get("pluginRef"))
    if plugin is None or plugin.type not in DISCOVERY:
        raise ConfigError(f"{source}: dataLayer.discovery.pluginRef: {disc.get('pluginRef')!r} is not a file-discovery plugin")
    path = plugin.parameters.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{source}: plugin {plugin.name!r} parameter path: required")
    watch = plugin.parameters.get("watchFile", True)
    if not isinstance(watch, bool):
        raise ConfigError(f"{source}: plugin {plugin.name!r} parameter watchFile: {watch!r} is not true/false")
    return path, watch
