"""Tails judged over several quality runs: the p99 of one ~1,000-request row is its tenth
slowest request, and two rows of the same policy in one run differ by as much as two policies
do. `python -m benches.quality.pool_traces [--baseline POLICY] TRACE.json...` takes the traces
SLUICEGATE_QUALITY_TRACE=1 writes (copy `out/trace-*.json` aside after each run: the next run
overwrites them), groups them by policy, and prints each run's row, then every policy's
requests pooled (TTFT p50 / p90 / p99 / mean, hit rate of first admissions) and, against the
baseline, each percentile's difference with a 95% bootstrap interval (requests resampled per
policy, seeded): an interval that holds 0 is no difference these runs can show.

Requests of one run are not independent samples of a tail: its slowest turns come in one or
two episodes of a server's queue backing up, ten at a time, so resampling requests makes the
interval too narrow. Where both policies ran in the same runs (same arrivals, pairs in the
order given), the report also gives each percentile's difference run by run and an interval
from resampling whole runs, paired: with few runs it is wide, and it is the honest one."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sluicegate.loadgen.report import percentile

QUANTILES = (50, 90, 99)
DRAWS = 1000


@dataclass
class Pooled:
    """One policy's requests from every run given."""

    ttft_ms: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    runs: list[str] = field(default_factory=list)
    # Each run's hit rate of first admissions, in the order the traces were given.
    run_hit_rates: list[float] = field(default_factory=list)
    # Each run's answered TTFTs, in the same order.
    run_ttft_ms: list[list[float]] = field(default_factory=list)

    def add(self, trace: dict) -> None:
        ok = [r for r in trace["requests"] if r.get("ok")]
        self.run_ttft_ms.append([r["ttft_ms"] for r in ok])
        self.ttft_ms += self.run_ttft_ms[-1]
        self.prompt_tokens += sum(r["prompt_tokens"] for r in ok)
        self.cached_tokens += sum(r["cached_tokens"] for r in ok)
        s = trace["summary"]
        self.run_hit_rates.append(s["prefix_hit_rate"])
        self.runs.append(f"{s['ttft_p50_ms']:.1f} / {s['ttft_p90_ms']:.0f} / {s['ttft_p99_ms']:.0f} ms, "
                         f"{s['prefix_hit_rate']:.2%}, {s['moves']} moves")

    def line(self) -> str:
        if not self.ttft_ms:
            return "no answered requests"
        p = [_pct(self.ttft_ms, q) for q in QUANTILES]
        return (f"{len(self.ttft_ms)} requests, TTFT {p[0]:.1f} / {p[1]:.1f} / {p[2]:.1f} ms, mean "
                f"{statistics.fmean(self.ttft_ms):.1f}, hit rate {self.cached_tokens / self.prompt_tokens:.2%}")


def pool(traces: list[dict]) -> dict[str, Pooled]:
    out: dict[str, Pooled] = defaultdict(Pooled)
    for t in traces:
        out[t["summary"]["policy"]].add(t)
    return dict(out)


def differences(a: list[float], b: list[float], seed: int = 1) -> list[tuple[float, float, float]]:
    """For each of QUANTILES: that percentile of b minus a's, and the 2.5th and 97.5th
    percentiles of the difference over DRAWS bootstrap resamples of each."""
    return _intervals(a, b, lambda rng: (rng.choices(a, k=len(a)), rng.choices(b, k=len(b))), seed)


def _intervals(a: list[float], b: list[float], resample, seed: int) -> list[tuple[float, float, float]]:
    """Each of QUANTILES of b minus a's, with the 95% interval of that difference over DRAWS
    draws of `resample(rng)` (a resampled a and b)."""
    rng = random.Random(seed)
    draws: list[list[float]] = [[] for _ in QUANTILES]
    for _ in range(DRAWS):
        ra, rb = resample(rng)
        # Sorted once: percentile() sorts again, in linear time on sorted input.
        ra, rb = sorted(ra), sorted(rb)
        for d, q in zip(draws, QUANTILES):
            d.append(_pct(rb, q) - _pct(ra, q))
    return [(_pct(b, q) - _pct(a, q), _pct(d, 2.5), _pct(d, 97.5)) for d, q in zip(draws, QUANTILES)]


