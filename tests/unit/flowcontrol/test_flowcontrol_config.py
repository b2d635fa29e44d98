"""The flow-control parts of an EndpointPickerConfig: upstream names, strict parsing, errors that
name the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluicegate.errors import ConfigError
from sluicegate.flowcontrol import FlowController
from sluicegate.flowcontrol.config import parse_flow_control
from sluicegate.scheduling import Router
from sluicegate.scheduling.config import load_config

FULL = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: queue-scorer
- name: rr
  type: round-robin-fairness-policy
- type: edf-ordering-policy
- name: holdback
  type: priority-holdback-policy
  parameters: {minCeiling: 0.6, maxCeiling: 1.0, domain: value, shape: linear}
- name: util
  type: utilization-detector
  parameters: {queueDepthThreshold: 3, kvCacheUtilThreshold: 0.9, metricsStalenessThreshold: 150ms}
schedulingProfiles:
- name: default
  plugins: [{pluginRef: queue-scorer}]
flowControl:
  maxBytes: 2Gi
  maxRequests: 10k
  defaultRequestTTL: 1m30s
  noEndpointRequestTTL: 5s
  defaultPriorityBand: {maxRequests: 100}
  defaultNegativePriorityBand: {maxRequests: 10}
  priorityBands:
  - {priority: 10, fairnessPolicyRef: rr, orderingPolicyRef: edf-ordering-policy, maxBytes: 500M}
  usageLimitPolicyPluginRef: holdback
  saturationDetector: {pluginRef: util}
objectives:
- {name: premium, priority: 10}
- {name: batch, priority: -1}
"""


def test_a_full_config_reads_every_upstream_field():
    fc = load_config(text=FULL).flow_control
    assert fc.enabled
    assert (fc.max_bytes, fc.max_requests) == (2 * 2**30, 10_000)
    assert (fc.default_request_ttl_ms, fc.no_endpoint_request_ttl_ms) == (90_000, 5_000)
    assert fc.default_band.max_requests == 100
    assert fc.default_negative_band is not None and fc.default_negative_band.max_requests == 10
    (band,) = fc.bands
    assert (band.priority, band.fairness_policy, band.ordering_policy, band.max_bytes) == (
        10, "round-robin-fairness-policy", "edf-ordering-policy", 500_000_000)
    assert band.max_requests == 5000, "0 or omitted band limits take the system default"
    assert fc.usage_limit == {"type": "priority-holdback-policy", "minCeiling": 0.6, "maxCeiling": 1.0,
                              "domain": "value"}
    assert fc.detector == {"type": "utilization-detector", "queueDepthThreshold": 3.0,
                           "kvCacheUtilThreshold": 0.9, "metricsStalenessMs": 150}
    assert fc.objectives == {"premium": 10, "batch": -1}


def test_the_rust_controller_accepts_what_the_parser_produces():
    fc = load_config(text=FULL.replace("pluginRef: util", "pluginRef: cc").replace(
        "- name: util", "- name: cc\n  type: concurrency-detector\n  parameters: {maxConcurrency: 3}\n- name: util")
    ).flow_control
    assert fc.detector == {"type": "concurrency-detector", "maxConcurrency": 3}
    controller = FlowController(fc)
    try:
        assert controller.stats()["queued_requests"] == 0
    finally:
        controller.close()


def test_without_the_feature_gate_flow_control_is_off_and_defaults_hold():
    fc = load_config(text="plugins: [{type: queue-scorer}]").flow_control
    assert not fc.enabled
    assert fc.default_request_ttl_ms == 60_000 and fc.no_endpoint_request_ttl_ms is None
    assert (fc.default_band.max_requests, fc.default_band.max_bytes) == (5000, 1_000_000_000)
    assert fc.detector["type"] == "utilization-detector" and fc.detector["queueDepthThreshold"] == 5
    assert fc.usage_limit == {"type": "static-usage-limit-policy", "ceiling": 1.0}


@pytest.mark.parametrize("gates, on", [(["flowControl=true"], True), (["flowControl", "flowControl=false"], False),
                                       (["dataLayer"], False)])
def test_feature_gates_take_upstream_name_value_forms(gates, on):
    assert parse_flow_control({"featureGates": gates}).enabled is on


def test_a_zero_ttl_means_requests_wait_without_expiry():
    assert parse_flow_control({"flowControl": {"defaultRequestTTL": "0s"}}).default_request_ttl_ms == 0


