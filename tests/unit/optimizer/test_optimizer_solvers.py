"""The allocation problem and its solvers: cheapest SLO-meeting choice when capacity allows,
priority order when it does not, saturation policies, scale to zero, and properties over
random instances (capacity never exceeded, a reported SLO really met, exact never dearer)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluicegate.optimizer import exact, greedy, samples_dir
from sluicegate.optimizer.config import load_config
from sluicegate.optimizer.inputs import (Accelerator, AcceleratorProfile, ModelLoad, ModelSlo,
                                         OptimizerInput, SaturationPolicy, ServiceClass,
                                         Variant)
from sluicegate.optimizer.problem import Problem, Solution, build_problem
from sluicegate.optimizer.queueing import analyze
from sluicegate.optimizer.synthetic import random_input

SOLVERS = [greedy.solve, exact.solve]
PROFILE = AcceleratorProfile(acc="A100", acc_count=1, alpha=8.0, beta=0.1, gamma=6.0,
                             delta=0.02, max_batch=64)


def _input(loads: dict[str, float], capacity: int | None = None,
           policy: SaturationPolicy = SaturationPolicy.NONE,
           priorities: dict[str, int] | None = None, **variant_fields) -> OptimizerInput:
    """One A100-only variant per model, one class per model (priority from `priorities`)."""
    priorities = priorities or {m: 1 for m in loads}
    classes = tuple(ServiceClass(name=f"class-{m}", priority=priorities[m],
                                 slos=(ModelSlo(model=m, ttft_ms=800, itl_ms=20),))
                    for m in loads)
    variants = tuple(Variant(name=m, namespace="ns", model=m, slo_class_ref=("", ""),
                             profiles=(PROFILE,), **variant_fields) for m in loads)
    return OptimizerInput(
        service_classes=classes,
        accelerators=(Accelerator(name="A100", device="d", cost=40.0, count=capacity),),
        variants=variants, saturation_policy=policy,
        loads=tuple(ModelLoad(model=m, arrival_rps=r, input_tokens=512, output_tokens=128)
                    for m, r in loads.items()))


def _serving(sol: Solution) -> dict[str, tuple[int, bool]]:
    return {a.model: (a.replicas, a.slo_met) for a in sol.allocations if a.serving}


def _check_feasible_and_honest(problem: Problem, sol: Solution) -> None:
    for acc, used in sol.units_used().items():
        cap = problem.capacity.get(acc)
        assert cap is None or used <= cap, (acc, used, cap)
    loads = {s.model: s.load_rps for s in problem.servers}
    options = {(o.variant.key, o.accelerator): o for s in problem.servers for o in s.options}
    for a in sol.allocations:
        if a.serving and a.slo_met and a.replicas:
            o = options[(a.variant, a.accelerator)]
            assert a.slo.met_by(analyze(o.params, loads[a.model] / a.replicas))


@pytest.mark.parametrize("solve", SOLVERS)
def test_samples_are_met_at_the_cheapest_option(solve) -> None:
    problem = build_problem(load_config([str(samples_dir())]))
    sol = solve(problem)
    assert sol.unmet() == ()
    for s in problem.servers:
        cheapest = s.feasible[0]
        cost = sum(a.cost for a in sol.allocations if a.model == s.model)
        assert cost == pytest.approx(cheapest.cost(cheapest.replicas))
    _check_feasible_and_honest(problem, sol)


def test_the_second_variant_of_a_model_takes_the_load_when_the_first_type_is_full() -> None:
    inp = load_config([str(samples_dir())])
    tight = replace(inp, accelerators=tuple(
        replace(a, count=1) if a.name == "A100" else a for a in inp.accelerators))
    sol = greedy.solve(build_problem(tight))
    by_variant = {a.variant: a for a in sol.allocations}
    assert by_variant["llm-inference/llama-8b-a100"].replicas == 0
    l40s = by_variant["llm-inference/llama-8b-l40s"]
    assert l40s.serving and l40s.slo_met and l40s.accelerator == "L40S" and l40s.replicas > 0


@pytest.mark.parametrize("solve", SOLVERS)
def test_scarcity_serves_the_higher_priority_first_and_reports_the_rest(solve) -> None:
    inp = _input({"hi": 60.0, "lo": 60.0}, capacity=4, priorities={"hi": 1, "lo": 10})
    problem = build_problem(inp)
    need = {s.model: s.feasible[0].replicas for s in problem.servers}
    assert need["hi"] <= 4 < need["hi"] + need["lo"]
    sol = solve(problem)
    assert _serving(sol)["hi"] == (need["hi"], True)
    assert _serving(sol)["lo"] == (0, False)
    assert sol.unmet() == ("ns/lo",)
    _check_feasible_and_honest(problem, sol)


def test_no_capacity_at_all_is_reported_not_raised() -> None:
    problem = build_problem(_input({"m": 10.0}, capacity=0))
    for solve in SOLVERS:
        sol = solve(problem)
        assert _serving(sol) == {"m": (0, False)} and sol.unmet() == ("ns/m",)
        assert sol.allocations[0].ttft_ms == float("inf")


@pytest.mark.parametrize(("policy", "expected"), [
    (SaturationPolicy.NONE, {"a": 0, "b": 0, "c": 0}),
    (SaturationPolicy.PRIORITY_EXHAUSTIVE, {"a": 6, "b": 0, "c": 0}),  # a fully, then b
    (SaturationPolicy.PRIORITY_ROUND_ROBIN, {"a": 3, "b": 3, "c": 0}),
    (SaturationPolicy.ROUND_ROBIN, {"a": 2, "b": 2, "c": 2}),
])
def test_saturation_policies_spend_what_is_left(policy, expected) -> None:
    # Each model needs more than the 6 units there are; a and b outrank c.
    inp = _input({"a": 200.0, "b": 200.0, "c": 200.0}, capacity=6, policy=policy,
                 priorities={"a": 1, "b": 1, "c": 5})
    problem = build_problem(inp)
    assert all(s.feasible[0].replicas > 6 for s in problem.servers)
    for solve in SOLVERS:
        sol = solve(problem)
        assert {m: n for m, (n, _) in _serving(sol).items()} == expected
        assert sum(sol.units_used().values()) <= 6


def test_zero_load_scales_to_zero_only_where_allowed() -> None:
    allowed = build_problem(_input({"m": 0.0}, scale_to_zero=True))
    kept = build_problem(_input({"m": 0.0}))
    floor = build_problem(_input({"m": 0.0}, scale_to_zero=True, min_replicas=2))
    assert _serving(greedy.solve(allowed)) == {"m": (0, True)}
    assert _serving(greedy.solve(kept)) == {"m": (1, True)}
    assert _serving(greedy.solve(floor)) == {"m": (2, True)}


def test_max_replicas_too_low_makes_the_option_infeasible() -> None:
    problem = build_problem(_input({"m": 60.0}, max_replicas=1))
    assert problem.servers[0].feasible == ()
    assert _serving(greedy.solve(problem)) == {"m": (0, False)}


def test_unlimited_ignores_accelerator_counts() -> None:
    inp = replace(_input({"m": 60.0}, capacity=1), unlimited=True)
    sol = greedy.solve(build_problem(inp))
    assert _serving(sol)["m"][1] and sol.units_used()["A100"] > 1


@pytest.mark.parametrize(("other_cost", "serving"), [(42.0, "b"), (50.0, "a")])
def test_the_serving_accelerator_is_kept_while_within_the_switch_tolerance(other_cost,
                                                                           serving) -> None:
    # Two variants of one model, equally fast: "a" on A100 (40), "b" on B (other_cost), and
    # "b" serving now. Within 10% it stays; beyond, the model moves to the cheaper A100.
    base = _input({"m": 30.0})
    b_profile = replace(PROFILE, acc="B")
    variants = (replace(base.variants[0], name="a"),
                replace(base.variants[0], name="b", profiles=(b_profile,), current_replicas=2))
    inp = replace(base, variants=variants, accelerators=base.accelerators + (
        Accelerator(name="B", device="d", cost=other_cost),))
    sol = greedy.solve(build_problem(inp))
    chosen = [a for a in sol.allocations if a.replicas]
    assert [a.variant for a in chosen] == [f"ns/{serving}"] and chosen[0].slo_met


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), models=st.integers(1, 8), accs=st.integers(1, 3),
       scarcity=st.floats(0.05, 1.5),
       policy=st.sampled_from(list(SaturationPolicy)))
def test_random_instances_stay_within_capacity_and_report_truthfully(
        seed, models, accs, scarcity, policy) -> None:
    problem = build_problem(random_input(seed, models, accs, scarcity=scarcity, policy=policy))
    g, e = greedy.solve(problem), exact.solve(problem)
    for sol in (g, e):
        _check_feasible_and_honest(problem, sol)
    # The exact solver meets at least as many top-priority SLOs, and when both meet the same
    # set it is never dearer.
    if g.unmet() == e.unmet() and policy is SaturationPolicy.NONE:
        assert e.cost <= g.cost + 1e-6
    top = min(s.priority for s in problem.servers)
    met = [sum(1 for a in sol.allocations if a.serving and a.priority == top and a.slo_met)
           for sol in (g, e)]
    assert met[1] >= met[0]


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.5, 80), factor=st.floats(1.0, 4.0))
def test_more_load_never_costs_less_when_capacity_is_unlimited(rate, factor) -> None:
    low = greedy.solve(build_problem(_input({"m": rate})))
    high = greedy.solve(build_problem(_input({"m": rate * factor})))
    assert high.cost >= low.cost
    assert _serving(high)["m"][0] >= _serving(low)["m"][0]


@settings(max_examples=25, deadline=None)
@given(rate=st.floats(0.5, 80), extra=st.integers(1, 8))
def test_more_replicas_never_break_a_met_slo(rate, extra) -> None:
    problem = build_problem(_input({"m": rate}))
    option = problem.servers[0].feasible[0]
    slo = problem.servers[0].slo
    assert slo.met_by(analyze(option.params, rate / option.replicas))
    assert slo.met_by(analyze(option.params, rate / (option.replicas + extra)))
