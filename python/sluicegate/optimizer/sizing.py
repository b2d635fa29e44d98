"""Sizing: the largest request rate one replica carries within its SLOs (TTFT, ITL, served
fraction), found by multi-point bisection over the queueing model, and the replica count a
model's observed load needs from it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sluicegate.errors import ConfigError

from .queueing import NUMERIC_FIELDS, ParamColumns, QueueMetrics, ServerParams, metric_arrays

# Each round evaluates this many rates in one vectorised pass and keeps the bracket around the
# first infeasible one: four rounds narrow the bracket to 1/65536 of the replica's capacity.
_POINTS = 16
_ROUNDS = 4


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


def max_rate_rps(params: ServerParams, slo: SloTarget) -> float:
    """Largest arrival rate (req/s) at which one replica meets `slo`; 0 when even a lone
    request misses it. The returned rate is always one that was evaluated as feasible."""
    # Throughput cannot exceed capacity, so beyond capacity/fraction the served share fails.
    hi = params.capacity_rps() / slo.min_served_fraction
    lo = 0.0
    if not slo.met_by_each(metric_arrays(params, np.asarray([hi * 1e-9])))[0]:
        return 0.0
    for _ in range(_ROUNDS):
        grid = np.linspace(lo, hi, _POINTS + 1)[1:]
        bad = np.flatnonzero(~slo.met_by_each(metric_arrays(params, grid)))
        first_bad = int(bad[0]) if bad.size else None
        if first_bad is None:
            return float(hi)
        hi = float(grid[first_bad])
        lo = float(grid[first_bad - 1]) if first_bad > 0 else lo
    return lo if lo > 0 else hi * 1e-9


def max_rates_rps(jobs: Sequence[tuple[ServerParams, SloTarget]]) -> list[float]:
    """`max_rate_rps` of every (params, slo), the same bisection run for all options of one
    batch and queue size at once: one `metric_arrays` call per round instead of one per
    option (numpy's per-call cost dominates at these sizes)."""
    out = [0.0] * len(jobs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (p, slo) in enumerate(jobs):
        if p.formulation == "step":
            groups.setdefault((p.max_batch, p.max_queue), []).append(i)
        else:
            out[i] = max_rate_rps(p, slo)
    for (b, q), idx in groups.items():
        rates = _bisect_together([jobs[i][0] for i in idx], [jobs[i][1] for i in idx], b, q)
        for i, rate in zip(idx, rates):
            out[i] = float(rate)
    return out


def _bisect_together(params: Sequence[ServerParams], slos: Sequence[SloTarget], b: int,
                     q: int) -> np.ndarray:
    fields = {k: np.array([getattr(p, k) for p in params]) for k in NUMERIC_FIELDS}
    ttft = np.array([s.ttft_ms for s in slos])
    itl = np.array([s.itl_ms for s in slos])
    fraction = np.array([s.min_served_fraction for s in slos])

    def met(rows: np.ndarray, rates: np.ndarray) -> np.ndarray:
        """SLO met at rates[i, k] by option rows[i]."""
        k = rates.shape[1]
        cols = ParamColumns.of({n: np.repeat(v[rows], k) for n, v in fields.items()}, b, q)
        m = metric_arrays(cols, rates.ravel())
        lam = m["arrival_rps"]
        served = np.where(lam > 0, m["throughput_rps"] / np.where(lam > 0, lam, 1.0), 1.0)
        ok = ((m["ttft_ms"] <= np.repeat(ttft[rows], k)) & (m["itl_ms"] <= np.repeat(itl[rows], k))
              & (served >= np.repeat(fraction[rows], k)))
        return ok.reshape(len(rows), k)

    everyone = np.arange(len(params))
    hi = ParamColumns.of(fields, b, q).capacity_rps()[:, 0] / fraction
    lo = np.zeros_like(hi)
    result = np.zeros_like(hi)
    open_ = met(everyone, hi[:, None] * 1e-9)[:, 0]  # a lone request meets it
    for _ in range(_ROUNDS):
        rows = np.flatnonzero(open_)
        if not rows.size:
            break
        grid = np.linspace(lo[rows], hi[rows], _POINTS + 1, axis=1)[:, 1:]
        bad = ~met(rows, grid)
        clear = ~bad.any(axis=1)
        result[rows[clear]] = hi[rows[clear]]
        open_[rows[clear]] = False
        rows, grid, bad = rows[~clear], grid[~clear], bad[~clear]
        first = bad.argmax(axis=1)
        at = np.arange(rows.size)
        hi[rows] = grid[at, first]
        lo[rows] = np.where(first > 0, grid[at, np.maximum(first - 1, 0)], lo[rows])
    rows = np.flatnonzero(open_)
    result[rows] = np.where(lo[rows] > 0, lo[rows], hi[rows] * 1e-9)
    return result


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
