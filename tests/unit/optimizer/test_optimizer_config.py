"""Optimizer inputs in the workload-variant-autoscaler's shapes: the sample files parse to the
values they state, write back and parse again unchanged, and bad input names its field."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from sluicegate.errors import ConfigError
from sluicegate.optimizer import samples_dir
from sluicegate.optimizer.config import load_config, parse_documents
from sluicegate.optimizer.dump import to_documents
from sluicegate.optimizer.inputs import SaturationPolicy
from sluicegate.optimizer.problem import build_problem, resolve_class

SAMPLES = samples_dir()


def _docs() -> list[dict]:
    return [d for f in sorted(SAMPLES.glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]


def _variant(inp, name):
    return next(v for v in inp.variants if v.name == name)


def test_samples_parse_to_the_values_they_state() -> None:
    inp = load_config([str(SAMPLES)])
    assert {c.name: (c.priority, c.key) for c in inp.service_classes} == {
        "Premium": (1, "premium.yaml"), "Freemium": (10, "freemium.yaml")}
    a100 = inp.accelerator("A100")
    assert (a100.device, a100.cost, a100.count) == ("NVIDIA-A100-PCIE-80GB", 40.0, 16)
    single = _variant(inp, "llama-8b-a100")
    assert [(p.acc, p.acc_count, p.alpha, p.beta, p.gamma, p.delta, p.max_batch)
            for p in single.profiles] == [("A100", 1, 8.2, 0.11, 6.0, 0.021, 64)]
    assert single.current_replicas == 2 and single.max_replicas == 16
    assert single.scale_target.name == "llama-8b-a100" and single.min_replicas == 0
    multi = _variant(inp, "llama-70b")
    assert [p.acc for p in multi.profiles] == ["A100", "H100", "MI300X"]
    assert multi.min_replicas == 1
    assert inp.saturation_policy is SaturationPolicy.PRIORITY_ROUND_ROBIN


def test_load_arrival_rate_is_requests_per_minute() -> None:
    inp = load_config([str(SAMPLES)])
    load = inp.load_of("meta/llama-3.1-8b", "llm-inference")
    assert load.arrival_rps == pytest.approx(2400 / 60)
    assert (load.input_tokens, load.output_tokens) == (768, 192)
    assert inp.load_of("meta/llama-3.1-8b", "elsewhere") is None  # namespaced entry only


def test_scale_to_zero_follows_the_configmap_rules() -> None:
    inp = load_config([str(SAMPLES)])
    assert inp.scale_to_zero_for(_variant(inp, "granite-13b")) is True
    assert inp.scale_to_zero_for(_variant(inp, "llama-8b-a100")) is False
    override = replace(_variant(inp, "llama-8b-a100"), scale_to_zero=True)
    assert inp.scale_to_zero_for(override) is True


def test_samples_round_trip_through_the_autoscaler_shapes() -> None:
    inp = load_config([str(SAMPLES)])
    again = parse_documents(yaml.safe_load_all(yaml.safe_dump_all(to_documents(inp), sort_keys=False)))
    assert again.service_classes == inp.service_classes
    assert again.accelerators == inp.accelerators
    assert again.variants == inp.variants
    assert again.scale_to_zero == inp.scale_to_zero
    assert (again.saturation_policy, again.unlimited, again.min_served_fraction,
            again.switch_tolerance) == (inp.saturation_policy, inp.unlimited,
                                        inp.min_served_fraction, inp.switch_tolerance)
    assert len(again.loads) == len(inp.loads)
    for a, b in zip(again.loads, inp.loads):
        assert (a.model, a.namespace, a.input_tokens, a.output_tokens) == (
            b.model, b.namespace, b.input_tokens, b.output_tokens)
        assert math.isclose(a.arrival_rps, b.arrival_rps, rel_tol=1e-12)


def test_capacity_in_the_autoscaler_count_list_shape() -> None:
    docs = _docs()
    cfg = next(d for d in docs if d["kind"] == "OptimizerConfig")
    cfg["spec"]["capacity"] = {"count": [{"type": "A100", "count": 3}, {"type": "H100",
                                                                         "count": 1}]}
    inp = parse_documents(docs)
    assert (inp.accelerator("A100").count, inp.accelerator("H100").count) == (3, 1)
    assert inp.accelerator("L40S").count is None


def test_slo_class_by_configmap_key_then_name_then_priority_then_default() -> None:
    inp = load_config([str(SAMPLES)])
    v = _variant(inp, "llama-8b-a100")
    assert resolve_class(inp, v)[0].name == "Premium"
    by_name = replace(v, slo_class_ref=("premium", "opt-125m"))  # an older sample's shape
    assert resolve_class(inp, by_name)[0].name == "Premium"
    unlisted = replace(v, model="acme/unlisted", slo_class_ref=("", ""))
    assert resolve_class(inp, unlisted) == (resolve_class(inp, v)[0], "default/default")


def _mutate(path: list, value) -> list[dict]:
    docs = _docs()
    kind, name, *keys = path
    doc = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    if kind == "ConfigMap":  # its values are YAML texts: edit the text's field
        _, key, field = keys
        parsed = yaml.safe_load(doc["data"][key])
        parsed[field] = value
        doc["data"][key] = yaml.safe_dump(parsed)
        return docs
    target = doc
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return docs


@pytest.mark.parametrize(("path", "value", "named"), [
    (["VariantAutoscaling", "llama-8b-a100", "spec", "variantProfile", "maxBatchSize"], 0,
     "variantProfile.maxBatchSize=0"),
    (["VariantAutoscaling", "llama-8b-a100", "spec", "modelID"], "", "spec.modelID=''"),
    (["VariantAutoscaling", "llama-8b-a100", "spec", "minReplicas"], -1, "minReplicas=-1"),
    (["VariantAutoscaling", "llama-8b-a100", "spec", "maxReplicas"], "many",
     "maxReplicas='many'"),
    (["ConfigMap", "accelerator-unit-costs", "data", "A100", "cost"], "cheap", "cost='cheap'"),
    (["ConfigMap", "service-classes-config", "data", "premium.yaml", "priority"], 0,
     "priority=0"),
    (["OptimizerConfig", "optimizer", "spec", "capacity"], {"TPU": 4}, "capacity.TPU"),
    (["OptimizerConfig", "optimizer", "spec", "saturationPolicy"], "Greedy",
     "saturationPolicy='Greedy'"),
    (["OptimizerConfig", "optimizer", "spec", "load"], [{"model": "m", "arrivalRate": -1,
                                                         "avgInTokens": 1, "avgOutTokens": 1}],
     "arrivalRate=-1"),
])
def test_bad_input_names_the_field_and_value(path: list, value, named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        parse_documents(_mutate(path, value))


def test_bad_perf_parameter_inside_a_quoted_string_is_named() -> None:
    docs = _docs()
    va = next(d for d in docs if d["metadata"]["name"] == "llama-8b-a100")
    va["spec"]["variantProfile"]["perfParms"]["decodeParms"]["alpha"] = "fast"
    with pytest.raises(ConfigError, match=r"decodeParms\.alpha='fast'"):
        parse_documents(docs)


def test_unknown_kind_and_missing_configmaps_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind='Deployment'"):
        parse_documents([{"kind": "Deployment", "metadata": {"name": "x"}}])
    only_va = [d for d in _docs() if d["kind"] != "ConfigMap"]
    with pytest.raises(ConfigError, match="accelerator-unit-costs"):
        parse_documents(only_va)
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml: cannot read"):
        load_config([str(missing)])


def test_model_without_any_slo_is_an_error_naming_the_variant() -> None:
    docs = [d for d in _docs() if d["metadata"]["name"] != "service-classes-config"]
    docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "service-classes-config"},
                 "data": {"gold.yaml": "name: Gold\npriority: 1\ndata: []\n"}})
    with pytest.raises(ConfigError, match=r"llm-inference/llama-8b-a100: spec.modelID"):
        build_problem(parse_documents(docs))