def test_the_legacy_top_level_detector_block_takes_inline_thresholds():
    fc = parse_flow_control({"saturationDetector": {"queueDepthThreshold": 7, "kvCacheUtilThreshold": 0.5}})
    assert fc.detector["queueDepthThreshold"] == 7 and fc.detector["kvCacheUtilThreshold"] == 0.5


def test_flow_control_plugins_do_not_reach_the_scheduler():
    cfg = load_config(text=FULL)
    assert "utilization-detector" not in cfg.scheduling_json and "round-robin" not in cfg.scheduling_json
    assert [s.type for s in cfg.profiles[0].scorers] == ["queue-scorer"]


@pytest.mark.parametrize("doc, field", [
    ({"flowControl": {"maxBytess": 1}}, "flowControl: unknown field 'maxBytess'"),
    ({"flowControl": {"defaultRequestTTL": "soon"}}, "flowControl.defaultRequestTTL: 'soon'"),
    ({"flowControl": {"maxBytes": "1GB"}}, "flowControl.maxBytes: '1GB'"),
    ({"flowControl": {"priorityBands": [{"priority": 1}, {"priority": 1}]}}, "priorityBands[1].priority: 1"),
    ({"flowControl": {"priorityBands": [{"priority": "high"}]}}, "priorityBands[0].priority: 'high'"),
    ({"flowControl": {"defaultPriorityBand": {"fairnessPolicyRef": "fifo"}}},
     "defaultPriorityBand.fairnessPolicyRef: 'fifo' names no plugin"),
    ({"plugins": [{"name": "x", "type": "fcfs-ordering-policy"}],
      "flowControl": {"priorityBands": [{"priority": 1, "fairnessPolicyRef": "x"}]}},
     "fairnessPolicyRef: plugin 'x' is a fcfs-ordering-policy"),
    ({"plugins": [{"type": "concurrency-detector", "parameters": {"maxConcurrency": 0}}],
      "flowControl": {"saturationDetector": {"pluginRef": "concurrency-detector"}}},
     "maxConcurrency: 0 is not a positive integer"),
    ({"plugins": [{"type": "concurrency-detector", "parameters": {"headroom": -0.1}}],
      "flowControl": {"saturationDetector": {"pluginRef": "concurrency-detector"}}},
     "headroom: -0.1 must be a number in [0.0, inf)"),
    ({"plugins": [{"type": "concurrency-detector", "parameters": {"concurrencyMode": "bytes"}}],
      "flowControl": {"saturationDetector": {"pluginRef": "concurrency-detector"}}},
     "concurrencyMode: 'bytes' must be 'requests', 'tokens' or 'hybrid'"),
    ({"plugins": [{"type": "utilization-detector", "parameters": {"kvCacheUtilThreshold": 1.5}}]},
     "kvCacheUtilThreshold: 1.5 must be a number in (0.0, 1.0]"),
    ({"plugins": [{"type": "priority-holdback-policy", "parameters": {"maxCeiling": 0.9}}],
      "flowControl": {"usageLimitPolicyPluginRef": "priority-holdback-policy"}},
     "parameters.minCeiling: required"),
    ({"plugins": [{"type": "priority-holdback-policy", "parameters": {"minCeiling": 0.9, "maxCeiling": 0.5}}],
      "flowControl": {"usageLimitPolicyPluginRef": "priority-holdback-policy"}},
     "minCeiling: 0.9 must be below maxCeiling (0.5)"),
    ({"plugins": [{"type": "priority-holdback-policy", "parameters": {"minCeiling": 0.2, "domain": "log"}}],
      "flowControl": {"usageLimitPolicyPluginRef": "priority-holdback-policy"}},
     "domain: 'log' must be 'rank' or 'value'"),
    ({"plugins": [{"type": "priority-holdback-policy", "parameters": {"minCeiling": 0.2, "shape": "sigmoid"}}],
      "flowControl": {"usageLimitPolicyPluginRef": "priority-holdback-policy"}},
     "shape: 'sigmoid' is not supported"),
    ({"plugins": [{"type": "priority-holdback-policy", "parameters": {"highThreshold": 0.2}}]},
     "unknown field 'highThreshold'"),
    ({"plugins": [{"type": "soft-reflective-ceiling-policy", "parameters": {"k": 1}}]},
     "soft-reflective-ceiling-policy).parameters: unknown field 'k'"),
    ({"plugins": [{"type": "utilization-detector", "parameters": {"queueDepth": 1}}]},
     "utilization-detector).parameters: unknown field 'queueDepth'"),
    ({"plugins": [{"type": "utilization-detector", "parameters": {"queueDepthThreshold": 0}}]}, None),
    ({"flowControl": {"usageLimitPolicyPluginRef": "static-usage-limit-policy"},
      "plugins": [{"type": "static-usage-limit-policy", "parameters": {"threshold": -1}}]},
     "parameters.threshold: -1 must be a number in [0.0, inf)"),
    ({"saturationDetector": {"pluginRef": "utilization-detector", "queueDepthThreshold": 3}},
     "saturationDetector: give pluginRef or inline thresholds"),
    ({"objectives": [{"name": "a", "priority": 1.5}]}, "objectives[0].priority: 1.5"),
    ({"objectives": [{"priority": 1}]}, "objectives[0].name: required"),
    ({"featureGates": ["flowControl=maybe"]}, "featureGates: 'flowControl=maybe'"),
])
def test_bad_input_is_an_error_naming_the_field(doc, field):
    if field is None:  # accepted by the parser, refused where it is used
        doc = {**doc, "flowControl": {"saturationDetector": {"pluginRef": "utilization-detector"}}}
        field = "queueDepthThreshold: 0 is not a positive integer"
    with pytest.raises(ConfigError) as e:
        parse_flow_control(doc, source="epp.yaml")
    assert field in str(e.value) and str(e.value).startswith("epp.yaml: ")


