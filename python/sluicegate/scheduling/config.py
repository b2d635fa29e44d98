"""EndpointPickerConfig (the upstream EPP's config file) parsed once into a frozen EppConfig.

Strict like upstream: an unknown field, plugin type or parameter is an error naming the plugin
and the field. The Rust scheduler owns plugin types, parameters and profile wiring; this module
owns the file, its top-level fields and the data-layer (discovery) plugins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..flowcontrol.config import DETECTORS
from ..flowcontrol.config import PLUGIN_TYPES as FLOW_PLUGIN_TYPES
from ..flowcontrol.config import FlowControlSettings, parse_flow_control
from ..activator.static import StaticActivatorSettings, parse_static_activator
from ..rewrites import parse_static as parse_static_rewrites
from .data_layer import DATA_TYPES, DataLayer, DataPlugin, data_plugin, parse_data_layer
from .request_handler import PARSER_TYPES, check_parser_plugin, parser_types

API_VERSIONS = ("llm-d.ai/v1alpha1", "inference.networking.x-k8s.io/v1alpha1")
KIND = "EndpointPickerConfig"

# Upstream's profile when no config is given (resolved by the Rust scheduler; kept for callers).
DEFAULT_WEIGHTS = {"queue-scorer": 2.0, "kv-cache-utilization-scorer": 2.0, "prefix-cache-scorer": 3.0}
TOP_LEVEL = {"apiVersion", "kind", "plugins", "schedulingProfiles", "featureGates", "flowControl", "dataLayer",
             "requestHandler", "parser", "saturationDetector", "objectives", "activator", "rewrites"}


@dataclass(frozen=True)
class Plugin:
    name: str
    type: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScorerRef:
    name: str
    type: str
    weight: float


@dataclass(frozen=True)
class SchedulingProfile:
    """One resolved profile: filters → weighted scorers → picker."""

    name: str
    filters: tuple[str, ...]
    scorers: tuple[ScorerRef, ...]
    picker: str
    max_endpoints: int


@dataclass(frozen=True)
class EppConfig:
    # The scheduling part of the file (plugins, schedulingProfiles) as the Rust Router reads it.
    scheduling_json: str = "{}"
    # The Router's request-handling and data-layer settings (parsers, scrapeMetrics,
    # metricsIntervalMs, engineLabelKey, defaultEngine), kept apart from the file's own shape.
    request_json: str = "{}"
    profiles: tuple[SchedulingProfile, ...] = ()
    profile_handler: str = "single-profile-handler"
    endpoints_file: str | None = None
    watch_file: bool = True
    feature_gates: tuple[str, ...] = ()
    # The precise-prefix-cache-producer (name, blockSize, socketPort, topicFilter), if any.
    precise_prefix: dict[str, Any] | None = None
    # Parser types in resolution order (as the Router resolved them, defaults applied).
    parsers: tuple[str, ...] = ()
    data_layer: DataLayer = DataLayer()
    flow_control: FlowControlSettings = FlowControlSettings()
    activator: StaticActivatorSettings | None = None  # static mode's scale commands
    # Static InferenceModelRewrites (`rewrites:`), resolved, as `Router.set_rewrites` takes them.
    rewrites_json: str | None = None
    source: str = "<defaults>"

    @property
    def weights(self) -> dict[str, float]:
        """Scorer type -> weight in the primary (first) profile."""
        out: dict[str, float] = {}
        for s in self.profiles[0].scorers:
            out[s.type] = out.get(s.type, 0.0) + s.weight
        return out

    @property
    def max_endpoints(self) -> int:
        return self.profiles[0].max_endpoints

    def router_json(self, **data_layer: int) -> str:
        """The Rust Router's config; `data_layer` adds scrape/staleness settings from flags."""
        return json.dumps({**json.loads(self.scheduling_json), **json.loads(self.request_json), **data_layer})

    def describe(self) -> str:
        lines = [f"profile handler: {self.profile_handler}"]
        for p in self.profiles:
            scorers = ", ".join(f"{_label(s.name, s.type)}×{s.weight:g}" for s in p.scorers)
            filters = ", ".join(p.filters)
            lines.append(f"profile '{p.name}': filters [{filters}] → scorers [{scorers}] → {p.picker} "
                         f"(maxNumOfEndpoints={p.max_endpoints})")
        if self.precise_prefix:
            lines.append("precise prefix cache: KV events, block size {blockSize}, port {socketPort}, "
                         "topic filter {topicFilter!r}".format(**self.precise_prefix))
        lines.append(f"parsers: {', '.join(self.parsers)}")
        for name, kind, extractors in self.data_layer.sources:
            lines.append(f"data source {_label(name, kind)} → extractors [{', '.join(extractors)}]")
        lines.append(f"endpoints file: {self.endpoints_file or '-'}")
        return "\n".join(lines)


def _label(name: str, kind: str) -> str:
    return kind if name == kind else f"{name} ({kind})"


