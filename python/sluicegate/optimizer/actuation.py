"""Acting on a solution: per-variant decisions with hysteresis (scale up at once, scale down
only to the highest recommendation of a stabilization window, as the HPA does), the
VariantAutoscaling status they write, the Prometheus gauges HPA/KEDA read (the
workload-variant-autoscaler's metric names), and replicas set through a `Scaler`."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from .inputs import ModelLoad, ModelObservation, OptimizerInput, ScaleTarget, Variant
from .problem import Allocation, Solution

if TYPE_CHECKING:  # the exporter and the fits load prometheus_client / scipy only when used
    from prometheus_client import CollectorRegistry

    from .fit import ProfileFit

# Metric names and labels as the workload-variant-autoscaler emits them, so an existing
# prometheus-adapter rule or KEDA trigger on wva_desired_replicas keeps working.
DESIRED_REPLICAS = "wva_desired_replicas"
CURRENT_REPLICAS = "wva_current_replicas"
DESIRED_RATIO = "wva_desired_ratio"
PREDICTED_TTFT = "wva_predicted_ttft_seconds"
PREDICTED_ITL = "wva_predicted_itl_seconds"
SOLUTION_COST = "sluicegate_optimizer_cost_cents_per_hour"
SLO_MET = "sluicegate_optimizer_slo_met"
FIT_RMSE = "sluicegate_optimizer_fit_rmse_ms"
FIT_PARAMETER = "sluicegate_optimizer_fit_parameter"
_VARIANT_LABELS = ("variant_name", "namespace", "accelerator_type", "target_name",
                   "target_kind")
_PREDICTION_LABELS = ("model_name",) + _VARIANT_LABELS


@dataclass(frozen=True)
class Decision:
    variant: Variant
    allocation: Allocation
    desired_replicas: int  # after stabilization: what is written and exported
    reason: str
    load: ModelLoad | None = None  # the load the decision was sized for
    observation: ModelObservation | None = None  # what the model's servers reported

    @property
    def target(self) -> ScaleTarget:
        v = self.variant
        return v.scale_target or ScaleTarget(kind="Deployment", name=v.name)


class Stabilizer:
    """Per variant, the recommendations of the last `window_s` seconds; the desired count is
    their maximum, so a rise applies at once and a fall only once it has held for the window."""

    def __init__(self, window_s: float, max_samples: int = 1024) -> None:
        if not window_s >= 0:
            raise ValueError(f"window_s={window_s!r}: must be >= 0")
        self.window_s = window_s
        self._max = max_samples
        self._history: dict[str, deque[tuple[float, int]]] = {}

    def update(self, key: str, now: float, recommended: int) -> int:
        h = self._history.setdefault(key, deque(maxlen=self._max))
        h.append((now, recommended))
        while h and h[0][0] < now - self.window_s:
            h.popleft()
        return max(n for _, n in h)

    def forget(self, keep: Iterable[str]) -> None:
        for key in set(self._history) - set(keep):
            del self._history[key]


def decide(sol: Solution, variants: Sequence[Variant], now: float,
           stabilizer: Stabilizer | None = None, *, inp: OptimizerInput | None = None,
           observed: Mapping[tuple[str, str], ModelObservation] | None = None
           ) -> list[Decision]:
    """Per variant, the replicas to set; `inp` and `observed` add the load sized for and what
    the model's servers reported (keyed by (namespace, model)) for the status."""
    by_key = {v.key: v for v in variants}
    out = []
    for a in sol.allocations:
        v = by_key[a.variant]
        desired = stabilizer.update(a.variant, now, a.replicas) if stabilizer else a.replicas
        reason = a.reason if desired == a.replicas else (
            f"held at {desired} by the scale-down stabilization window "
            f"(optimizer: {a.replicas}; {a.reason})")
        out.append(Decision(variant=v, allocation=a, desired_replicas=desired, reason=reason,
                            load=inp.load_of(v.model, v.namespace) if inp else None,
                            observation=(observed or {}).get((v.namespace, v.model))))
    if stabilizer:
        stabilizer.forget(by_key)
    return out