def test_to_json_is_what_the_rust_core_reads():
    doc = json.loads(load_config(text=FULL).flow_control.to_json())
    assert doc["defaultNegativePriorityBand"]["maxRequests"] == 10
    assert doc["noEndpointRequestTtlMs"] == 5000 and doc["defaultRequestTtlMs"] == 90_000
    assert doc["priorityBands"][0]["fairnessPolicy"] == "round-robin-fairness-policy"


def test_upstream_detector_defaults_and_soft_reflective_policy():
    fc = parse_flow_control({
        "plugins": [{"type": "concurrency-detector", "parameters": {"headroom": 0.2, "maxTokenConcurrency": 5000}},
                    {"type": "soft-reflective-ceiling-policy"}],
        "flowControl": {"saturationDetector": {"pluginRef": "concurrency-detector"},
                        "usageLimitPolicyPluginRef": "soft-reflective-ceiling-policy"}})
    assert fc.detector == {"type": "concurrency-detector", "maxConcurrency": 100}
    assert fc.usage_limit == {"type": "soft-reflective-ceiling-policy"}
    holdback = parse_flow_control({
        "plugins": [{"type": "priority-holdback-policy", "parameters": {"minCeiling": 0.4}}],
        "flowControl": {"usageLimitPolicyPluginRef": "priority-holdback-policy"}})
    assert holdback.usage_limit == {"type": "priority-holdback-policy", "minCeiling": 0.4, "maxCeiling": 1.0,
                                    "domain": "rank"}


def test_program_aware_fairness_parameters_reach_the_core():
    doc = {"plugins": [{"name": "pa", "type": "program-aware-fairness",
                        "parameters": {"lasHalfLifeSeconds": 0, "evictionSweepSeconds": 30}}],
           "flowControl": {"priorityBands": [{"priority": 1, "fairnessPolicyRef": "pa"}]}}
    fc = parse_flow_control(doc)
    assert fc.bands[0].fairness_policy == "program-aware-fairness"
    assert json.loads(fc.to_json())["programAware"] == {"lasHalfLifeSeconds": 0.0, "evictionSweepSeconds": 30.0}
    assert parse_flow_control({}).program_aware is None


@pytest.mark.parametrize("params, field", [
    ({"strategy": "drr"}, "strategy: 'drr' is not supported"),
    ({"evictionSweepSeconds": 0}, "evictionSweepSeconds: 0 must be a number in (0.0, inf)"),
    ({"lasWeightService": -1}, "lasWeightService: -1 must be a number in [0.0, inf)"),
    ({"lasWeight": 1}, "unknown field 'lasWeight'"),
])
def test_program_aware_fairness_bad_parameters_are_named(params, field):
    doc = {"plugins": [{"type": "program-aware-fairness", "parameters": params}],
           "flowControl": {"defaultPriorityBand": {"fairnessPolicyRef": "program-aware-fairness"}}}
    with pytest.raises(ConfigError) as e:
        parse_flow_control(doc)
    assert field in str(e.value)


CORPUS = Path(__file__).parents[2] / "data" / "configs" / "upstream"


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.yaml")
                                        if "flowControl" in p.read_text()))
def test_every_corpus_flow_control_section_starts_the_rust_controller(name):
    config = load_config(path=str(CORPUS / name))
    controller = FlowController(config.flow_control, router=Router(config.router_json()))
    try:
        assert controller.stats()["queued_requests"] == 0
    finally:
        controller.close()
