"""A solver's plan as allocations, one per variant: replicas, units, cost, the TTFT/ITL the
queueing model predicts at the per-replica load, and why — including CapacityExceeded when
capacity (not the model's own limits) kept a model from its SLO or its minReplicas floors.
`solution` refuses a plan that uses more units than exist."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .problem import Pick, Plan, Problem, Server, replica_cost
from .sizing import SloTarget, predict


@dataclass(frozen=True)
class Allocation:
    variant: str  # namespace/name of the VariantAutoscaling
    model: str
    service_class: str
    priority: int
    accelerator: str  # "" when nothing was allocated
    replicas: int
    units: int  # accelerators used in total
    cost: float  # cents per hour
    serving: bool  # carries the model's load (the other variants sit at minReplicas)
    slo: SloTarget
    slo_met: bool  # of the model, as predicted for the serving variant
    ttft_ms: float | None  # predicted; inf when there is load and no replica
    itl_ms: float | None
    current_replicas: int | None
    reason: str
    # Why capacity kept the model from its SLO or its minReplicas ("" when it did not):
    # reported as the CapacityExceeded condition.
    capacity_exceeded: str = ""
    max_batch: int = 0  # of the accelerator profile allocated (or the variant's first)
    replica_cost: float = 0.0  # cents/hour per replica on that accelerator


@dataclass(frozen=True)
class Solution:
    solver: str
    allocations: tuple[Allocation, ...]

    @property
    def cost(self) -> float:
        return sum(a.cost for a in self.allocations)

    def units_used(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for a in self.allocations:
            if a.units:
                used[a.accelerator] = used.get(a.accelerator, 0) + a.units
        return used

    def capacity_exceeded(self) -> dict[str, str]:
        """Models (namespace/model) that capacity kept from their SLO or floor, and why."""
        return {f"{a.variant.split('/')[0]}/{a.model}": a.capacity_exceeded
                for a in self.allocations if a.serving and a.capacity_exceeded}

    def unmet(self) -> tuple[str, ...]:
        """Models (namespace/model) whose SLO the allocation does not meet."""
        return tuple(sorted({f"{a.variant.split('/')[0]}/{a.model}" for a in self.allocations
                             if a.serving and not a.slo_met}))


def solution(problem: Problem, plan: Plan, solver: str) -> Solution:
    allocations = []
    for s in problem.servers:
        allocations += _allocations(problem, s, plan)
    sol = Solution(solver=solver, allocations=tuple(allocations))
    over = {a: (n, problem.capacity[a]) for a, n in sol.units_used().items()
            if problem.capacity.get(a) is not None and n > problem.capacity[a]}
    if over:  # a solver bug: never hand out a plan the cluster cannot run
        raise AssertionError(f"{solver} planned more units than exist: "
                             + ", ".join(f"{a} {n} of {c}" for a, (n, c) in sorted(over.items())))
    return sol


def _allocations(problem: Problem, s: Server, plan: Plan) -> list[Allocation]:
    inp = problem.input
    pick = plan.picks.get(s.key, Pick(None, 0))
    floors = pick.option is not None or s.key in plan.held
    exceeded = _capacity_exceeded(problem, s, pick, floors)
    if pick.option is None:  # nothing picked: every variant at its floor, the first serving
        first = s.variants[0]
        pick = Pick(next(o for o in s.options if o.variant is first
                         and o.accelerator == first.profiles[0].acc),
                    first.min_replicas if floors else 0)
    assert pick.option is not None
    serving = pick.option.variant
    out = []
    for v in s.variants:
        common: dict[str, Any] = dict(
            variant=v.key, model=s.model, service_class=s.service_class, priority=s.priority,
            slo=s.slo, current_replicas=v.current_replicas)
        if v is not serving:
            profile = v.profiles[0]
            n = v.min_replicas if floors else 0
            cost = n * replica_cost(inp, v, profile.acc, profile.acc_count)
            why = (f"minReplicas={n}; {serving.name} serves {s.model}" if floors else
                   f"minReplicas={v.min_replicas} not granted: {exceeded}")
            out.append(Allocation(**common, accelerator=profile.acc if n else "", replicas=n,
                                  units=n * profile.acc_count, cost=cost, serving=False,
                                  slo_met=True, ttft_ms=None, itl_ms=None, reason=why,
                                  capacity_exceeded="" if floors else exceeded,
                                  max_batch=profile.max_batch,
                                  replica_cost=replica_cost(inp, v, profile.acc,
                                                             profile.acc_count)))
            continue
        out.append(_serving_allocation(s, pick, common, exceeded))
    return out


def _capacity_exceeded(problem: Problem, s: Server, pick: Pick, floors: bool) -> str:
    """Why capacity (not the model's own limits) left `s` short, or ""."""
    limited = problem.limited()
    if not floors and any(n for n in s.floor_usage().values()):
        need = ", ".join(f"{n} {a}" for a, n in sorted(s.floor_usage().items()))
        return (f"the minReplicas floors ({need}) do not fit the capacity left after "
                f"higher priorities (cluster {_capacity_text(limited)})")
    if s.load_rps > 0 and s.feasible and (pick.option is None or pick.option.replicas is None
                                          or pick.replicas < pick.option.replicas):
        cheapest = s.feasible[0]
        return (f"no SLO-meeting option fits the capacity left (cheapest: "
                f"{cheapest.replicas} x {cheapest.units} {cheapest.accelerator}; cluster "
                f"{_capacity_text(limited)})")
    return ""


def _capacity_text(limited: Mapping[str, int]) -> str:
    return ", ".join(f"{a}={n}" for a, n in sorted(limited.items())) or "unlimited"


def _serving_allocation(s: Server, pick: Pick, common: dict, exceeded: str) -> Allocation:
    o, n = pick.option, pick.replicas
    assert o is not None
    if n == 0:
        idle = s.load_rps == 0
        why = ("no load, scaled to zero" if idle and not exceeded else
               f"no allocation: {exceeded or _no_option(s)}")
        return Allocation(**common, accelerator="", replicas=0, units=0, cost=0.0,
                          serving=True, slo_met=idle, ttft_ms=0.0 if idle else float("inf"),
                          itl_ms=0.0 if idle else float("inf"), reason=why,
                          capacity_exceeded=exceeded, max_batch=o.params.max_batch,
                          replica_cost=o.replica_cost)
    met, ttft, itl = predict(o.params, s.slo, s.load_rps / n)  # only for what was picked
    if s.load_rps == 0:
        why = f"no load; minReplicas={n}" if n > 1 or o.variant.min_replicas else \
            "no load; scale to zero not allowed"
    elif o.replicas is not None and n >= o.replicas:
        why = f"cheapest option meeting the SLO ({o.max_rate_rps:.3g} req/s per replica)"
    elif exceeded:
        why = f"best effort: {n} of {o.replicas} replicas within capacity"
    else:
        why = f"minReplicas={n}; {_no_option(s)}"
    return Allocation(**common, accelerator=o.accelerator, replicas=n, units=n * o.units,
                      cost=n * o.replica_cost, serving=True, slo_met=met, ttft_ms=ttft,
                      itl_ms=itl, reason=why, capacity_exceeded=exceeded,
                      max_batch=o.params.max_batch, replica_cost=o.replica_cost)


def _no_option(s: Server) -> str:
    return ("no accelerator option meets the SLO within maxReplicas" if not s.feasible else
            "no accelerator option meets the SLO within capacity")
