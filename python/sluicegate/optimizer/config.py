"""Reads the optimizer's inputs from YAML in the workload-variant-autoscaler's shapes: the
`service-classes-config`, `accelerator-unit-costs` and `wva-model-scale-to-zero-config`
ConfigMaps, VariantAutoscaling objects (llmd.ai/v1alpha1, spec and status), and sluicegate's
`OptimizerConfig` (capacity, observed load, policy). Errors name the file, field and value."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from sluicegate.errors import ConfigError

from .inputs import (Accelerator, AcceleratorProfile, ModelLoad, ModelSlo, OptimizerInput,
                     SaturationPolicy, ScaleTarget, ScaleToZeroRule, ServiceClass, Variant)

SERVICE_CLASSES_CONFIGMAP = "service-classes-config"
ACCELERATOR_COSTS_CONFIGMAP = "accelerator-unit-costs"
SCALE_TO_ZERO_CONFIGMAPS = ("wva-model-scale-to-zero-config", "model-scale-to-zero-config")
OPTIMIZER_CONFIG_KIND = "OptimizerConfig"
VARIANT_KIND = "VariantAutoscaling"
READY_CONDITION = "OptimizationReady"


def load_config(paths: Sequence[str]) -> OptimizerInput:
    """Every YAML document of every file (a directory: its *.yaml, *.yml, *.json; a
    `kind: List` is unpacked), merged into one input."""
    return parse_sourced(read_files(paths))


def parse_sourced(docs: Sequence[tuple[Any, str]]) -> OptimizerInput:
    """Documents paired with where each came from (named in errors), merged into one input."""
    parts = _Parts()
    for doc, source in docs:
        parts.add(doc, source)
    return parts.build()


def read_files(paths: Sequence[str]) -> list[tuple[Any, str]]:
    """(document, where it came from) for every YAML document of the files."""
    out = []
    for path in _expand(paths):
        try:
            with open(path, encoding="utf-8") as f:
                docs = [d for d in yaml.safe_load_all(f) if d is not None]
        except OSError as e:
            raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from e
        out += [(doc, f"{path}[{i}]" if len(docs) > 1 else path) for i, doc in enumerate(docs)]
    return out


def _expand(paths: Sequence[str]) -> list[str]:
    out = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(os.path.join(path, n) for n in os.listdir(path)
                          if n.endswith((".yaml", ".yml", ".json")))
        else:
            out.append(path)
    return out


def parse_documents(docs: Sequence[Any], source: str = "<documents>") -> OptimizerInput:
    return parse_sourced([(doc, f"{source}[{i}]") for i, doc in enumerate(docs)])


def parse_service_classes(data: Any, source: str) -> tuple[ServiceClass, ...]:
    """`data` of service-classes-config: each value is a YAML text (or mapping) of one class."""
    classes = []
    for key, text in _mapping(data, source, "data").items():
        where = f"{source}: data.{key}"
        raw = _mapping(_yaml_text(text, where), where, "")
        entries = raw.get("data") or []
        if not isinstance(entries, list):
            raise ConfigError(f"{where}.data={entries!r}: must be a list")
        slos = tuple(ModelSlo(model=_str(e, f"{where}.data[{j}]", "model"),
                              ttft_ms=_number(e, f"{where}.data[{j}]", "slo-ttft", positive=True),
                              itl_ms=_number(e, f"{where}.data[{j}]", "slo-tpot", positive=True))
                     for j, e in enumerate(entries))
        classes.append(ServiceClass(name=_str(raw, where, "name"),
                                    priority=_int(raw, where, "priority", minimum=1),
                                    slos=slos, key=str(key)))
    return tuple(classes)


def parse_accelerators(data: Any, source: str, counts: Mapping[str, int] | None = None
                       ) -> tuple[Accelerator, ...]:
    """`data` of accelerator-unit-costs: name → JSON/YAML `{device, cost}` (cents/hour)."""
    out = []
    for name, text in _mapping(data, source, "data").items():
        where = f"{source}: data.{name}"
        raw = _mapping(_yaml_text(text, where), where, "")
        count = (counts or {}).get(str(name))
        if count is None and "count" in raw:
            count = _int(raw, where, "count", minimum=0)
        out.append(Accelerator(name=str(name), device=str(raw.get("device", "")),
                               cost=_number(raw, where, "cost"), count=count))
    return tuple(out)


def parse_scale_to_zero(data: Any, source: str) -> tuple[ScaleToZeroRule, ...]:
    """`data` of wva-model-scale-to-zero-config: `default` plus per-model entries."""
    rules = []
    for key, text in _mapping(data, source, "data").items():
        where = f"{source}: data.{key}"
        raw = _mapping(_yaml_text(text, where), where, "")
        model = "" if key == "default" else _str(raw, where, "model_id")
        if "enable_scale_to_zero" not in raw:
            continue  # inherits; only retention_period set, which the optimizer does not use
        enabled = raw["enable_scale_to_zero"]
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.enable_scale_to_zero={enabled!r}: must be true or false")
        rules.append(ScaleToZeroRule(enabled=enabled, model=model,
                                     namespace=str(raw.get("namespace") or "")))
    return tuple(rules)


def parse_variant(obj: Any, source: str) -> Variant:
    """A VariantAutoscaling: the `accelerator` + `variantProfile` form of the CRD, or the
    multi-accelerator `modelProfile.accelerators` form the optimizer chooses among."""
    obj = _mapping(obj, source, "")
    meta = _mapping(obj.get("metadata") or {}, source, "metadata")
    name = _str(meta, f"{source}: metadata", "name")
    obj_where = f"{source}: {VARIANT_KIND} {name}"
    where = f"{obj_where}: spec"
    spec = _mapping(obj.get("spec"), obj_where, "spec")
    if "modelProfile" in spec:
        accs = _mapping(spec["modelProfile"], where, "modelProfile").get("accelerators")
        if not isinstance(accs, list) or not accs:
            raise ConfigError(f"{where}.modelProfile.accelerators={accs!r}: must be a "
                              "non-empty list")
        profiles = tuple(_profile(a, f"{where}.modelProfile.accelerators[{j}]")
                         for j, a in enumerate(accs))
    elif "accelerator" in spec:
        vp = dict(_mapping(spec.get("variantProfile"), where, "variantProfile"))
        vp.update(acc=spec["accelerator"], accCount=spec.get("acceleratorCount", 1))
        profiles = (_profile(vp, f"{where}.variantProfile"),)
    else:
        raise ConfigError(f"{where}: needs accelerator + variantProfile, or "
                          "modelProfile.accelerators")
    ref = _mapping(spec.get("sloClassRef") or {}, where, "sloClassRef")
    min_r = _int(spec, where, "minReplicas", minimum=0, default=0)
    max_r = _int(spec, where, "maxReplicas", minimum=1, default=None)
    if max_r is not None and max_r < min_r:
        raise ConfigError(f"{where}.maxReplicas={max_r!r}: must be >= minReplicas={min_r!r}")
    scale_to_zero = spec.get("scaleToZero")
    if scale_to_zero is not None and not isinstance(scale_to_zero, bool):
        raise ConfigError(f"{where}.scaleToZero={scale_to_zero!r}: must be true or false")
    target = None
    if spec.get("scaleTargetRef") is not None:
        ref_raw = _mapping(spec["scaleTargetRef"], where, "scaleTargetRef")
        target = ScaleTarget(kind=_str(ref_raw, f"{where}.scaleTargetRef", "kind"),
                             name=_str(ref_raw, f"{where}.scaleTargetRef", "name"),
                             api_version=str(ref_raw.get("apiVersion") or "apps/v1"))
    status = _mapping(obj.get("status") or {}, obj_where, "status")
    current = _mapping(status.get("currentAlloc") or {}, f"{obj_where}: status", "currentAlloc")
    desired = _mapping(status.get("desiredOptimizedAlloc") or {}, f"{obj_where}: status",
                       "desiredOptimizedAlloc")
    conditions = tuple((str(c.get("type")), str(c.get("status")), str(c.get("lastTransitionTime")))
                       for c in status.get("conditions") or [] if isinstance(c, Mapping))
    return Variant(
        name=name, namespace=str(meta.get("namespace") or "default"),
        model=_str(spec, where, "modelID"),
        slo_class_ref=(str(ref.get("name") or ""), str(ref.get("key") or "")),
        profiles=profiles, min_replicas=min_r, max_replicas=max_r, scale_to_zero=scale_to_zero,
        variant_cost=(_number(spec, where, "variantCost") if "variantCost" in spec else None),
        variant_id=str(spec.get("variantID") or ""), scale_target=target,
        current_replicas=_int(current, f"{obj_where}: status.currentAlloc", "numReplicas",
                              minimum=0, default=None),
        current_accelerator=str(desired.get("accelerator") or ""),
        conditions=conditions)


def parse_load(entry: Any, where: str) -> ModelLoad:
    """`{model, namespace?, arrivalRate (requests/minute, as the autoscaler's ServerLoadSpec),
    avgInTokens, avgOutTokens}`."""
    model = _str(entry, where, "model")
    return ModelLoad(model=model, namespace=str(_mapping(entry, where, "").get("namespace") or ""),
                     arrival_rps=_number(entry, where, "arrivalRate") / 60.0,
                     input_tokens=_number(entry, where, "avgInTokens"),
                     output_tokens=max(1.0, _number(entry, where, "avgOutTokens")))


class _Parts:
    """Accumulates documents from several files; `build` checks they make one whole."""

    def __init__(self) -> None:
        self.classes: list[ServiceClass] = []
        self.accelerator_data: list[tuple[Any, str]] = []
        self.variants: list[Variant] = []
        self.loads: list[ModelLoad] = []
        self.scale_to_zero: list[ScaleToZeroRule] = []
        self.counts: dict[str, int] = {}
        self.options: dict[str, Any] = {}

    def add(self, doc: Any, source: str) -> None:
        doc = _mapping(doc, source, "")
        kind = doc.get("kind")
        name = (doc.get("metadata") or {}).get("name", "")
        if kind == "List":
            for j, item in enumerate(doc.get("items") or []):
                self.add(item, f"{source}.items[{j}]")
        elif kind == "ConfigMap" and name == SERVICE_CLASSES_CONFIGMAP:
            self.classes += parse_service_classes(doc.get("data") or {}, source)
        elif kind == "ConfigMap" and name == ACCELERATOR_COSTS_CONFIGMAP:
            self.accelerator_data.append((doc.get("data") or {}, source))
        elif kind == "ConfigMap" and name in SCALE_TO_ZERO_CONFIGMAPS:
            self.scale_to_zero += parse_scale_to_zero(doc.get("data") or {}, source)
        elif kind == VARIANT_KIND:
            self.variants.append(parse_variant(doc, source))
        elif kind == OPTIMIZER_CONFIG_KIND:
            self._add_optimizer_config(_mapping(doc.get("spec") or {}, source, "spec"),
                                       f"{source}: spec")
        else:
            raise ConfigError(f"{source}: kind={kind!r} name={name!r}: expected ConfigMap "
                              f"{SERVICE_CLASSES_CONFIGMAP}, {ACCELERATOR_COSTS_CONFIGMAP} or "
                              f"{SCALE_TO_ZERO_CONFIGMAPS[0]}, {VARIANT_KIND} or "
                              f"{OPTIMIZER_CONFIG_KIND}")

    def _add_optimizer_config(self, spec: Mapping[str, Any], where: str) -> None:
        if "saturationPolicy" in spec:
            self.options["saturation_policy"] = SaturationPolicy.parse(
                str(spec["saturationPolicy"]))
        if "minServedFraction" in spec:
            fraction = _number(spec, where, "minServedFraction", positive=True)
            if fraction > 1:
                raise ConfigError(f"{where}.minServedFraction={fraction!r}: must be <= 1")
            self.options["min_served_fraction"] = fraction
        if "switchTolerance" in spec:
            self.options["switch_tolerance"] = _number(spec, where, "switchTolerance")
        if "unlimited" in spec:
            if not isinstance(spec["unlimited"], bool):
                raise ConfigError(f"{where}.unlimited={spec['unlimited']!r}: must be true or "
                                  "false")
            self.options["unlimited"] = spec["unlimited"]
        capacity = spec.get("capacity") or {}
        if isinstance(capacity, Mapping) and "count" in capacity:
            capacity = capacity["count"]  # the autoscaler's capacityData: count[{type, count}]
        if isinstance(capacity, list):
            capacity = {_str(c, f"{where}.capacity[{j}]", "type"):
                        _int(c, f"{where}.capacity[{j}]", "count", minimum=0)
                        for j, c in enumerate(capacity)}
        for acc in _mapping(capacity, where, "capacity"):
            self.counts[str(acc)] = _int(capacity, f"{where}.capacity", acc, minimum=0)
        load = spec.get("load") or []
        if not isinstance(load, list):
            raise ConfigError(f"{where}.load={load!r}: must be a list")
        self.loads += [parse_load(e, f"{where}.load[{j}]") for j, e in enumerate(load)]

    def build(self) -> OptimizerInput:
        accelerators = tuple(a for data, source in self.accelerator_data
                             for a in parse_accelerators(data, source, self.counts))
        if not accelerators:
            raise ConfigError(f"no ConfigMap {ACCELERATOR_COSTS_CONFIGMAP} in the config files")
        if not self.classes:
            raise ConfigError(f"no ConfigMap {SERVICE_CLASSES_CONFIGMAP} in the config files")
        known = {a.name for a in accelerators}
        for acc in self.counts:
            if acc not in known:
                raise ConfigError(f"{OPTIMIZER_CONFIG_KIND} spec.capacity.{acc}: no such "
                                  f"accelerator in {ACCELERATOR_COSTS_CONFIGMAP} "
                                  f"({', '.join(sorted(known))})")
        seen: set[str] = set()
        for v in self.variants:
            if v.key in seen:
                raise ConfigError(f"{VARIANT_KIND} {v.key}: defined twice")
            seen.add(v.key)
        return OptimizerInput(service_classes=tuple(self.classes), accelerators=accelerators,
                              variants=tuple(self.variants), loads=tuple(self.loads),
                              scale_to_zero=tuple(self.scale_to_zero), **self.options)


def _profile(raw: Any, where: str) -> AcceleratorProfile:
    raw = _mapping(raw, where, "")
    perf = _mapping(raw.get("perfParms"), where, "perfParms")
    decode = _mapping(perf.get("decodeParms"), f"{where}.perfParms", "decodeParms")
    prefill = _mapping(perf.get("prefillParms"), f"{where}.perfParms", "prefillParms")
    return AcceleratorProfile(
        acc=_str(raw, where, "acc"), acc_count=_int(raw, where, "accCount", minimum=1),
        max_batch=_int(raw, where, "maxBatchSize", minimum=1),
        alpha=_number(decode, f"{where}.perfParms.decodeParms", "alpha"),
        beta=_number(decode, f"{where}.perfParms.decodeParms", "beta"),
        gamma=_number(prefill, f"{where}.perfParms.prefillParms", "gamma"),
        delta=_number(prefill, f"{where}.perfParms.prefillParms", "delta"))


def _yaml_text(value: Any, where: str) -> Any:
    # ConfigMap values are strings holding YAML (or JSON, a subset); bare files may inline them.
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        try:
            return json.loads(value)
        except ValueError:
            raise ConfigError(f"{where}: not valid YAML or JSON: {e}") from e


def _mapping(value: Any, where: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        label = f"{where}.{field}" if field else where
        raise ConfigError(f"{label}={value!r}: must be a mapping")
    return value


def _str(raw: Any, where: str, field: str) -> str:
    value = _mapping(raw, where, "").get(field)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{field}={value!r}: must be a non-empty string")
    return value


_MISSING = object()


def _int(raw: Any, where: str, field: str, minimum: int, default: Any = _MISSING) -> Any:
    value = _mapping(raw, where, "").get(field)
    if value is None and default is not _MISSING:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}.{field}={value!r}: must be an integer >= {minimum}")
    return value


def _number(raw: Any, where: str, field: str, positive: bool = False) -> float:
    # The autoscaler's CRD and ConfigMaps quote numbers ("6.958", "40.00"): numeric strings pass.
    value = _mapping(raw, where, "").get(field)
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not number == number or number in (float("inf"), float("-inf")) or number < 0 or (
            positive and number == 0):
        need = "> 0" if positive else ">= 0"
        raise ConfigError(f"{where}.{field}={value!r}: must be a number {need}")
    return number
