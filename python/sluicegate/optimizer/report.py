"""A solution as the table `sluicegate optimize` prints and as plain data for YAML/JSON, with
the workload-variant-autoscaler's names (numReplicas, accelerator) where it has them."""

from __future__ import annotations

import math
from typing import Any

from .problem import Problem, Solution


def as_data(problem: Problem, sol: Solution) -> dict[str, Any]:
    return {
        "solver": sol.solver,
        "costCentsPerHour": round(sol.cost, 6),
        "unmet": list(sol.unmet()),
        "capacityExceeded": sol.capacity_exceeded(),
        "unitsUsed": sol.units_used(),
        "capacity": {a: c for a, c in problem.capacity.items() if c is not None},
        "allocations": [{
            "variant": a.variant,
            "model": a.model,
            "serviceClass": a.service_class,
            "priority": a.priority,
            "accelerator": a.accelerator,
            "numReplicas": a.replicas,
            "currentReplicas": a.current_replicas,
            "units": a.units,
            "costCentsPerHour": round(a.cost, 6),
            "serving": a.serving,
            "sloMet": a.slo_met,
            "slo": {"ttftMs": a.slo.ttft_ms, "itlMs": a.slo.itl_ms},
            "predicted": {"ttftMs": _finite(a.ttft_ms), "itlMs": _finite(a.itl_ms)},
            "reason": a.reason,
            **({"capacityExceeded": a.capacity_exceeded} if a.capacity_exceeded else {}),
        } for a in sol.allocations],
    }


def table(sol: Solution) -> str:
    head = ("VARIANT", "MODEL", "CLASS", "ACC", "REPLICAS", "COST¢/h", "TTFT ms", "ITL ms",
            "SLO")
    rows = [head] + [(
        a.variant, a.model, f"{a.service_class}({a.priority})", a.accelerator or "-",
        _replicas(a.replicas, a.current_replicas), f"{a.cost:.2f}", _ms(a.ttft_ms),
        _ms(a.itl_ms), "-" if not a.serving else ("met" if a.slo_met else "MISSED"),
    ) for a in sol.allocations]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    used = ", ".join(f"{k}={v}" for k, v in sorted(sol.units_used().items())) or "none"
    unmet = ", ".join(sol.unmet()) or "none"
    lines.append(f"{sol.solver}: {sol.cost:.2f} cents/hour; accelerators used: {used}; "
                 f"SLO not met: {unmet}")
    lines += [f"CapacityExceeded {model}: {why}"
              for model, why in sorted(sol.capacity_exceeded().items())]
    return "\n".join(lines)


def _replicas(n: int, current: int | None) -> str:
    return str(n) if current is None or current == n else f"{current}->{n}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else round(value, 3)
