"""What the EPP adds to one request's latency through the real Envoy, and its CPU per request.

Each path of benches/stack.py sends sequential requests on one keep-alive connection, in blocks
alternating with blocks on its baseline path, so both see the same machine load; the table at
the end gives the added µs and ratios.
"""

from __future__ import annotations

import json
import time

import pytest

from benches.backend import CHAT_PATH, MODEL, MODELS_PATH
from benches.client import KeepAliveClient, LatencySummary
from benches.cpu import CpuMeter
from benches.results import PathResult
from benches.stack import PATHS, PathConfig, PathStack

pytestmark = pytest.mark.envoy

_CHAT_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hello"}],
                         "max_tokens": 8}).encode()
_FIRST_ANSWER_TIMEOUT_S = 15.0
# Requests per block when alternating a path with its baseline: long enough that the switches
# are few, short enough (~0.1 s) that both sides see the same load from the rest of the machine.
_BLOCK = 50


class PathRun:
    """Sends one path's requests and keeps each one's latency and whatever went wrong."""

    def __init__(self, stack: PathStack) -> None:
        self._client = KeepAliveClient(stack.url)
        post = stack.config.method == "POST"
        self._request = (stack.config.method, CHAT_PATH.decode() if post else MODELS_PATH.decode(),
                         _CHAT_BODY if post else None,
                         {"content-type": "application/json", **dict(stack.config.headers)} if post
                         else dict(stack.config.headers))
        # With an EPP the backend must see the EPP's pick; without one, no destination at all.
        self._expected_destination = stack.backend.address if stack.config.with_epp else None
        self.latencies_ns: list[int] = []
        self.failures: list[str] = []
        self.sent = 0  # recorded or not: what the processes on the path served

    def send(self) -> int:
        status, destination, _ = self._client.send(*self._request)
        self._check(status, destination)
        return status

    def measured(self) -> None:
        status, destination, elapsed_ns = self._client.send(*self._request)
        self.latencies_ns.append(elapsed_ns)
        self._check(status, destination)

    def _check(self, status: int, destination: str | None) -> None:
        self.sent += 1
        if status != 200:
            self.failures.append(f"status {status}")
        elif destination != self._expected_destination:
            self.failures.append(f"routed by destination {destination!r}")

    def wait_first_answer(self) -> None:
        """The EPP answers 503 until its first scrape calls the backend fresh; bounded wait."""
        deadline = time.monotonic() + _FIRST_ANSWER_TIMEOUT_S
        while self.send() != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"no 200 within {_FIRST_ANSWER_TIMEOUT_S:g} s: {self.failures[-1]}")
            time.sleep(0.05)
        self.failures.clear()

    def close(self) -> None:
        self._client.close()


class BaselineBlocks:
    """pytest-benchmark `setup`: before every `_BLOCK`-th path request, a block of baseline ones.

    Each switch opens with one unrecorded request on the side switched to: an EPP path leaves
    work behind after its answer (stream teardown), and that must not be charged to the baseline.
    """

    def __init__(self, run: PathRun, base: PathRun) -> None:
        self._run, self._base = run, base
        self._rounds = 0

    def __call__(self) -> None:
        if self._rounds % _BLOCK == 0:
            self._base.send()
            for _ in range(_BLOCK):
                self._base.measured()
            self._run.send()
        self._rounds += 1


def _idle_cpu_ms_per_s(stack: PathStack, window_s: float) -> dict[str, float]:
    meter = CpuMeter(stack.pids)
    meter.start()
    time.sleep(window_s)
    return {role: ns / 1e6 / window_s for role, ns in meter.stop().items()}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.name)
def test_request_path_latency(benchmark, backend, baseline_stacks, bench_sizes, path_results,
                              path: PathConfig):
    stack = PathStack(path, backend).start()
    runs: list[PathRun] = []
    try:
        runs.append(run := PathRun(stack))
        base = None
        if path.baseline:
            runs.append(base := PathRun(baseline_stacks.get(path.baseline)))
        for r in runs:
            r.wait_first_answer()
            for _ in range(bench_sizes.warmup):
                r.send()
        idle = _idle_cpu_ms_per_s(stack, bench_sizes.idle_window_s)
        setup = BaselineBlocks(run, base) if base else None
        sent_before = [r.sent for r in runs]
        meter = CpuMeter(stack.pids)
        meter.start()
        wall_start = time.perf_counter()
        if benchmark.disabled:  # --benchmark-disable: still measure, just without its stats
            for _ in range(bench_sizes.requests):
                if setup:
                    setup()
                run.measured()
        else:
            benchmark.pedantic(run.measured, setup=setup, rounds=bench_sizes.requests, iterations=1)
        wall_s = time.perf_counter() - wall_start
        used_ns = meter.stop()
        path_sent, all_sent = runs[0].sent - sent_before[0], sum(r.sent for r in runs) - sum(sent_before)
    finally:
        for r in runs:
            r.close()
        stack.stop()

    for r in runs:
        assert not r.failures, f"{len(r.failures)} bad answers, first: {r.failures[0]}"
    assert len(run.latencies_ns) == bench_sizes.requests
    # The backend also served the baseline's requests; Envoy and the EPP are the path's own.
    served = {role: all_sent if role == "backend" else path_sent for role in used_ns}
    cpu = {role: max(0.0, (ns - idle[role] * 1e6 * wall_s) / 1000 / served[role])
           for role, ns in used_ns.items()}
    result = PathResult(path.name, LatencySummary.of(run.latencies_ns), path.baseline,
                        LatencySummary.of(base.latencies_ns) if base else None,
                        cpu_us_per_request=cpu, idle_cpu_ms_per_s=idle)
    path_results[path.name] = result
    benchmark.extra_info.update(result.extra_info())