def run_differences(base: Pooled, other: Pooled) -> list[tuple[float, ...]] | None:
    """Run by run, each of QUANTILES of `other`'s TTFT minus `base`'s (the traces' order pairs
    them); None when the two ran a different number of times."""
    if len(base.run_ttft_ms) != len(other.run_ttft_ms):
        return None
    return [tuple(_pct(o, q) - _pct(b, q) for q in QUANTILES) for b, o in zip(base.run_ttft_ms, other.run_ttft_ms)]


def run_bootstrap(base: Pooled, other: Pooled, seed: int = 1) -> list[tuple[float, float, float]] | None:
    """Like `differences`, resampling whole runs (the same runs for both: paired) rather than
    requests; None without pairs."""
    runs = len(base.run_ttft_ms)
    if runs != len(other.run_ttft_ms) or runs == 0:
        return None

    def resample(rng: random.Random) -> tuple[list[float], list[float]]:
        picked = rng.choices(range(runs), k=runs)
        return ([t for i in picked for t in base.run_ttft_ms[i]],
                [t for i in picked for t in other.run_ttft_ms[i]])

    return _intervals(base.ttft_ms, other.ttft_ms, resample, seed)


def _pct(values: list[float], q: float) -> float:
    return percentile(values, q) or 0.0


def report(traces: list[dict], baseline: str) -> str:
    pooled = pool(traces)
    if baseline not in pooled:
        raise SystemExit(f"--baseline: no trace of policy {baseline!r} (have {', '.join(sorted(pooled))})")
    lines = []
    for name, p in pooled.items():
        lines.append(f"{name}: {len(p.runs)} runs (p50 / p90 / p99, hit rate, moves)")
        lines += [f"  run {i + 1}: {r}" for i, r in enumerate(p.runs)]
    lines.append("pooled:")
    lines += [f"  {name}: {p.line()}" for name, p in pooled.items()]
    base = pooled[baseline].ttft_ms
    for name, p in pooled.items():
        if name == baseline or not (base and p.ttft_ms):
            continue
        parts = [f"p{q} {d:+.1f} [{lo:+.1f}, {hi:+.1f}]"
                 for q, (d, lo, hi) in zip(QUANTILES, differences(base, p.ttft_ms))]
        lines.append(f"{name} minus {baseline}, ms (95% bootstrap): " + ", ".join(parts))
        if (per_run := run_differences(pooled[baseline], p)) is not None:
            for k, q in enumerate(QUANTILES):
                diffs = [d[k] for d in per_run]
                lines.append(f"  p{q} minus {baseline}, ms, run by run: " + ", ".join(f"{d:+.1f}" for d in diffs)
                             + f" (lower in {sum(d < 0 for d in diffs)} of {len(diffs)})")
            paired = run_bootstrap(pooled[baseline], p) or []
            lines.append("  runs resampled, paired (95%): " + ", ".join(
                f"p{q} {d:+.1f} [{lo:+.1f}, {hi:+.1f}]" for q, (d, lo, hi) in zip(QUANTILES, paired)))
        if (hits := hit_rate_differences(pooled[baseline], p)) is not None:
            lines.append(f"  hit rate minus {baseline}, points, run by run: "
                         + ", ".join(f"{d:+.2f}" for d in hits) + f" (mean {statistics.fmean(hits):+.2f})")
    return "\n".join(lines)


def hit_rate_differences(base: Pooled, other: Pooled) -> list[float] | None:
    """`other`'s hit rate minus `base`'s in percentage points, run by run (the traces' order
    pairs them: rows of one run share arrivals). A hit rate is set by where a row's first turns
    land, so runs, not requests, are its samples; None when the two ran a different number of
    times."""
    if len(base.run_hit_rates) != len(other.run_hit_rates):
        return None
    return [100 * (o - b) for b, o in zip(base.run_hit_rates, other.run_hit_rates)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benches.quality.pool_traces", description="Quality traces pooled over runs; tails compared with bootstrap intervals.")
    parser.add_argument("--baseline", default="sluicegate", help="the policy the others are compared with")
    parser.add_argument("traces", nargs="+", help="trace files written by SLUICEGATE_QUALITY_TRACE=1")
    args = parser.parse_args(argv)
    print(report([json.loads(Path(t).read_text()) for t in args.traces], args.baseline))


if __name__ == "__main__":
    main(sys.argv[1:])
