"""Load from the gateway's own accounting: rate over the sliding window (or since start),
mean prompt and output tokens, and an idle model going to zero once its window passes."""

from __future__ import annotations

import pytest

from sluicegate.errors import ConfigError
from sluicegate.optimizer.observe import LoadMeter


def test_rate_and_token_means_over_the_window() -> None:
    meter = LoadMeter(window_s=10.0, started_at=0.0)
    for i in range(100):  # 5 req/s for 20 s, prompts alternating 100 / 300 tokens
        t = i * 0.2
        meter.arrived("m", 100 if i % 2 else 300, t)
        meter.completed("m", 50, t + 0.1)
    load = meter.load("m", now=19.9)  # the window (9.9, 19.9] holds 50 arrivals
    assert load.arrival_rps == pytest.approx(5.0)
    assert load.input_tokens == pytest.approx(200.0)
    assert load.output_tokens == 50.0


def test_a_young_meter_divides_by_its_age_not_the_window() -> None:
    meter = LoadMeter(window_s=60.0, started_at=100.0)
    for i in range(20):
        meter.arrived("m", 10, 100.0 + i * 0.25)
    assert meter.load("m", now=105.0).arrival_rps == pytest.approx(4.0)


def test_idle_model_drops_to_zero_and_keeps_its_last_output_length() -> None:
    meter = LoadMeter(window_s=5.0, started_at=0.0)
    meter.arrived("m", 10, 1.0)
    meter.completed("m", 40, 2.0)
    assert meter.load("m", now=3.0).output_tokens == 40.0
    idle = meter.load("m", now=30.0)
    assert idle.arrival_rps == 0.0 and idle.output_tokens == 40.0
    assert meter.models() == ["m"]


def test_window_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="window_s=0"):
        LoadMeter(window_s=0, started_at=0.0)
