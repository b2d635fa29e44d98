"""The production shape under load, beside the plain path and Envoy without ext_proc, in one run.

- `test_production_shape`: Poisson arrivals at 100 and 500 req/s through the real Envoy to three
  stacks started side by side: Envoy alone (the baseline of added latency), the EPP as `sluicegate
  run` starts it with no config (the plain path), and the EPP with flow control on, two
  objectives (priorities 10 and -5) and requests carrying one of two fairness ids. Reports EPP
  CPU per request and added p50/p99 of both EPP stacks, and production over plain as ratios,
  per round (each rate runs `SLUICEGATE_BENCH_ROUNDS` rounds, 2 by default, the two EPP stacks in
  alternating order around the Envoy step) and pooled over the rounds.
  The production config also carries an InferenceModelRewrite table (`rewrites:`): every request
  names `chat`, which it rewrites by weight (and the responses back).
- `test_memory_flow_control`: 200 req/s through Envoy to the flow-control stack; EPP RSS sampled
  every second, growth after the first 15 s in MiB and bytes per request.

Both stacks run the one (Rust) request path; they differ only in configuration.
Short form by default; `SLUICEGATE_BENCH_LONG=1` runs longer steps and the full 150 s memory run.
Results go to benches/out/load.json (sections `production_shape`, `memory_flow_control`).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from benches.cpu import cpu_ns
from benches.load.test_load import ENVOY, LONG, LoadStack, _rss_kib, drive, pct, record
from benches.stack import BackendProcess, PathConfig

# Never saturating (the bench measures the admission path, not queueing), two priorities.
PRODUCTION_CONFIG = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
featureGates: [flowControl]
plugins:
- type: concurrency-detector
  parameters: {maxConcurrency: 100000}
flowControl:
  defaultRequestTTL: 30s
  saturationDetector: {pluginRef: concurrency-detector}
objectives:
- {name: premium, priority: 10}
- {name: batch, priority: -5}
rewrites:
- name: chat-rollout
  rules:
  - matches: [{model: {value: chat}}]
    targets: [{modelRewrite: meta-llama/Llama-3.1-8B-Instruct, weight: 90},
              {modelRewrite: meta-llama/Llama-3.1-8B-Instruct-canary, weight: 10}]
- name: default-model
  rules:
  - targets: [{modelRewrite: meta-llama/Llama-3.1-8B-Instruct}]
"""
# Requests name `chat`, a model the production config rewrites (weighted); the plain path sends
# the same requests on unchanged.
WORKLOAD = dict(stream_ratio=0.5, shared_prefix_ratio=0.3, output_tokens=16, model="chat",
                objectives=["premium", "batch"], fairness_ids=["tenant-a", "tenant-b"])
RATES = (100, 500)
# Each rate runs every stack this often, the EPP stacks in alternating order.
ROUNDS = int(os.environ.get("SLUICEGATE_BENCH_ROUNDS", "2"))
STEP_S = 20.0 if LONG else 8.0
MEMORY_RATE, MEMORY_S, MEMORY_WARMUP_S = 200, (150.0 if LONG else 45.0), 15.0


def _stacks(backend: BackendProcess, config_file: Path) -> Iterator[dict[str, LoadStack]]:
    plain = PathConfig("load-plain", "Envoy + EPP, no config", through_envoy=True, epp_args=(),
                       baseline="load-envoy")
    production = PathConfig("load-production", "Envoy + EPP, flow control + objectives",
                            through_envoy=True, epp_args=("--config-file", str(config_file)),
                            baseline="load-envoy")
    made: dict[str, LoadStack] = {}
    try:
        for cfg in (ENVOY, plain, production):
            made[cfg.name] = LoadStack(cfg, backend).start()
        yield made
    finally:
        for s in made.values():
            s.stop()


