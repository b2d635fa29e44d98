"""Load suites: the EPP under open-loop traffic through the real Envoy, against Envoy without
ext_proc in the same run.

- `test_rate_steps`: Poisson arrivals at rising rates, each step run on the EPP path and on the
  Envoy-only baseline back to back; reports added p50/p99 per step, the highest rate whose added
  p99 stays within 5 ms, and the EPP's own scheduler P50/P95 (its histogram) at each step.
- `test_burst`: bursts of simultaneous arrivals at the same mean rate.
- `test_cpu_per_1k_requests`: EPP CPU-seconds per 1000 streamed requests of 100 and 1000 tokens.
- `test_concurrent_streams`: EPP memory with N streams held open at once.

Short form by default (`make bench`); `SLUICEGATE_BENCH_LONG=1` (`make bench-long`) runs the long
form. Every test writes benches/out/load.json (merged across tests) and the step test a PNG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from benches.cpu import cpu_ns
from benches.load.driver import held_streams
from benches.stack import RUST, BackendProcess, PathConfig, PathStack
from sluicegate.top import quantile

LONG = os.environ.get("SLUICEGATE_BENCH_LONG", "") not in ("", "0", "false")
OUT = Path(__file__).parents[1] / "out"
ADDED_P99_BUDGET_MS = 5.0

EPP = PathConfig("load-epp", "Envoy + EPP", through_envoy=True, epp_args=RUST, baseline="load-envoy")
ENVOY = PathConfig("load-envoy", "Envoy, no ext_proc", through_envoy=True)


class LoadStack(PathStack):
    """A PathStack whose Envoy takes many concurrent streams (circuit breakers raised)."""

    upstream_http2 = False

    def _envoy_options(self):
        from dataclasses import replace

        return replace(super()._envoy_options(), max_concurrent_requests=20000, upstream_http2=self.upstream_http2)


class HeldStreamsStack(LoadStack):
    """Envoy speaks h2c to the backend: over HTTP/1.1 each held stream takes a socket on both
    sides of Envoy, and 10k streams need more descriptors than a 20,000 limit leaves."""

    upstream_http2 = True


@pytest.fixture(scope="module")
def stacks(backend: BackendProcess) -> Iterator[dict[str, LoadStack]]:
    made: dict[str, LoadStack] = {}
    try:
        for cfg in (ENVOY, EPP):
            made[cfg.name] = LoadStack(cfg, backend).start()
        yield made
    finally:
        for s in made.values():
            s.stop()


def drive(url: str, **cfg) -> dict:
    """Run the driver process once; its JSON result."""
    out = subprocess.run([sys.executable, "-m", "benches.load.driver", json.dumps({"url": url, **cfg})],
                         capture_output=True, text=True, timeout=cfg.get("duration_s", 10) + 90,
                         cwd=Path(__file__).parents[2])
    if out.returncode != 0:
        raise RuntimeError(f"load driver failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def pct(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] / 1000 if ordered else float("nan")


def scheduler_quantiles(stack: PathStack) -> dict[float, float]:
    """The EPP's cumulative scheduler-cycle histogram, le → count, from its /metrics."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    assert stack.epp is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.epp.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    buckets: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "llm_d_epp_scheduler_e2e_duration_seconds":
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    buckets[float(s.labels["le"])] = s.value
    return buckets


def record(section: str, data: dict) -> None:
    OUT.mkdir(exist_ok=True)
    path = OUT / "load.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[section] = {"machine": f"{os.cpu_count()} vCPU", "date": time.strftime("%Y-%m-%d"), **data}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _ok(result: dict) -> int:
    return result["statuses"].get("200", 0)


def _step(stacks, name: str, rate: float, duration: float, **workload) -> dict:
    epp_stack, base_stack = stacks[name], stacks["load-envoy"]
    before = scheduler_quantiles(epp_stack)
    cpu0 = cpu_ns(epp_stack.epp.pid)
    epp = drive(epp_stack.url, rate=rate, duration_s=duration, **workload)
    epp_cpu_s = (cpu_ns(epp_stack.epp.pid) - cpu0) / 1e9
    base = drive(base_stack.url, rate=rate, duration_s=duration, **workload)
    after = scheduler_quantiles(epp_stack)
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    assert _ok(epp) > 0.99 * epp["sent"], epp["statuses"]
    assert _ok(base) > 0.99 * base["sent"], base["statuses"]
    sched_p50, sched_p95 = quantile(0.5, delta), quantile(0.95, delta)
    return {
        "rate": rate, "sent": epp["sent"],
        "epp_p50_ms": pct(epp["latencies_us"], 0.5), "epp_p99_ms": pct(epp["latencies_us"], 0.99),
        "envoy_p50_ms": pct(base["latencies_us"], 0.5), "envoy_p99_ms": pct(base["latencies_us"], 0.99),
        "added_p50_ms": pct(epp["latencies_us"], 0.5) - pct(base["latencies_us"], 0.5),
        "added_p99_ms": pct(epp["latencies_us"], 0.99) - pct(base["latencies_us"], 0.99),
        "scheduler_p50_ms": None if sched_p50 is None else sched_p50 * 1000,
        "scheduler_p95_ms": None if sched_p95 is None else sched_p95 * 1000,
        "epp_cpu_ms_per_request": 1000 * epp_cpu_s / max(1, epp["sent"]),
        "driver_cpu_ms_per_request": 1000 * epp["driver_cpu_s"] / max(1, epp["sent"]),
        "driver_max_lag_ms": 1000 * epp["max_lag_s"],
    }


