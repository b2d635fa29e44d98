"""The exact solver: a MILP over (server, choice) with one choice per server — one of its
SLO-meeting options, "unserved with its minReplicas floors", or "nothing" (floors not
granted) — and the accelerator capacities as constraints (scipy.optimize.milp, HiGHS). When
every SLO fits one solve minimises cost; otherwise priorities are lexicographic: at priority 1
the most SLOs met, then the most floors kept, then the same at 2 given that, …, and cost is
minimised last. Shows greedy's gap."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from . import saturation
from .problem import Option, Pick, Plan, Problem, Server, Solution, solution, take

TIME_LIMIT_S = 30.0
_HELD, _NOTHING = "held", "nothing"


@dataclass(frozen=True)
class _Model:
    columns: list[tuple[Server, Option | str]]  # an option, _HELD or _NOTHING
    cost: np.ndarray
    rows: list[LinearConstraint]

    def mask(self, kinds: tuple[str, ...], priority: int | None = None) -> np.ndarray:
        return np.array([1.0 if isinstance(c, str) and c in kinds
                         and (priority is None or s.priority == priority) else 0.0
                         for s, c in self.columns])


def solve(problem: Problem) -> Solution:
    plan = Plan(picks={}, held=set(), free=problem.limited())
    model = _build(problem, plan.free)
    # Fast path: everything met, cheapest.
    unserved = model.mask((_HELD, _NOTHING))
    x = _run(model, model.cost, upper=1.0 - unserved, extra_rows=[])
    if x is None:
        x = _lexicographic(problem, model)
    for (s, c), chosen in zip(model.columns, x):
        if chosen < 0.5 or c == _NOTHING:
            continue
        if c == _HELD:
            plan.held.add(s.key)
            take(s.floor_usage(), plan.free)
        else:
            assert isinstance(c, Option) and c.replicas is not None
            plan.picks[s.key] = Pick(c, c.replicas)
            take(c.usage(c.replicas), plan.free)
    saturation.fill(problem, plan)
    return solution(problem, plan, "exact")


def _build(problem: Problem, free: dict[str, int]) -> _Model:
    columns: list[tuple[Server, Option | str]] = []
    for s in problem.servers:
        columns += [(s, o) for o in s.feasible] + [(s, _HELD)]
        if any(s.floor_usage().values()):
            columns.append((s, _NOTHING))
    accs = sorted(free)
    n = len(columns)
    choose = lil_matrix((len(problem.servers), n))
    usage = lil_matrix((len(accs), n))
    row_of = {s.key: i for i, s in enumerate(problem.servers)}
    cost = np.zeros(n)
    for j, (s, c) in enumerate(columns):
        choose[row_of[s.key], j] = 1.0
        if c == _NOTHING:
            continue
        if c == _HELD:
            used, cost[j] = s.floor_usage(), s.floor_cost()
        else:
            assert isinstance(c, Option) and c.replicas is not None
            used = c.usage(c.replicas)
            cost[j] = c.cost(c.replicas)
        for acc, units in used.items():
            if acc in free:
                usage[accs.index(acc), j] = units
    rows = [LinearConstraint(choose.tocsr(), 1.0, 1.0)]
    if accs:
        rows.append(LinearConstraint(usage.tocsr(), -np.inf,
                                     np.array([free[a] for a in accs], dtype=np.float64)))
    return _Model(columns=columns, cost=cost, rows=rows)


def _run(model: _Model, objective: np.ndarray, upper: np.ndarray | float,
         extra_rows: list[LinearConstraint]) -> np.ndarray | None:
    n = len(model.columns)
    res = milp(c=objective, integrality=np.ones(n),
               bounds=Bounds(np.zeros(n), np.broadcast_to(upper, (n,))),
               constraints=model.rows + extra_rows, options={"time_limit": TIME_LIMIT_S})
    return res.x if res.x is not None and res.status in (0, 1) else None


def _lexicographic(problem: Problem, model: _Model) -> np.ndarray:
    extra: list[LinearConstraint] = []
    for priority, _ in groupby(sorted(s.priority for s in problem.servers)):
        for kinds in ((_HELD, _NOTHING), (_NOTHING,)):  # SLOs missed, then floors dropped
            level = model.mask(kinds, priority)
            if not level.any():
                continue
            x = _run(model, level, 1.0, extra)
            assert x is not None  # all "nothing" (floors dropped) always fits
            extra.append(LinearConstraint(level.reshape(1, -1), -np.inf,
                                          float(np.round(level @ x)) + 0.5))
    x = _run(model, model.cost, 1.0, extra)
    assert x is not None
    return x