@pytest.fixture(scope="module")
def production_stacks(backend: BackendProcess, tmp_path_factory) -> Iterator[dict[str, LoadStack]]:
    config = tmp_path_factory.mktemp("production") / "epp.yaml"
    config.write_text(PRODUCTION_CONFIG)
    yield from _stacks(backend, config)


def _run(stack: LoadStack, rate: float) -> dict:
    """One step on one stack: latencies, statuses, and the EPP's CPU per request (if any)."""
    cpu0 = cpu_ns(stack.epp.pid) if stack.epp is not None else 0
    out = drive(stack.url, rate=rate, duration_s=STEP_S, **WORKLOAD)
    cpu_s = (cpu_ns(stack.epp.pid) - cpu0) / 1e9 if stack.epp is not None else 0.0
    lat = out["latencies_us"]
    return {"sent": out["sent"], "ok": out["statuses"].get("200", 0),
            "statuses": out["statuses"], "errors": out["errors"],
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "cpu_s": cpu_s,
            "epp_cpu_ms_per_request": 1000 * cpu_s / max(1, out["sent"]), "latencies_us": lat}


def _compare(plain: dict, envoy: dict, production: dict) -> dict:
    """Both EPP stacks against Envoy alone, production over plain as ratios."""
    row = {"plain": plain, "envoy": envoy, "production": production}
    for name in ("plain", "production"):
        row[name]["added_p50_ms"] = row[name]["p50_ms"] - envoy["p50_ms"]
        row[name]["added_p99_ms"] = row[name]["p99_ms"] - envoy["p99_ms"]
    row["cpu_ratio"] = production["epp_cpu_ms_per_request"] / plain["epp_cpu_ms_per_request"]
    row["added_p50_ratio"] = production["added_p50_ms"] / max(1e-3, plain["added_p50_ms"])
    row["added_p99_ratio"] = production["added_p99_ms"] / max(1e-3, plain["added_p99_ms"])
    return row


def _pooled(runs: list[dict]) -> dict:
    """One stack's rounds at one rate as if they were one step."""
    lat = [v for r in runs for v in r["latencies_us"]]
    sent, cpu_s = sum(r["sent"] for r in runs), sum(r["cpu_s"] for r in runs)
    return {"sent": sent, "ok": sum(r["ok"] for r in runs), "errors": sum(r["errors"] for r in runs),
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "cpu_s": cpu_s,
            "epp_cpu_ms_per_request": 1000 * cpu_s / max(1, sent)}


def _without_latencies(row: dict) -> dict:
    return {k: ({kk: vv for kk, vv in v.items() if kk != "latencies_us"} if isinstance(v, dict) else v)
            for k, v in row.items()}


def _line(label: str, s: dict) -> str:
    p, q = s["plain"], s["production"]
    return (f"{label}  epp cpu ms/req plain {p['epp_cpu_ms_per_request']:.3f} "
            f"production {q['epp_cpu_ms_per_request']:.3f} (x{s['cpu_ratio']:.2f})  "
            f"added p50 {p['added_p50_ms']:.2f} / {q['added_p50_ms']:.2f} ms (x{s['added_p50_ratio']:.2f})  "
            f"added p99 {p['added_p99_ms']:.2f} / {q['added_p99_ms']:.2f} ms (x{s['added_p99_ratio']:.2f})  "
            f"envoy p99 {s['envoy']['p99_ms']:.2f} ms  "
            f"non-200 plain {p['sent'] - p['ok']} production {q['sent'] - q['ok']}")


