"""The default solver, one priority level at a time (1 first): the level's servers (the one
that loses most by not getting its cheapest option first) each take their cheapest
SLO-meeting option that fits what is left, a server left without one may move another
server of its level to another option if that makes room, and then the level's unserved
servers keep their minReplicas floors while those fit. So a lower priority's floor never
takes the units a higher priority's SLO needs. Last, the saturation policy spends what
remains on the models that lost an SLO-meeting option to capacity."""

from __future__ import annotations

from itertools import groupby

from . import saturation
from .problem import (Option, Pick, Plan, Problem, Server, Solution, fits, hold_floors,
                      solution, take)


def solve(problem: Problem) -> Solution:
    plan = _pass(problem, cheapest_first=True, smallest_first=False)
    if len(plan.picks) < len(problem.servers):
        # Capacity ran short: retry preferring the options that take the smallest share of
        # what is left (then also placing the smallest servers of a priority first, which
        # fits the most of them), and keep the pass that meets the most SLOs by priority,
        # then costs least.
        for smallest_first in (False, True):
            other = _pass(problem, cheapest_first=False, smallest_first=smallest_first)
            if _rank(problem, other) < _rank(problem, plan):
                plan = other
    _cheapen(problem, plan)
    saturation.fill(problem, plan)
    return solution(problem, plan, "greedy")


def _pass(problem: Problem, cheapest_first: bool, smallest_first: bool) -> Plan:
    plan = Plan(picks={}, held=set(), free=problem.limited())
    capacity = dict(plan.free)

    def size(s: Server) -> float:
        return min((_share(_usage(o), capacity) for o in s.feasible), default=float("inf"))

    order = sorted(problem.servers, key=lambda s: (
        s.priority, size(s) if smallest_first else -_regret(s), s.key))
    for _, level in groupby(order, key=lambda s: s.priority):
        servers = list(level)
        for s in servers:
            options = s.feasible if cheapest_first else sorted(
                s.feasible, key=lambda o: (_share(_usage(o), capacity), o.cost(o.replicas)))
            if not _place(s, options, plan):
                _make_room(s, servers, plan)
        hold_floors(servers, plan)
    return plan


def _cheapen(problem: Problem, plan: Plan) -> None:
    """Move placed servers to options they prefer (earlier in `feasible`: the kept serving
    one, then cheaper) that now fit, until none does (each move lowers the cost or keeps the
    serving accelerator, so this ends; bounded anyway)."""
    for _ in range(len(problem.servers) + 1):
        moved = False
        for s in problem.servers:
            current = plan.picks.get(s.key)
            if current is None or current.option is None:
                continue
            cost = current.option.cost(current.replicas)
            released = _released(plan.free, current.option)
            for o in s.feasible:  # preferred first
                if o is current.option:
                    break
                if o.cost(o.replicas or 0) >= cost and o is not s.feasible[0]:
                    continue
                if fits(_usage(o), released):
                    take(_usage(o), released)
                    plan.free = released
                    plan.picks[s.key] = Pick(o, o.replicas or 0)
                    moved = True
                    break
        if not moved:
            return


def _share(usage: dict[str, int], capacity: dict[str, int]) -> float:
    return sum(n / max(capacity[a], 1) for a, n in usage.items() if a in capacity)


def _rank(problem: Problem, plan: Plan) -> tuple:
    """Per priority level: SLOs not met, then floors not kept; then cost."""
    levels = sorted({s.priority for s in problem.servers})
    missed: list[int] = []
    for p in levels:
        level = [s for s in problem.servers if s.priority == p]
        missed.append(sum(1 for s in level if s.key not in plan.picks))
        missed.append(sum(1 for s in level if s.key not in plan.picks
                          and s.key not in plan.held and any(s.floor_usage().values())))
    cost = sum(p.option.cost(p.replicas) for p in plan.picks.values() if p.option is not None)
    return tuple(missed), cost


def _place(s: Server, options, plan: Plan) -> bool:
    for o in options:
        if fits(_usage(o), plan.free):
            take(_usage(o), plan.free)
            plan.picks[s.key] = Pick(o, o.replicas or 0)
            return True
    return False


def _make_room(s: Server, level: list[Server], plan: Plan) -> bool:
    """Place `s` by moving one placed server of its priority level to another option (the
    last placed first, its cheapest alternative first)."""
    movable = [t for t in reversed(level) if t.key in plan.picks]
    for o in s.feasible:
        need = _usage(o)
        for t in movable:
            current = plan.picks[t.key]
            assert current.option is not None
            released = _released(plan.free, current.option)
            for alt in t.feasible:
                if alt is current.option:
                    continue
                after = dict(released)
                if not fits(_usage(alt), after):
                    continue
                take(_usage(alt), after)
                if fits(need, after):
                    take(need, after)
                    plan.free = after
                    plan.picks[t.key] = Pick(alt, alt.replicas or 0)
                    plan.picks[s.key] = Pick(o, o.replicas or 0)
                    return True
    return False


def _released(free: dict[str, int], option: Option) -> dict[str, int]:
    """`free` with `option`'s units given back."""
    out = dict(free)
    take({a: -n for a, n in _usage(option).items()}, out)
    return out


def _usage(o: Option) -> dict[str, int]:
    """Everything the server takes with `o`: its replicas and the other variants' floors."""
    return o.usage(o.replicas or 0)


def _regret(s: Server) -> float:
    """Extra cost of the second-cheapest option over the cheapest (inf: no second choice)."""
    costs = [o.cost(o.replicas) for o in s.feasible if o.replicas is not None]
    return costs[1] - costs[0] if len(costs) > 1 else float("inf")
