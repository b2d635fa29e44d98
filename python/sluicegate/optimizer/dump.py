"""An `OptimizerInput` written back as the workload-variant-autoscaler's objects (the inverse
of `config`): ConfigMaps with YAML/JSON text values, VariantAutoscalings with quoted
parameters, and an OptimizerConfig — so inputs round-trip and can be handed to either tool."""

from __future__ import annotations

import json
from typing import Any

import yaml

from .config import (ACCELERATOR_COSTS_CONFIGMAP, OPTIMIZER_CONFIG_KIND,
                     SCALE_TO_ZERO_CONFIGMAPS, SERVICE_CLASSES_CONFIGMAP, VARIANT_KIND)
from .inputs import AcceleratorProfile, OptimizerInput, Variant


def to_documents(inp: OptimizerInput) -> list[dict[str, Any]]:
    docs = [_configmap(SERVICE_CLASSES_CONFIGMAP, {
        c.key or f"{c.name.lower()}.yaml": yaml.safe_dump({
            "name": c.name, "priority": c.priority,
            "data": [{"model": s.model, "slo-tpot": s.itl_ms, "slo-ttft": s.ttft_ms}
                     for s in c.slos]}, sort_keys=False)
        for c in inp.service_classes}),
        _configmap(ACCELERATOR_COSTS_CONFIGMAP, {
            a.name: json.dumps({"device": a.device, "cost": repr(a.cost)})
            for a in inp.accelerators})]
    if inp.scale_to_zero:
        docs.append(_configmap(SCALE_TO_ZERO_CONFIGMAPS[0], {
            (f"rule-{i}" if r.model else "default"): yaml.safe_dump(
                {**({"model_id": r.model} if r.model else {}),
                 **({"namespace": r.namespace} if r.namespace else {}),
                 "enable_scale_to_zero": r.enabled}, sort_keys=False)
            for i, r in enumerate(inp.scale_to_zero)}))
    docs += [_variant(v) for v in inp.variants]
    spec: dict[str, Any] = {
        "saturationPolicy": inp.saturation_policy.value,
        "minServedFraction": inp.min_served_fraction,
        "unlimited": inp.unlimited,
        "switchTolerance": inp.switch_tolerance,
        "capacity": {a.name: a.count for a in inp.accelerators if a.count is not None},
        "load": [{"model": x.model, **({"namespace": x.namespace} if x.namespace else {}),
                  "arrivalRate": x.arrival_rps * 60.0, "avgInTokens": x.input_tokens,
                  "avgOutTokens": x.output_tokens} for x in inp.loads],
    }
    docs.append({"apiVersion": "sluicegate.io/v1alpha1", "kind": OPTIMIZER_CONFIG_KIND,
                 "metadata": {"name": "optimizer"}, "spec": spec})
    return docs


def _configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _perf(p: AcceleratorProfile) -> dict[str, Any]:
    return {"maxBatchSize": p.max_batch, "perfParms": {
        "decodeParms": {"alpha": repr(p.alpha), "beta": repr(p.beta)},
        "prefillParms": {"gamma": repr(p.gamma), "delta": repr(p.delta)}}}


def _variant(v: Variant) -> dict[str, Any]:
    spec: dict[str, Any] = {"modelID": v.model}
    if v.variant_id:
        spec["variantID"] = v.variant_id
    if len(v.profiles) == 1:
        p = v.profiles[0]
        spec.update(accelerator=p.acc, acceleratorCount=p.acc_count, variantProfile=_perf(p))
    else:
        spec["modelProfile"] = {"accelerators": [
            {"acc": p.acc, "accCount": p.acc_count, **_perf(p)} for p in v.profiles]}
    name, key = v.slo_class_ref
    if name or key:
        spec["sloClassRef"] = {"name": name, "key": key}
    spec["minReplicas"] = v.min_replicas
    if v.max_replicas is not None:
        spec["maxReplicas"] = v.max_replicas
    if v.scale_to_zero is not None:
        spec["scaleToZero"] = v.scale_to_zero
    if v.variant_cost is not None:
        spec["variantCost"] = repr(v.variant_cost)
    if v.scale_target is not None:
        t = v.scale_target
        spec["scaleTargetRef"] = {"apiVersion": t.api_version, "kind": t.kind, "name": t.name}
    obj: dict[str, Any] = {"apiVersion": "llmd.ai/v1alpha1", "kind": VARIANT_KIND,
                           "metadata": {"name": v.name, "namespace": v.namespace},
                           "spec": spec}
    status: dict[str, Any] = {}
    if v.current_replicas is not None:
        status["currentAlloc"] = {"numReplicas": v.current_replicas}
    if v.current_accelerator:
        status["desiredOptimizedAlloc"] = {"accelerator": v.current_accelerator}
    if v.conditions:
        status["conditions"] = [{"type": t, "status": st, "lastTransitionTime": since}
                                for t, st, since in v.conditions]
    if status:
        obj["status"] = status
    return obj