@pytest.mark.timeout(120 + len(RATES) * ROUNDS * 3 * (STEP_S + 30))
def test_production_shape(benchmark, production_stacks):
    steps: list[dict] = []
    pooled: list[dict] = []

    def run() -> None:
        for rate in RATES:
            runs: dict[str, list[dict]] = {"plain": [], "envoy": [], "production": []}
            for r in range(ROUNDS):
                # Baseline between the two EPP runs, and the EPP runs in the other order every
                # other round: both see the machine as it was around them.
                order = ("plain", "envoy", "production") if r % 2 == 0 else ("production", "envoy", "plain")
                got = {name: _run(production_stacks[f"load-{name}"], rate) for name in order}
                for name, step in got.items():
                    runs[name].append(step)
                steps.append({"rate": rate, "round": r, "order": order, **_compare(**got)})
            pooled.append({"rate": rate, "rounds": ROUNDS, **_compare(**{k: _pooled(v) for k, v in runs.items()})})

    benchmark.pedantic(run, rounds=1, iterations=1)
    steps[:] = [_without_latencies(s) for s in steps]
    record("production_shape", {"steps": steps, "pooled": pooled, "step_s": STEP_S, "rounds": ROUNDS,
                                "workload": WORKLOAD, "config": PRODUCTION_CONFIG})
    for s in steps:
        print("\n" + _line(f"{s['rate']:>4} req/s round {s['round']}", s), end="")
    for s in pooled:
        print("\n" + _line(f"{s['rate']:>4} req/s {s['rounds']} rounds pooled", s), end="")
    print()
    benchmark.extra_info["steps"] = steps
    benchmark.extra_info["pooled"] = pooled
    for s in steps:
        for name in ("plain", "envoy", "production"):
            r = s[name]
            assert r["ok"] > 0.99 * r["sent"], (s["rate"], name, r["statuses"], r["errors"])


@pytest.mark.timeout(120 + MEMORY_S * 2)
def test_memory_flow_control(benchmark, production_stacks):
    stack = production_stacks["load-production"]
    pid = stack.epp.pid
    samples: list[tuple[float, int]] = []
    result: dict = {}

    def run() -> None:
        done = threading.Event()
        box: dict = {}

        def load() -> None:
            try:
                box["out"] = drive(stack.url, rate=MEMORY_RATE, duration_s=MEMORY_S, **WORKLOAD)
            finally:
                done.set()

        t0 = time.monotonic()
        driver = threading.Thread(target=load, name="memory-load")
        driver.start()
        while not done.wait(1.0):
            samples.append((time.monotonic() - t0, _rss_kib(pid)))
        driver.join()
        samples.append((time.monotonic() - t0, _rss_kib(pid)))
        result["out"] = box["out"]

    benchmark.pedantic(run, rounds=1, iterations=1)
    out = result["out"]
    after_warmup = [kib for t, kib in samples if t >= MEMORY_WARMUP_S]
    assert len(after_warmup) >= 2, f"too few RSS samples after {MEMORY_WARMUP_S} s: {samples}"
    growth_kib = after_warmup[-1] - after_warmup[0]
    requests_after = out["sent"] * (MEMORY_S - MEMORY_WARMUP_S) / MEMORY_S
    summary = {"rate": MEMORY_RATE, "duration_s": MEMORY_S, "warmup_s": MEMORY_WARMUP_S,
               "sent": out["sent"], "ok": out["statuses"].get("200", 0),
               "rss_mib_at_warmup": after_warmup[0] / 1024, "rss_mib_end": after_warmup[-1] / 1024,
               "rss_growth_mib": growth_kib / 1024,
               "bytes_per_request": growth_kib * 1024 / max(1.0, requests_after),
               "rss_kib_samples": samples}
    record("memory_flow_control", summary)
    benchmark.extra_info.update({k: v for k, v in summary.items() if k != "rss_kib_samples"})
    print(f"\nflow control {MEMORY_RATE} req/s for {MEMORY_S:.0f} s: EPP RSS "
          f"{summary['rss_mib_at_warmup']:.1f} → {summary['rss_mib_end']:.1f} MiB after {MEMORY_WARMUP_S:.0f} s "
          f"(+{summary['rss_growth_mib']:.2f} MiB, {summary['bytes_per_request']:.0f} B/request)")
    assert summary["ok"] > 0.99 * summary["sent"], out["statuses"]
