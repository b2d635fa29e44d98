"""Upstream-shaped EndpointPickerConfig files (tests/unit/scheduling/configs, written after the examples in
the Inference Extension and llm-d repositories) load, resolve as upstream would, and survive a
round trip through the resolved scheduling JSON unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sluicegate.scheduling.config import load_config

CONFIGS = Path(__file__).parent / "configs"
EXPECTED = {
    "gie-default.yaml": ("single-profile-handler", [
        ("default", (), [("queue-scorer", 2.0), ("kv-cache-scorer", 2.0), ("prefix-cache-scorer", 3.0)],
         "max-score-picker", 1)]),
    "llmd-decode-only.yaml": ("single-profile-handler", [
        ("default", ("decode-filter",), [("prefix-cache-scorer", 2.0), ("load-aware-scorer", 1.0)],
         "max-score-picker", 1)]),
    "llmd-pd.yaml": ("pd-profile-handler", [
        ("prefill", ("prefill-filter",), [("prefix-cache-scorer", 2.0)], "max-score-picker", 1),
        ("decode", ("decode-filter",), [("prefix-cache-scorer", 2.0)], "max-score-picker", 1)]),
    "llmd-precise.yaml": ("single-profile-handler", [
        ("default", (), [("prefix-cache-scorer", 3.0), ("kv-cache-utilization-scorer", 2.0),
                         ("queue-scorer", 2.0)], "max-score-picker", 1)]),
    "lora-affinity.yaml": ("single-profile-handler", [
        ("default", ("gpu-pool", "utilization-filter"),
         [("lora-affinity-scorer", 3.0), ("queue-scorer", 1.0), ("active-request-scorer", 1.0)], "top3", 3)]),
}


def _shape(cfg):
    return cfg.profile_handler, [(p.name, p.filters, [(s.name, s.weight) for s in p.scorers], p.picker,
                                  p.max_endpoints) for p in cfg.profiles]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_upstream_config_resolves_as_upstream_would(name):
    assert _shape(load_config(path=str(CONFIGS / name))) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_resolved_scheduling_config_round_trips(name):
    first = load_config(path=str(CONFIGS / name))
    again = load_config(text=yaml.safe_dump(json.loads(first.scheduling_json)))
    assert _shape(again) == _shape(first)
    assert json.loads(again.scheduling_json) == json.loads(first.scheduling_json)


def test_every_example_passes_check_config(capsys):
    from sluicegate.cli import main

    for name in EXPECTED:
        assert main(["check-config", str(CONFIGS / name)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "pd-profile-handler" in out and "top3" in out


def test_precise_producer_settings_are_resolved():
    cfg = load_config(path=str(CONFIGS / "llmd-precise.yaml"))
    assert cfg.precise_prefix == {"name": "precise-prefix-cache-producer", "blockSize": 64,
                                  "socketPort": 5557, "topicFilter": "kv@", "zmqEndpoint": "",
                                  "replaySocketPort": 0, "hashSeed": "", "tokenLevel": False, "redisAddress": None}
    assert load_config().precise_prefix is None


@pytest.mark.parametrize("text, names", [
    ("plugins: [{type: precise-prefix-cache-producer, parameters: {blockSize: 0}}]", "blockSize"),
    ("plugins: [{type: precise-prefix-cache-producer, parameters: {zmqEndpoint: x}}]", "zmqEndpoint"),
    ("plugins: [{type: precise-prefix-cache-producer, parameters: "
     "{kvEventsConfig: {podDiscoveryConfig: {replaySocketPort: 70000}}}}]", "replaySocketPort"),
    ("plugins: [{type: prefill-header-handler, parameters: {x: 1}}]", "prefill-header-handler"),
    ("plugins: [{type: queue-scorer, parameters: {inFlight: sometimes}}]", "parameters.inFlight"),
    ("plugins: [{type: queue-scorer}, {type: precise-prefix-cache-producer}]\n"
     "schedulingProfiles: [{name: p, plugins: [{pluginRef: precise-prefix-cache-producer}]}]",
     "cannot be used in a profile"),
    ("plugins: [{type: mm-embeddings-cache-producer, parameters: {cacheSizeInMB: 2048}}]", "cacheSizeInMB"),
    ("plugins: [{type: mm-embeddings-cache-scorer, parameters: {producerName: nope}}]", "producerName.*'nope'"),
    ("plugins: [{type: p2p-source-producer, parameters: {minCachedTokenDelta: 0}}]", "minCachedTokenDelta"),
    ("plugins: [{type: p2p-source-producer, parameters: {prefixMatchInfoProducerName: nope}}]",
     "prefixMatchInfoProducerName.*'nope'"),
    ("plugins: [{type: burst-prefix-cache-producer, parameters: {windowDurationMs: 0}}]", "windowDurationMs"),
    ("plugins: [{type: burst-prefix-cache-producer, parameters: {balanceBy: bytes}}]", "balanceBy"),
    ("plugins: [{type: burst-prefix-cache-producer}, {type: burst-prefix-cache-producer, name: b}]",
     "one burst-prefix-cache-producer allowed"),
    ("plugins: [{type: queue-scorer}, {type: burst-prefix-cache-producer}]\n"
     "schedulingProfiles: [{name: p, plugins: [{pluginRef: burst-prefix-cache-producer}]}]",
     "cannot be used in a profile"),
])
def test_invalid_upstream_shapes_name_the_plugin_and_field(text, names):
    from sluicegate.errors import ConfigError

    with pytest.raises(ConfigError, match=names):
        load_config(text=text)
