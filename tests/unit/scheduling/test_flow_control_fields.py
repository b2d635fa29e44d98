"""Upstream flowControl fields sluicegate reads only to refuse what it cannot do."""

from __future__ import annotations

import re

import pytest

from sluicegate.errors import ConfigError
from sluicegate.scheduling.config import load_config


def test_eviction_off_is_accepted_and_on_is_refused():
    assert load_config(text="flowControl: {enableEviction: false}").flow_control.enabled is False
    with pytest.raises(ConfigError, match=re.escape("flowControl.enableEviction: True is not supported")):
        load_config(text="featureGates: [flowControl]\nflowControl: {enableEviction: true}")


@pytest.mark.parametrize("kind", ["sheddable-eviction-filter", "priority-then-time-eviction-order-policy"])
def test_flow_control_plugins_not_run_here_are_refused_by_name(kind):
    with pytest.raises(ConfigError, match=re.escape(f"'{kind}' is not supported by sluicegate")):
        load_config(text=f"plugins: [{{type: {kind}}}, {{type: queue-scorer}}]")


@pytest.mark.parametrize("kind", ["program-aware-fairness", "soft-reflective-ceiling-policy",
                                  "probabilistic-admitter", "latency-slo-admitter"])
def test_flow_control_and_admission_plugins_run_here_are_accepted(kind):
    load_config(text=f"plugins: [{{type: {kind}}}, {{type: queue-scorer}}]")
