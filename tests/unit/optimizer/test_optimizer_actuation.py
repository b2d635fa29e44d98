"""Acting on a solution: hysteresis, the VariantAutoscaling status written, and the gauges
HPA/KEDA read under the workload-variant-autoscaler's metric names."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sluicegate.optimizer import greedy, samples_dir
from sluicegate.optimizer.actuation import (MetricsExporter, Stabilizer, decide, status_patch,
                                            variant_objects)
from sluicegate.optimizer.config import load_config
from sluicegate.optimizer.problem import build_problem


@pytest.fixture(scope="module")
def solved():
    problem = build_problem(load_config([str(samples_dir())]))
    return problem, greedy.solve(problem)


def test_stabilizer_scales_up_at_once_and_down_after_the_window() -> None:
    s = Stabilizer(window_s=60)
    assert s.update("v", 0, 2) == 2
    assert s.update("v", 10, 5) == 5  # up: immediate
    assert s.update("v", 20, 3) == 5  # down: held while 5 is in the window
    assert s.update("v", 69, 3) == 5
    assert s.update("v", 71, 3) == 3  # 5 (t=10) left the window
    assert s.update("v", 80, 4) == 4


def test_stabilizer_with_no_window_follows_every_recommendation() -> None:
    s = Stabilizer(window_s=0)
    assert [s.update("v", t, n) for t, n in enumerate([3, 1, 4, 1, 5])] == [3, 1, 4, 1, 5]


def test_decisions_hold_a_scale_down_and_say_why(solved) -> None:
    problem, sol = solved
    stab = Stabilizer(window_s=300)
    first = {d.variant.key: d for d in decide(sol, problem.input.variants, 0.0, stab)}
    key = "llm-inference/llama-8b-a100"
    # A later solve wanting fewer replicas is held at the earlier count.
    fewer = sol.__class__(sol.solver, tuple(
        a.__class__(**{**a.__dict__, "replicas": 1}) if a.variant == key else a
        for a in sol.allocations))
    later = {d.variant.key: d for d in decide(fewer, problem.input.variants, 30.0, stab)}
    assert later[key].desired_replicas == first[key].desired_replicas > 1
    assert "stabilization window" in later[key].reason


def test_status_patch_has_the_crd_fields(solved) -> None:
    problem, sol = solved
    d = next(d for d in decide(sol, problem.input.variants, 0.0)
             if d.variant.name == "llama-70b")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    status = status_patch(d, now)["status"]
    assert status["desiredOptimizedAlloc"] == {
        "accelerator": d.allocation.accelerator, "numReplicas": d.desired_replicas,
        "lastRunTime": "2026-01-02T03:04:05Z", "reason": d.reason}
    assert status["actuation"] == {"applied": False}
    assert status["conditions"][0]["type"] == "OptimizationReady"
    assert status["conditions"][0]["status"] == "True"
    objs = variant_objects([d], now)
    assert objs[0]["metadata"] == {"name": "llama-70b", "namespace": "llm-inference"}
    assert objs[0]["apiVersion"] == "llmd.ai/v1alpha1"


def test_exporter_publishes_desired_replicas_under_the_autoscaler_names(solved) -> None:
    problem, sol = solved
    decisions = decide(sol, problem.input.variants, 0.0)
    exporter = MetricsExporter()
    exporter.update(sol, decisions)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(exporter.render().decode())
               for s in fam.samples}
    for d in decisions:
        labels = {"variant_name": d.variant.name, "namespace": d.variant.namespace,
                  "accelerator_type": d.allocation.accelerator or d.variant.profiles[0].acc,
                  "target_name": d.target.name, "target_kind": d.target.kind}
        key = tuple(sorted(labels.items()))
        assert samples[("wva_desired_replicas", key)] == d.desired_replicas
        if d.allocation.current_replicas is not None:
            assert samples[("wva_current_replicas", key)] == d.allocation.current_replicas
    llama = next(d for d in decisions if d.variant.name == "llama-8b-a100")
    ttft = [v for (name, labels), v in samples.items()
            if name == "wva_predicted_ttft_seconds" and ("variant_name", "llama-8b-a100") in labels]
    assert ttft == [pytest.approx(llama.allocation.ttft_ms / 1000)]
    assert samples[("sluicegate_optimizer_cost_cents_per_hour", (("solver", "greedy"),))] == \
        pytest.approx(sol.cost)


def test_exporter_drops_variants_that_are_gone(solved) -> None:
    problem, sol = solved
    exporter = MetricsExporter()
    exporter.update(sol, decide(sol, problem.input.variants, 0.0))
    exporter.update(sol, [])
    assert b'wva_desired_replicas{' not in exporter.render()


def test_condition_time_moves_only_on_a_transition(solved) -> None:
    problem, sol = solved
    d = next(d for d in decide(sol, problem.input.variants, 0.0)
             if d.variant.name == "llama-70b")
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    same = replace(d, variant=replace(d.variant, ready_condition=("True", "2025-12-01T00:00:00Z")))
    flipped = replace(d, variant=replace(d.variant, ready_condition=("False",
                                                                     "2025-12-01T00:00:00Z")))
    assert status_patch(same, now)["status"]["conditions"][0]["lastTransitionTime"] == \
        "2025-12-01T00:00:00Z"
    assert status_patch(flipped, now)["status"]["conditions"][0]["lastTransitionTime"] == \
        "2026-01-02T03:04:05Z"
