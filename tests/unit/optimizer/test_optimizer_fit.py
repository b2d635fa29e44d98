"""Fitting the performance parameters from observations: the batch fit and the Kalman filter
recover the parameters seeded data was drawn from, the filter follows a change, the error is
reported and exported, and fitted parameters replace a profile's."""

from __future__ import annotations

import numpy as np
import pytest

from sluicegate.errors import ConfigError
from sluicegate.optimizer import samples_dir
from sluicegate.optimizer.actuation import MetricsExporter
from sluicegate.optimizer.config import load_config
from sluicegate.optimizer.fit import KalmanLinearFit, ProfileFit, apply_fits, least_squares


def _observations(seed: int, base: float, slope: float, n: int, noise: float,
                  x_max: float = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(1, int(x_max) + 1, n).astype(np.float64)
    return x, base + slope * x + rng.normal(0, noise, n)


def test_least_squares_recovers_itl_parameters_and_the_noise() -> None:
    x, y = _observations(1, base=8.0, slope=0.1, n=400, noise=0.3)
    f = least_squares(x, y)
    assert f.base == pytest.approx(8.0, rel=0.03) and f.slope == pytest.approx(0.1, rel=0.03)
    assert f.rmse_ms == pytest.approx(0.3, rel=0.15) and f.samples == 400


def test_least_squares_never_returns_a_negative_parameter() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    f = least_squares(x, 10.0 - 0.5 * x)  # falling data: the slope is clamped at 0
    assert f.slope == 0.0 and f.base > 0


def test_least_squares_needs_two_finite_points() -> None:
    with pytest.raises(ConfigError, match="two or more"):
        least_squares([1.0], [2.0])
    with pytest.raises(ConfigError, match="finite"):
        least_squares([1.0, 2.0], [1.0, float("nan")])


def test_kalman_filter_converges_then_follows_a_change() -> None:
    kf = KalmanLinearFit(base=1.0, slope=0.0, noise_ms=0.5, drift=1e-4)
    for x, y in zip(*_observations(2, base=5.0, slope=0.04 * 512, n=600, noise=0.5,
                                   x_max=8)):
        kf.update(x, y)
    assert kf.fit.base == pytest.approx(5.0, abs=0.5)
    assert kf.fit.slope == pytest.approx(20.48, rel=0.03)
    # The accelerator got slower (e.g. a noisy neighbour): the filter moves to the new line.
    for x, y in zip(*_observations(3, base=7.0, slope=30.0, n=1500, noise=0.5, x_max=8)):
        kf.update(x, y)
    assert kf.fit.base == pytest.approx(7.0, abs=1.0)
    assert kf.fit.slope == pytest.approx(30.0, rel=0.05)
    assert kf.fit.rmse_ms < 1.5 and kf.fit.samples == 2100


def test_fitted_parameters_replace_the_profile_and_are_exported() -> None:
    inp = load_config([str(samples_dir())])
    fits = {("meta/llama-3.1-8b", "A100"): ProfileFit(
        decode=least_squares(*_observations(4, 9.0, 0.12, 200, 0.2)),
        prefill=least_squares(*_observations(5, 6.5, 0.02, 200, 0.4, x_max=50_000)))}
    fitted = apply_fits(inp, fits)
    a100 = next(v for v in fitted.variants if v.name == "llama-8b-a100").profiles[0]
    assert a100.alpha == pytest.approx(9.0, rel=0.05)
    assert a100.delta == pytest.approx(0.02, rel=0.05)
    untouched = next(v for v in fitted.variants if v.name == "llama-8b-l40s")
    assert untouched == next(v for v in inp.variants if v.name == "llama-8b-l40s")
    exporter = MetricsExporter()
    exporter.update_fits(fits)
    text = exporter.render().decode()
    assert ('sluicegate_optimizer_fit_rmse_ms{accelerator_type="A100",'
            'model_name="meta/llama-3.1-8b",phase="decode"}') in text
    assert 'parameter="alpha"' in text
