"""The allocation problem both solvers share. A *server* is one model in one namespace with the
variants (VariantAutoscalings) that can serve it; an *option* is one variant on one of its
accelerator profiles with the replicas that carry the model's load within its SLO. A solver
picks at most one option per server within capacity; a server left without one keeps its
variants' minReplicas floors only while they fit, granted by priority (the rest are reported
as CapacityExceeded). `solution` turns picks into allocations with TTFT/ITL predicted by the
queueing model at the per-replica load, and refuses a plan that uses more units than exist."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sluicegate.errors import ConfigError

from .inputs import DEFAULT_MODEL, AcceleratorProfile, ModelLoad, OptimizerInput, ServiceClass, Variant
from .queueing import ServerParams, analyze
from .sizing import SloTarget, max_rates_rps, replicas_needed


@dataclass(frozen=True)
class Option:
    variant: Variant
    accelerator: str
    units: int  # accelerator units per replica
    replica_cost: float  # cents/hour per replica
    params: ServerParams
    max_rate_rps: float  # per replica within the SLO
    replicas: int | None  # meeting the SLO; None when no count within maxReplicas does
    # Units and cost of the server's other variants held at their minReplicas.
    base_usage: Mapping[str, int] = field(default_factory=dict)
    base_cost: float = 0.0

    def usage(self, replicas: int) -> dict[str, int]:
        used = dict(self.base_usage)
        if replicas:
            used[self.accelerator] = used.get(self.accelerator, 0) + replicas * self.units
        return used

    def cost(self, replicas: int) -> float:
        return self.base_cost + replicas * self.replica_cost


@dataclass(frozen=True)
class Server:
    key: str  # namespace/model
    model: str
    variants: tuple[Variant, ...]
    service_class: str
    priority: int
    slo: SloTarget
    load: ModelLoad | None
    options: tuple[Option, ...]  # SLO-meeting ones first, cheapest first

    @property
    def load_rps(self) -> float:
        return self.load.arrival_rps if self.load else 0.0

    @property
    def feasible(self) -> tuple[Option, ...]:
        return tuple(o for o in self.options if o.replicas is not None)

    def floor_usage(self) -> dict[str, int]:
        """Units every variant at its minReplicas takes: held whatever a solver picks."""
        used: dict[str, int] = {}
        for v in self.variants:
            p = v.profiles[0]
            if v.min_replicas:
                used[p.acc] = used.get(p.acc, 0) + v.min_replicas * p.acc_count
        return used

    def floor_cost(self) -> float:
        """Cents/hour of every variant at its minReplicas (on its first profile)."""
        return sum(v.min_replicas * next(o.replica_cost for o in self.options
                                         if o.variant is v and o.accelerator == v.profiles[0].acc)
                   for v in self.variants if v.min_replicas)

    def extra_usage(self, option: Option, replicas: int, floor_held: bool = True
                    ) -> dict[str, int]:
        """Units `replicas` of `option` take beyond what the server holds already: its floor
        when `floor_held` (negative where the option moves a variant's minReplicas to another
        accelerator type), nothing otherwise."""
        used = option.usage(replicas)
        if floor_held:
            for acc, n in self.floor_usage().items():
                used[acc] = used.get(acc, 0) - n
        return {a: n for a, n in used.items() if n}


@dataclass(frozen=True)
class Problem:
    servers: tuple[Server, ...]
    capacity: Mapping[str, int | None]  # accelerator units; None = not limited
    input: OptimizerInput

    def limited(self) -> dict[str, int]:
        return {a: c for a, c in self.capacity.items() if c is not None}


@dataclass(frozen=True)
class Pick:
    """A solver's choice for one server: `replicas` of `option` (None: nothing allocated)."""

    option: Option | None
    replicas: int


@dataclass
class Plan:
    """What a solver decided: an option per served server, the floors held for servers left
    unserved, and the units still free (limited accelerator types only)."""

    picks: dict[str, Pick]
    held: set[str]  # unserved servers whose minReplicas floors fit and are kept
    free: dict[str, int]


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


