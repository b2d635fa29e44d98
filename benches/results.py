"""What one request path measured, its cost over its baseline measured in the same window, and
the end-of-session table."""

from __future__ import annotations

from dataclasses import dataclass, field

from benches.client import LatencySummary

ROLES = ("epp", "envoy", "backend")


@dataclass(frozen=True)
class PathResult:
    name: str
    latency: LatencySummary
    # The baseline path's requests, in blocks alternating with this path's.
    baseline: str | None = None
    baseline_latency: LatencySummary | None = None
    # CPU per request by role, µs, with the role's idle CPU over the same wall time taken out.
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    # What each role burns with no traffic (metrics scraping, health checks), ms of CPU per s.
    idle_cpu_ms_per_s: dict[str, float] = field(default_factory=dict)

    def added(self) -> dict[str, float]:
        """Latency added over the baseline: absolute µs at p50/p99 and the ratios; {} without."""
        base = self.baseline_latency
        if base is None:
            return {}
        return {
            "added_p50_us": self.latency.p50_us - base.p50_us,
            "added_p99_us": self.latency.p99_us - base.p99_us,
            "ratio_p50": self.latency.p50_us / base.p50_us,
            "ratio_p99": self.latency.p99_us / base.p99_us,
        }

    def extra_info(self) -> dict[str, float | int | str]:
        info: dict[str, float | int | str] = {
            "n": self.latency.n,
            "p50_us": round(self.latency.p50_us, 1),
            "p99_us": round(self.latency.p99_us, 1),
            "mean_us": round(self.latency.mean_us, 1),
        }
        if self.baseline is not None and self.baseline_latency is not None:
            info |= {"baseline": self.baseline,
                     "baseline_p50_us": round(self.baseline_latency.p50_us, 1),
                     "baseline_p99_us": round(self.baseline_latency.p99_us, 1)}
            info |= {k: round(v, 2 if k.startswith("ratio") else 1) for k, v in self.added().items()}
        info |= {f"{role}_cpu_us_per_req": round(v, 1) for role, v in self.cpu_us_per_request.items()}
        info |= {f"{role}_idle_cpu_ms_per_s": round(v, 2)
                 for role, v in self.idle_cpu_ms_per_s.items()}
        return info


def _cell(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def format_table(results: dict[str, PathResult]) -> str:
    header = (f"{'path':<26}{'vs':<11}{'n':>6}{'p50':>7}{'p99':>7}{'vs p50':>8}{'vs p99':>8}"
              f"{'+p50':>7}{'+p99':>7}{'x p50':>7}"
              + "".join(f"{role + ' cpu':>12}" for role in ROLES) + f"{'epp idle':>10}")
    lines = [header, "-" * len(header)]
    for r in results.values():
        base, added, cpu = r.baseline_latency, r.added(), r.cpu_us_per_request
        lines.append(
            f"{r.name:<26}{r.baseline or '-':<11}{r.latency.n:>6}{r.latency.p50_us:>7.0f}"
            f"{r.latency.p99_us:>7.0f}{_cell(base and base.p50_us):>8}{_cell(base and base.p99_us):>8}"
            f"{_cell(added.get('added_p50_us')):>7}{_cell(added.get('added_p99_us')):>7}"
            f"{_cell(added.get('ratio_p50'), '{:.2f}'):>7}"
            + "".join(f"{_cell(cpu.get(role)):>12}" for role in ROLES)
            + f"{_cell(r.idle_cpu_ms_per_s.get('epp'), '{:.1f}'):>10}"
        )
    lines.append("latency: µs per request, client wall time; `vs` = baseline path, measured in "
                 "blocks alternating with the row's; +/x over it")
    lines.append("cpu: µs per request (all threads, idle CPU taken out); epp idle: ms CPU per s")
    return "\n".join(lines)
