"""The default solver: servers in priority order (within a priority, the one that loses most
by not getting its cheapest option goes first), each given its cheapest SLO-meeting option
that fits the capacity left; then the saturation policy spends what remains."""

from __future__ import annotations

from . import saturation
from .problem import Pick, Problem, Server, Solution, fits, solution, take


def solve(problem: Problem) -> Solution:
    free = problem.limited()
    for s in problem.servers:
        take(s.floor_usage(), free)
    picks: dict[str, Pick] = {}
    for s in sorted(problem.servers, key=lambda s: (s.priority, -_regret(s), s.key)):
        for o in s.feasible:
            assert o.replicas is not None
            extra = s.extra_usage(o, o.replicas)
            if fits(extra, free):
                take(extra, free)
                picks[s.key] = Pick(o, o.replicas)
                break
    saturation.fill(problem, picks, free)
    return solution(problem, picks, "greedy")


def _regret(s: Server) -> float:
    """Extra cost of the second-cheapest option over the cheapest (inf: no second choice)."""
    costs = [o.cost(o.replicas) for o in s.feasible if o.replicas is not None]
    return costs[1] - costs[0] if len(costs) > 1 else float("inf")
