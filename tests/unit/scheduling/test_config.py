"""EndpointPickerConfig loading: upstream shape accepted, defaults as upstream, strict errors."""

import pytest

from sluicegate.errors import ConfigError
from sluicegate.scheduling.config import DEFAULT_WEIGHTS, load_config

UPSTREAM_STYLE = """
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- name: picker
  type: max-score-picker
  parameters:
    maxNumOfEndpoints: 2
- name: endpoints
  type: file-discovery
  parameters:
    path: /etc/endpoints.yaml
    watchFile: false
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 3
  - pluginRef: kv-cache-utilization-scorer
  - pluginRef: picker
dataLayer:
  discovery:
    pluginRef: endpoints
"""


def test_no_config_gives_upstreams_default_weights():
    cfg = load_config()
    assert cfg.weights == DEFAULT_WEIGHTS == {
        "queue-scorer": 2.0, "kv-cache-utilization-scorer": 2.0, "prefix-cache-scorer": 3.0}
    assert cfg.max_endpoints == 1
    assert cfg.profile_handler == "single-profile-handler"


def test_a_config_with_only_discovery_keeps_the_default_profile():
    cfg = load_config(text="plugins: [{name: eps, type: file-discovery, parameters: {path: /x}}]\n"
                           "dataLayer: {discovery: {pluginRef: eps}}")
    assert cfg.weights == DEFAULT_WEIGHTS
    assert cfg.endpoints_file == "/x"


def test_upstream_style_config_resolves_weights_picker_and_discovery():
    cfg = load_config(text=UPSTREAM_STYLE)
    assert cfg.weights == {"queue-scorer": 3.0, "kv-cache-utilization-scorer": 1.0}
    assert cfg.max_endpoints == 2
    assert cfg.endpoints_file == "/etc/endpoints.yaml"
    assert cfg.watch_file is False


def test_plugin_name_defaults_to_type():
    cfg = load_config(text="plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: queue-scorer}]}]")
    assert cfg.weights == {"queue-scorer": 1.0}


@pytest.mark.parametrize(
    "text, names",
    [
        ("plugins: [{type: no-such-scorer}]", "no-such-scorer"),
        ("plugins: [{type: max-score-picker, parameters: {maxEndpoints: 2}}]", "maxEndpoints"),
        ("plugins: [{type: queue-scorer, colour: red}]", "colour"),
        ("bogus: 1", "bogus"),
        ("apiVersion: v9\n", "apiVersion"),
        ("plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: nope}]}]", "nope"),
        ("plugins: [{type: queue-scorer}]\nschedulingProfiles: [{name: p, plugins: [{pluginRef: queue-scorer, weight: -1}]}]", "weight"),
        ("plugins: [{type: max-score-picker, parameters: {maxNumOfEndpoints: 0}}]", "maxNumOfEndpoints"),
    ],
)
def test_invalid_config_names_the_field(text, names):
    with pytest.raises(ConfigError, match=names):
        load_config(text=text)


def test_check_config_command_prints_profile_and_fails_on_error(tmp_path, capsys):
    from sluicegate.cli import main

    good = tmp_path / "good.yaml"
    good.write_text(UPSTREAM_STYLE)
    assert main(["check-config", str(good)]) == 0
    assert "queue-scorer×3" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("plugins: [{type: nope}]")
    assert main(["check-config", str(bad)]) == 1
    assert "nope" in capsys.readouterr().err


# The llm-d prefill/decode example, in upstream's shape.
UPSTREAM_PD = """
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: prefill-filter
- type: decode-filter
- type: prefix-cache-scorer
  parameters:
    blockSize: 64
    maxPrefixBlocksToMatch: 256
    lruCapacityPerServer: 31250
- type: load-aware-scorer
  parameters:
    threshold: 64
- type: max-score-picker
- name: decider
  type: prefix-based-pd-decider
  parameters:
    nonCachedTokens: 256
- type: disagg-profile-handler
  parameters:
    prefillDeciderPluginName: decider
schedulingProfiles:
- name: prefill
  plugins:
  - pluginRef: prefill-filter
  - pluginRef: load-aware-scorer
  - pluginRef: max-score-picker
- name: decode
  plugins:
  - pluginRef: decode-filter
  - pluginRef: prefix-cache-scorer
    weight: 2
  - pluginRef: load-aware-scorer
  - pluginRef: max-score-picker
"""


def test_upstream_pd_config_resolves_both_profiles_and_the_handler():
    cfg = load_config(text=UPSTREAM_PD)
    assert cfg.profile_handler == "disagg-profile-handler"
    prefill, decode = cfg.profiles
    assert (prefill.name, prefill.filters, prefill.picker) == ("prefill", ("prefill-filter",), "max-score-picker")
    assert [(s.type, s.weight) for s in decode.scorers] == [("prefix-cache-scorer", 2.0), ("load-aware-scorer", 1.0)]


@pytest.mark.parametrize(
    "text, names",
    [
        ("plugins: [{type: prefix-cache-scorer, parameters: {blockSzie: 4}}]", "blockSzie"),
        ("plugins: [{type: load-aware-scorer, parameters: {threshold: -1}}]", "threshold"),
        ("plugins: [{name: h, type: disagg-profile-handler}]\n"
         "schedulingProfiles: [{name: main, plugins: []}]", "decodeProfile"),
        ("plugins: [{type: queue-scorer}, {type: random-picker}, {type: max-score-picker}]", "one"),
    ],
)
def test_plugin_parameter_errors_name_plugin_and_field(text, names):
    with pytest.raises(ConfigError, match=names):
        load_config(text=text)


def test_router_json_carries_the_scheduling_config_and_data_layer_flags():
    import json

    cfg = load_config(text=UPSTREAM_STYLE)
    doc = json.loads(cfg.router_json(stalenessMs=100))
    assert doc["stalenessMs"] == 100
    assert [p["type"] for p in doc["plugins"]] == ["queue-scorer", "kv-cache-utilization-scorer", "max-score-picker"]
