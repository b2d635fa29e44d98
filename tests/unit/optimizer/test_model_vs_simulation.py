"""The queueing model's TTFT and ITL against the discrete-event simulation of the server it
describes (`optimizer.simulation`: continuous batching, engine steps from the profile), and
the workload-variant-autoscaler's formulation kept beside it for comparison. The full grid
and its table are in benches/test_optimizer_model.py and benches/README.md."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sluicegate.optimizer.queueing import ServerParams, analyze
from sluicegate.optimizer.simulation import simulate

SHORT = ServerParams(alpha=8.2, beta=0.11, gamma=6.0, delta=0.021, max_batch=64, max_queue=640,
                     input_tokens=128, output_tokens=128)
LONG = replace(SHORT, input_tokens=2048)


def _errors(params: ServerParams, rho: float, requests: int) -> tuple[float, float]:
    lam = rho * params.capacity_rps()
    sim = simulate(params, lam, requests=requests, output_spread="geometric")
    model = analyze(params, lam)
    return model.ttft_ms / sim.ttft_ms - 1.0, model.itl_ms / sim.itl_ms - 1.0


@pytest.mark.parametrize(("params", "rho"), [(SHORT, 0.3), (SHORT, 0.6), (SHORT, 0.9),
                                             (LONG, 0.3), (LONG, 0.6)])
def test_step_formulation_matches_the_simulation_within_ten_percent(params, rho) -> None:
    ttft, itl = _errors(params, rho, requests=20_000)
    assert abs(ttft) <= 0.10 and abs(itl) <= 0.10, (ttft, itl)


def test_reference_formulation_is_far_more_pessimistic_on_long_prompts() -> None:
    # The autoscaler prices prefill at the mean concurrency over a request's whole service.
    lam = 0.3 * LONG.capacity_rps()
    sim = simulate(LONG, lam, requests=10_000, output_spread="geometric")
    ours = analyze(LONG, lam)
    ref = analyze(replace(LONG, formulation="reference"), lam)
    assert abs(ours.ttft_ms / sim.ttft_ms - 1) <= 0.10
    assert ref.ttft_ms > 2 * sim.ttft_ms


def test_simulation_of_an_idle_server_is_one_prefill_then_decodes() -> None:
    # One request at a time (arrivals far apart): TTFT is gamma + delta * in, ITL alpha + beta.
    lone = simulate(SHORT, 0.01, requests=200, output_spread="fixed")
    assert lone.ttft_ms == pytest.approx(6.0 + 0.021 * 128, rel=1e-6)
    assert lone.itl_ms == pytest.approx(8.2 + 0.11, rel=1e-3)
    assert analyze(SHORT, 0.01).ttft_ms == pytest.approx(lone.ttft_ms, rel=0.03)
