"""The default solver: servers in priority order (within a priority, the one that loses most
by not getting its cheapest option goes first), each given its cheapest SLO-meeting option
that fits the capacity left. Capacity conflicts are then resolved by priority: a server left
without an option may move one server of the same or a lower priority to another of its
options if that makes room. Last, the saturation policy spends what remains."""

from __future__ import annotations

from . import saturation
from .problem import Option, Pick, Problem, Server, Solution, fits, solution, take


def solve(problem: Problem) -> Solution:
    picks, free = _pass(problem, cheapest_first=True, smallest_first=False)
    if len(picks) < len(problem.servers):
        # Capacity ran short: retry preferring the options that take the smallest share of
        # what is left (then also placing the smallest servers of a priority first, which
        # fits the most of them), and keep the pass that meets the most SLOs by priority,
        # then costs least.
        for smallest_first in (False, True):
            other, other_free = _pass(problem, cheapest_first=False,
                                      smallest_first=smallest_first)
            if _rank(problem, other) < _rank(problem, picks):
                picks, free = other, other_free
    _cheapen(problem, picks, free)
    saturation.fill(problem, picks, free)
    return solution(problem, picks, "greedy")


def _pass(problem: Problem, cheapest_first: bool, smallest_first: bool
          ) -> tuple[dict[str, Pick], dict[str, int]]:
    free = problem.limited()
    for s in problem.servers:
        take(s.floor_usage(), free)
    capacity = dict(free)
    picks: dict[str, Pick] = {}

    def size(s: Server) -> float:
        return min((_share(_extra(s, o), capacity) for o in s.feasible), default=float("inf"))

    order = sorted(problem.servers, key=lambda s: (
        s.priority, size(s) if smallest_first else -_regret(s), s.key))
    for s in order:
        options = s.feasible if cheapest_first else sorted(
            s.feasible, key=lambda o: (_share(_extra(s, o), capacity), o.cost(o.replicas)))
        if not _place(s, options, picks, free):
            _make_room(s, order, picks, free)
    return picks, free


def _cheapen(problem: Problem, picks: dict[str, Pick], free: dict[str, int]) -> None:
    """Move placed servers to options they prefer (earlier in `feasible`: the kept serving
    one, then cheaper) that now fit, until none does (each move lowers the cost or keeps the
    serving accelerator, so this ends; bounded anyway)."""
    for _ in range(len(problem.servers) + 1):
        moved = False
        for s in problem.servers:
            current = picks.get(s.key)
            if current is None or current.option is None:
                continue
            cost = current.option.cost(current.replicas)
            released = dict(free)
            take({a: -n for a, n in _extra(s, current.option).items()}, released)
            for o in s.feasible:  # preferred first
                if o is current.option:
                    break
                if o.cost(o.replicas or 0) >= cost and o is not s.feasible[0]:
                    continue
                extra = _extra(s, o)
                if fits(extra, released):
                    take(extra, released)
                    free.clear()
                    free.update(released)
                    picks[s.key] = Pick(o, o.replicas or 0)
                    moved = True
                    break
        if not moved:
            return


def _share(usage: dict[str, int], capacity: dict[str, int]) -> float:
    return sum(n / max(capacity[a], 1) for a, n in usage.items() if a in capacity)


def _rank(problem: Problem, picks: dict[str, Pick]) -> tuple:
    levels = sorted({s.priority for s in problem.servers})
    unmet = tuple(sum(1 for s in problem.servers if s.priority == p and s.key not in picks)
                  for p in levels)
    cost = sum(p.option.cost(p.replicas) for p in picks.values() if p.option is not None)
    return unmet, cost


def _place(s: Server, options, picks: dict[str, Pick], free: dict[str, int]) -> bool:
    for o in options:
        extra = _extra(s, o)
        if fits(extra, free):
            take(extra, free)
            picks[s.key] = Pick(o, o.replicas or 0)
            return True
    return False


def _make_room(s: Server, order: list[Server], picks: dict[str, Pick],
               free: dict[str, int]) -> bool:
    """Place `s` by moving one placed server of equal or lower priority to another option
    (the least important first, its cheapest alternative first)."""
    movable = [t for t in reversed(order) if t.key in picks and t.priority >= s.priority]
    for o in s.feasible:
        need = _extra(s, o)
        for t in movable:
            current = picks[t.key]
            assert current.option is not None
            released = dict(free)
            take({a: -n for a, n in _extra(t, current.option).items()}, released)
            for alt in t.feasible:
                if alt is current.option:
                    continue
                after = dict(released)
                moved = _extra(t, alt)
                if not fits(moved, after):
                    continue
                take(moved, after)
                if fits(need, after):
                    take(need, after)
                    free.clear()
                    free.update(after)
                    picks[t.key] = Pick(alt, alt.replicas or 0)
                    picks[s.key] = Pick(o, o.replicas or 0)
                    return True
    return False


def _extra(s: Server, o: Option) -> dict[str, int]:
    return s.extra_usage(o, o.replicas or 0)


def _regret(s: Server) -> float:
    """Extra cost of the second-cheapest option over the cheapest (inf: no second choice)."""
    costs = [o.cost(o.replicas) for o in s.feasible if o.replicas is not None]
    return costs[1] - costs[0] if len(costs) > 1 else float("inf")
