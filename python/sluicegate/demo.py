"""`sluicegate demo`: the same seeded load through Envoy twice — once routed by the EPP, once by
Envoy's round-robin — over four simulated vLLM servers of unequal speed, then what each did.

Everything runs on this machine on free ports; every child process is stopped on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sluicegate.datalayer.discovery import write_endpoints_file
from sluicegate.loadgen import LoadReport, run_load
from sluicegate.sim import SimConfig, start_servers, stop_servers
from sluicegate.standalone import EnvoyOptions, EnvoyProcess
from sluicegate.standalone.epp_process import EppProcess

POLICIES = ("sluicegate", "round_robin")
WORKLOAD = "mixed"
# Calibrated on a 2-vCPU machine (see _fleet): the pool serves about 10 mixed requests/s, so
# this is ~80% load: round-robin overloads the slow pair while the fast pair has room to spare.
DEFAULT_RATE = 8.0
DEFAULT_DURATION_S = 8.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _fleet(seed: int) -> list[SimConfig]:
    """Two fast servers and two older-GPU-like ones: prefill (compute-bound) 5x slower, decode
    (memory-bound) 2x slower, half the KV cache and LoRA slots. A small batch (max_num_seqs)
    keeps the pool's capacity low enough that simulated time, not this machine's CPU, decides
    what queues."""
    fast = dict(max_num_seqs=4, alpha_ms=8.0, beta_ms=0.5, gamma_ms=5.0, delta_ms=0.05,
                lora_load_ms=40.0, kv_blocks=2048, max_loras=4)
    slow = dict(max_num_seqs=4, alpha_ms=16.0, beta_ms=1.0, gamma_ms=25.0, delta_ms=0.25,
                lora_load_ms=120.0, kv_blocks=1024, max_loras=2)
    shapes = [("fast-0", fast), ("fast-1", fast), ("slow-0", slow), ("slow-1", slow)]
    return [SimConfig(name=name, seed=seed + i, **shape) for i, (name, shape) in enumerate(shapes)]


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    report: LoadReport
    cpu_s: dict[str, float]  # CPU seconds used during the load by envoy, epp and this process

    def to_dict(self) -> dict[str, Any]:
        r = self.report
        return {"requests": r.requests, "errors": r.errors, "dropped": r.dropped,
                "ttft_p50_ms": r.ttft_p50_ms, "ttft_p90_ms": r.ttft_p90_ms,
                "ttft_p99_ms": r.ttft_p99_ms, "e2e_p50_ms": r.e2e_p50_ms,
                "e2e_p99_ms": r.e2e_p99_ms, "output_tokens_per_s": r.output_tokens_per_s,
                "duration_s": r.duration_s, "per_endpoint": r.per_endpoint,
                "status_counts": r.status_counts, "cpu_s": self.cpu_s}


def _progress(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr, flush=True)


def _proc_cpu_s(pid: int | None) -> float:
    """utime + stime of a live process (0 once it is gone)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


async def _measure_load(policy: str, url: str, pids: dict[str, int | None], rate: float,
                        duration_s: float, seed: int) -> PolicyResult:
    before = {name: _proc_cpu_s(pid) for name, pid in pids.items()}
    own_before = time.process_time()
    report = await run_load(url, WORKLOAD, rate, duration_s, seed, request_timeout_s=60.0)
    cpu = {name: round(_proc_cpu_s(pid) - before[name], 2) for name, pid in pids.items()}
    cpu["demo"] = round(time.process_time() - own_before, 2)
    return PolicyResult(policy, report, cpu)


async def run_policy(policy: str, rate: float, duration_s: float, seed: int,
                     workdir: Path) -> PolicyResult:
    """Fresh simulators (same seeds every time), then Envoy with the EPP (`sluicegate`) or
    with round-robin alone (`round_robin`), one load, and everything stopped again."""
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r}: must be one of {', '.join(POLICIES)}")
    servers = await start_servers(_fleet(seed))
    epp: EppProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        addresses = tuple(s.address for s in servers)
        common = dict(listen_port=0, admin_port=0, listen_address="127.0.0.1", concurrency=1,
                      endpoints=addresses)
        if policy == "sluicegate":
            _progress("starting the EPP (sluicegate run) and Envoy in override_host mode")
            endpoints = write_endpoints_file(workdir / "endpoints.json", list(addresses), "sim")
            epp = EppProcess(endpoints, log_path=workdir / "epp.log")
            # Blocking on purpose: a signal is handled after it returns, so no EPP can be
            # left half-started by a cancelled thread.
            epp.start()
            opts = EnvoyOptions(upstream_mode="override_host", epp_port=epp.port,
                                epp_health_port=epp.health_port, epp_tls=False, **common)
            envoy = EnvoyProcess(opts, workdir=workdir / "envoy-sluicegate", wait_epp_healthy=True)
        else:
            _progress("starting Envoy in round_robin mode (no EPP)")
            envoy = EnvoyProcess(EnvoyOptions(upstream_mode="round_robin", **common),
                                 workdir=workdir / "envoy-round_robin")
        await envoy.start()
        _progress(f"{policy}: {WORKLOAD} load, {rate:g} requests/s for {duration_s:g} s")
        pids = {"envoy": envoy.pid} | ({"epp": epp.pid} if epp is not None else {})
        return await _measure_load(policy, envoy.url, pids, rate, duration_s, seed)
    finally:
        if envoy is not None:
            await envoy.stop()
        if epp is not None:
            epp.stop()
        await stop_servers(servers)


