"""Upstream flowControl fields and flow-control plugin types: read, checked, passed on."""

from __future__ import annotations

import json
import re

import pytest

from sluicegate.errors import ConfigError
from sluicegate.scheduling.config import load_config


def test_eviction_is_read_as_a_boolean_and_passed_to_the_controller():
    assert load_config(text="flowControl: {enableEviction: false}").flow_control.enable_eviction is False
    on = load_config(text="featureGates: [flowControl]\nflowControl: {enableEviction: true}").flow_control
    assert on.enable_eviction is True and json.loads(on.to_json())["enableEviction"] is True
    with pytest.raises(ConfigError, match=re.escape("flowControl.enableEviction: 'yes' is not a boolean")):
        load_config(text="flowControl: {enableEviction: 'yes'}")


@pytest.mark.parametrize("kind", ["sheddable-eviction-filter", "priority-then-time-eviction-order-policy"])
def test_eviction_policies_are_accepted_without_parameters(kind):
    load_config(text=f"plugins: [{{type: {kind}}}, {{type: queue-scorer}}]")
    with pytest.raises(ConfigError, match=re.escape(f"plugins[0] ({kind}).parameters: unknown field 'x'")):
        load_config(text=f"plugins: [{{type: {kind}, parameters: {{x: 1}}}}, {{type: queue-scorer}}]")


@pytest.mark.parametrize("kind", ["program-aware-fairness", "soft-reflective-ceiling-policy",
                                  "probabilistic-admitter", "latency-slo-admitter"])
def test_flow_control_and_admission_plugins_run_here_are_accepted(kind):
    load_config(text=f"plugins: [{{type: {kind}}}, {{type: queue-scorer}}]")