def build_problem(inp: OptimizerInput) -> Problem:
    groups: dict[tuple[str, str], list[Variant]] = {}
    for v in inp.variants:
        groups.setdefault((v.namespace, v.model), []).append(v)
    skeletons = [_skeleton(inp, ns, model, vs) for (ns, model), vs in groups.items()]
    # Size every option with load in one batched bisection (sizing is most of the work).
    jobs = [(s, v, p, _params(s, v, p)) for s in skeletons for v in s.variants
            for p in v.profiles]
    loaded = [(params, s.slo) for s, _, _, params in jobs if s.load_rps > 0]
    rates = iter(max_rates_rps(loaded))
    options: dict[str, list[Option]] = {s.key: [] for s in skeletons}
    for s, v, p, params in jobs:
        rate = next(rates) if s.load_rps > 0 else 0.0
        options[s.key].append(_option(inp, s, v, p, params, rate))
    servers = tuple(_with_options(inp, s, options[s.key]) for s in skeletons)
    capacity: dict[str, int | None] = {a.name: (None if inp.unlimited else a.count)
                                       for a in inp.accelerators}
    return Problem(servers=servers, capacity=capacity, input=inp)


def fits(usage: Mapping[str, int], free: Mapping[str, int]) -> bool:
    return all(n <= free[a] for a, n in usage.items() if a in free)


def take(usage: Mapping[str, int], free: dict[str, int]) -> None:
    for a, n in usage.items():
        if a in free:
            free[a] -= n


