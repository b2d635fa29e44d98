"""Activator settings: InferencePool annotations (Kubernetes mode) and the config's `activator:`
section (static mode); every bad value is a ConfigError naming the field and the value."""

from __future__ import annotations

import pytest

from sluicegate.activator import parse_annotations
from sluicegate.activator.static import parse_static_activator
from sluicegate.errors import ConfigError
from sluicegate.scheduling.config import load_config

P = "activator.llm-d.ai/"


def test_pool_without_activator_annotations_has_no_activator():
    assert parse_annotations(None) is None
    assert parse_annotations({"other.io/x": "1"}) is None


def test_annotations_give_target_and_durations_with_upstream_defaults():
    spec = parse_annotations({P + "target-name": "vllm", P + "scale-down-delay": "2m"})
    assert (spec.target.api_version, spec.target.kind, spec.target.name) == ("apps/v1", "Deployment", "vllm")
    assert (spec.grace_s, spec.scale_down_delay_s) == (60.0, 120.0)
    spec = parse_annotations({P + "target-apiversion": "leaderworkerset.x-k8s.io/v1", P + "target-kind":
                              "LeaderWorkerSet", P + "target-name": "lws", P + "scale-from-zero-grace-period": "1m30s"})
    assert spec.target.group_version == ("leaderworkerset.x-k8s.io", "v1") and spec.grace_s == 90.0


@pytest.mark.parametrize("ann, message", [
    ({P + "scale-down-delay": "5s"}, P + "target-name: '' is missing"),
    ({P + "target-name": " "}, P + "target-name: ' ' is missing"),
    ({P + "target-name": "m", P + "target-kind": "deployment"}, P + "target-kind: 'deployment'"),
    ({P + "target-name": "m", P + "target-apiversion": "a/b/c"}, P + "target-apiversion: 'a/b/c'"),
    ({P + "target-name": "m", P + "scale-from-zero-grace-period": "soon"}, P + "scale-from-zero-grace-period: 'soon'"),
    ({P + "target-name": "m", P + "scale-down-delay": "0s"}, P + "scale-down-delay: '0s' must be longer than zero"),
])
def test_bad_annotations_name_the_annotation_and_value(ann, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_annotations(ann)


def test_static_section_in_the_config_file():
    cfg = load_config(text="activator:\n  scale-up-command: ./up.sh --fast\n  scale-down-command: [./down.sh, x]\n"
                           "  scale-from-zero-grace-period: 45s\n")
    a = cfg.activator
    assert a.scale_up_command == ("/bin/sh", "-c", "./up.sh --fast") and a.scale_down_command == ("./down.sh", "x")
    assert (a.grace_s, a.scale_down_delay_s) == (45.0, 120.0)
    assert load_config(text="{}").activator is None


@pytest.mark.parametrize("raw, message", [
    ({}, "activator.scale-up-command: required"),
    ({"scale-up-command": []}, "activator.scale-up-command: [] is not a command"),
    ({"scale-up-command": "x", "scale-down-delay": "1 minute"}, "activator.scale-down-delay: '1 minute'"),
    ({"scale-up-command": "x", "scaleUpCommand": "y"}, "activator: unknown field 'scaleUpCommand'"),
    ("on", "activator: expected a mapping, got 'on'"),
])
def test_bad_static_section_names_the_field(raw, message):
    with pytest.raises(ConfigError, match=f"cfg: {message}".replace("[", r"\[").replace("]", r"\]")):
        parse_static_activator(raw, "cfg")
