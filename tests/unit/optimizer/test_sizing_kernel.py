"""The Rust sizing kernel (sluicegate._core.optimizer) against the numpy reference in
sluicegate.optimizer.sizing/queueing: the same max rate per option on random options."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.errors import ConfigError
from sluicegate.optimizer.queueing import ServerParams
from sluicegate.optimizer.sizing import SloTarget, max_rates_rps, predict


def _random_jobs(rng: random.Random, count: int) -> list[tuple[ServerParams, SloTarget]]:
    jobs: list[tuple[ServerParams, SloTarget]] = []
    while len(jobs) < count:
        b = rng.choice([1, 4, 16, 64, 256])
        try:
            params = ServerParams(
                alpha=rng.uniform(1, 40), beta=rng.choice([0.0, rng.uniform(0.0, 2.0)]),
                gamma=rng.choice([0.0, rng.uniform(0.5, 50)]), delta=rng.uniform(0.0, 0.2),
                max_batch=b, max_queue=rng.choice([0, b, 10 * b]),
                input_tokens=rng.choice([0.0, rng.uniform(1, 8192)]),
                output_tokens=rng.choice([1.0, rng.uniform(1, 1024)]))
        except ConfigError:  # a request that takes no time (gamma, prompt and decodes all 0)
            continue
        jobs.append((params, SloTarget(ttft_ms=rng.uniform(20, 5000), itl_ms=rng.uniform(5, 200),
                                       min_served_fraction=rng.choice([0.9, 0.99, 1.0]))))
    return jobs


def _assert_same(fast: list[float], slow: list[float]) -> None:
    assert len(fast) == len(slow)
    for i, (f, s) in enumerate(zip(fast, slow)):
        assert math.isclose(f, s, rel_tol=1e-9, abs_tol=0.0), f"option {i}: rust {f} numpy {s}"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_rust_kernel_gives_the_numpy_reference_rates(seed: int) -> None:
    jobs = _random_jobs(random.Random(seed), 40)
    fast = max_rates_rps(jobs, kernel="rust")
    slow = max_rates_rps(jobs, kernel="numpy")
    _assert_same(fast, slow)
    assert any(r > 0 for r in fast) or all(r == 0 for r in slow)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_rust_prediction_gives_the_numpy_reference_metrics(seed: int) -> None:
    rng = random.Random(seed)
    for params, slo in _random_jobs(rng, 20):
        rate = rng.choice([0.0, rng.uniform(0.0, 1.2) * params.capacity_rps()])
        met, ttft, itl = predict(params, slo, rate, kernel="rust")
        ref_met, ref_ttft, ref_itl = predict(params, slo, rate, kernel="numpy")
        assert math.isclose(ttft, ref_ttft, rel_tol=1e-9), (params, rate, ttft, ref_ttft)
        assert math.isclose(itl, ref_itl, rel_tol=1e-9), (params, rate, itl, ref_itl)
        assert met == ref_met, (params, slo, rate)


def test_rust_kernel_on_the_optimizer_problems() -> None:
    """build_problem sizes with the default (rust) kernel; numpy gives every option the same."""
    from sluicegate.optimizer.problem import build_problem
    from sluicegate.optimizer.synthetic import random_input

    problems = [build_problem(random_input(1000 + seed, 1 + seed * 3, 1 + seed % 4,
                                           scarcity=0.5)) for seed in range(6)]
    loaded = [(s, o) for p in problems for s in p.servers if s.load_rps > 0 for o in s.options]
    assert loaded
    fast = [o.max_rate_rps for _, o in loaded]
    _assert_same(fast, max_rates_rps([(o.params, s.slo) for s, o in loaded], kernel="numpy"))
    assert sum(r > 0 for r in fast) > len(fast) // 2


def test_other_formulations_stay_on_numpy_and_an_unknown_kernel_is_named() -> None:
    p = ServerParams(alpha=8, beta=0.1, gamma=5, delta=0.05, max_batch=64, max_queue=128,
                     input_tokens=512, output_tokens=128, formulation="reference")
    slo = SloTarget(ttft_ms=500, itl_ms=12)
    assert max_rates_rps([(p, slo)], kernel="rust") == max_rates_rps([(p, slo)], kernel="numpy")
    with pytest.raises(ConfigError, match=r"kernel='go'"):
        max_rates_rps([(p, slo)], kernel="go")