def hold_floors(servers: Iterable[Server], plan: Plan) -> None:
    """Keep the minReplicas floors of the unserved `servers` (in the order given: priority
    first) while they fit; a floor that does not fit is dropped whole, so no plan holds
    units that do not exist."""
    for s in servers:
        floor = s.floor_usage()
        if s.key not in plan.picks and s.key not in plan.held and fits(floor, plan.free):
            take(floor, plan.free)
            plan.held.add(s.key)


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
            cost = n * _replica_cost(inp, v, profile.acc, profile.acc_count)
            why = (f"minReplicas={n}; {serving.name} serves {s.model}" if floors else
                   f"minReplicas={v.min_replicas} not granted: {exceeded}")
            out.append(Allocation(**common, accelerator=profile.acc if n else "", replicas=n,
                                  units=n * profile.acc_count, cost=cost, serving=False,
                                  slo_met=True, ttft_ms=None, itl_ms=None, reason=why,
                                  capacity_exceeded="" if floors else exceeded,
                                  max_batch=profile.max_batch,
                                  replica_cost=_replica_cost(inp, v, profile.acc,
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
    m = analyze(o.params, s.load_rps / n)  # only for what was picked
    met = s.slo.met_by(m)
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
                      cost=n * o.replica_cost, serving=True, slo_met=met, ttft_ms=m.ttft_ms,
                      itl_ms=m.itl_ms, reason=why, capacity_exceeded=exceeded,
                      max_batch=o.params.max_batch, replica_cost=o.replica_cost)


def _no_option(s: Server) -> str:
    return ("no accelerator option meets the SLO within maxReplicas" if not s.feasible else
            "no accelerator option meets the SLO within capacity")


def resolve_class(inp: OptimizerInput, v: Variant) -> tuple[ServiceClass, str]:
    """The service class and the model name whose SLO applies to `v`: the class its
    sloClassRef names (by ConfigMap key or class name), else the highest-priority class
    listing the model, else the class listing default/default (as the autoscaler does)."""
    name, key = (x.lower() for x in v.slo_class_ref)
    listing = sorted((c for c in inp.service_classes if c.slo_for(v.model)),
                     key=lambda c: c.priority)
    for c in listing:
        if key and c.key.lower() == key:
            return c, v.model
    for c in listing:
        if c.name.lower() in (name, key):
            return c, v.model
    if listing:
        return listing[0], v.model
    fallback = sorted((c for c in inp.service_classes if c.slo_for(DEFAULT_MODEL)),
                      key=lambda c: c.priority)
    if fallback:
        return fallback[0], DEFAULT_MODEL
    raise ConfigError(f"VariantAutoscaling {v.key}: spec.modelID={v.model!r} has no SLO in "
                      f"any service class (nor {DEFAULT_MODEL})")


def _skeleton(inp: OptimizerInput, namespace: str, model: str, variants: list[Variant]
              ) -> Server:
    resolved = sorted((resolve_class(inp, v) for v in variants), key=lambda r: r[0].priority)
    cls, slo_model = resolved[0]
    model_slo = cls.slo_for(slo_model)
    assert model_slo is not None
    slo = SloTarget(ttft_ms=model_slo.ttft_ms, itl_ms=model_slo.itl_ms,
                    min_served_fraction=inp.min_served_fraction)
    load = inp.load_of(model, namespace)
    key = f"{namespace}/{model}"
    return Server(key=key, model=model, variants=tuple(variants), service_class=cls.name,
                  priority=cls.priority, slo=slo, load=load, options=())


def _with_options(inp: OptimizerInput, s: Server, options: list[Option]) -> Server:
    options.sort(key=lambda o: (o.replicas is None, o.cost(o.replicas or 0),
                                o.replica_cost / max(o.max_rate_rps, 1e-300)))
    return replace(s, options=tuple(_sticky(options, inp.switch_tolerance)))


def _sticky(options: list[Option], tolerance: float) -> list[Option]:
    """The option serving now goes first while it costs at most `tolerance` more than the
    cheapest: moving a model to another accelerator type restarts its servers, so a small
    saving is not worth it (and near-equal costs must not flip it back and forth)."""
    feasible = [o for o in options if o.replicas is not None]
    current = [o for o in feasible if _is_current(o)]
    if not feasible or not current or current[0] is feasible[0]:
        return options
    keep = current[0]
    assert keep.replicas is not None and feasible[0].replicas is not None
    if keep.cost(keep.replicas) > (1 + tolerance) * feasible[0].cost(feasible[0].replicas):
        return options
    return [keep] + [o for o in options if o is not keep]


def _is_current(o: Option) -> bool:
    v = o.variant
    if not v.current_replicas:
        return False
    return len(v.profiles) == 1 or o.accelerator == v.current_accelerator


def _params(s: Server, v: Variant, p: AcceleratorProfile) -> ServerParams:
    load = s.load
    return ServerParams(alpha=p.alpha, beta=p.beta, gamma=p.gamma, delta=p.delta,
                        max_batch=p.max_batch,
                        max_queue=int(round(v.max_queue_per_batch * p.max_batch)),
                        input_tokens=load.input_tokens if load else 0.0,
                        output_tokens=load.output_tokens if load else 1.0)


def _option(inp: OptimizerInput, s: Server, v: Variant, p: AcceleratorProfile,
            params: ServerParams, rate: float) -> Option:
    """`rate`: the most req/s one replica carries within the SLO (0 without load)."""
    replicas = replicas_needed(s.load_rps, rate, min_replicas=v.min_replicas,
                               max_replicas=v.max_replicas,
                               scale_to_zero=inp.scale_to_zero_for(v))
    base_usage: dict[str, int] = {}
    base_cost = 0.0
    for other in s.variants:
        if other is v or other.min_replicas == 0:
            continue
        op = other.profiles[0]
        base_usage[op.acc] = base_usage.get(op.acc, 0) + other.min_replicas * op.acc_count
        base_cost += other.min_replicas * _replica_cost(inp, other, op.acc, op.acc_count)
    return Option(variant=v, accelerator=p.acc, units=p.acc_count,
                  replica_cost=_replica_cost(inp, v, p.acc, p.acc_count), params=params,
                  max_rate_rps=rate, replicas=replicas, base_usage=base_usage,
                  base_cost=base_cost)


def _replica_cost(inp: OptimizerInput, v: Variant, acc: str, count: int) -> float:
    """accelerator-unit-costs × units when the accelerator is listed, else spec.variantCost."""
    listed = inp.accelerator(acc)
    if listed is not None:
        return listed.cost * count
    if v.variant_cost is not None:
        return v.variant_cost
    raise ConfigError(f"VariantAutoscaling {v.key}: accelerator {acc!r} is not in "
                      "accelerator-unit-costs and spec.variantCost is not set")
