"""Python `Scheduler.schedule()` (parse + one default-profile cycle in Rust + the Result) over
10 / 100 / 1000 endpoints, against a trivial pure-Python picker (least waiting queue over the same
endpoints, no parsing) in the same run; the ratio is printed at the end of the session."""

from __future__ import annotations

import json

import pytest

from sluicegate.scheduling import Endpoint, Request, Scheduler

SIZES = (10, 100, 1000)
BODY = json.dumps({"model": "meta-llama/Llama-3.1-8B-Instruct", "max_tokens": 128, "messages": [
    {"role": "system", "content": "You are a helpful assistant. " * 40},
    {"role": "user", "content": "Summarise the plot of Hamlet in three sentences."}]}).encode()
_TIMES: dict[tuple[str, int], float] = {}


def _pool(n: int) -> Scheduler:
    sched = Scheduler()
    eps = [Endpoint(f"pod-{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:8000") for i in range(n)]
    sched.set_endpoints(eps)
    for i, ep in enumerate(eps):
        sched.update_metrics(ep.address, f"vllm:num_requests_waiting {(i * 7) % 13}\n"
                                         f"vllm:num_requests_running 4\nvllm:kv_cache_usage_perc {(i * 31) % 100 / 100}\n")
    return sched


@pytest.mark.parametrize("n", SIZES)
def test_schedule_python_call(benchmark, n):
    sched = _pool(n)
    request = Request(BODY)

    def one():
        result = sched.schedule(request)
        sched.release(result.primary)
        return result

    benchmark(one)
    _TIMES[("schedule", n)] = benchmark.stats.stats.median


@pytest.mark.parametrize("n", SIZES)
def test_trivial_python_picker_baseline(benchmark, n):
    waiting = {f"10.0.{i // 256}.{i % 256}:8000": (i * 7) % 13 for i in range(n)}
    benchmark(lambda: min(waiting, key=waiting.__getitem__))
    _TIMES[("baseline", n)] = benchmark.stats.stats.median


def test_report_ratios(benchmark, capsys):
    # Runs after the measurements above (file order); with --benchmark-only it needs the fixture.
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    lines = []
    for n in SIZES:
        ours, base = _TIMES.get(("schedule", n)), _TIMES.get(("baseline", n))
        if ours and base:
            lines.append(f"n={n:>4}: schedule() {ours * 1e6:7.1f} us median, trivial Python picker "
                         f"{base * 1e6:7.1f} us, ratio {ours / base:5.2f}x")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    benchmark.extra_info["ratios"] = lines
