"""The quality bench's report: one table per workload, the issue's targets checked against the
same run, and a PNG of the headline numbers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]
COLUMNS = (  # key, header, width, format
    ("policy", "policy", 30, "{}"), ("requests", "req", 5, "{}"), ("errors", "err", 4, "{}"),
    ("ttft_p50_ms", "TTFT p50", 9, "{:.0f}"), ("ttft_p90_ms", "p90", 7, "{:.0f}"),
    ("ttft_p99_ms", "p99", 7, "{:.0f}"), ("e2e_p50_ms", "e2e p50", 8, "{:.0f}"),
    ("e2e_p99_ms", "e2e p99", 8, "{:.0f}"), ("output_tok_s", "tok/s", 7, "{:.0f}"),
    ("prefix_hit_rate", "hit rate", 9, "{:.1%}"), ("preemptions", "preempt", 8, "{}"),
    ("adapter_loads", "loads", 6, "{}"), ("moves", "moves", 6, "{}"), ("spreads", "spread", 7, "{}"))


def _line(cells: Sequence[str]) -> str:
    first, *rest = cells
    return first.ljust(COLUMNS[0][2]) + "".join(c.rjust(w + 1) for c, (_, _, w, _) in zip(rest, COLUMNS[1:]))


def table(rows: Sequence[Row], name: str = "") -> str:
    name = name or rows[0]["workload"]
    clock = "the wall clock: llm-d-inference-sim" if name.startswith("shared_prefix_isim") else "the simulators' clock"
    lines = [f"workload {name} at {rows[0]['rate']} req/s (ms on {clock})",
             _line([label for _, label, _, _ in COLUMNS])]
    lines += [_line(["-" if row.get(key) is None else fmt.format(row[key]) for key, _, _, fmt in COLUMNS])
              for row in rows]
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(by_workload: Mapping[str, Sequence[Row]]) -> list[tuple[str, bool | None, str]]:
    """(target, met or None when its workload did not run, the numbers behind it)."""
    def row(workload: str, policy: str) -> Row | None:
        return next((r for r in by_workload.get(workload, ()) if r["policy"] == policy), None)

    out: list[tuple[str, bool | None, str]] = []
    for policy in ("sluicegate", "sluicegate+precise", "sluicegate+active"):
        ours, rr = row("shared_prefix", policy), row("shared_prefix", "round-robin")
        if ours and rr:
            t = _ratio(ours["ttft_p50_ms"], rr["ttft_p50_ms"])
            h = _ratio(ours["prefix_hit_rate"], rr["prefix_hit_rate"])
            out.append((f"(a) {policy}: TTFT p50 <= 0.5x round-robin", t is not None and t <= 0.5,
                        f"{t:.2f}x" if t is not None else "n/a"))
            out.append((f"(a) {policy}: hit rate >= 2x round-robin", h is not None and h >= 2.0,
                        f"{h:.2f}x" if h is not None else "n/a"))
        ours, lq = row("varied", policy), row("varied", "least-queue")
        if ours and lq:
            t = _ratio(ours["ttft_p50_ms"], lq["ttft_p50_ms"])
            e = _ratio(ours["e2e_p50_ms"], lq["e2e_p50_ms"])
            ok = t is not None and e is not None and t <= 1.05 and e <= 1.05
            out.append((f"(b) {policy}: TTFT/e2e p50 <= 1.05x least-queue", ok,
                        f"TTFT {t:.2f}x, e2e {e:.2f}x" if ok or (t and e) else "n/a"))
    for workload, name in (("shared_prefix_vllm", "sluicegate+precise"),
                           ("shared_prefix_vllm_evicting", "sluicegate+precise"),
                           ("shared_prefix_isim", "sluicegate+precise-render"),
                           ("shared_prefix_isim_evicting", "sluicegate+precise-render")):
        approx, precise = row(workload, "sluicegate"), row(workload, name)
        if approx and precise:
            out.append((f"(d) {workload}: precise TTFT p50, p90 <= approximate's, p99 <, hit rate >=",
                        _precise_beats(precise, approx), " vs ".join(
                            "{ttft_p50_ms:.1f}/{ttft_p90_ms:.0f}/{ttft_p99_ms:.0f} ms {prefix_hit_rate:.2%}, {moves} moves".format(**r)
                            for r in (precise, approx))))
    for policy in ("sluicegate", "sluicegate+lora"):
        ours, rr = row("lora", policy), row("lora", "round-robin")
        if ours and rr:
            out.append((f"(c) {policy}: fewer adapter loads than round-robin",
                        ours["adapter_loads"] < rr["adapter_loads"],
                        f"{ours['adapter_loads']} vs {rr['adapter_loads']}"))
    return out + upstream_targets(by_workload)


def upstream_targets(by_workload: Mapping[str, Sequence[Row]]) -> list[tuple[str, bool | None, str]]:
    """Issue 19: the approximate default reaches at least the real upstream EPP's hit rate and
    TTFT p90 (its approximate producer, the `upstream-go` row) on shared_prefix, same run."""
    out: list[tuple[str, bool | None, str]] = []
    for workload in ("shared_prefix_upstream", "shared_prefix_vllm_upstream", "shared_prefix_isim_upstream",
                     "shared_prefix_isim_evicting_upstream"):
        rows = {r["policy"]: r for r in by_workload.get(workload, ())}
        ours, theirs = rows.get("sluicegate"), rows.get("upstream-go")
        if ours and theirs:
            out.append((f"(19) {workload}: sluicegate hit rate >= upstream-go's",
                        ours["prefix_hit_rate"] >= theirs["prefix_hit_rate"],
                        f"{ours['prefix_hit_rate']:.1%} vs {theirs['prefix_hit_rate']:.1%}"))
            t = _ratio(ours["ttft_p90_ms"], theirs["ttft_p90_ms"])
            out.append((f"(19) {workload}: sluicegate TTFT p90 <= upstream-go's", t is not None and t <= 1.0,
                        f"{ours['ttft_p90_ms']:.0f} vs {theirs['ttft_p90_ms']:.0f} ms ({t:.2f}x)"
                        if t is not None else "n/a"))
    return out


def _precise_beats(precise: Row, approx: Row) -> bool:
    """Issue 19's done-when: precise at least as good at p50 and p90, better at the tail,
    hit rate at least as high, in the same run."""
    keys = ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms")
    if any(precise[k] is None or approx[k] is None for k in keys):
        return False
    return (precise["ttft_p50_ms"] <= approx["ttft_p50_ms"] and precise["ttft_p90_ms"] <= approx["ttft_p90_ms"]
            and precise["ttft_p99_ms"] < approx["ttft_p99_ms"]
            and precise["prefix_hit_rate"] >= approx["prefix_hit_rate"])


def noise(by_workload: Mapping[str, Sequence[Row]]) -> str:
    """On `varied` and `lora` no prompt shares a prefix block, so `sluicegate` and
    `sluicegate+precise` route by the same scores: their gap is this run's noise (A/A)."""
    parts = []
    for workload in ("varied", "lora"):
        rows = {r["policy"]: r for r in by_workload.get(workload, ())}
        a, b = rows.get("sluicegate"), rows.get("sluicegate+precise")
        if a and b:
            t, e = _ratio(a["ttft_p50_ms"], b["ttft_p50_ms"]), _ratio(a["e2e_p50_ms"], b["e2e_p50_ms"])
            if t is not None and e is not None:
                parts.append(f"{workload} TTFT p50 {t:.2f}x, e2e p50 {e:.2f}x")
    return ("A/A (sluicegate vs sluicegate+precise, same scores where no prefix is shared): "
            + "; ".join(parts)) if parts else ""