def test_rate_steps(benchmark, stacks):
    impl = EPP.name
    rates = [100, 200, 400, 500, 800, 1200, 1600] if LONG else [100, 250, 500]
    duration = 20.0 if LONG else 4.0
    workload = dict(stream_ratio=0.5, shared_prefix_ratio=0.3, output_tokens=16,
                    objectives=["chat", "batch"], fairness_ids=["t1", "t2", "t3", "t4"])
    steps: list[dict] = []

    def run() -> None:
        for rate in rates:
            steps.append(_step(stacks, impl, rate, duration, **workload))

    benchmark.pedantic(run, rounds=1, iterations=1)
    within = [s["rate"] for s in steps if s["added_p99_ms"] <= ADDED_P99_BUDGET_MS]
    summary = {"steps": steps, "max_rate_within_5ms_added_p99": max(within) if within else 0,
               "tried_up_to": rates[-1], "duration_s": duration}
    benchmark.extra_info.update({k: v for k, v in summary.items() if k != "steps"})
    record(f"rate_steps[{impl}]", summary)
    _plot(impl, steps)
    for s in steps:
        print(f"\n{impl} {s['rate']:>5} req/s  added p50 {s['added_p50_ms']:6.2f} ms  "
              f"p99 {s['added_p99_ms']:6.2f} ms  scheduler p95 {s['scheduler_p95_ms']} ms  "
              f"epp cpu {s['epp_cpu_ms_per_request']:.3f} ms/req  driver {s['driver_cpu_ms_per_request']:.3f} ms/req")


def test_burst(benchmark, stacks):
    rate, burst = (400, 50) if LONG else (200, 20)
    duration = 20.0 if LONG else 4.0
    result: dict = {}

    def run() -> None:
        result.update(_step(stacks, "load-epp", rate, duration, arrival="burst", burst_size=burst,
                            output_tokens=16))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    record("burst", {"burst_size": burst, **result})


@pytest.mark.parametrize("tokens", [100, 1000])
def test_cpu_per_1k_requests(benchmark, stacks, tokens):
    n = 2000 if LONG else 300
    rate = 100.0
    stack = stacks[EPP.name]
    result: dict = {}

    def run() -> None:
        cpu0 = cpu_ns(stack.epp.pid)
        # Paced 1 ms apart, every token is its own body chunk through Envoy and the EPP, as in
        # real decoding (unpaced, they would coalesce into a few chunks).
        out = drive(stack.url, rate=rate, duration_s=n / rate, stream_ratio=1.0, output_tokens=tokens,
                    token_interval_ms=1)
        result["epp_cpu_s_per_1k"] = (cpu_ns(stack.epp.pid) - cpu0) / 1e9 * 1000 / max(1, out["sent"])
        result["sent"] = out["sent"]
        result["ok"] = _ok(out)

    benchmark.pedantic(run, rounds=1, iterations=1)
    assert result["ok"] > 0.99 * result["sent"]
    benchmark.extra_info.update(result)
    record(f"cpu_per_1k[{tokens}]", result)


@pytest.fixture
def held_stack(backend: BackendProcess) -> Iterator[LoadStack]:
    stack = HeldStreamsStack(EPP, backend).start()
    try:
        yield stack
    finally:
        stack.stop()


def test_concurrent_streams(benchmark, held_stack):
    n = 10_000 if LONG else 1000
    stack = held_stack
    result: dict = {}

    def run() -> None:
        rss0 = _rss_kib(stack.epp.pid)
        with held_streams(stack.url, n, Path(__file__).parents[2], output_tokens=4, token_interval_ms=2000) as held:
            result.update(opened=held[0], open_all_ms=held[1] * 1000,
                          epp_rss_mib_idle=rss0 / 1024, epp_rss_mib_held=_rss_kib(stack.epp.pid) / 1024)

    benchmark.pedantic(run, rounds=1, iterations=1)
    result["epp_kib_per_stream"] = (result["epp_rss_mib_held"] - result["epp_rss_mib_idle"]) * 1024 / n
    benchmark.extra_info.update(result)
    record("concurrent_streams", {"streams": n, **result})
    assert result["opened"] == n


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _plot(impl: str, steps: list[dict]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is a convenience; the JSON has every number
        return
    rates = [s["rate"] for s in steps]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("epp_p99_ms", "EPP p99"), ("envoy_p99_ms", "Envoy-only p99"),
                       ("epp_p50_ms", "EPP p50"), ("envoy_p50_ms", "Envoy-only p50")):
        ax.plot(rates, [s[key] for s in steps], marker="o", label=label)
    ax.set_xlabel("offered load, requests/s (Poisson)")
    ax.set_ylabel("latency, ms")
    ax.set_title(f"{impl}: latency vs load ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} vCPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / f"rate_steps_{impl}.png", dpi=100)
    plt.close(fig)