def load_config(*, path: str | None = None, text: str | None = None) -> EppConfig:
    """--config-file or --config-text; neither gives upstream-style defaults."""
    if path is not None and text is not None:
        raise ConfigError("give --config-file or --config-text, not both")
    if path is None and text is None:
        return _resolve({}, EppConfig())
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
    scheduling, data_plugins, parsers = _split_plugins(doc.get("plugins"), source, _profile_refs(doc))
    if "schedulingProfiles" in doc:
        scheduling["schedulingProfiles"] = doc["schedulingProfiles"]
    kinds = parser_types(doc, parsers, source)
    others = {p.get("name") or p.get("type"): p.get("type") for p in scheduling.get("plugins", [])}
    data_layer = parse_data_layer(doc.get("dataLayer"), data_plugins, source, others)
    handling = {**dict(data_layer.router), **({"parsers": kinds} if kinds is not None else {})}
    gates = doc.get("featureGates") or []
    if not isinstance(gates, list) or not all(isinstance(g, str) for g in gates):
        raise ConfigError(f"{source}: featureGates must be a list of names")
    base = EppConfig(endpoints_file=data_layer.endpoints_file, watch_file=data_layer.watch_file,
                     data_layer=data_layer, request_json=json.dumps(handling), feature_gates=tuple(gates),
                     flow_control=parse_flow_control(doc, source),
                     activator=parse_static_activator(doc.get("activator"), source),
                     rewrites_json=_rewrites_json(doc.get("rewrites"), source), source=source)
    return _resolve(scheduling, base)


def _rewrites_json(raw: Any, source: str) -> str | None:
    table = parse_static_rewrites(raw, f"{source}: rewrites")
    return None if table is None else table.to_json()


def _resolve(scheduling: dict[str, Any], base: EppConfig) -> EppConfig:
    """Let the Rust scheduler build the profiles (it owns plugin types and their parameters) and
    keep its resolved view; its errors name the plugin and the field."""
    from .._core import Router

    text = json.dumps(scheduling)
    try:
        described = json.loads(Router(json.dumps({**scheduling, **json.loads(base.request_json)})).describe())
    except ConfigError as e:
        raise ConfigError(f"{base.source}: {str(e).removeprefix('router config: ')}") from None
    profiles = tuple(
        SchedulingProfile(
            name=p["name"], filters=tuple(f["name"] for f in p["filters"]),
            scorers=tuple(ScorerRef(s["name"], s["type"], float(s["weight"])) for s in p["scorers"]),
            picker=p["picker"]["name"], max_endpoints=int(p["picker"]["maxNumOfEndpoints"]))
        for p in described["profiles"])
    handler = described["profileHandler"]
    producer = next(({k: v for k, v in p.items() if k != "type"} for p in described["producers"]), None)
    return replace(base, scheduling_json=text, profiles=profiles, precise_prefix=producer,
                   parsers=tuple(described["parsers"]),
                   profile_handler=_label(handler["name"], handler["type"]))


def _no_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}'")


def _profile_refs(doc: dict) -> set[str]:
    """Every pluginRef of every scheduling profile (malformed profiles are the scheduler's to report)."""
    refs: set[str] = set()
    profiles = doc.get("schedulingProfiles")
    for p in profiles if isinstance(profiles, list) else []:
        plugins = p.get("plugins") if isinstance(p, dict) else None
        for r in plugins if isinstance(plugins, list) else []:
            if isinstance(r, dict) and isinstance(r.get("pluginRef"), str):
                refs.add(r["pluginRef"])
    return refs


def _split_plugins(raw: Any, source: str, profile_refs: set[str]) -> tuple[dict[str, Any], dict[str, DataPlugin],
                                                                          dict[str, str]]:
    """Data-layer plugins and parsers are checked here (parsers as name -> type); flow-control
    plugins are flowcontrol.config's, except that a saturation detector a profile names is also
    the scheduler's (its filter role, where `headroom` acts); the rest go to the scheduler."""
    if raw is None:
        return {}, {}, {}
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: plugins must be a list")
    scheduling: list[Any] = []
    data: dict[str, DataPlugin] = {}
    parsers: dict[str, str] = {}
    for i, p in enumerate(raw):
        if not isinstance(p, dict):
            raise ConfigError(f"{source}: plugins[{i}]: expected a mapping")
        kind = p.get("type")
        if kind in FLOW_PLUGIN_TYPES:
            if kind in DETECTORS and (p.get("name") or kind) in profile_refs:
                scheduling.append(p)
            continue  # flowcontrol.config parses these
        if kind not in DATA_TYPES and kind not in PARSER_TYPES:
            scheduling.append(p)
            continue
        name = p.get("name") or kind
        where = f"{source}: plugins[{i}] ({name})"
        _no_unknown(p, {"name", "type", "parameters"}, where)
        if name in data or name in parsers:
            raise ConfigError(f"{where}: plugin name {name!r} is used twice")
        if kind in PARSER_TYPES:
            check_parser_plugin(kind, p.get("parameters"), where)
            parsers[name] = kind
        else:
            data[name] = data_plugin(kind, name, p.get("parameters"), where)
    # Only data-layer plugins or parsers listed: the scheduler keeps upstream's default profile.
    return ({"plugins": scheduling} if scheduling else {}), data, parsers
