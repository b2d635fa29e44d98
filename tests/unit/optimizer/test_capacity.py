"""Capacity is a hard constraint: over random instances, with and without minReplicas floors,
neither solver plans more units than exist, a floor is dropped only when it could not fit even
with every lower priority's units, and each model capacity kept from its SLO or floor is
reported as CapacityExceeded (in the allocation and the status condition)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluicegate.optimizer import exact, greedy
from sluicegate.optimizer.actuation import decide, status_patch
from sluicegate.optimizer.inputs import SaturationPolicy
from sluicegate.optimizer.problem import Problem, Solution, build_problem, fits
from sluicegate.optimizer.synthetic import random_input

INSTANCES = 1000


def _units(sol: Solution, keep) -> dict[str, int]:
    used: dict[str, int] = {}
    for a in sol.allocations:
        if a.units and keep(a):
            used[a.accelerator] = used.get(a.accelerator, 0) + a.units
    return used


def _check(problem: Problem, sol: Solution) -> None:
    limited = problem.limited()
    used = sol.units_used()
    for acc, n in used.items():
        assert acc not in limited or n <= limited[acc], (sol.solver, acc, n, limited[acc])
    free = {a: c - used.get(a, 0) for a, c in limited.items()}
    by_model = {}
    for a in sol.allocations:
        by_model.setdefault(a.model, []).append(a)
    for s in problem.servers:
        allocs = by_model[s.model]
        floor = s.floor_usage()
        kept = all(a.replicas >= v.min_replicas for a, v in zip(allocs, s.variants))
        serving = next(a for a in allocs if a.serving)
        if not kept:
            # Dropped only when it fits neither what is free nor that plus every lower
            # priority's units; and reported.
            lower = _units(sol, lambda a: a.priority > s.priority)
            room = {a: free[a] + lower.get(a, 0) for a in free}
            assert not fits(floor, room), (sol.solver, s.key, floor, room)
            assert serving.capacity_exceeded, (sol.solver, s.key)
        if s.load_rps > 0 and s.feasible and not serving.slo_met:
            assert serving.capacity_exceeded, (sol.solver, s.key)


@pytest.mark.timeout(900)  # 1,000 instances, each sized and solved twice
@settings(max_examples=INSTANCES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 1_000_000), models=st.integers(1, 6), accs=st.integers(1, 3),
       scarcity=st.floats(0.02, 1.2), floors=st.booleans(),
       policy=st.sampled_from(list(SaturationPolicy)))
def test_no_plan_exceeds_capacity(seed, models, accs, scarcity, floors, policy) -> None:
    problem = build_problem(random_input(seed, models, accs, scarcity=scarcity, policy=policy,
                                         floors=floors))
    for solve in (greedy.solve, exact.solve):
        _check(problem, solve(problem))


@pytest.mark.parametrize("solve", [greedy.solve, exact.solve])
def test_floors_beyond_capacity_go_to_the_higher_priority_and_the_rest_are_reported(
        solve) -> None:
    inp = random_input(3, models=3, accelerators=1, scarcity=0.01, floors=False)
    # One type, 4 units; three models each asking for 3 as a floor: only the top one fits.
    acc = inp.accelerators[0]
    inp = replace(inp, accelerators=(replace(acc, count=4),), variants=tuple(
        replace(v, min_replicas=3, profiles=(replace(v.profiles[0], acc_count=1),))
        for v in inp.variants))
    problem = build_problem(inp)
    sol = solve(problem)
    assert sol.units_used().get(acc.name, 0) <= 4
    top = min(problem.servers, key=lambda s: (s.priority, s.key))
    got = {a.model: a for a in sol.allocations}
    assert got[top.model].replicas >= 3
    exceeded = sol.capacity_exceeded()
    dropped = [m for m, a in got.items() if a.replicas < 3]
    assert dropped and all(f"bench/{m}" in exceeded for m in dropped)
    d = next(d for d in decide(sol, inp.variants, now=0.0) if d.allocation.model == dropped[0])
    conditions = {c["type"]: c for c in status_patch(
        d, now=datetime(2026, 1, 1, tzinfo=timezone.utc))["status"]["conditions"]}
    assert conditions["CapacityExceeded"]["status"] == "True"
    assert conditions["OptimizationReady"]["reason"] == "CapacityExceeded"
