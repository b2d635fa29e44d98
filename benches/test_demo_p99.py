"""`sluicegate demo`'s claim, TTFT p99 lower with the EPP than with round-robin, as a ratio over
independent samples (each seed is another workload and other simulators), same machine, same
session. A timing comparison, so a bench and not a test: on 2 shared vCPU round-robin/EPP was
2.3-2.4x at a quiet moment, 0.66/1.43/3.04x at a load average of ~28, and 0.36/0.44/0.45x with
two CPU burners and the test suite alongside (the EPP's extra hop starves first).

    .venv/bin/pytest benches/test_demo_p99.py --benchmark-only -s
"""

from __future__ import annotations

import statistics

import pytest

from tests.integration.test_demo import run_demo

SEEDS = (1, 2, 3)


@pytest.mark.timeout(90 * len(SEEDS) + 60)  # each demo is bounded by its own 90 s
def test_demo_ttft_p99_round_robin_over_epp(benchmark):
    ratios: list[float] = []

    def samples() -> None:
        for seed in SEEDS:
            d = run_demo(seed)
            ratios.append(d["round_robin"]["ttft_p99_ms"] / d["sluicegate"]["ttft_p99_ms"])

    benchmark.pedantic(samples, rounds=1, iterations=1)
    benchmark.extra_info["ttft_p99_ratio_round_robin_to_epp"] = [round(r, 2) for r in ratios]
    benchmark.extra_info["median_ratio"] = round(statistics.median(ratios), 2)
    print(f"\nTTFT p99 round-robin / EPP over seeds {SEEDS}: {[round(r, 2) for r in ratios]}")
    assert len(ratios) == len(SEEDS)
