"""What one request path measured, its cost over its baseline, and the end-of-session table."""

from __future__ import annotations

from dataclasses import dataclass, field

from benches.client import LatencySummary

ROLES = ("epp", "envoy", "backend")


@dataclass(frozen=True)
class PathResult:
    name: str
    baseline: str | None
    latency: LatencySummary
    # CPU per request by role, µs, with the role's idle CPU over the same wall time taken out.
    cpu_us_per_request: dict[str, float] = field(default_factory=dict)
    # What each role burns with no traffic (metrics scraping, health checks), ms of CPU per s.
    idle_cpu_ms_per_s: dict[str, float] = field(default_factory=dict)

    def over(self, base: PathResult) -> dict[str, float]:
        """Latency added over `base`: absolute µs at p50/p99 and the p50/p99 ratios."""
        return {
            "added_p50_us": self.latency.p50_us - base.latency.p50_us,
            "added_p99_us": self.latency.p99_us - base.latency.p99_us,
            "ratio_p50": self.latency.p50_us / base.latency.p50_us,
            "ratio_p99": self.latency.p99_us / base.latency.p99_us,
        }

    def extra_info(self, base: PathResult | None) -> dict[str, float | int | str]:
        info: dict[str, float | int | str] = {
            "n": self.latency.n,
            "p50_us": round(self.latency.p50_us, 1),
            "p99_us": round(self.latency.p99_us, 1),
            "mean_us": round(self.latency.mean_us, 1),
        }
        if base is not None:
            info["baseline"] = base.name
            info |= {k: round(v, 2 if k.startswith("ratio") else 1) for k, v in self.over(base).items()}
        info |= {f"{role}_cpu_us_per_req": round(v, 1) for role, v in self.cpu_us_per_request.items()}
        info |= {f"{role}_idle_cpu_ms_per_s": round(v, 2)
                 for role, v in self.idle_cpu_ms_per_s.items()}
        return info


def _cell(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def format_table(results: dict[str, PathResult]) -> str:
    """Rows in measurement order; added/ratio columns only where the baseline ran too."""
    header = (f"{'path':<22}{'n':>6}{'p50':>8}{'p99':>8}{'+p50':>8}{'+p99':>8}{'x p50':>7}"
              + "".join(f"{role + ' cpu':>12}" for role in ROLES) + f"{'epp idle':>10}")
    lines = [header, "-" * len(header)]
    for result in results.values():
        base = results.get(result.baseline) if result.baseline else None
        over = result.over(base) if base is not None else {}
        cpu = result.cpu_us_per_request
        lines.append(
            f"{result.name:<22}{result.latency.n:>6}{result.latency.p50_us:>8.0f}"
            f"{result.latency.p99_us:>8.0f}{_cell(over.get('added_p50_us')):>8}"
            f"{_cell(over.get('added_p99_us')):>8}{_cell(over.get('ratio_p50'), '{:.2f}'):>7}"
            + "".join(f"{_cell(cpu.get(role)):>12}" for role in ROLES)
            + f"{_cell(result.idle_cpu_ms_per_s.get('epp'), '{:.1f}'):>10}"
        )
    lines.append("latency µs per request (wall, client side); +/x over the row's baseline; "
                 "cpu µs per request, idle CPU taken out; epp idle in ms CPU per s")
    return "\n".join(lines)
