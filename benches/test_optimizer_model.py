"""The queueing model's TTFT and ITL against the discrete-event simulation of the server it
describes (`sluicegate.optimizer.simulation`), over loads (rho = arrival rate / the step
model's capacity) and token mixes, for the default "step" formulation, the previous "batch"
one and the workload-variant-autoscaler's "reference" one. Prints the tables of
benches/README.md ("Optimizer: model vs simulation"). Output lengths are geometric with the
profile's mean (the table's main rows) and fixed (a second table, step formulation only)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from sluicegate.optimizer.queueing import FORMULATIONS, ServerParams, analyze
from sluicegate.optimizer.simulation import simulate

QUICK = os.environ.get("SLUICEGATE_BENCH_QUICK", "") not in ("", "0", "false")
REQUESTS = 10_000 if QUICK else 40_000
# Near saturation the mean TTFT rests on rare long queues: more requests and several seeds
# (their spread is printed) keep the simulated value itself within a few percent.
HIGH_LOAD_REQUESTS, HIGH_LOAD_SEEDS = (20_000, 2) if QUICK else (100_000, 3)
BASE = ServerParams(alpha=8.2, beta=0.11, gamma=6.0, delta=0.021, max_batch=64, max_queue=640,
                    input_tokens=128, output_tokens=128)
MIXES = {  # name -> (prompt tokens, output tokens, max batch)
    "short 128/128 B64": (128, 128, 64),
    "long 2048/128 B64": (2048, 128, 64),
    "long 4096/256 B256": (4096, 256, 256),
    "chat 1024/32 B32": (1024, 32, 32),
}
RHOS = (0.3, 0.6, 0.9)


def _row(params: ServerParams, rho: float, spread: str) -> dict:
    lam = rho * params.capacity_rps()
    high = rho >= 0.9
    sims = [simulate(params, lam, requests=HIGH_LOAD_REQUESTS if high else REQUESTS,
                     output_spread=spread, seed=seed)
            for seed in range(HIGH_LOAD_SEEDS if high else 1)]
    ttft = sum(x.ttft_ms for x in sims) / len(sims)
    itl = sum(x.itl_ms for x in sims) / len(sims)
    spread_text = (f"{ttft:.1f} ({min(x.ttft_ms for x in sims):.0f}-"
                   f"{max(x.ttft_ms for x in sims):.0f})" if len(sims) > 1 else f"{ttft:.1f}")
    row = {"lam": lam, "sim_ttft": ttft, "sim_itl": itl, "sim_ttft_text": spread_text}
    for f in FORMULATIONS:
        m = analyze(replace(params, formulation=f), lam)
        row[f] = (m.ttft_ms / ttft - 1.0, m.itl_ms / itl - 1.0)
    return row


def _pct(x: float) -> str:
    return f"{x:+.0%}"


@pytest.mark.timeout(3600)  # 16 simulations of 40,000 requests and 24 of 100,000
def test_model_against_simulation(benchmark) -> None:
    rows: list[tuple[str, float, str, dict]] = []

    def run() -> None:
        for spread in ("geometric", "fixed"):
            for name, (tokens_in, tokens_out, b) in MIXES.items():
                params = replace(BASE, input_tokens=tokens_in, output_tokens=tokens_out,
                                 max_batch=b, max_queue=10 * b)
                for rho in RHOS:
                    rows.append((name, rho, spread, _row(params, rho, spread)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    head = "| mix | rho | req/s | sim TTFT ms | sim ITL ms | " + " | ".join(
        f"{f} {m}" for f in FORMULATIONS for m in ("TTFT", "ITL")) + " |"
    lines = [head, "|" + " --- |" * 11]
    fixed = ["| mix | rho | sim TTFT ms | sim ITL ms | step TTFT | step ITL |",
             "|" + " --- |" * 6]
    worst = 0.0
    for name, rho, spread, r in rows:
        if spread == "geometric":
            lines.append(f"| {name} | {rho} | {r['lam']:.2f} | {r['sim_ttft_text']} | "
                         f"{r['sim_itl']:.2f} | " + " | ".join(
                             _pct(e) for f in FORMULATIONS for e in r[f]) + " |")
            worst = max(worst, *map(abs, r["step"]))
        else:
            fixed.append(f"| {name} | {rho} | {r['sim_ttft_text']} | {r['sim_itl']:.2f} | "
                         f"{_pct(r['step'][0])} | {_pct(r['step'][1])} |")
    benchmark.extra_info.update(requests=REQUESTS, worst_step_error=worst)
    print(f"\nmodel error vs simulation ({REQUESTS} requests per cell; at rho 0.9 "
          f"{HIGH_LOAD_SEEDS} seeds x {HIGH_LOAD_REQUESTS}, sim TTFT as mean (min-max)), "
          "geometric output lengths:\n" + "\n".join(lines) + "\n\nfixed output lengths:\n" + "\n".join(fixed))
