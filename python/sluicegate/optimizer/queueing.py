"""The model-server queue: a birth–death chain on 0..B+Q whose service rate depends on the
batch size, solved in log space so large B+Q neither overflows nor underflows. Times are ms,
arrival rates requests per second at this edge (the chain itself runs in per-ms units)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluicegate.errors import ConfigError


@dataclass(frozen=True)
class ServerParams:
    """One replica of one model on one accelerator type, serving requests of one mean shape."""

    alpha: float  # decode step, ms: alpha + beta * batch
    beta: float
    gamma: float  # prefill, ms: gamma + delta * input_tokens * batch
    delta: float
    max_batch: int  # B
    max_queue: int  # Q: requests beyond B+Q in the replica are blocked (rejected)
    input_tokens: float
    output_tokens: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma", "delta"):
            _require(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        _require(self.alpha + self.beta > 0, "alpha", self.alpha, "alpha + beta must be > 0")
        _require(int(self.max_batch) == self.max_batch and self.max_batch >= 1, "max_batch",
                 self.max_batch, "must be an integer >= 1")
        _require(int(self.max_queue) == self.max_queue and self.max_queue >= 0, "max_queue",
                 self.max_queue, "must be an integer >= 0")
        _require(self.input_tokens >= 0, "input_tokens", self.input_tokens, "must be >= 0")
        _require(self.output_tokens >= 1, "output_tokens", self.output_tokens, "must be >= 1")
        # A request that takes no time would make the service rate infinite.
        _require(self.gamma + self.delta * self.input_tokens + (self.output_tokens - 1) * self.alpha
                 > 0, "gamma", self.gamma, "a lone request must take some time (gamma, delta, "
                 "alpha and output_tokens are all zero-ish)")

    def prefill_ms(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.gamma + self.delta * self.input_tokens * batch

    def decode_ms(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.alpha + self.beta * batch

    def service_rates_per_ms(self) -> np.ndarray:
        """mu(n) for n = 1..B: n requests in the batch, each taking prefill + (out-1) decodes."""
        n = np.arange(1, self.max_batch + 1, dtype=np.float64)
        return n / (self.prefill_ms(n) + (self.output_tokens - 1.0) * self.decode_ms(n))

    def capacity_rps(self) -> float:
        """The most requests per second the replica can complete: mu at a full batch."""
        return float(self.service_rates_per_ms()[-1]) * 1000.0


@dataclass(frozen=True)
class QueueMetrics:
    arrival_rps: float
    throughput_rps: float  # arrivals not blocked
    blocking: float  # probability an arrival finds B+Q requests and is rejected
    mean_wait_ms: float  # time queued before joining the batch (of admitted requests)
    mean_response_ms: float  # wait + service
    mean_in_service: float  # time-average batch size
    mean_in_system: float
    utilization: float  # mean_in_service / B
    effective_concurrency: float  # batch size a request in service sees on average
    ttft_ms: float  # wait + prefill(effective concurrency)
    itl_ms: float  # decode(effective concurrency)


def analyze(params: ServerParams, arrival_rps: float) -> QueueMetrics:
    """Stationary metrics of one replica under Poisson arrivals at `arrival_rps`."""
    return analyze_many(params, np.asarray([arrival_rps], dtype=np.float64))[0]


def analyze_many(params: ServerParams, arrivals_rps: np.ndarray) -> list[QueueMetrics]:
    """`analyze` for many arrival rates in one vectorised pass (sizing evaluates a grid)."""
    cols = metric_arrays(params, arrivals_rps)
    names = list(cols)
    return [QueueMetrics(**{k: float(cols[k][i]) for k in names})
            for i in range(cols["arrival_rps"].size)]


def metric_arrays(params: ServerParams, arrivals_rps: np.ndarray) -> dict[str, np.ndarray]:
    """The `QueueMetrics` fields as arrays over the arrival rates (no per-rate objects)."""
    lam = np.atleast_1d(np.asarray(arrivals_rps, dtype=np.float64))
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ConfigError(f"arrival rate must be finite and >= 0, got {lam.tolist()!r}")
    b, q = params.max_batch, params.max_queue
    mu_b = params.service_rates_per_ms()
    mu = np.concatenate([mu_b, np.full(q, mu_b[-1])])  # mu(1..B+Q)
    in_service = np.minimum(np.arange(b + q + 1), b).astype(np.float64)
    in_queue = np.arange(b + q + 1) - in_service
    lam_ms = np.maximum(lam, 1e-300)[:, None] / 1000.0
    # log p(n) - log p(0) = sum_{k<=n} log(lambda / mu(k)); normalised by log-sum-exp.
    log_ratio = np.log(lam_ms) - np.log(mu)[None, :]
    log_p = np.concatenate([np.zeros((lam.size, 1)), np.cumsum(log_ratio, axis=1)], axis=1)
    log_p -= log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    p /= p.sum(axis=1, keepdims=True)
    p[lam == 0] = np.eye(1, b + q + 1)[0]
    blocking = np.where(lam > 0, p[:, -1], 0.0)
    throughput = lam * (1.0 - blocking)
    ls = p @ in_service
    lq = p @ in_queue
    # Requests in service are sampled in proportion to the batch they are in, so the batch a
    # request sees is E[m^2]/E[m]; with a linear decode time this makes ITL exact on average.
    eff = np.where(ls > 0, (p @ in_service**2) / np.where(ls > 0, ls, 1.0), 1.0)
    thr_ms = throughput / 1000.0
    safe = np.where(thr_ms > 0, thr_ms, 1.0)
    wait = np.where(thr_ms > 0, lq / safe, 0.0)
    service = params.prefill_ms(eff) + (params.output_tokens - 1.0) * params.decode_ms(eff)
    response = np.where(thr_ms > 0, (ls + lq) / safe, service)
    return {
        "arrival_rps": lam, "throughput_rps": throughput, "blocking": blocking,
        "mean_wait_ms": wait, "mean_response_ms": response, "mean_in_service": ls,
        "mean_in_system": ls + lq, "utilization": ls / b, "effective_concurrency": eff,
        "ttft_ms": wait + params.prefill_ms(eff), "itl_ms": params.decode_ms(eff),
    }


def _require(ok: bool, field_name: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"ServerParams.{field_name}={value!r}: {why}")
