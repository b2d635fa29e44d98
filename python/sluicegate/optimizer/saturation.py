"""What a solver does with capacity left over when some models' SLOs cannot all be met: the
workload-variant-autoscaler's saturation policies (None, PriorityExhaustive,
PriorityRoundRobin, RoundRobin), giving unmet models replicas short of their SLO."""

from __future__ import annotations

import math
from itertools import groupby

from .inputs import SaturationPolicy
from .problem import Option, Pick, Problem, Server, fits, take


def fill(problem: Problem, picks: dict[str, Pick], free: dict[str, int]) -> None:
    """Add best-effort replicas to servers with load and no SLO-meeting pick, in place."""
    policy = problem.input.saturation_policy
    unmet = sorted((s for s in problem.servers if s.load_rps > 0 and s.key not in picks),
                   key=lambda s: (s.priority, s.key))
    if policy is SaturationPolicy.NONE or not unmet:
        return
    if policy is SaturationPolicy.ROUND_ROBIN:
        groups = [unmet]
    else:
        groups = [list(g) for _, g in groupby(unmet, key=lambda s: s.priority)]
    exhaustive = policy is SaturationPolicy.PRIORITY_EXHAUSTIVE
    for group in groups:
        for batch in ([[s] for s in group] if exhaustive else [group]):
            _round_robin(batch, picks, free)


def _round_robin(servers: list[Server], picks: dict[str, Pick], free: dict[str, int]) -> None:
    """One replica per server per round until none can grow (capacity or its target)."""
    growing = list(servers)
    while growing:
        still = []
        for s in growing:
            if _grow(s, picks, free):
                still.append(s)
        growing = still


def _grow(s: Server, picks: dict[str, Pick], free: dict[str, int]) -> bool:
    current = picks.get(s.key)
    if current is None:
        for o in _by_value(s):
            first = s.extra_usage(o, max(1, o.variant.min_replicas))
            if _target(s, o) >= 1 and fits(first, free):
                take(first, free)
                picks[s.key] = Pick(o, max(1, o.variant.min_replicas))
                return True
        return False
    o, n = current.option, current.replicas
    assert o is not None
    if n >= _target(s, o):
        return False
    step = {o.accelerator: o.units}
    if not fits(step, free):
        return False
    take(step, free)
    picks[s.key] = Pick(o, n + 1)
    return True


def _by_value(s: Server) -> list[Option]:
    # Throughput per cent: a replica short of the SLO still serves requests.
    return sorted(s.options, key=lambda o: -o.params.capacity_rps() / max(o.replica_cost, 1e-9))


def _target(s: Server, o: Option) -> int:
    """Replicas that would meet the SLO (or carry the load at capacity), within maxReplicas."""
    want = o.replicas if o.replicas is not None else math.ceil(
        s.load_rps / max(o.max_rate_rps or o.params.capacity_rps(), 1e-300))
    cap = o.variant.max_replicas
    return min(want, cap) if cap is not None else want
