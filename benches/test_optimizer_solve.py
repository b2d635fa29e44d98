"""Optimizer solve time and quality: greedy and the exact MILP against a brute-force baseline
on small instances (same answers, time ratios), on 100 models × 6 accelerator types (issue
targets: greedy ≤ 50 ms, exact ≤ 5 s), greedy's cost gap over 200 random instances, and
sizing + solve of 100 random problems against sizing one option at a time in numpy (the naive
way), and sizing alone with the Rust kernel against the numpy reference it replaced.

Sizing (the queueing model's max rate per option) happens when the problem is built and is
timed separately: it is the same work for every solver."""

from __future__ import annotations

import itertools
import os
import statistics
import time

import pytest

from sluicegate.optimizer import exact, greedy
from sluicegate.optimizer.problem import Pick, Plan, Problem, build_problem, fits, take
from sluicegate.optimizer.solution import solution
from sluicegate.optimizer.sizing import max_rate_rps, max_rates_rps
from sluicegate.optimizer.synthetic import random_input

QUICK = os.environ.get("SLUICEGATE_BENCH_QUICK", "") not in ("", "0", "false")
GAP_INSTANCES = 40 if QUICK else 200


def brute_force(problem: Problem):
    """Every combination of one option (or none) per server: most SLOs met by priority, then
    cheapest — the answer the exact solver must match, found the slow way (instances without
    minReplicas floors, so "none" takes nothing)."""
    free0 = problem.limited()
    priorities = sorted({s.priority for s in problem.servers})
    best_key, best = None, None
    for combo in itertools.product(*[list(s.feasible) + [None] for s in problem.servers]):
        free = dict(free0)
        ok = True
        for o in combo:
            if o is not None:
                if not fits(o.usage(o.replicas), free):
                    ok = False
                    break
                take(o.usage(o.replicas), free)
        if not ok:
            continue
        unserved = tuple(sum(1 for s, o in zip(problem.servers, combo)
                             if o is None and s.priority == p) for p in priorities)
        cost = sum(o.cost(o.replicas) for o in combo if o is not None)
        if best_key is None or (unserved, cost) < best_key:
            best_key, best = (unserved, cost), combo
    picks = {s.key: Pick(o, o.replicas) for s, o in zip(problem.servers, best) if o}
    return solution(problem, Plan(picks=picks, held=set(), free={}), "brute-force")