def status_patch(d: Decision, now: datetime | None = None, applied: bool = False,
                 current_replicas: int | None = None) -> dict[str, Any]:
    """The VariantAutoscaling status subresource for `d` (llmd.ai/v1alpha1 field names):
    `currentAlloc` as the autoscaler fills it (accelerator, replicas, maxBatch, cost, observed
    TTFT/ITL averages and load; numbers as strings) when the target's replicas were read, the
    decision, and the conditions OptimizationReady, CapacityExceeded and (when a metrics
    source was read) MetricsAvailable."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    a = d.allocation
    ok = a.slo_met or not a.serving
    ready = (("True", "OptimizationSucceeded") if ok and not a.capacity_exceeded else
             ("False", "CapacityExceeded") if a.capacity_exceeded else ("False", "SLONotMet"))
    conditions = [_condition(d, "OptimizationReady", *ready, d.reason, stamp),
                  _condition(d, "CapacityExceeded", *(
                      ("True", "CapacityExceeded", a.capacity_exceeded) if a.capacity_exceeded
                      else ("False", "WithinCapacity", "the allocation fits the cluster")), stamp)]
    if d.observation is not None:
        m = d.observation.metrics
        conditions.append(_condition(d, "MetricsAvailable", "True" if m.available else "False",
                                     m.reason, m.message, stamp))
    current = {} if current_replicas is None else {"currentAlloc": _current(d, current_replicas)}
    return {"status": {
        **current,
        "desiredOptimizedAlloc": {"accelerator": a.accelerator or d.variant.profiles[0].acc,
                                  "numReplicas": d.desired_replicas, "lastRunTime": stamp,
                                  "reason": d.reason},
        "actuation": {"applied": applied},
        "conditions": conditions,
    }}


def _condition(d: Decision, kind: str, status: str, reason: str, message: str, stamp: str
               ) -> dict[str, str]:
    # The time moves only when the status does (a transition), not every round.
    before = next((c for c in d.variant.conditions if c[0] == kind), None)
    since = before[2] if before and before[1] == status else stamp
    return {"type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": since}


def _current(d: Decision, replicas: int) -> dict[str, Any]:
    a, obs = d.allocation, d.observation
    load = obs.load if obs is not None and obs.load is not None else d.load
    out: dict[str, Any] = {
        "accelerator": d.variant.current_accelerator or a.accelerator or d.variant.profiles[0].acc,
        "numReplicas": replicas, "maxBatch": a.max_batch,
        "variantCost": _text(replicas * a.replica_cost)}
    if obs is not None and obs.ttft_ms is not None:
        out["ttftAverage"] = _text(obs.ttft_ms)
    if obs is not None and obs.itl_ms is not None:
        out["itlAverage"] = _text(obs.itl_ms)
    if load is not None:
        out["load"] = {"arrivalRate": _text(load.arrival_rps * 60.0),  # per minute
                       "avgInputTokens": _text(load.input_tokens),
                       "avgOutputTokens": _text(load.output_tokens)}
    return out


def _text(value: float) -> str:
    # The CRD keeps these as strings with two decimals, as the autoscaler writes them.
    return f"{value:.2f}" if math.isfinite(value) else "0.00"


def variant_objects(decisions: Sequence[Decision], now: datetime | None = None
                    ) -> list[dict[str, Any]]:
    """Each decision as a VariantAutoscaling carrying only its new status (for
    `kubectl patch --subresource=status` or a status writer)."""
    return [{"apiVersion": "llmd.ai/v1alpha1", "kind": "VariantAutoscaling",
             "metadata": {"name": d.variant.name, "namespace": d.variant.namespace},
             **status_patch(d, now)} for d in decisions]


class MetricsExporter:
    """The gauges of the latest decisions in their own registry (serve it or render it)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.desired = Gauge(DESIRED_REPLICAS, "Replicas the optimizer wants for the variant",
                             _VARIANT_LABELS, registry=r)
        self.current = Gauge(CURRENT_REPLICAS, "Replicas the variant has now",
                             _VARIANT_LABELS, registry=r)
        self.ratio = Gauge(DESIRED_RATIO, "Desired over current replicas (desired when 0 now)",
                           _VARIANT_LABELS, registry=r)
        self.ttft = Gauge(PREDICTED_TTFT, "TTFT the queueing model predicts at the desired "
                          "replicas", _PREDICTION_LABELS, registry=r)
        self.itl = Gauge(PREDICTED_ITL, "ITL the queueing model predicts at the desired "
                         "replicas", _PREDICTION_LABELS, registry=r)
        self.cost = Gauge(SOLUTION_COST, "Cost of the allocation in cents per hour",
                          ("solver",), registry=r)
        self.slo_met = Gauge(SLO_MET, "1 when the model's allocation meets its SLO",
                             ("model_name", "namespace"), registry=r)
        self.fit_rmse = Gauge(FIT_RMSE, "Error of the fitted performance parameters (ms)",
                              ("model_name", "accelerator_type", "phase"), registry=r)
        self.fit_parameter = Gauge(FIT_PARAMETER, "Fitted performance parameter (ms, ms/token)",
                                   ("model_name", "accelerator_type", "parameter"), registry=r)

    def update_fits(self, fits: Mapping[tuple[str, str], ProfileFit]) -> None:
        self.fit_rmse.clear()
        self.fit_parameter.clear()
        for (model, acc), f in fits.items():
            for phase, lf, names in (("decode", f.decode, ("alpha", "beta")),
                                     ("prefill", f.prefill, ("gamma", "delta"))):
                self.fit_rmse.labels(model, acc, phase).set(lf.rmse_ms)
                for name, value in zip(names, (lf.base, lf.slope)):
                    self.fit_parameter.labels(model, acc, name).set(value)

    def update(self, sol: Solution, decisions: Sequence[Decision]) -> None:
        for g in (self.desired, self.current, self.ratio, self.ttft, self.itl, self.slo_met):
            g.clear()
        self.cost.clear()
        self.cost.labels(sol.solver).set(sol.cost)
        for d in decisions:
            a, v, t = d.allocation, d.variant, d.target
            acc = a.accelerator or v.profiles[0].acc
            labels = (v.name, v.namespace, acc, t.name, t.kind)
            self.desired.labels(*labels).set(d.desired_replicas)
            if a.current_replicas is not None:
                self.current.labels(*labels).set(a.current_replicas)
                self.ratio.labels(*labels).set(d.desired_replicas / a.current_replicas
                                               if a.current_replicas else d.desired_replicas)
            if a.serving:
                self.slo_met.labels(a.model, v.namespace).set(1.0 if a.slo_met else 0.0)
                for gauge, ms in ((self.ttft, a.ttft_ms), (self.itl, a.itl_ms)):
                    if ms is not None and not math.isinf(ms):
                        gauge.labels(a.model, *labels).set(ms / 1000.0)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Scaler(Protocol):
    """Reads and sets a scale target's replicas (the `scale` subresource in Kubernetes)."""

    async def get_replicas(self, target: ScaleTarget, namespace: str) -> int | None: ...

    async def set_replicas(self, target: ScaleTarget, namespace: str, replicas: int) -> None: ...


async def actuate(decisions: Sequence[Decision], scaler: Scaler) -> dict[str, int | None]:
    """Set every variant whose replicas differ from its decision; per variant, the replicas
    its target has afterwards (None: the target does not exist)."""
    after: dict[str, int | None] = {}
    for d in decisions:
        current = await scaler.get_replicas(d.target, d.variant.namespace)
        if current is not None and current != d.desired_replicas:
            await scaler.set_replicas(d.target, d.variant.namespace, d.desired_replicas)
            current = d.desired_replicas
        after[d.variant.key] = current
    return after
