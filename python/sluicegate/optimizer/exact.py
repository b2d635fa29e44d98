"""The exact solver: a MILP over (server, option) with one choice or "unserved" per server and
the accelerator capacities as constraints (scipy.optimize.milp, HiGHS). When every SLO fits
one solve minimises cost; otherwise priorities are lexicographic — most servers met at
priority 1, then at 2 given that, … — and cost is minimised last. Shows greedy's gap."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from . import saturation
from .problem import Option, Pick, Problem, Server, Solution, solution, take

TIME_LIMIT_S = 30.0


@dataclass(frozen=True)
class _Model:
    columns: list[tuple[Server, Option | None]]  # None: the server goes unserved
    cost: np.ndarray
    rows: list[LinearConstraint]


def solve(problem: Problem) -> Solution:
    free = problem.limited()
    for s in problem.servers:
        take(s.floor_usage(), free)
    model = _build(problem, free)
    # Fast path: everything met, cheapest.
    x = _run(model, np.zeros_like(model.cost), model.cost, unserved_cap=0.0, extra_rows=[])
    if x is None:
        x = _lexicographic(problem, model)
    picks: dict[str, Pick] = {}
    for (s, o), chosen in zip(model.columns, x):
        if chosen > 0.5 and o is not None:
            assert o.replicas is not None
            picks[s.key] = Pick(o, o.replicas)
            take(s.extra_usage(o, o.replicas), free)
    saturation.fill(problem, picks, free)
    return solution(problem, picks, "exact")


def _build(problem: Problem, free: dict[str, int]) -> _Model:
    columns: list[tuple[Server, Option | None]] = []
    for s in problem.servers:
        columns += [(s, o) for o in s.feasible] + [(s, None)]
    accs = sorted(free)
    n = len(columns)
    choose = lil_matrix((len(problem.servers), n))
    usage = lil_matrix((len(accs), n))
    row_of = {s.key: i for i, s in enumerate(problem.servers)}
    cost = np.zeros(n)
    for j, (s, o) in enumerate(columns):
        choose[row_of[s.key], j] = 1.0
        if o is None:
            continue
        assert o.replicas is not None
        cost[j] = o.cost(o.replicas)
        for acc, units in s.extra_usage(o, o.replicas).items():
            if acc in free:
                usage[accs.index(acc), j] = units
    rows = [LinearConstraint(choose.tocsr(), 1.0, 1.0)]
    if accs:
        rows.append(LinearConstraint(usage.tocsr(), -np.inf,
                                     np.array([max(free[a], 0) for a in accs], dtype=np.float64)))
    return _Model(columns=columns, cost=cost, rows=rows)


def _run(model: _Model, unserved_weight: np.ndarray, objective: np.ndarray,
         unserved_cap: float | None, extra_rows: list[LinearConstraint]) -> np.ndarray | None:
    upper = np.ones(len(model.columns))
    if unserved_cap == 0.0:
        upper = np.array([0.0 if o is None else 1.0 for _, o in model.columns])
    res = milp(c=objective + unserved_weight, integrality=np.ones(len(model.columns)),
               bounds=Bounds(np.zeros(len(model.columns)), upper),
               constraints=model.rows + extra_rows,
               options={"time_limit": TIME_LIMIT_S})
    return res.x if res.x is not None and res.status in (0, 1) else None


def _lexicographic(problem: Problem, model: _Model) -> np.ndarray:
    extra: list[LinearConstraint] = []
    zero = np.zeros(len(model.cost))
    for priority, _ in groupby(sorted(s.priority for s in problem.servers)):
        level = np.array([1.0 if o is None and s.priority == priority else 0.0
                          for s, o in model.columns])
        x = _run(model, level, zero, unserved_cap=None, extra_rows=extra)
        assert x is not None  # all-unserved is always feasible
        extra.append(LinearConstraint(level.reshape(1, -1), -np.inf,
                                      float(np.round(level @ x)) + 0.5))
    x = _run(model, zero, model.cost, unserved_cap=None, extra_rows=extra)
    assert x is not None
    return x