async def run_demo(rate: float = DEFAULT_RATE, duration_s: float = DEFAULT_DURATION_S,
                   seed: int = 0) -> dict[str, PolicyResult]:
    """Both policies, one after the other, on identical fresh fleets; keyed by policy."""
    if not rate > 0:
        raise ValueError(f"rate={rate!r}: must be > 0")
    if not duration_s > 0:
        raise ValueError(f"duration={duration_s!r}: must be > 0")
    _progress("4 simulated vLLM servers per run: fast-0, fast-1, and slow-0, slow-1 with 5x "
              "slower prefill, 2x slower decode, half the KV cache and LoRA slots")
    results: dict[str, PolicyResult] = {}
    with tempfile.TemporaryDirectory(prefix="sluicegate-demo-") as tmp:
        for i, policy in enumerate(POLICIES, 1):
            _progress(f"run {i}/{len(POLICIES)}: {policy}")
            workdir = Path(tmp) / policy
            workdir.mkdir()
            results[policy] = await run_policy(policy, rate, duration_s, seed, workdir)
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def format_table(results: dict[str, PolicyResult]) -> str:
    endpoints = sorted({e for r in results.values() for e in r.report.per_endpoint})
    head = (f"{'policy':<12}{'requests':>9}{'errors':>7}{'TTFT p50':>10}{'TTFT p99':>10}"
            f"{'e2e p50':>9}{'tok/s':>7}  " + " ".join(f"{e:>7}" for e in endpoints))
    lines = [head, f"{'':<12}{'':>9}{'':>7}{'ms':>10}{'ms':>10}{'ms':>9}"
             f"{'':>7}  share of requests per endpoint"]
    for policy, result in results.items():
        r = result.report
        served = sum(r.per_endpoint.values()) or 1
        shares = " ".join(f"{100.0 * r.per_endpoint.get(e, 0) / served:>6.0f}%" for e in endpoints)
        lines.append(f"{policy:<12}{r.requests:>9}{r.errors:>7}{_ms(r.ttft_p50_ms):>10}"
                     f"{_ms(r.ttft_p99_ms):>10}{_ms(r.e2e_p50_ms):>9}"
                     f"{r.output_tokens_per_s:>7.0f}  {shares}")
    return "\n".join(lines)


def verdict(results: dict[str, PolicyResult]) -> str:
    """One line on what routing by the EPP bought over round-robin."""
    ours, base = results["sluicegate"].report, results["round_robin"].report
    parts = []
    for label, a, b in (("TTFT p50", ours.ttft_p50_ms, base.ttft_p50_ms),
                        ("TTFT p99", ours.ttft_p99_ms, base.ttft_p99_ms),
                        ("e2e p50", ours.e2e_p50_ms, base.e2e_p50_ms)):
        if a and b:
            parts.append(f"{label} {b / a:.1f}x lower" if a <= b else f"{label} {a / b:.1f}x HIGHER")
    if not parts:
        return "sluicegate vs round-robin: not enough successful requests to compare"
    return "sluicegate vs round-robin: " + ", ".join(parts) + " with the same load"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--duration", type=float, default=DEFAULT_DURATION_S,
        help=f"seconds of load per policy (default {DEFAULT_DURATION_S:g})")
    add("--rate", type=float, default=DEFAULT_RATE,
        help=f"mean requests/s, Poisson (default {DEFAULT_RATE:g}, ~80%% of the pool's capacity)")
    add("--seed", type=int, default=0, help="seeds the simulators and the workload")
    add("--json", action="store_true", help="print one JSON object instead of the table")


class _Interrupt:
    """The first SIGINT/SIGTERM cancels the demo so its finally blocks stop Envoy, the EPP and
    the simulators; later ones are ignored, so they cannot cut that clean-up short."""

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.signal: int | None = None

    def __call__(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
            # Requests still in flight fail as their connections close; that is expected now.
            asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)
            self.task.cancel()
        else:
            _progress("already stopping; clean-up takes a few seconds")


async def _main(args: argparse.Namespace, interrupt: list[_Interrupt]) -> dict[str, PolicyResult]:
    task = asyncio.current_task()
    assert task is not None
    interrupt.append(_Interrupt(task))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt[0], sig)
    return await run_demo(args.rate, args.duration, args.seed)


def run_from_args(args: argparse.Namespace) -> int:
    import uvloop

    interrupt: list[_Interrupt] = []
    try:
        results = uvloop.run(_main(args, interrupt))
    except ValueError as exc:
        print(f"sluicegate demo: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        _progress("interrupted; everything stopped")
        signum = interrupt[0].signal if interrupt else None
        return 128 + (signum or signal.SIGINT)
    if args.json:
        print(json.dumps({policy: r.to_dict() for policy, r in results.items()}))
    else:
        print(format_table(results))
        print(verdict(results))
    return 0