def _median_s(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def test_small_instances_match_brute_force(benchmark) -> None:
    problem = build_problem(random_input(7, models=8, accelerators=3, scarcity=0.5))
    slow = brute_force(problem)
    assert exact.solve(problem).cost == pytest.approx(slow.cost)
    assert exact.solve(problem).unmet() == slow.unmet()
    brute_s = _median_s(lambda: brute_force(problem), 3)
    exact_s = _median_s(lambda: exact.solve(problem), 5)
    benchmark.pedantic(greedy.solve, args=(problem,), rounds=50, iterations=1)
    greedy_s = benchmark.stats.stats.median
    g = greedy.solve(problem)
    benchmark.extra_info.update(
        brute_force_ms=brute_s * 1e3, exact_ms=exact_s * 1e3, greedy_ms=greedy_s * 1e3,
        brute_over_exact=brute_s / exact_s, brute_over_greedy=brute_s / greedy_s,
        greedy_cost_over_optimal=g.cost / slow.cost if slow.cost else 1.0)
    print(f"\n8 models x 3 types: brute force {brute_s * 1e3:.1f} ms, exact "
          f"{exact_s * 1e3:.2f} ms ({brute_s / exact_s:.0f}x faster), greedy "
          f"{greedy_s * 1e3:.3f} ms ({brute_s / greedy_s:.0f}x faster); greedy cost / optimal "
          f"{benchmark.extra_info['greedy_cost_over_optimal']:.3f}")


def test_hundred_models_six_types(benchmark) -> None:
    started = time.perf_counter()
    problem = build_problem(random_input(11, models=100, accelerators=6, scarcity=0.8))
    sizing_s = time.perf_counter() - started
    exact_s = _median_s(lambda: exact.solve(problem), 3)
    benchmark.pedantic(greedy.solve, args=(problem,), rounds=30, iterations=1)
    greedy_s = benchmark.stats.stats.median
    g, e = greedy.solve(problem), exact.solve(problem)
    benchmark.extra_info.update(sizing_s=sizing_s, greedy_ms=greedy_s * 1e3,
                                exact_ms=exact_s * 1e3, exact_over_greedy=exact_s / greedy_s,
                                greedy_cost_over_exact=g.cost / e.cost,
                                unmet_greedy=len(g.unmet()), unmet_exact=len(e.unmet()))
    print(f"\n100 models x 6 types: sizing {sizing_s:.2f} s; greedy {greedy_s * 1e3:.2f} ms "
          f"(target 50), exact {exact_s * 1e3:.1f} ms (target 5000), exact/greedy time "
          f"{exact_s / greedy_s:.1f}x; cost greedy/exact {g.cost / e.cost:.3f}; SLOs unmet "
          f"greedy {len(g.unmet())} exact {len(e.unmet())}")


def test_greedy_gap_over_random_instances(benchmark) -> None:
    gaps, fewer_met, same_met = [], 0, 0

    def run() -> None:
        nonlocal fewer_met, same_met
        for seed in range(GAP_INSTANCES):
            models = 2 + seed % 19  # 2..20
            accs = 1 + seed % 4  # 1..4
            problem = build_problem(random_input(1000 + seed, models, accs,
                                                 scarcity=0.3 + (seed % 7) / 7))
            g, e = greedy.solve(problem), exact.solve(problem)
            for sol in (g, e):
                for acc, used in sol.units_used().items():
                    cap = problem.capacity[acc]
                    assert cap is None or used <= cap
            if len(g.unmet()) > len(e.unmet()):
                fewer_met += 1
            elif g.unmet() == e.unmet():
                same_met += 1
                gaps.append(g.cost / e.cost - 1 if e.cost else 0.0)

    benchmark.pedantic(run, rounds=1, iterations=1)
    q = statistics.quantiles(gaps, n=20) if len(gaps) > 1 else [0.0] * 19
    benchmark.extra_info.update(instances=GAP_INSTANCES, same_slos_met=same_met,
                                greedy_met_fewer=fewer_met, gap_median=q[9], gap_p95=q[18],
                                gap_max=max(gaps, default=0.0),
                                greedy_optimal_share=sum(1 for x in gaps if x < 1e-9) /
                                max(len(gaps), 1))
    info = benchmark.extra_info
    print(f"\n{GAP_INSTANCES} instances (2-20 models x 1-4 types): same SLOs met in {same_met}, "
          f"greedy met fewer in {fewer_met}; where the same, greedy optimal in "
          f"{info['greedy_optimal_share']:.0%}, cost gap median {q[9]:.1%}, p95 {q[18]:.1%}, "
          f"max {info['gap_max']:.1%}")


def _hundred_problems():
    """1-20 models x 1-4 accelerator types, varied scarcity: the shapes of issue 16's set."""
    return [random_input(1000 + seed, 1 + seed % 20, 1 + seed % 4,
                         scarcity=0.3 + (seed % 7) / 7) for seed in range(100)]


def test_sizing_and_solve_hundred_problems_against_one_option_at_a_time(benchmark) -> None:
    inputs = _hundred_problems()
    problems = [build_problem(inp) for inp in inputs]
    jobs = [(o.params, s.slo) for p in problems for s in p.servers if s.load_rps > 0
            for o in s.options]
    # The same rates either way (sizing.max_rates_rps is tested equal to max_rate_rps).
    assert [o.max_rate_rps for p in problems for s in p.servers if s.load_rps > 0
            for o in s.options] == [max_rate_rps(params, slo) for params, slo in jobs]

    def ours() -> None:
        for inp in inputs:
            greedy.solve(build_problem(inp))

    def naive() -> None:  # every option sized alone by the numpy model, then the same solves
        for params, slo in jobs:
            max_rate_rps(params, slo, kernel="numpy")
        for p in problems:
            greedy.solve(p)

    rounds = 1 if QUICK else 3
    naive_s = min(_median_s(naive, 1) for _ in range(rounds))
    benchmark.pedantic(ours, rounds=rounds, iterations=1)
    ours_s = benchmark.stats.stats.min
    benchmark.extra_info.update(problems=len(inputs), options=len(jobs), ours_s=ours_s,
                                naive_s=naive_s, naive_over_ours=naive_s / ours_s)
    print(f"\n100 problems ({len(jobs)} options with load): sizing + greedy solve "
          f"{ours_s * 1e3:.0f} ms, one option at a time in numpy {naive_s * 1e3:.0f} ms "
          f"({naive_s / ours_s:.2f}x)")


def test_sizing_rust_kernel_against_numpy_reference(benchmark) -> None:
    """Sizing only (what build_problem does per problem: all its loaded options in one
    max_rates_rps call), the Rust kernel against the numpy implementation, same run."""
    problems = [build_problem(inp) for inp in _hundred_problems()]
    per_problem = [[(o.params, s.slo) for s in p.servers if s.load_rps > 0 for o in s.options]
                   for p in problems]
    options = sum(len(jobs) for jobs in per_problem)

    def size(kernel: str) -> list[list[float]]:
        return [max_rates_rps(jobs, kernel=kernel) for jobs in per_problem]

    fast, slow = size("rust"), size("numpy")
    for f_rates, s_rates in zip(fast, slow):
        assert f_rates == pytest.approx(s_rates, rel=1e-9, abs=0.0)
    rounds = 1 if QUICK else 3
    numpy_s = min(_median_s(lambda: size("numpy"), 1) for _ in range(rounds))
    benchmark.pedantic(size, args=("rust",), rounds=max(rounds, 5), iterations=1)
    rust_s = benchmark.stats.stats.min
    benchmark.extra_info.update(problems=len(problems), options=options, rust_s=rust_s,
                                numpy_s=numpy_s, numpy_over_rust=numpy_s / rust_s)
    print(f"\nsizing 100 problems ({options} options with load): Rust kernel "
          f"{rust_s * 1e3:.0f} ms, numpy reference {numpy_s * 1e3:.0f} ms "
          f"({numpy_s / rust_s:.1f}x)")