def format_targets(checked: Sequence[tuple[str, bool | None, str]]) -> str:
    return "\n".join(f"{'MET ' if met else 'MISS'}  {name}: {numbers}" for name, met, numbers in checked)


def plot(by_workload: Mapping[str, Sequence[Row]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A workload's rows, and its rows beside upstream's EPP (`<workload>_upstream`).
    order = ("shared_prefix", "shared_prefix_vllm", "shared_prefix_vllm_evicting", "shared_prefix_isim",
             "shared_prefix_isim_evicting", "varied", "lora", "burst")
    workloads = [w for base in order for w in (base, f"{base}_upstream") if w in by_workload]
    fig, axes = plt.subplots(2, len(workloads), figsize=(5.5 * len(workloads), 8), squeeze=False)
    second = {"shared_prefix": ("prefix_hit_rate", "prefix-cache hit rate"),
              "shared_prefix_vllm": ("prefix_hit_rate", "prefix-cache hit rate"),
              "shared_prefix_vllm_evicting": ("prefix_hit_rate", "prefix-cache hit rate"),
              "shared_prefix_isim": ("prefix_hit_rate", "prefix-cache hit rate"),
              "shared_prefix_isim_evicting": ("prefix_hit_rate", "prefix-cache hit rate"),
              "varied": ("e2e_p50_ms", "end-to-end p50 (ms)"),
              "lora": ("adapter_loads", "LoRA adapter loads"),
              "burst": ("e2e_p50_ms", "end-to-end p50 (ms)")}
    for col, workload in enumerate(workloads):
        rows = by_workload[workload]
        names = [r["policy"] for r in rows]
        x = range(len(rows))
        ax = axes[0][col]
        for offset, (key, label) in zip((-0.27, 0.0, 0.27), (("ttft_p50_ms", "p50"), ("ttft_p90_ms", "p90"),
                                                              ("ttft_p99_ms", "p99"))):
            ax.bar([i + offset for i in x], [r[key] or 0 for r in rows], width=0.27, label=label)
        clock = "wall clock" if workload.startswith("shared_prefix_isim") else "simulated clock"
        ax.set_title(f"{workload}: TTFT (ms, {clock})")
        ax.set_yscale("log")
        ax.set_xticks(list(x), names, rotation=30, ha="right")
        ax.legend()
        key, label = second[workload.removesuffix("_upstream")]
        ax = axes[1][col]
        ax.bar(list(x), [r[key] or 0 for r in rows], color="tab:green")
        ax.set_title(f"{workload}: {label}")
        ax.set_xticks(list(x), names, rotation=30, ha="right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
