"""Sizing: the largest per-replica rate within the SLOs, and replicas for an observed load."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.errors import ConfigError
from sluicegate.optimizer.queueing import ServerParams, analyze
from sluicegate.optimizer.sizing import SloTarget, max_rate_rps, replicas_needed

PARAMS = ServerParams(alpha=8, beta=0.1, gamma=5, delta=0.05, max_batch=64, max_queue=128,
                      input_tokens=512, output_tokens=128)

params_st = st.builds(
    ServerParams,
    alpha=st.floats(1, 40), beta=st.floats(0.0, 2.0), gamma=st.floats(0.5, 50),
    delta=st.floats(0, 0.2), max_batch=st.integers(1, 256), max_queue=st.integers(0, 512),
    input_tokens=st.floats(1, 4096), output_tokens=st.floats(1, 1024),
)


def test_max_rate_meets_the_slo_and_a_little_more_does_not() -> None:
    slo = SloTarget(ttft_ms=500, itl_ms=12)
    rate = max_rate_rps(PARAMS, slo)
    assert slo.met_by(analyze(PARAMS, rate))
    assert not slo.met_by(analyze(PARAMS, rate * 1.01))


def test_unreachable_itl_gives_zero_rate() -> None:
    assert max_rate_rps(PARAMS, SloTarget(ttft_ms=10_000, itl_ms=8.0)) == 0.0


def test_loose_slo_is_bounded_by_capacity_and_served_fraction() -> None:
    rate = max_rate_rps(PARAMS, SloTarget(ttft_ms=1e9, itl_ms=1e9, min_served_fraction=0.99))
    assert rate <= PARAMS.capacity_rps() / 0.99


@settings(max_examples=60, deadline=None)
@given(params=params_st, ttft=st.floats(50, 5000), itl=st.floats(5, 200),
       shrink=st.floats(0.3, 0.99))
def test_tighter_slo_never_raises_the_max_rate(params: ServerParams, ttft: float, itl: float,
                                               shrink: float) -> None:
    loose = max_rate_rps(params, SloTarget(ttft_ms=ttft, itl_ms=itl))
    assert max_rate_rps(params, SloTarget(ttft_ms=ttft * shrink, itl_ms=itl)) <= loose
    assert max_rate_rps(params, SloTarget(ttft_ms=ttft, itl_ms=itl * shrink)) <= loose


@settings(max_examples=40, deadline=None)
@given(params=params_st, ttft=st.floats(50, 5000), itl=st.floats(5, 200),
       load=st.floats(0.01, 1000), extra=st.floats(0, 1000))
def test_more_load_never_needs_fewer_replicas(params: ServerParams, ttft: float, itl: float,
                                              load: float, extra: float) -> None:
    per_replica = max_rate_rps(params, SloTarget(ttft_ms=ttft, itl_ms=itl))
    low = replicas_needed(load, per_replica)
    high = replicas_needed(load + extra, per_replica)
    if low is None:
        assert high is None
    elif high is not None:
        assert high >= low


@settings(max_examples=40, deadline=None)
@given(params=params_st, ttft=st.floats(50, 5000), itl=st.floats(5, 200),
       load=st.floats(0.01, 1000))
def test_sized_replicas_each_meet_the_slo(params: ServerParams, ttft: float, itl: float,
                                          load: float) -> None:
    slo = SloTarget(ttft_ms=ttft, itl_ms=itl)
    replicas = replicas_needed(load, max_rate_rps(params, slo))
    if replicas is not None:
        assert slo.met_by(analyze(params, load / replicas))


def test_zero_load_scales_to_zero_only_when_allowed() -> None:
    assert replicas_needed(0.0, 5.0, scale_to_zero=True) == 0
    assert replicas_needed(0.0, 5.0, min_replicas=2, scale_to_zero=False) == 2


def test_replicas_respect_min_and_max() -> None:
    assert replicas_needed(1.0, 10.0, min_replicas=3) == 3
    assert replicas_needed(100.0, 10.0, max_replicas=5) is None
    assert replicas_needed(100.0, 10.0) == 10


def test_slo_target_names_the_bad_field() -> None:
    with pytest.raises(ConfigError, match=r"SloTarget.itl_ms=0"):
        SloTarget(ttft_ms=100, itl_ms=0)
