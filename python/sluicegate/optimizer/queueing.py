"""The model-server queue: a birth–death chain on 0..B+Q whose service rate depends on the
batch size, solved in log space so large B+Q neither overflows nor underflows. Times are ms,
arrival rates requests per second at this edge (the chain itself runs in per-ms units)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sluicegate.errors import ConfigError


# How TTFT and ITL follow from the chain (see `metric_arrays`); "step" is the default, the
# others stay for comparison (benches/README.md has the table against the simulation).
FORMULATIONS = ("step", "batch", "reference")


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
    formulation: str = "step"

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
        _require(self.formulation in FORMULATIONS, "formulation", self.formulation,
                 f"expected one of {', '.join(FORMULATIONS)}")
        # A request that takes no time would make the service rate infinite.
        _require(self.gamma + self.delta * self.input_tokens + (self.output_tokens - 1) * self.alpha
                 > 0, "gamma", self.gamma, "a lone request must take some time (gamma, delta, "
                 "alpha and output_tokens are all zero-ish)")

    def prefill_ms(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.gamma + self.delta * self.input_tokens * batch

    def decode_ms(self, batch: np.ndarray | float) -> np.ndarray | float:
        return self.alpha + self.beta * batch

    def service_rates_per_ms(self) -> np.ndarray:
        """mu(n) for n = 1..B as a static batch: n requests prefilled together, then
        out-1 decodes together ("batch" and "reference" formulations)."""
        n = np.arange(1, self.max_batch + 1, dtype=np.float64)
        return n / (self.prefill_ms(n) + (self.output_tokens - 1.0) * self.decode_ms(n))

    def saturated_step_ms(self) -> float:
        """Mean engine step with the batch full: B decodes, and the B/out requests that
        finish per step replaced (admissions ~ Poisson, so gamma only on steps with one)."""
        b, x = self.max_batch, self.max_batch / self.output_tokens
        return self.decode_ms(b) + self.gamma * -np.expm1(-x) + self.delta * self.input_tokens * x

    def capacity_rps(self) -> float:
        """The most requests per second the replica can complete."""
        if self.formulation == "step":
            return self.max_batch / (self.output_tokens * self.saturated_step_ms()) * 1000.0
        return float(self.service_rates_per_ms()[-1]) * 1000.0


@dataclass(frozen=True)
class ParamColumns(ServerParams):
    """Many "step" ServerParams of one batch and queue size as [R, 1] columns, so one
    `metric_arrays` call evaluates a rate per row for all of them (sizing a whole problem).
    Each was validated as a ServerParams before being stacked."""

    def __post_init__(self) -> None:
        pass

    @classmethod
    def of(cls, fields: dict[str, np.ndarray], max_batch: int, max_queue: int) -> ParamColumns:
        return cls(**{k: np.asarray(v, dtype=np.float64)[:, None] for k, v in fields.items()},
                   max_batch=max_batch, max_queue=max_queue, formulation="step")


NUMERIC_FIELDS = ("alpha", "beta", "gamma", "delta", "input_tokens", "output_tokens")


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
    """The `QueueMetrics` fields as arrays over the arrival rates (no per-rate objects).

    The chain is on n = requests in the replica, m = min(n, B) of them in the batch.
    - "step" (default): continuous batching as engine steps. Below B an arrival waits for the
      step in progress to end (its residual, from the steps' first two moments), then joins the
      next step's prefill with the others that arrived meanwhile; steps take
      decode(m) + gamma [if any admission] + delta * in * admissions, admissions ~ Poisson of
      the arrivals during the previous step (so long prefills bunch arrivals: the second moment
      is amplified by 1 / (1 - (delta * in * lambda)^2)). A request holds its slot for `out`
      steps, so mu(n) = m / (out * step(n)). ITL is the steps' length per decoded token.
      Matches a discrete-event simulation of that server (`simulation`) within the table of
      benches/README.md.
    - "batch": mu(m) of a static batch; TTFT = wait + prefill, ITL = decode, both at the batch
      a request in service sees (E[m^2]/E[m]).
    - "reference": the workload-variant-autoscaler's analyzer: the same mu, prefill and decode
      at the concurrency n solving prefill(n) + (out-1) decode(n) = mean service time.
    """
    lam = np.atleast_1d(np.asarray(arrivals_rps, dtype=np.float64))
    if np.any(lam < 0) or not np.all(np.isfinite(lam)):
        raise ConfigError(f"arrival rate must be finite and >= 0, got {lam.tolist()!r}")
    b, q = params.max_batch, params.max_queue
    lam_ms = np.maximum(lam, 1e-300)[:, None] / 1000.0
    # States 0..B-1 explicitly; from B on the batch is full and mu constant, so the B+Q+1-B
    # queue states form a geometric tail summed in closed form (sizing evaluates thousands of
    # rates: arrays of B, not 11 B, columns).
    n = np.arange(b + 1, dtype=np.float64)[None, :]
    step = None
    if params.formulation == "step":
        step = _step_moments(params, lam_ms, n)
        mu = n[:, 1:] / (params.output_tokens * step[0][:, 1:])
    else:
        mu = params.service_rates_per_ms()[None, :]
    log_p = np.concatenate([np.zeros((lam.size, 1)),
                            np.cumsum(np.log(lam_ms) - np.log(mu), axis=1)], axis=1)
    log_r = np.log(lam_ms[:, 0]) - np.log(mu[:, -1])
    c, s0, s1 = _geometric(log_r, q)
    log_full = log_p[:, -1] + c  # log of p(B) * sum_j r^j, up to s0
    top = np.maximum(log_p[:, :-1].max(axis=1), log_full)
    head = np.exp(log_p[:, :-1] - top[:, None])  # n = 0..B-1
    tail = np.exp(log_full - top)
    z = head.sum(axis=1) + tail * s0
    idle = lam == 0
    head = np.where(idle[:, None], np.eye(1, b)[0], head / z[:, None])
    full = np.where(idle, 0.0, tail * s0 / z)  # P(n >= B)
    lq = np.where(idle, 0.0, tail * s1 / z)
    blocking = np.where(idle, 0.0, np.exp(log_p[:, -1] + q * log_r - top) / z)
    throughput = lam * (1.0 - blocking)
    m = n[0, :-1]
    ls = head @ m + b * full
    thr_ms = throughput / 1000.0
    safe = np.where(thr_ms > 0, thr_ms, 1.0)
    queued = np.where(thr_ms > 0, lq / safe, 0.0)  # waiting for a slot (Little)
    seen = np.where(ls > 0, (head @ m**2 + b * b * full) / np.where(ls > 0, ls, 1.0), 1.0)
    if step is not None:
        mean, second, admit = step
        residual = np.where(n > 0, second / (2.0 * mean), 0.0)  # of the step in progress
        wait = queued + (head * residual[:, :-1]).sum(axis=1) + full * residual[:, -1]
        ttft = wait + (head * admit[:, :-1]).sum(axis=1) + full * admit[:, -1]
        tokens = head @ m + full * b
        per_step = (head * (m / mean[:, :-1])).sum(axis=1) + full * b / mean[:, -1]
        itl = np.where(tokens > 0, tokens / np.maximum(per_step, 1e-300),
                       np.ravel(params.decode_ms(1.0)))
        eff = seen
    else:
        wait = queued
        if params.formulation == "reference":
            eff = _reference_concurrency(params, np.where(thr_ms > 0, ls / safe, 0.0))
        else:
            eff = seen
        ttft = wait + (params.prefill_ms(eff) if params.input_tokens > 0 or
                       params.formulation == "batch" else 0.0)
        itl = params.decode_ms(eff)
    alpha, beta, gamma, delta, tokens_in, tokens_out = (np.ravel(getattr(params, k))
                                                        for k in NUMERIC_FIELDS)
    service = gamma + delta * tokens_in * eff + (tokens_out - 1.0) * (alpha + beta * eff)
    response = np.where(thr_ms > 0, (ls + lq) / safe, service)
    return {
        "arrival_rps": lam, "throughput_rps": throughput, "blocking": blocking,
        "mean_wait_ms": wait, "mean_response_ms": response, "mean_in_service": ls,
        "mean_in_system": ls + lq, "utilization": ls / b, "effective_concurrency": eff,
        "ttft_ms": ttft, "itl_ms": itl,
    }


def _geometric(log_r: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(c, s0, s1) with sum_{j<=q} r^j = e^c s0 and sum_{j<=q} j r^j = e^c s1, for r = e^log_r
    of any size (r > 1 is summed backwards from r^q, so nothing overflows)."""
    up = log_r > 0
    lu = np.where(up, -log_r, log_r)  # log of the ratio <= 1 actually summed
    k1, k2 = q * (q + 1) / 2.0, q * (q + 1) * (2 * q + 1) / 6.0
    near = q * np.abs(lu) < 1e-3  # r ~ 1: second-order series (closed form cancels)
    safe = np.where(near, -1.0, lu)
    one_minus = -np.expm1(safe)
    u = np.exp(safe)
    s0u = np.where(near, (q + 1) + lu * k1 + lu * lu / 2.0 * k2,
                   -np.expm1((q + 1) * safe) / one_minus)
    s1u = np.where(near, k1 + lu * k2 + lu * lu / 2.0 * k1 * k1,
                   u * (1.0 - (q + 1) * np.exp(q * safe) + q * np.exp((q + 1) * safe))
                   / one_minus**2)
    return np.where(up, q * log_r, 0.0), s0u, np.where(up, q * s0u - s1u, s1u)


def _step_moments(params: ServerParams, lam: np.ndarray, n: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per arrival rate (rows) and state n (columns): the mean and second moment of an engine
    step, and the mean length of the step that admits an arrival finding n there."""
    b, out, g = params.max_batch, params.output_tokens, params.gamma
    pre = params.delta * params.input_tokens  # prefill per admitted request
    m = np.minimum(n, b)
    dec = np.where(m > 0, params.decode_ms(m), 0.0)
    full = n >= b
    # Below B, admissions per step x = lambda * step: solve step = dec + g(1-e^-x) + pre x by
    # Newton from the all-admitting bound above the root (the residual is convex there).
    slack = np.maximum(1.0 - pre * lam, 1e-9)
    mean = (dec + g) / slack
    for _ in range(_NEWTON_ROUNDS):
        decay = np.exp(-lam * mean)
        mean = mean - (slack * mean - dec - g * (1.0 - decay)) / np.maximum(
            slack - g * lam * decay, 1e-12)
    mean = np.maximum(np.where(full, params.saturated_step_ms(), mean), 1e-300)
    x = np.where(full, b / out, lam * mean)
    with_admission = -np.expm1(-x)
    first = dec * (dec + 2.0 * (g * with_admission + pre * x)) + g * g * with_admission + \
        2.0 * g * pre * x + pre * pre * x
    # Below B the next step's admissions depend on this step's length: Var feeds back.
    second = np.where(full, first + (pre * x) ** 2, first / np.maximum(1.0 - (pre * lam) ** 2,
                                                                        1e-9))
    residual = np.where(n > 0, second / (2.0 * mean), 0.0)
    admit = np.where(n == 0, g + pre, dec + g + pre * (
        1.0 + np.where(full, x, lam * 2.0 * residual)))
    return mean, second, admit


_NEWTON_ROUNDS = 4


def _reference_concurrency(params: ServerParams, served_ms: np.ndarray) -> np.ndarray:
    tokens = params.output_tokens - 1.0
    num = served_ms - (params.gamma + params.alpha * tokens)
    den = params.delta * params.input_tokens + params.beta * tokens
    eff = num / den if den > 0 else np.zeros_like(served_ms)
    return np.clip(eff, 0.0, params.max_batch)


def _require(ok: bool, field_name: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"ServerParams.{field_name}={value!r}: {why}")
