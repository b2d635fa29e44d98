"""Load from the gateway's own accounting: rate over the sliding window (or since start),
mean prompt and output tokens, and an idle model going to zero once its window passes."""

from __future__ import annotations

import pytest

from sluicegate.errors import ConfigError
from sluicegate.optimizer.observe import EppLoadSource, LoadMeter, parse_epp_metrics


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


def _exposition(requests: float, in_sum: float, out_sum: float, model: str = "m") -> str:
    labels = f'model_name="{model}",target_model_name="{model}",fairness_id="",priority="0"'
    return (f"# TYPE llm_d_epp_request counter\n"
            f"llm_d_epp_request_total{{{labels}}} {requests}\n"
            f"# TYPE llm_d_epp_request_input_tokens histogram\n"
            f'llm_d_epp_request_input_tokens_bucket{{{labels},le="+Inf"}} {requests}\n'
            f"llm_d_epp_request_input_tokens_sum{{{labels}}} {in_sum}\n"
            f"llm_d_epp_request_input_tokens_count{{{labels}}} {requests}\n"
            f"# TYPE llm_d_epp_request_output_tokens histogram\n"
            f'llm_d_epp_request_output_tokens_bucket{{{labels},le="+Inf"}} {requests}\n'
            f"llm_d_epp_request_output_tokens_sum{{{labels}}} {out_sum}\n"
            f"llm_d_epp_request_output_tokens_count{{{labels}}} {requests}\n")


def test_epp_totals_turn_into_rate_and_means_over_the_window() -> None:
    src = EppLoadSource(["http://unused"], window_s=30.0)
    src.add(0.0, parse_epp_metrics(_exposition(100, 10_000, 5_000)))
    assert src.loads() == []  # one sample is no rate
    src.add(10.0, parse_epp_metrics(_exposition(150, 20_000, 6_000)))
    (load,) = src.loads()
    assert (load.arrival_rps, load.input_tokens, load.output_tokens) == (5.0, 200.0, 20.0)
    for t in (20.0, 30.0, 40.0):  # steady 5 req/s; the window drops the oldest samples
        src.add(t, parse_epp_metrics(_exposition(150 + 5 * t - 50, 20_000, 6_000)))
    assert src.loads()[0].arrival_rps == pytest.approx(5.0)


def test_epp_counter_reset_counts_from_zero() -> None:
    src = EppLoadSource(["http://unused"], window_s=60.0)
    src.add(0.0, parse_epp_metrics(_exposition(1000, 1e5, 1e4)))
    src.add(10.0, parse_epp_metrics(_exposition(30, 3000, 300)))  # the EPP restarted
    (load,) = src.loads()
    assert load.arrival_rps == 3.0 and load.input_tokens == 100.0


def test_epp_totals_sum_replicas_and_ignore_other_families() -> None:
    text = _exposition(10, 100, 50) + "# TYPE up gauge\nup 1\n"
    totals = parse_epp_metrics(text)
    assert set(totals) == {"m"}
    assert (totals["m"] + totals["m"]).requests == 20


def test_observed_load_replaces_the_configured_one_per_model() -> None:
    from sluicegate.optimizer import samples_dir
    from sluicegate.optimizer.config import load_config
    from sluicegate.optimizer.controller import with_observed_load
    from sluicegate.optimizer.inputs import ModelLoad

    inp = load_config([str(samples_dir())])
    seen = ModelLoad(model="meta/llama-3.1-70b", arrival_rps=9.0, input_tokens=10,
                     output_tokens=20)
    out = with_observed_load(inp, [seen])
    assert out.load_of("meta/llama-3.1-70b", "llm-inference") == seen
    assert out.load_of("meta/llama-3.1-8b", "llm-inference") == \
        inp.load_of("meta/llama-3.1-8b", "llm-inference")
