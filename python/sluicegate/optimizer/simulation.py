"""A discrete-event simulation of one model-server replica, the server the queueing model
describes: continuous batching with at most B requests running and Q waiting, engine steps
as `sluicegate sim` runs them (decode every running request: alpha + beta * running; prefill
the requests admitted at the step's start: gamma + delta * prompt tokens * admitted), one token
per running request per step. What the queueing model's TTFT and ITL are checked against.

TTFT is arrival to the end of the step that prefilled the request; ITL is the length of each
step a request decoded in, averaged over all decoded tokens (vLLM's per-token histogram)."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

import numpy as np

from .queueing import ServerParams


@dataclass(frozen=True)
class SimulatedMetrics:
    arrival_rps: float
    throughput_rps: float
    blocking: float
    ttft_ms: float
    itl_ms: float
    mean_running: float  # time-average batch
    requests: int  # completed and measured (after the warm-up)


def simulate(params: ServerParams, arrival_rps: float, *, requests: int = 20_000,
             seed: int = 0, warmup: float = 0.1, output_spread: str = "fixed"
             ) -> SimulatedMetrics:
    """Poisson arrivals at `arrival_rps`; prompt length `params.input_tokens`; output length
    `params.output_tokens` (`output_spread="geometric"`: geometric with that mean, as the
    queueing model's memoryless service assumes). The first `warmup` share of arrivals is
    simulated but not measured."""
    if not arrival_rps > 0:
        raise ValueError(f"arrival_rps={arrival_rps!r}: must be > 0")
    rng = np.random.default_rng(seed)
    lam_ms = arrival_rps / 1000.0
    arrivals = np.cumsum(rng.exponential(1.0 / lam_ms, requests))
    out_mean = params.output_tokens
    if output_spread == "geometric":
        outs = rng.geometric(1.0 / out_mean, requests)
    elif output_spread == "fixed":
        outs = np.full(requests, int(round(out_mean)))
    else:
        raise ValueError(f"output_spread={output_spread!r}: expected 'fixed' or 'geometric'")
    first_measured = int(requests * warmup)
    b, limit = params.max_batch, params.max_batch + params.max_queue
    prefill_per_request = params.delta * params.input_tokens
    waiting: deque[int] = deque()  # request ids
    finishing: list[int] = []  # heap of the step index each running request ends on
    blocked = measured_blocked = 0
    t, step, nxt = 0.0, 0, 0
    ttft_sum, ttft_n, itl_sum, itl_n, busy_batch_time = 0.0, 0, 0.0, 0, 0.0
    measure_from = float(arrivals[first_measured])
    while nxt < requests or waiting or finishing:
        if not waiting and not finishing:
            t = max(t, float(arrivals[nxt]))
        # Arrivals up to now join the queue unless the replica is full (then they are lost).
        upto = int(np.searchsorted(arrivals, t, side="right"))
        for i in range(nxt, upto):
            if len(finishing) + len(waiting) >= limit:
                blocked += 1
                measured_blocked += i >= first_measured
            else:
                waiting.append(i)
        nxt = max(nxt, upto)
        running = len(finishing)
        admitted = min(len(waiting), b - running)
        step_ms = (params.alpha + params.beta * running if running else 0.0) + (
            params.gamma + prefill_per_request * admitted if admitted else 0.0)
        end = t + step_ms
        if t >= measure_from:
            itl_sum += step_ms * running
            itl_n += running
            busy_batch_time += running * step_ms
        for _ in range(admitted):
            i = waiting.popleft()
            if i >= first_measured:
                ttft_sum += end - float(arrivals[i])
                ttft_n += 1
            heapq.heappush(finishing, step + int(outs[i]) - 1)
        step += 1
        t = end
        while finishing and finishing[0] < step:
            heapq.heappop(finishing)
    span_ms = t - measure_from
    offered = requests - first_measured
    return SimulatedMetrics(
        arrival_rps=arrival_rps, throughput_rps=(offered - measured_blocked) / span_ms * 1000.0,
        blocking=measured_blocked / offered, ttft_ms=ttft_sum / max(ttft_n, 1),
        itl_ms=itl_sum / max(itl_n, 1), mean_running=busy_batch_time / span_ms, requests=ttft_n)
