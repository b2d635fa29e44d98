"""Sizing: the largest request rate one replica carries within its SLOs (TTFT, ITL, served
fraction), found by multi-point bisection over the queueing model, and the replica count a
model's observed load needs from it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sluicegate.errors import ConfigError

from .queueing import (NUMERIC_FIELDS, ParamColumns, QueueMetrics, ServerParams, analyze,
                       metric_arrays)

# Bisection halves the bracket [0, capacity / served fraction] this many times: 2^-17 of the
# replica's capacity (the Rust kernel's BISECTION_ROUNDS is the same).
_ROUNDS = 17

# Who sizes "step" options: the Rust core's kernel (sluicegate._core.optimizer, same arithmetic
# one option at a time, ~10x faster than numpy at these array sizes) or the numpy reference
# below, which the kernel is tested against and the bench times it against.
KERNELS = ("rust", "numpy")


@dataclass(frozen=True)
class SloTarget:
    ttft_ms: float
    itl_ms: float
    min_served_fraction: float = 0.99  # throughput / arrivals: at most 1% blocked at the queue

    def __post_init__(self) -> None:
        if not self.ttft_ms > 0:
            raise ConfigError(f"SloTarget.ttft_ms={self.ttft_ms!r}: must be > 0")
        if not self.itl_ms > 0:
            raise ConfigError(f"SloTarget.itl_ms={self.itl_ms!r}: must be > 0")
        if not 0 < self.min_served_fraction <= 1:
            raise ConfigError(f"SloTarget.min_served_fraction={self.min_served_fraction!r}: "
                              "must be in (0, 1]")

    def met_by(self, m: QueueMetrics) -> bool:
        served = m.throughput_rps / m.arrival_rps if m.arrival_rps > 0 else 1.0
        return (m.ttft_ms <= self.ttft_ms and m.itl_ms <= self.itl_ms
                and served >= self.min_served_fraction)

    def met_by_each(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """`met_by` over `queueing.metric_arrays` columns, one bool per arrival rate."""
        lam = cols["arrival_rps"]
        served = np.where(lam > 0, cols["throughput_rps"] / np.where(lam > 0, lam, 1.0), 1.0)
        return ((cols["ttft_ms"] <= self.ttft_ms) & (cols["itl_ms"] <= self.itl_ms)
                & (served >= self.min_served_fraction))


def max_rate_rps(params: ServerParams, slo: SloTarget, *, kernel: str = "rust") -> float:
    """Largest arrival rate (req/s) at which one replica meets `slo`; 0 when even a lone
    request misses it. The returned rate is always one that was evaluated as feasible."""
    return max_rates_rps([(params, slo)], kernel=kernel)[0]


def predict(params: ServerParams, slo: SloTarget, arrival_rps: float, *,
            kernel: str = "rust") -> tuple[bool, float, float]:
    """(SLO met, mean TTFT ms, mean ITL ms) of one replica at `arrival_rps`: what a plan
    reports for the option it picked ("step" options by `kernel`, the others by numpy)."""
    if kernel not in KERNELS:
        raise ConfigError(f"kernel={kernel!r}: expected one of {', '.join(KERNELS)}")
    if params.formulation != "step" or kernel == "numpy":
        m = analyze(params, arrival_rps)
        return slo.met_by(m), m.ttft_ms, m.itl_ms
    from sluicegate._core import optimizer  # the extension loads only when a plan is made

    throughput, ttft, itl = optimizer.evaluate_step(
        params.max_batch, params.max_queue, *(float(getattr(params, k)) for k in NUMERIC_FIELDS),
        float(arrival_rps))
    served = throughput / arrival_rps if arrival_rps > 0 else 1.0
    return (ttft <= slo.ttft_ms and itl <= slo.itl_ms and served >= slo.min_served_fraction,
            ttft, itl)


def max_rates_rps(jobs: Sequence[tuple[ServerParams, SloTarget]], *,
                  kernel: str = "rust") -> list[float]:
    """`max_rate_rps` of every (params, slo), grouped by batch and queue size. "step" options
    go to `kernel`: "rust" (the default) or "numpy" (each group bisected together, one
    `metric_arrays` call per round, as numpy's per-call cost dominates at these sizes). The
    other formulations are only in numpy, one option at a time."""
    if kernel not in KERNELS:
        raise ConfigError(f"kernel={kernel!r}: expected one of {', '.join(KERNELS)}")
    out = [0.0] * len(jobs)
    groups: dict[tuple[int, int, str, int], list[int]] = {}
    for i, (p, _) in enumerate(jobs):
        alone = i if p.formulation != "step" else -1
        groups.setdefault((p.max_batch, p.max_queue, p.formulation, alone), []).append(i)
    for (b, q, formulation, _), idx in groups.items():
        params, slos = [jobs[i][0] for i in idx], [jobs[i][1] for i in idx]
        if formulation == "step" and kernel == "rust":
            rates = _bisect_rust(b, q, params, slos)
        else:
            rates = _bisect(params, slos)
        for i, rate in zip(idx, rates):
            out[i] = float(rate)
    return out


def _bisect_rust(max_batch: int, max_queue: int, params: Sequence[ServerParams],
                 slos: Sequence[SloTarget]) -> list[float]:
    from sluicegate._core import optimizer  # the extension loads only when sizing runs

    return optimizer.max_rates_step(
        max_batch, max_queue, *([float(getattr(p, k)) for p in params] for k in NUMERIC_FIELDS),
        [s.ttft_ms for s in slos], [s.itl_ms for s in slos],
        [s.min_served_fraction for s in slos])


def _bisect(params: Sequence[ServerParams], slos: Sequence[SloTarget]) -> np.ndarray:
    """Per option: lo stays a rate that meets the SLO (or 0), hi one that does not. Throughput
    cannot exceed capacity, so beyond capacity / served fraction the served share fails."""
    first = params[0]
    fields = {k: np.array([getattr(p, k) for p in params]) for k in NUMERIC_FIELDS}
    ttft = np.array([s.ttft_ms for s in slos])
    itl = np.array([s.itl_ms for s in slos])
    fraction = np.array([s.min_served_fraction for s in slos])

    def met(rows: np.ndarray, rates: np.ndarray) -> np.ndarray:
        model = first if first.formulation != "step" else ParamColumns.of(
            {n: v[rows] for n, v in fields.items()}, first.max_batch, first.max_queue)
        m = metric_arrays(model, rates)
        lam = m["arrival_rps"]
        served = np.where(lam > 0, m["throughput_rps"] / np.where(lam > 0, lam, 1.0), 1.0)
        return ((m["ttft_ms"] <= ttft[rows]) & (m["itl_ms"] <= itl[rows])
                & (served >= fraction[rows]))

    everyone = np.arange(len(params))
    capacity = (np.array([first.capacity_rps()]) if first.formulation != "step" else
                ParamColumns.of(fields, first.max_batch, first.max_queue).capacity_rps()[:, 0])
    hi = capacity / fraction
    lone = hi * 1e-9
    can = met(everyone, lone)  # a lone request meets the SLO
    lo = np.zeros_like(hi)
    rows = np.flatnonzero(can)
    for _ in range(_ROUNDS):
        if not rows.size:
            break
        mid = (lo[rows] + hi[rows]) / 2.0
        ok = met(rows, mid)
        lo[rows] = np.where(ok, mid, lo[rows])
        hi[rows] = np.where(ok, hi[rows], mid)
    return np.where(can, np.where(lo > 0, lo, lone), 0.0)


def replicas_needed(load_rps: float, per_replica_rps: float, *, min_replicas: int = 0,
                    max_replicas: int | None = None, scale_to_zero: bool = False) -> int | None:
    """Replicas that carry `load_rps` at `per_replica_rps` each, within [min, max]; None when
    no count within max meets the SLO (so the accelerator is not a feasible choice)."""
    if load_rps < 0:
        raise ConfigError(f"load_rps={load_rps!r}: must be >= 0")
    if load_rps == 0:
        return max(min_replicas, 0 if scale_to_zero else 1)  # minReplicas > 0 blocks zero
    if per_replica_rps <= 0:
        return None
    # A relative epsilon keeps exact multiples (load == k * rate) from rounding up to k + 1.
    need = max(math.ceil(load_rps / per_replica_rps * (1 - 1e-12)), 1, min_replicas)
    if max_replicas is not None and need > max_replicas:
        return None
    return need
