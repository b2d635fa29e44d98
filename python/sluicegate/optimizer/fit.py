"""Performance parameters fitted from observations: ITL against batch size gives (alpha, beta),
prefill time against input tokens × batch gives (gamma, delta). A batch fit (non-negative
least squares) for offline data, and a Kalman filter for online updates that tracks drift;
both report their error in ms so it can be exported next to the parameters they produce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

from sluicegate.errors import ConfigError

from .inputs import AcceleratorProfile, OptimizerInput


@dataclass(frozen=True)
class LinearFit:
    """y ≈ base + slope · x (ms); `rmse_ms` is the residual (batch) or innovation (online)
    root mean square, over `samples` observations."""

    base: float
    slope: float
    rmse_ms: float
    samples: int


def least_squares(x: Sequence[float], y: Sequence[float]) -> LinearFit:
    """Non-negative least squares of y = base + slope · x (parameters the model needs >= 0)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.size < 2:
        raise ConfigError(f"fit needs two or more (x, y) pairs of equal length, got "
                          f"{xs.size} x and {ys.size} y")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ConfigError("fit: observations must be finite")
    coef, _ = nnls(np.column_stack([np.ones_like(xs), xs]), ys)
    resid = ys - (coef[0] + coef[1] * xs)
    return LinearFit(base=float(coef[0]), slope=float(coef[1]),
                     rmse_ms=float(np.sqrt(np.mean(resid**2))), samples=int(xs.size))


class KalmanLinearFit:
    """State (base, slope) as a random walk (process noise `drift` per update) observed
    through y = base + slope · x + noise of variance `noise_ms`²."""

    def __init__(self, base: float, slope: float, *, noise_ms: float = 1.0,
                 drift: float = 1e-4, prior_var: float = 100.0, decay: float = 0.05) -> None:
        if not (noise_ms > 0 and drift >= 0 and prior_var > 0 and 0 < decay <= 1):
            raise ConfigError("KalmanLinearFit: noise_ms and prior_var must be > 0, drift >= 0,"
                              " decay in (0, 1]")
        self.theta = np.array([base, slope], dtype=np.float64)
        self.p = np.eye(2) * prior_var
        self.q = np.eye(2) * drift
        self.r = noise_ms**2
        self._decay = decay
        self._mse = 0.0
        self.samples = 0

    def update(self, x: float, y: float) -> None:
        if not (np.isfinite(x) and np.isfinite(y)):
            return
        h = np.array([1.0, x])
        self.p = self.p + self.q
        innovation = y - h @ self.theta
        s = h @ self.p @ h + self.r
        k = self.p @ h / s
        self.theta = self.theta + k * innovation
        self.p = self.p - np.outer(k, h) @ self.p
        self._mse = innovation**2 if self.samples == 0 else (
            (1 - self._decay) * self._mse + self._decay * innovation**2)
        self.samples += 1

    @property
    def fit(self) -> LinearFit:
        base, slope = (max(float(v), 0.0) for v in self.theta)
        return LinearFit(base=base, slope=slope, rmse_ms=float(np.sqrt(self._mse)),
                         samples=self.samples)


@dataclass(frozen=True)
class ProfileFit:
    decode: LinearFit  # ITL vs batch: alpha, beta
    prefill: LinearFit  # prefill vs input tokens × batch: gamma, delta


def apply_fits(inp: OptimizerInput, fits: Mapping[tuple[str, str], ProfileFit]
               ) -> OptimizerInput:
    """`inp` with the profiles of (model, accelerator) replaced by their fitted parameters."""
    def refit(model: str, p: AcceleratorProfile) -> AcceleratorProfile:
        f = fits.get((model, p.acc))
        if f is None:
            return p
        return replace(p, alpha=f.decode.base, beta=f.decode.slope, gamma=f.prefill.base,
                       delta=f.prefill.slope)

    return replace(inp, variants=tuple(
        replace(v, profiles=tuple(refit(v.model, p) for p in v.profiles))
        for v in inp.variants))
