"""What a solver does with capacity left over when some models' SLOs cannot all be met: the
workload-variant-autoscaler's saturation policies (None, PriorityExhaustive,
PriorityRoundRobin, RoundRobin), giving replicas short of their SLO to the models that had
an SLO-meeting option and lost it to capacity. A model no replica count can serve within its
SLO (no feasible option at all) is reported, not fed: replicas there buy no SLO."""

from __future__ import annotations

from itertools import groupby

from .inputs import SaturationPolicy
from .problem import Option, Pick, Plan, Problem, Server, fits, take


def fill(problem: Problem, plan: Plan) -> None:
    """Add best-effort replicas to the servers that lost their options to capacity, in place."""
    policy = problem.input.saturation_policy
    unmet = sorted((s for s in problem.servers
                    if s.load_rps > 0 and s.feasible and s.key not in plan.picks),
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
            _round_robin(batch, plan)


def _round_robin(servers: list[Server], plan: Plan) -> None:
    """One replica per server per round until none can grow (capacity or its target)."""
    growing = list(servers)
    while growing:
        growing = [s for s in growing if _grow(s, plan)]


def _grow(s: Server, plan: Plan) -> bool:
    current = plan.picks.get(s.key)
    if current is None:
        held = s.key in plan.held
        for o in _by_value(s):
            first = s.extra_usage(o, max(1, o.variant.min_replicas), floor_held=held)
            if fits(first, plan.free):
                take(first, plan.free)
                plan.picks[s.key] = Pick(o, max(1, o.variant.min_replicas))
                plan.held.discard(s.key)  # the pick now carries the floors
                return True
        return False
    o, n = current.option, current.replicas
    assert o is not None and o.replicas is not None
    if n >= o.replicas:
        return False
    step = {o.accelerator: o.units}
    if not fits(step, plan.free):
        return False
    take(step, plan.free)
    plan.picks[s.key] = Pick(o, n + 1)
    return True


def _by_value(s: Server) -> list[Option]:
    # Throughput per cent among the options that meet the SLO with enough replicas: a
    # replica short of the SLO still serves requests.
    return sorted(s.feasible, key=lambda o: -o.params.capacity_rps() / max(o.replica_cost, 1e-9))
